//! One `[[data.sources]]` entry: a text or shard source, or a synthetic task.
//!
//! The TOML is flat (`kind`, `weight` and the kind's own keys side by side), but the synthetic
//! kinds are not listed here: they are [`Task`]'s variants, so parsing reads `kind` and `weight`
//! itself and hands the rest to the token-source fields or to [`Task`].

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use serde::ser::{Error as _, SerializeMap};
use serde::{Deserialize, Serialize, Serializer};

use crate::downstream::{JsonlFormat, TooLong};
use crate::tasks::Task;

/// Element type of a pre-tokenized shard file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ShardDtype {
    /// Little-endian u16 (nanoGPT / llm.c GPT-2 shards).
    #[default]
    U16,
    /// Little-endian u32 (vocabularies above 65 536, llm.c Llama-3 shards).
    U32,
}

impl std::fmt::Display for ShardDtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Same spelling as in the TOML.
        f.write_str(match self {
            ShardDtype::U16 => "u16",
            ShardDtype::U32 => "u32",
        })
    }
}

impl ShardDtype {
    /// Bytes per token.
    pub fn width(self) -> usize {
        match self {
            ShardDtype::U16 => 2,
            ShardDtype::U32 => 4,
        }
    }
}

/// One data source (`[[data.sources]]`), selected by `kind`. Every kind takes `weight`, the
/// relative share of rows drawn from it (default 1).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "toml::Table")]
pub enum SourceConfig {
    /// `kind = "text"`: plain UTF-8 text, a file or a folder searched recursively for
    /// `*.txt` / `*.md` (sorted). Each file is one document, followed by EOS.
    Text {
        /// Relative share of rows drawn from this source.
        weight: f64,
        /// File or folder, relative to the config file's directory.
        path: PathBuf,
    },
    /// `kind = "shards"`: pre-tokenized token files, a file or a folder searched recursively
    /// for `*.bin` (sorted), memory-mapped. Raw little-endian arrays (nanoGPT) and llm.c
    /// files (with their 1024-byte header, detected by its magic number) are both accepted.
    Shards {
        /// Relative share of rows drawn from this source.
        weight: f64,
        /// File or folder, relative to the config file's directory.
        path: PathBuf,
        /// Token element type of raw files (`"u16"` or `"u32"`); llm.c headers must agree.
        dtype: ShardDtype,
    },
    /// `kind = "jsonl"`: downstream examples, one JSON object per line, a file or a folder
    /// searched recursively for `*.jsonl` (sorted). Each becomes prompt + answer, with loss
    /// on the answer only; rows pack examples separated by EOS.
    Jsonl {
        /// Relative share of rows drawn from this source.
        weight: f64,
        /// File or folder, relative to the config file's directory.
        path: PathBuf,
        /// What the lines hold: `"qa"`, `"summarization"` or `"choice"`.
        format: JsonlFormat,
        /// Examples longer than a row: `"truncate"` (cut the context from the left, default)
        /// or `"skip"`.
        too_long: TooLong,
    },
    /// `kind = ` a [`Task`] name (`"passkey"`, `"copy"`, …): generated samples of that task,
    /// its settings given by the other keys.
    Task {
        /// Relative share of rows drawn from this source.
        weight: f64,
        /// The task and its settings.
        task: Task,
    },
}

/// The `weight` of a source that does not give one.
pub const DEFAULT_WEIGHT: f64 = 1.0;

impl SourceConfig {
    /// A synthetic source of `task` with the default weight.
    pub fn task(task: Task) -> Self {
        SourceConfig::Task {
            weight: DEFAULT_WEIGHT,
            task,
        }
    }

    /// Relative sampling weight.
    pub fn weight(&self) -> f64 {
        match self {
            SourceConfig::Text { weight, .. }
            | SourceConfig::Shards { weight, .. }
            | SourceConfig::Jsonl { weight, .. }
            | SourceConfig::Task { weight, .. } => *weight,
        }
    }

