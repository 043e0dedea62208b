//! The `[data]` section of an experiment TOML: what to read or generate, how to cut it
//! into windows, and how much to hold out for validation.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::tasks::MULTI_KEY_WORDS;

/// Data settings of one experiment (`[data]` in the experiment TOML).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    /// Tokens per training row (the model sees `seq_len` inputs and predicts `seq_len`
    /// targets, so each row reads `seq_len + 1` tokens).
    pub seq_len: usize,
    /// Rows per batch.
    pub batch_size: usize,
    /// Seed of all data randomness; batches are a pure function of (seed, split, step).
    pub seed: u64,
    /// `"byte"` or a path to a Hugging Face `tokenizer.json` (relative to the config).
    pub tokenizer: String,
    /// Share of each text/shard source's tokens (its tail) held out for validation, in
    /// [0, 1). With 0, validation reads the same tokens as training (no hold-out).
    pub val_fraction: f64,
    /// Where rows come from; each row picks one source with probability ∝ its weight.
    pub sources: Vec<SourceConfig>,
}

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            seq_len: 256,
            batch_size: 8,
            seed: 0,
            tokenizer: "byte".to_string(),
            val_fraction: 0.05,
            sources: vec![SourceConfig::Passkey {
                weight: default_weight(),
                min_key: default_min_key(),
                max_key: default_max_key(),
                questions: default_questions(),
                instruction: true,
            }],
        }
    }
}

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

/// One data source (`[[data.sources]]`), selected by `kind`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum SourceConfig {
    /// Plain UTF-8 text: a file, or a folder searched recursively for `*.txt` / `*.md`
    /// (sorted). Each file is one document, followed by EOS.
    Text {
        /// Relative share of rows drawn from this source.
        #[serde(default = "default_weight")]
        weight: f64,
        /// File or folder, relative to the config file's directory.
        path: PathBuf,
    },
    /// Pre-tokenized token files: a file, or a folder searched recursively for `*.bin`
    /// (sorted), memory-mapped. Raw little-endian arrays (nanoGPT) and llm.c files (with
    /// their 1024-byte header, detected by its magic number) are both accepted.
    Shards {
        /// Relative share of rows drawn from this source.
        #[serde(default = "default_weight")]
        weight: f64,
        /// File or folder, relative to the config file's directory.
        path: PathBuf,
        /// Token element type of raw files ("u16" or "u32"); llm.c headers must agree.
        #[serde(default)]
        dtype: ShardDtype,
    },
    /// The passkey filler sentences repeated (the haystack without a needle).
    Filler {
        /// Relative share of rows drawn from this source.
        #[serde(default = "default_weight")]
        weight: f64,
    },
    /// Passkey retrieval samples (Landmark Attention's format) at a random depth.
    Passkey {
        /// Relative share of rows drawn from this source.
        #[serde(default = "default_weight")]
        weight: f64,
        /// Smallest pass key (inclusive).
        #[serde(default = "default_min_key")]
        min_key: u64,
        /// Largest pass key (inclusive).
        #[serde(default = "default_max_key")]
        max_key: u64,
        /// Times the question is asked and answered after the key sentence (the last time at
        /// the end of the row, as in evaluation). Every answer is a retrieval target, so more
        /// questions pack more of them into a row; evaluation always asks once.
        #[serde(default = "default_questions")]
        questions: usize,
        /// Start rows with the task instruction (the evaluation prompt has it). Without it a
        /// row has room for more filler and questions.
        #[serde(default = "default_true")]
        instruction: bool,
    },
    /// Several named pass keys in the filler; the question asks for one of them.
    MultiKey {
        /// Relative share of rows drawn from this source.
        #[serde(default = "default_weight")]
        weight: f64,
        /// Number of needles per sample.
        #[serde(default = "default_n_keys")]
        n_keys: usize,
    },
    /// `key: value` pairs, filler, then one key whose value must be recalled.
    AssocRecall {
        /// Relative share of rows drawn from this source.
        #[serde(default = "default_weight")]
        weight: f64,
        /// Number of pairs per sample.
        #[serde(default = "default_n_pairs")]
        n_pairs: usize,
    },
    /// A random letter string, filler, then `Copy:` and the string again.
    Copy {
        /// Relative share of rows drawn from this source.
        #[serde(default = "default_weight")]
        weight: f64,
        /// Letters in the string to copy.
        #[serde(default = "default_span")]
        span: usize,
    },
}

