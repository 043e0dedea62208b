//! The append-only JSON-lines metrics log: one JSON object per line.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Serialize;
use serde_json::Value;

use crate::fsutil::{ensure_parent_dir, write_atomic};

/// An open `metrics.jsonl` file that records are appended to, one compact JSON value per line.
///
/// Each record is written with a single `write_all` of the whole line and then flushed, so a
/// crash of the process loses at most the line being written, and that partial line is
/// tolerated by [`read_jsonl`] and removed by [`MetricsLog::open`] in append mode and by
/// [`truncate_after_step`]. (Surviving a power loss would need an fsync per line, which is not
/// worth it for metrics.)
///
/// Records are expected to be JSON objects with a numeric `"step"` field where they belong to a
/// training step; non-finite floats are written as `null` (serde_json's behaviour).
#[derive(Debug)]
pub struct MetricsLog {
    path: PathBuf,
    file: File,
}

impl MetricsLog {
    /// Opens (creating parent directories and the file as needed) the log at `path`.
    ///
    /// With `append = false` an existing file is truncated (a fresh run); with `append = true`
    /// new records go after the existing ones (a resumed run). In append mode a partial last
    /// line left by a crash is cut off first: otherwise the next record would be glued onto it
    /// and corrupt a line in the middle of the file, where it is no longer tolerated.
    pub fn open(path: impl AsRef<Path>, append: bool) -> Result<Self> {
        let path = path.as_ref();
        ensure_parent_dir(path)?;
        if append {
            drop_partial_last_line(path)?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(append)
            .write(true)
            .truncate(!append)
            .open(path)
            .with_context(|| format!("opening metrics log {}", path.display()))?;
        Ok(MetricsLog {
            path: path.to_path_buf(),
            file,
        })
    }

    /// The file this log writes to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `record` as one line and flushes it.
    pub fn log<T: Serialize + ?Sized>(&mut self, record: &T) -> Result<()> {
        let mut line = serde_json::to_vec(record)
            .with_context(|| format!("serialising a record for {}", self.path.display()))?;
        // Compact serde_json output never contains a raw newline (they are escaped in strings),
        // so one record is always exactly one line.
        line.push(b'\n');
        self.file
            .write_all(&line)
            .and_then(|()| self.file.flush())
            .with_context(|| format!("writing to metrics log {}", self.path.display()))
    }
}

/// Cuts a trailing partial line (no final newline) off the file at `path`, if any.
fn drop_partial_last_line(path: &Path) -> Result<()> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    if bytes.is_empty() || bytes.ends_with(b"\n") {
        return Ok(());
    }
    let keep = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .with_context(|| format!("opening {} to drop a partial last line", path.display()))?;
    file.set_len(keep as u64)
        .with_context(|| format!("dropping the partial last line of {}", path.display()))
}

/// One parsed line: its raw bytes (so rewrites keep the original text) and its value.
struct Record<'a> {
    raw: &'a [u8],
    value: Value,
}

/// Parses JSON lines, skipping blank lines. A last line that does not parse is ignored: it is
/// what a crash in the middle of a write leaves behind. A bad line anywhere else is real
/// corruption and an error (1-based line number in the message).
fn parse_records(bytes: &[u8]) -> Result<Vec<Record<'_>>> {
    let lines: Vec<(usize, &[u8])> = bytes
        .split(|&b| b == b'\n')
        .enumerate()
        .filter(|(_, line)| !line.trim_ascii().is_empty())
        .collect();
    let mut records = Vec::with_capacity(lines.len());
    for (i, &(line_no, raw)) in lines.iter().enumerate() {
        match serde_json::from_slice::<Value>(raw) {
            Ok(value) => records.push(Record { raw, value }),
            Err(_) if i + 1 == lines.len() => {}
            Err(e) => bail!("line {}: invalid JSON: {e}", line_no + 1),
        }
    }
    Ok(records)
}

/// Reads every complete record of a JSON-lines file, ignoring a truncated last line.
pub fn read_jsonl(path: impl AsRef<Path>) -> Result<Vec<Value>> {
    let path = path.as_ref();
    let bytes = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let records = parse_records(&bytes).with_context(|| format!("parsing {}", path.display()))?;
    Ok(records.into_iter().map(|r| r.value).collect())
}