    /// The `kind` string as written in TOML.
    pub fn kind(&self) -> &'static str {
        match self {
            SourceConfig::Text { .. } => "text",
            SourceConfig::Shards { .. } => "shards",
            SourceConfig::Jsonl { .. } => "jsonl",
            SourceConfig::Task { task, .. } => task.name(),
        }
    }

    /// The file/folder of text, shard and JSONL sources.
    pub fn path(&self) -> Option<&Path> {
        match self {
            SourceConfig::Text { path, .. }
            | SourceConfig::Shards { path, .. }
            | SourceConfig::Jsonl { path, .. } => Some(path),
            SourceConfig::Task { .. } => None,
        }
    }

    /// Every file or folder path the source reads (data, or a task's haystack), mutable: for
    /// making them absolute when a resolved config is saved elsewhere.
    pub fn paths_mut(&mut self) -> Vec<&mut PathBuf> {
        match self {
            SourceConfig::Text { path, .. }
            | SourceConfig::Shards { path, .. }
            | SourceConfig::Jsonl { path, .. } => vec![path],
            SourceConfig::Task { task, .. } => task.haystack_mut().into_iter().collect(),
        }
    }

    /// Every `kind` a source may have: the token sources, then the tasks.
    pub fn kinds() -> Vec<&'static str> {
        let tasks = Task::all();
        ["text", "shards", "jsonl"]
            .into_iter()
            .chain(tasks.iter().map(Task::name))
            .collect()
    }

    /// Checks this source's own fields; `key` is its config path (`data.sources[i]`).
    pub(crate) fn validate(&self, key: &str) -> Result<()> {
        let weight = self.weight();
        if !(weight.is_finite() && weight > 0.0) {
            bail!("{key}.weight must be > 0 (got {weight})");
        }
        match self {
            SourceConfig::Text { path, .. }
            | SourceConfig::Shards { path, .. }
            | SourceConfig::Jsonl { path, .. } => {
                if path.as_os_str().is_empty() {
                    bail!("{key}.path must not be empty");
                }
                Ok(())
            }
            SourceConfig::Task { task, .. } => task.validate(key),
        }
    }
}

/// Why a `[[data.sources]]` table does not parse. Serde adds where (file, line, key path).
#[derive(Debug, thiserror::Error)]
pub enum SourceParseError {
    /// No `kind`, or not a string.
    #[error("missing field `kind` (a string, one of {expected})")]
    NoKind {
        /// The kinds there are.
        expected: String,
    },
    /// A `kind` that is neither a token source nor a task.
    #[error("unknown variant `{kind}`, expected one of {expected}")]
    UnknownKind {
        /// The kind given.
        kind: String,
        /// The kinds there are.
        expected: String,
    },
    /// `weight` is not a number.
    #[error("`weight` of a {kind} source: {message}")]
    Weight {
        /// The source's kind.
        kind: String,
        /// Serde's message.
        message: String,
    },
    /// The kind's own keys do not parse (unknown key, wrong type, missing path).
    #[error("{kind} source: {message}")]
    Fields {
        /// The source's kind.
        kind: String,
        /// Serde's message.
        message: String,
    },
}

/// The fields of the token sources, `weight` taken out (parsing only).
#[derive(Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
enum TokenSource {
    Text {
        path: PathBuf,
    },
    Shards {
        path: PathBuf,
        #[serde(default)]
        dtype: ShardDtype,
    },
    Jsonl {
        path: PathBuf,
        format: JsonlFormat,
        #[serde(default)]
        too_long: TooLong,
    },
}

impl TryFrom<toml::Table> for SourceConfig {
    type Error = SourceParseError;