fn default_weight() -> f64 {
    1.0
}
fn default_min_key() -> u64 {
    10_000
}
fn default_max_key() -> u64 {
    99_999
}
fn default_questions() -> usize {
    1
}
fn default_true() -> bool {
    true
}
fn default_n_keys() -> usize {
    4
}
fn default_n_pairs() -> usize {
    16
}
fn default_span() -> usize {
    32
}

/// Upper bound on `assoc_recall.n_pairs`: keys are distinct 4-letter words, and far more
/// pairs than this could never fit a realistic window anyway.
pub const MAX_ASSOC_PAIRS: usize = 10_000;

/// Upper bound on `passkey.questions` (each question and answer takes ~45 byte tokens).
pub const MAX_QUESTIONS: usize = 1_000;

impl SourceConfig {
    /// Relative sampling weight.
    pub fn weight(&self) -> f64 {
        match self {
            SourceConfig::Text { weight, .. }
            | SourceConfig::Shards { weight, .. }
            | SourceConfig::Filler { weight }
            | SourceConfig::Passkey { weight, .. }
            | SourceConfig::MultiKey { weight, .. }
            | SourceConfig::AssocRecall { weight, .. }
            | SourceConfig::Copy { weight, .. } => *weight,
        }
    }

    /// The `kind` string as written in TOML.
    pub fn kind(&self) -> &'static str {
        match self {
            SourceConfig::Text { .. } => "text",
            SourceConfig::Shards { .. } => "shards",
            SourceConfig::Filler { .. } => "filler",
            SourceConfig::Passkey { .. } => "passkey",
            SourceConfig::MultiKey { .. } => "multi_key",
            SourceConfig::AssocRecall { .. } => "assoc_recall",
            SourceConfig::Copy { .. } => "copy",
        }
    }

    /// The file/folder of text and shard sources.
    pub fn path(&self) -> Option<&Path> {
        match self {
            SourceConfig::Text { path, .. } | SourceConfig::Shards { path, .. } => Some(path),
            _ => None,
        }
    }

    /// Checks this source's own fields; `key` is its config path (`data.sources[i]`).
    fn validate(&self, key: &str) -> Result<()> {
        let weight = self.weight();
        if !(weight.is_finite() && weight > 0.0) {
            bail!("{key}.weight must be > 0 (got {weight})");
        }
        match self {
            SourceConfig::Text { path, .. } | SourceConfig::Shards { path, .. } => {
                if path.as_os_str().is_empty() {
                    bail!("{key}.path must not be empty");
                }
            }
            SourceConfig::Filler { .. } => {}
            SourceConfig::Passkey {
                min_key,
                max_key,
                questions,
                ..
            } => {
                if min_key > max_key {
                    bail!("{key}.min_key ({min_key}) must be <= {key}.max_key ({max_key})");
                }
                if *questions == 0 || *questions > MAX_QUESTIONS {
                    bail!("{key}.questions must be in 1..={MAX_QUESTIONS} (got {questions})");
                }
            }
            SourceConfig::MultiKey { n_keys, .. } => {
                if *n_keys == 0 || *n_keys > MULTI_KEY_WORDS.len() {
                    bail!(
                        "{key}.n_keys must be in 1..={} (got {n_keys})",
                        MULTI_KEY_WORDS.len()
                    );
                }
            }
            SourceConfig::AssocRecall { n_pairs, .. } => {
                if *n_pairs == 0 || *n_pairs > MAX_ASSOC_PAIRS {
                    bail!("{key}.n_pairs must be in 1..={MAX_ASSOC_PAIRS} (got {n_pairs})");
                }
            }
            SourceConfig::Copy { span, .. } => {
                if *span == 0 {
                    bail!("{key}.span must be > 0");
                }
            }
        }
        Ok(())
    }
}

