//! Result tables: CSV and pretty-printed JSON files.

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::fsutil::write_atomic;

/// Renders a header and rows as CSV text (the `csv` crate: RFC 4180 quoting, `\n` line ends);
/// every row must have as many fields as the header.
fn render_csv(header: &[&str], rows: &[Vec<String>]) -> Result<String> {
    let mut w = csv::WriterBuilder::new()
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(vec![]);
    w.write_record(header)?;
    for (i, row) in rows.iter().enumerate() {
        if row.len() != header.len() {
            bail!(
                "row {i} has {} fields but the header has {}",
                row.len(),
                header.len()
            );
        }
        w.write_record(row)?;
    }
    let bytes = w
        .into_inner()
        .map_err(|e| anyhow::anyhow!("{}", e.error()))?;
    Ok(String::from_utf8(bytes)?)
}

/// Writes a CSV file (header line, then one line per row), creating parent directories.
/// Fields containing commas, quotes or line breaks are quoted. A row whose length differs from
/// the header's is an error (and nothing is written).
pub fn write_csv(path: impl AsRef<Path>, header: &[&str], rows: &[Vec<String>]) -> Result<()> {
    let path = path.as_ref();
    let text =
        render_csv(header, rows).with_context(|| format!("writing CSV {}", path.display()))?;
    write_atomic(path, text.as_bytes()).with_context(|| format!("writing CSV {}", path.display()))
}

/// Writes `value` as pretty-printed JSON (with a final newline), creating parent directories.
pub fn write_json_pretty<T: Serialize + ?Sized>(path: impl AsRef<Path>, value: &T) -> Result<()> {
    let path = path.as_ref();
    let mut bytes = serde_json::to_vec_pretty(value)
        .with_context(|| format!("serialising JSON for {}", path.display()))?;
    bytes.push(b'\n');
    write_atomic(path, &bytes).with_context(|| format!("writing JSON {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;
    use serde_json::json;
    use std::fs;

    fn row(fields: &[&str]) -> Vec<String> {
        fields.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn csv_has_header_rows_and_quoting() {
        let dir = TempDir::new("table");
        let path = dir.path().join("out/results.csv");
        let rows = vec![
            row(&["1024", "12.5", "plain"]),
            row(&["2048", "13.1", "a, b"]),
            row(&["4096", "", "say \"hi\""]),
            row(&["8192", "x", "two\nlines"]),
        ];
        write_csv(&path, &["length", "ppl", "note"], &rows).unwrap();
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            "length,ppl,note\n\
             1024,12.5,plain\n\
             2048,13.1,\"a, b\"\n\
             4096,,\"say \"\"hi\"\"\"\n\
             8192,x,\"two\nlines\"\n"
        );
    }

    #[test]
    fn csv_ragged_row_is_an_error_naming_the_path() {
        let dir = TempDir::new("table");
        let path = dir.path().join("bad.csv");
        let err = write_csv(&path, &["a", "b"], &[row(&["1"])]).unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("bad.csv") && msg.contains("row 0"), "{msg}");
        assert!(!path.exists());
    }

    #[test]
    fn csv_under_a_regular_file_names_the_path() {
        let dir = TempDir::new("table");
        let file = dir.path().join("plain");
        fs::write(&file, "x").unwrap();
        let target = file.join("r.csv");
        let msg = format!("{:#}", write_csv(&target, &["a"], &[]).unwrap_err());
        assert!(msg.contains(&target.display().to_string()), "{msg}");
    }

    #[test]
    fn json_pretty_round_trips() {
        let dir = TempDir::new("table");
        let path = dir.path().join("a/b/summary.json");
        let value = json!({"ppl": {"1024": 12.5}, "passkey": [1.0, 0.5]});
        write_json_pretty(&path, &value).unwrap();
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.contains("\n  \"") && text.ends_with("}\n"), "{text}");
        let back: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(back, value);
    }
}