    fn try_from(mut table: toml::Table) -> Result<Self, SourceParseError> {
        let expected = || {
            SourceConfig::kinds()
                .iter()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let Some(kind) = table
            .get("kind")
            .and_then(|k| k.as_str())
            .map(str::to_owned)
        else {
            return Err(SourceParseError::NoKind {
                expected: expected(),
            });
        };
        let weight = match table.remove("weight") {
            None => DEFAULT_WEIGHT,
            Some(w) => f64::deserialize(w).map_err(|e| SourceParseError::Weight {
                kind: kind.clone(),
                message: e.message().to_string(),
            })?,
        };
        // Serde lists the kind's own keys as expected; `weight` was taken out above.
        let fields = |e: toml::de::Error| SourceParseError::Fields {
            kind: kind.clone(),
            message: match e.message() {
                m if m.starts_with("unknown field") => format!("{m}, or `weight`"),
                m => m.to_string(),
            },
        };
        let source = match kind.as_str() {
            "text" | "shards" | "jsonl" => match TokenSource::deserialize(table).map_err(fields)? {
                TokenSource::Text { path } => SourceConfig::Text { weight, path },
                TokenSource::Shards { path, dtype } => SourceConfig::Shards {
                    weight,
                    path,
                    dtype,
                },
                TokenSource::Jsonl {
                    path,
                    format,
                    too_long,
                } => SourceConfig::Jsonl {
                    weight,
                    path,
                    format,
                    too_long,
                },
            },
            k if Task::all().iter().any(|t| t.name() == k) => SourceConfig::Task {
                weight,
                task: Task::deserialize(table).map_err(fields)?,
            },
            _ => {
                return Err(SourceParseError::UnknownKind {
                    kind,
                    expected: expected(),
                })
            }
        };
        Ok(source)
    }
}

impl Serialize for SourceConfig {
    /// The flat TOML form: `kind`, `weight`, then the kind's own keys.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("kind", self.kind())?;
        map.serialize_entry("weight", &self.weight())?;
        match self {
            SourceConfig::Text { path, .. } => map.serialize_entry("path", path)?,
            SourceConfig::Shards { path, dtype, .. } => {
                map.serialize_entry("path", path)?;
                map.serialize_entry("dtype", dtype)?;
            }
            SourceConfig::Jsonl {
                path,
                format,
                too_long,
                ..
            } => {
                map.serialize_entry("path", path)?;
                map.serialize_entry("format", format)?;
                map.serialize_entry("too_long", too_long)?;
            }
            SourceConfig::Task { task, .. } => {
                let fields = toml::Table::try_from(task).map_err(S::Error::custom)?;
                for (key, value) in fields.iter().filter(|(k, _)| *k != "kind") {
                    map.serialize_entry(key, value)?;
                }
            }
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tasks::{CopyTask, PasskeyTask};

    /// Parses one `[[data.sources]]` table.
    fn parse(body: &str) -> Result<SourceConfig, String> {
        #[derive(Deserialize)]
        struct Doc {
            sources: Vec<SourceConfig>,
        }
        toml::from_str::<Doc>(&format!("[[sources]]\n{body}"))
            .map(|mut d| d.sources.remove(0))
            .map_err(|e| e.message().to_string())
    }

    #[test]
    fn every_task_is_a_source_kind() {
        for task in Task::all() {
            let s = parse(&format!("kind = \"{}\"\nweight = 2", task.name())).unwrap();
            assert_eq!(
                s,
                SourceConfig::Task {
                    weight: 2.0,
                    task: task.clone()
                }
            );
            assert_eq!(s.kind(), task.name());
            s.validate("data.sources[0]").unwrap();
        }
        let kinds = SourceConfig::kinds();
        assert_eq!(kinds[..3], ["text", "shards", "jsonl"]);
        assert!(kinds.contains(&"passkey") && kinds.contains(&"assoc_recall"));
        assert_eq!(kinds.len(), 3 + Task::all().len());
    }

    #[test]
    fn serializes_flat_with_kind_first() {
        let s = SourceConfig::Task {
            weight: 0.5,
            task: Task::Copy(CopyTask { span: 7 }),
        };
        let text = toml::to_string(&s).unwrap();
        assert_eq!(text, "kind = \"copy\"\nweight = 0.5\nspan = 7\n");
        assert_eq!(parse(&text).unwrap(), s);
        let s = SourceConfig::Shards {
            weight: 1.0,
            path: "a/b".into(),
            dtype: ShardDtype::U32,
        };
        let text = toml::to_string(&s).unwrap();
        assert_eq!(
            text,
            "kind = \"shards\"\nweight = 1.0\npath = \"a/b\"\ndtype = \"u32\"\n"
        );
        assert_eq!(parse(&text).unwrap(), s);
    }

    #[test]
    fn jsonl_sources_parse_serialize_and_name_their_keys() {
        let s = parse("kind = \"jsonl\"\npath = \"squad.jsonl\"\nformat = \"qa\"").unwrap();
        assert_eq!(
            s,
            SourceConfig::Jsonl {
                weight: 1.0,
                path: "squad.jsonl".into(),
                format: JsonlFormat::Qa,
                too_long: TooLong::Truncate,
            }
        );
        assert_eq!(
            (s.kind(), s.path()),
            ("jsonl", Some(Path::new("squad.jsonl")))
        );
        let s = SourceConfig::Jsonl {
            weight: 2.0,
            path: "xsum".into(),
            format: JsonlFormat::Summarization,
            too_long: TooLong::Skip,
        };
        let text = toml::to_string(&s).unwrap();
        assert_eq!(
            text,
            "kind = \"jsonl\"\nweight = 2.0\npath = \"xsum\"\nformat = \"summarization\"\n\
             too_long = \"skip\"\n"
        );
        assert_eq!(parse(&text).unwrap(), s);
        let e = parse("kind = \"jsonl\"\npath = \"a\"").unwrap_err();
        assert!(e.contains("jsonl source") && e.contains("`format`"), "{e}");
        let e = parse("kind = \"jsonl\"\npath = \"a\"\nformat = \"essay\"").unwrap_err();
        assert!(e.contains("essay") && e.contains("`choice`"), "{e}");
        let e = parse("kind = \"jsonl\"\npath = \"a\"\nformat = \"qa\"\ntoo_long = \"wrap\"")
            .unwrap_err();
        assert!(e.contains("wrap") && e.contains("`truncate`"), "{e}");
        let e = parse("kind = \"jsonl\"\npath = \"\"\nformat = \"qa\"")
            .unwrap()
            .validate("data.sources[1]")
            .unwrap_err();
        assert_eq!(e.to_string(), "data.sources[1].path must not be empty");
    }

    #[test]
    fn paths_mut_reaches_every_path() {
        let mut sources = [
            parse("kind = \"text\"\npath = \"a\"").unwrap(),
            parse("kind = \"jsonl\"\npath = \"b\"\nformat = \"choice\"").unwrap(),
            parse("kind = \"niah\"\nhaystack = \"c\"").unwrap(),
            parse("kind = \"variable_tracking\"\nhaystack = \"d\"").unwrap(),
            parse("kind = \"niah\"").unwrap(),
        ];
        let mut seen = Vec::new();
        for s in &mut sources {
            for p in s.paths_mut() {
                seen.push(p.display().to_string());
                *p = Path::new("/abs").join(&*p);
            }
        }
        assert_eq!(seen, ["a", "b", "c", "d"]);
        assert_eq!(
            sources[2],
            parse("kind = \"niah\"\nhaystack = \"/abs/c\"").unwrap()
        );
    }

    #[test]
    fn parse_errors_name_the_kind_and_key() {
        let e = parse("kind = \"poetry\"").unwrap_err();
        assert!(
            e.contains("`poetry`") && e.contains("`text`") && e.contains("`assoc_recall`"),
            "{e}"
        );
        let e = parse("weight = 2").unwrap_err();
        assert!(e.contains("missing field `kind`"), "{e}");
        let e = parse("kind = \"copy\"\nspam = 3").unwrap_err();
        assert_eq!(
            e,
            "copy source: unknown field `spam`, expected `span`, or `weight`"
        );
        let e = parse("kind = \"passkey\"\nweight = \"heavy\"").unwrap_err();
        assert!(e.contains("`weight` of a passkey source"), "{e}");
        let e = parse("kind = \"passkey\"\nmin_key = \"small\"").unwrap_err();
        assert!(e.contains("passkey source") && e.contains("u64"), "{e}");
        let e = parse("kind = \"text\"").unwrap_err();
        assert!(e.contains("text source") && e.contains("`path`"), "{e}");
        // Defaults fill what is not given.
        assert_eq!(
            parse("kind = \"passkey\"\nmax_key = 99_999_999").unwrap(),
            SourceConfig::task(Task::Passkey(PasskeyTask {
                max_key: 99_999_999,
                ..PasskeyTask::default()
            }))
        );
    }
}