impl DataConfig {
    /// Checks values serde cannot: ranges, non-empty lists, per-source fields.
    pub fn validate(&self) -> Result<()> {
        if self.seq_len == 0 {
            bail!("data.seq_len must be > 0");
        }
        if self.batch_size == 0 {
            bail!("data.batch_size must be > 0");
        }
        if self.tokenizer.trim().is_empty() {
            bail!("data.tokenizer must be \"byte\" or a path to a tokenizer.json (got \"\")");
        }
        if !(self.val_fraction.is_finite() && (0.0..1.0).contains(&self.val_fraction)) {
            bail!(
                "data.val_fraction must be in [0, 1) (got {})",
                self.val_fraction
            );
        }
        if self.sources.is_empty() {
            bail!("data.sources must list at least one source");
        }
        for (i, s) in self.sources.iter().enumerate() {
            s.validate(&format!("data.sources[{i}]"))?;
        }
        Ok(())
    }

    /// Reads the `[data]` table of a whole experiment TOML document (other tables are
    /// left to their owners), then validates it. A missing `[data]` gives the defaults.
    pub fn from_toml_str(doc: &str) -> Result<Self> {
        // Only `data` is declared and unknown top-level tables are allowed, so this
        // ignores the model/train sections while `deny_unknown_fields` still polices
        // `[data]` itself — with line numbers, since we deserialize from the text.
        #[derive(Deserialize)]
        struct Doc {
            #[serde(default)]
            data: DataConfig,
        }
        let doc: Doc = toml::from_str(doc).context("invalid [data] section")?;
        doc.data.validate()?;
        Ok(doc.data)
    }

    /// [`DataConfig::from_toml_str`] on a file; errors name the file.
    pub fn from_toml_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config {}", path.display()))?;
        Self::from_toml_str(&text).with_context(|| format!("in config {}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_documented_values() {
        let c = DataConfig::default();
        c.validate().unwrap();
        assert_eq!((c.seq_len, c.batch_size, c.seed), (256, 8, 0));
        assert_eq!(c.tokenizer, "byte");
        assert_eq!(c.val_fraction, 0.05);
        assert_eq!(
            c.sources,
            vec![SourceConfig::Passkey {
                weight: 1.0,
                min_key: 10_000,
                max_key: 99_999,
                questions: 1,
                instruction: true,
            }]
        );
        // An empty [data] table and a missing one both give the defaults.
        assert_eq!(DataConfig::from_toml_str("[data]\n").unwrap(), c);
        assert_eq!(DataConfig::from_toml_str("[model]\nd = 1\n").unwrap(), c);
    }

    #[test]
    fn parses_every_source_kind_with_defaults() {
        let doc = r#"
            [model]
            whatever = "ignored: not ours"

            [data]
            seq_len = 64
            seed = 7
            tokenizer = "tok/tokenizer.json"

            [[data.sources]]
            kind = "text"
            path = "corpus"
            weight = 3.0

            [[data.sources]]
            kind = "shards"
            path = "fineweb"
            dtype = "u32"

            [[data.sources]]
            kind = "filler"

            [[data.sources]]
            kind = "passkey"
            min_key = 100
            max_key = 999

            [[data.sources]]
            kind = "multi_key"

            [[data.sources]]
            kind = "assoc_recall"
            n_pairs = 4

            [[data.sources]]
            kind = "copy"
        "#;
        let c = DataConfig::from_toml_str(doc).unwrap();
        assert_eq!(c.seq_len, 64);
        assert_eq!(c.batch_size, 8);
        assert_eq!(c.seed, 7);
        assert_eq!(c.sources.len(), 7);
        assert_eq!(
            c.sources[0],
            SourceConfig::Text {
                weight: 3.0,
                path: "corpus".into()
            }
        );
        assert_eq!(
            c.sources[1],
            SourceConfig::Shards {
                weight: 1.0,
                path: "fineweb".into(),
                dtype: ShardDtype::U32
            }
        );
        assert_eq!(c.sources[2], SourceConfig::Filler { weight: 1.0 });
        assert_eq!(
            c.sources[3],
            SourceConfig::Passkey {
                weight: 1.0,
                min_key: 100,
                max_key: 999,
                questions: 1,
                instruction: true,
            }
        );
        assert_eq!(
            c.sources[4],
            SourceConfig::MultiKey {
                weight: 1.0,
                n_keys: 4
            }
        );
        assert_eq!(
            c.sources[5],
            SourceConfig::AssocRecall {
                weight: 1.0,
                n_pairs: 4
            }
        );
        assert_eq!(
            c.sources[6],
            SourceConfig::Copy {
                weight: 1.0,
                span: 32
            }
        );
    }

    #[test]
    fn serializes_back_to_toml() {
        let mut c = DataConfig::default();
        c.sources.push(SourceConfig::Shards {
            weight: 2.0,
            path: "x".into(),
            dtype: ShardDtype::U16,
        });
        #[derive(Serialize)]
        struct Doc<'a> {
            data: &'a DataConfig,
        }
        let text = toml::to_string(&Doc { data: &c }).unwrap();
        assert_eq!(DataConfig::from_toml_str(&text).unwrap(), c);
    }

