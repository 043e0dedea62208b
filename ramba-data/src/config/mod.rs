//! The `[data]` section of an experiment TOML: what to read or generate, how to cut it
//! into windows, and how much to hold out for validation.

mod source;

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

pub use source::{ShardDtype, SourceConfig, SourceParseError, DEFAULT_WEIGHT};

use crate::tasks::{PasskeyTask, Task};

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
            sources: vec![SourceConfig::task(Task::Passkey(PasskeyTask::default()))],
        }
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
    use crate::tasks::{AssocRecallTask, CopyTask, FillerTask, MultiKeyTask};

    #[test]
    fn defaults_are_valid_and_documented_values() {
        let c = DataConfig::default();
        c.validate().unwrap();
        assert_eq!((c.seq_len, c.batch_size, c.seed), (256, 8, 0));
        assert_eq!(c.tokenizer, "byte");
        assert_eq!(c.val_fraction, 0.05);
        assert_eq!(
            c.sources,
            vec![SourceConfig::Task {
                weight: 1.0,
                task: Task::Passkey(PasskeyTask {
                    min_key: 10_000,
                    max_key: 99_999,
                    questions: 1,
                    instruction: true,
                })
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
        let tasks = [
            Task::Filler(FillerTask {}),
            Task::Passkey(PasskeyTask {
                min_key: 100,
                max_key: 999,
                questions: 1,
                instruction: true,
            }),
            Task::MultiKey(MultiKeyTask { n_keys: 4 }),
            Task::AssocRecall(AssocRecallTask { n_pairs: 4 }),
            Task::Copy(CopyTask { span: 32 }),
        ];
        for (source, task) in c.sources[2..].iter().zip(tasks) {
            assert_eq!(*source, SourceConfig::task(task));
        }
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
        for (doc, key) in [
            ("kind = \"niah_multi_key\"\nn_keys = 1", "n_keys"),
            ("kind = \"niah_multi_value\"\nn_values = 0", "n_values"),
            ("kind = \"niah_multi_query\"\nn_queries = 99", "n_queries"),
            ("kind = \"niah\"\nhaystack = \"\"", "haystack"),
            ("kind = \"variable_tracking\"\nhops = 0", "hops"),
            ("kind = \"variable_tracking\"\nchains = 17", "chains"),
            ("kind = \"common_words\"\nrare_freq = 40", "rare_freq"),
            ("kind = \"frequent_words\"\nalpha = -1.0", "alpha"),
        ] {
            let msg = err_of(&format!("[data]\n[[data.sources]]\n{doc}\n"));
            assert!(msg.starts_with(&format!("data.sources[0].{key} ")), "{msg}");
        }
        let msg = err_of("[data]\n[[data.sources]]\nkind = \"niah\"\nneedle = 3\n");
        assert!(
            msg.contains("niah source") && msg.contains("`needle`"),
            "{msg}"
        );
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