/// Whether a record survives [`truncate_after_step`]: records with a numeric `"step"` above
/// `step` go; everything else stays. Records without a step (a run header, say) cannot be
/// placed before or after the checkpoint, and dropping them would lose information.
fn keep_record(value: &Value, step: u64) -> bool {
    match value.get("step") {
        Some(s) => {
            if let Some(s) = s.as_u64() {
                s <= step
            } else if let Some(s) = s.as_f64() {
                // Negative integers and floats (e.g. `12.0`) land here.
                s <= step as f64
            } else {
                true
            }
        }
        None => true,
    }
}

/// Rewrites the JSON-lines file at `path` keeping only records whose `"step"` is `<= step`
/// (and records with no numeric step), and returns how many records were removed.
///
/// Used on resume: a run that crashed after its last checkpoint at `step` wrote records past
/// it, which the resumed run will write again. A truncated last line is dropped too. A missing
/// file is not an error (nothing to truncate, returns 0). The rewrite is atomic, and must
/// happen before a [`MetricsLog`] is opened on the same file (the rename replaces the file an
/// already-open log would keep writing to).
pub fn truncate_after_step(path: impl AsRef<Path>, step: u64) -> Result<usize> {
    let path = path.as_ref();
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let records = parse_records(&bytes).with_context(|| format!("parsing {}", path.display()))?;
    let mut out = Vec::with_capacity(bytes.len());
    let mut removed = 0;
    for record in &records {
        if keep_record(&record.value, step) {
            out.extend_from_slice(record.raw);
            out.push(b'\n');
        } else {
            removed += 1;
        }
    }
    write_atomic(path, &out).with_context(|| format!("rewriting {}", path.display()))?;
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;
    use serde_json::json;

    #[derive(Serialize)]
    struct Rec {
        step: u64,
        loss: f64,
    }

    fn steps(values: &[Value]) -> Vec<u64> {
        values.iter().map(|v| v["step"].as_u64().unwrap()).collect()
    }

    #[test]
    fn writes_three_records_and_reads_them_back() {
        let dir = TempDir::new("jsonl");
        let path = dir.path().join("run/metrics.jsonl");
        let mut log = MetricsLog::open(&path, false).unwrap();
        let records = [
            json!({"step": 1, "loss": 3.5, "split": "train"}),
            json!({"step": 2, "loss": 3.25, "note": "a, \"quoted\"\nline"}),
            json!({"step": 3, "loss": 3.0, "lr": 1e-3}),
        ];
        for r in &records {
            log.log(r).unwrap();
        }
        assert_eq!(read_jsonl(&path).unwrap(), records);
        // Exactly one line per record.
        assert_eq!(fs::read_to_string(&path).unwrap().lines().count(), 3);
    }

    #[test]
    fn logs_structs_and_non_finite_values() {
        let dir = TempDir::new("jsonl");
        let path = dir.path().join("metrics.jsonl");
        let mut log = MetricsLog::open(&path, false).unwrap();
        log.log(&Rec { step: 5, loss: 1.5 }).unwrap();
        log.log(&Rec {
            step: 6,
            loss: f64::NAN,
        })
        .unwrap();
        let back = read_jsonl(&path).unwrap();
        assert_eq!(back[0], json!({"step": 5, "loss": 1.5}));
        assert_eq!(back[1], json!({"step": 6, "loss": null}));
    }

    #[test]
    fn truncated_last_line_is_ignored() {
        let dir = TempDir::new("jsonl");
        let path = dir.path().join("metrics.jsonl");
        fs::write(&path, "{\"step\":1}\n\n{\"step\":2}\n{\"step\":3,\"lo").unwrap();
        assert_eq!(steps(&read_jsonl(&path).unwrap()), [1, 2]);
    }

    #[test]
    fn corrupt_middle_line_is_an_error_naming_file_and_line() {
        let dir = TempDir::new("jsonl");
        let path = dir.path().join("metrics.jsonl");
        fs::write(&path, "{\"step\":1}\nnot json\n{\"step\":3}\n").unwrap();
        let err = format!("{:#}", read_jsonl(&path).unwrap_err());
        assert!(
            err.contains("metrics.jsonl") && err.contains("line 2"),
            "{err}"
        );
    }

    #[test]
    fn missing_file_is_an_error_naming_it() {
        let dir = TempDir::new("jsonl");
        let path = dir.path().join("absent.jsonl");
        let err = format!("{:#}", read_jsonl(&path).unwrap_err());
        assert!(err.contains("absent.jsonl"), "{err}");
    }

    #[test]
    fn append_mode_appends_and_fresh_mode_truncates() {
        let dir = TempDir::new("jsonl");
        let path = dir.path().join("metrics.jsonl");
        let mut log = MetricsLog::open(&path, false).unwrap();
        log.log(&json!({"step": 1})).unwrap();
        drop(log);
        let mut log = MetricsLog::open(&path, true).unwrap();
        log.log(&json!({"step": 2})).unwrap();
        drop(log);
        assert_eq!(steps(&read_jsonl(&path).unwrap()), [1, 2]);

        let mut log = MetricsLog::open(&path, false).unwrap();
        log.log(&json!({"step": 9})).unwrap();
        assert_eq!(steps(&read_jsonl(&path).unwrap()), [9]);
    }

    #[test]
    fn append_after_a_crash_mid_line_does_not_corrupt_the_file() {
        let dir = TempDir::new("jsonl");
        let path = dir.path().join("metrics.jsonl");
        fs::write(&path, "{\"step\":1}\n{\"step\":2,\"lo").unwrap();
        let mut log = MetricsLog::open(&path, true).unwrap();
        log.log(&json!({"step": 2})).unwrap();
        log.log(&json!({"step": 3})).unwrap();
        assert_eq!(steps(&read_jsonl(&path).unwrap()), [1, 2, 3]);
    }

    #[test]
    fn open_under_a_regular_file_names_the_path() {
        let dir = TempDir::new("jsonl");
        let file = dir.path().join("plain");
        fs::write(&file, "x").unwrap();
        let err = format!(
            "{:#}",
            MetricsLog::open(file.join("m.jsonl"), false).unwrap_err()
        );
        assert!(err.contains("plain"), "{err}");
    }

    #[test]
    fn truncate_after_step_keeps_the_right_lines() {
        let dir = TempDir::new("jsonl");
        let path = dir.path().join("metrics.jsonl");
        let text = concat!(
            "{\"run\":\"header\"}\n",
            "{\"step\":10,\"loss\":3.0}\n",
            "{\"step\":20,\"loss\":2.5}\n",
            "{\"step\":20.0,\"val_loss\":2.6}\n",
            "{\"step\":30,\"loss\":2.0}\n",
            "{\"step\":40,\"loss\":1.9}\n",
            "{\"step\":50,\"lo",
        );
        fs::write(&path, text).unwrap();
        assert_eq!(truncate_after_step(&path, 20).unwrap(), 2);
        let kept = fs::read_to_string(&path).unwrap();
        assert_eq!(
            kept,
            concat!(
                "{\"run\":\"header\"}\n",
                "{\"step\":10,\"loss\":3.0}\n",
                "{\"step\":20,\"loss\":2.5}\n",
                "{\"step\":20.0,\"val_loss\":2.6}\n",
            )
        );
        // Resuming then appends cleanly after the kept records.
        let mut log = MetricsLog::open(&path, true).unwrap();
        log.log(&json!({"step": 30, "loss": 2.01})).unwrap();
        assert_eq!(read_jsonl(&path).unwrap().len(), 5);
    }

    #[test]
    fn truncate_after_step_on_missing_file_is_a_no_op() {
        let dir = TempDir::new("jsonl");
        let path = dir.path().join("none.jsonl");
        assert_eq!(truncate_after_step(&path, 7).unwrap(), 0);
        assert!(!path.exists());
    }

    #[test]
    fn truncate_after_step_refuses_a_corrupt_file() {
        let dir = TempDir::new("jsonl");
        let path = dir.path().join("metrics.jsonl");
        let text = "{\"step\":1}\ngarbage\n{\"step\":3}\n";
        fs::write(&path, text).unwrap();
        assert!(truncate_after_step(&path, 1).is_err());
        // The file is left untouched rather than silently losing the records after the bad line.
        assert_eq!(fs::read_to_string(&path).unwrap(), text);
    }
}