    fn err_of(doc: &str) -> String {
        match DataConfig::from_toml_str(doc) {
            Ok(c) => panic!("expected an error, got {c:?}"),
            Err(e) => format!("{e:#}"),
        }
    }

    #[test]
    fn unknown_keys_are_named() {
        let msg = err_of("[data]\nseq_lenn = 3\n");
        assert!(msg.contains("seq_lenn"), "{msg}");
        let msg = err_of("[data]\n[[data.sources]]\nkind = \"copy\"\nspam = 3\n");
        assert!(msg.contains("spam"), "{msg}");
        let msg = err_of("[data]\n[[data.sources]]\nkind = \"poetry\"\n");
        assert!(msg.contains("poetry"), "{msg}");
        let msg =
            err_of("[data]\n[[data.sources]]\nkind = \"shards\"\npath = \"a\"\ndtype = \"f32\"\n");
        assert!(msg.contains("f32"), "{msg}");
    }

    #[test]
    fn bad_values_are_named() {
        let msg = err_of(
            "[data]\n[[data.sources]]\nkind = \"filler\"\n[[data.sources]]\nkind = \"copy\"\n\
             [[data.sources]]\nkind = \"passkey\"\nweight = -1.0\n",
        );
        assert_eq!(msg, "data.sources[2].weight must be > 0 (got -1)");
        assert_eq!(err_of("[data]\nseq_len = 0\n"), "data.seq_len must be > 0");
        assert_eq!(
            err_of("[data]\nbatch_size = 0\n"),
            "data.batch_size must be > 0"
        );
        assert_eq!(
            err_of("[data]\nval_fraction = 1.0\n"),
            "data.val_fraction must be in [0, 1) (got 1)"
        );
        assert!(err_of("[data]\nval_fraction = -0.1\n").contains("data.val_fraction"));
        assert!(err_of("[data]\nsources = []\n").contains("data.sources"));
        let msg =
            err_of("[data]\n[[data.sources]]\nkind = \"passkey\"\nmin_key = 10\nmax_key = 5\n");
        assert!(msg.contains("data.sources[0].min_key"), "{msg}");
        let msg = err_of("[data]\n[[data.sources]]\nkind = \"passkey\"\nquestions = 0\n");
        assert!(msg.contains("data.sources[0].questions"), "{msg}");
        let msg = err_of("[data]\n[[data.sources]]\nkind = \"multi_key\"\nn_keys = 0\n");
        assert!(msg.contains("data.sources[0].n_keys"), "{msg}");
        let msg = err_of("[data]\n[[data.sources]]\nkind = \"copy\"\nspan = 0\n");
        assert!(msg.contains("data.sources[0].span"), "{msg}");
        let msg = err_of("[data]\n[[data.sources]]\nkind = \"text\"\npath = \"\"\n");
        assert!(msg.contains("data.sources[0].path"), "{msg}");
        // A text source without a path is a serde error naming the field.
        let msg = err_of("[data]\n[[data.sources]]\nkind = \"text\"\n");
        assert!(msg.contains("path"), "{msg}");
    }

    #[test]
    fn from_file_names_the_file() {
        let dir = crate::test_util::TempDir::new("cfg");
        let p = dir.write("exp.toml", b"[data]\nbogus = 1\n");
        let msg = format!("{:#}", DataConfig::from_toml_file(&p).unwrap_err());
        assert!(msg.contains("exp.toml") && msg.contains("bogus"), "{msg}");
        let missing = dir.path().join("missing.toml");
        let msg = format!("{:#}", DataConfig::from_toml_file(&missing).unwrap_err());
        assert!(msg.contains("missing.toml"), "{msg}");
    }
}
