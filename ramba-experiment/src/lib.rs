//! Experiment files: `[model] [data] [train] [eval] [run]` in one TOML document, with
//! `--set section.key=value` overrides. Unknown keys and bad values are errors that name the key
//! and the file; the resolved config is what a run folder stores.
//!
//! A crate of its own because an experiment combines the model config (`ramba-core`) with the
//! data config (`ramba-data`): here, neither of those has to depend on the other, and both
//! `ramba-train` and `ramba-eval` (which `ramba-train` uses) read experiments from one place.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use ramba_core::backend::BackendKind;
use ramba_core::config::ModelConfig;
use ramba_core::precision::Precision;
use ramba_data::DataConfig;
use serde::{Deserialize, Serialize};

mod parallel;
pub use parallel::{validate_parallel, ClusterConfig, Devices};

/// A whole experiment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct ExperimentConfig {
    /// The model (defaults: RAMba-370M).
    pub model: ModelConfig,
    /// Data sources, tokenizer, sequence length and batch size.
    pub data: DataConfig,
    /// Optimisation.
    pub train: TrainConfig,
    /// Evaluation run after training and by `ramba-eval`.
    pub eval: EvalConfig,
    /// Run folder, backend, seed.
    pub run: RunConfig,
}

/// Optimisation settings (defaults: the paper's recipe, spec §7).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// Optimizer steps.
    pub steps: u64,
    /// Peak learning rate.
    pub lr: f64,
    /// Final learning rate as a fraction of `lr` (the floor either schedule decays to).
    pub min_lr_ratio: f64,
    /// Linear warm-up, as a fraction of `steps`.
    pub warmup_ratio: f64,
    /// After the warm-up: `"cosine"` decays over all remaining steps; `"wsd"`
    /// (warm-up–stable–decay) holds `lr` and decays linearly over the last `decay_ratio` of
    /// the steps only, so a skill that arrives late at the peak rate is still annealed.
    pub schedule: LrSchedule,
    /// With `schedule = "wsd"`: the final decay, as a fraction of `steps`.
    pub decay_ratio: f64,
    /// Anneal once the skill is learned: when the training answers' teacher-forced exact rate
    /// over a `log_every` window (the `answer_acc` of `metrics.jsonl`) first reaches this, the
    /// learning rate falls linearly from its value there to `anneal_lr_ratio · lr` over
    /// `anneal_steps` and the run ends (or at `steps`, whichever comes first). Retrieval
    /// arrives as a jump whose step varies with the seed; a fixed schedule either decays
    /// before it (and the jump never comes) or never anneals after it. Off when absent, and
    /// for data without answers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub anneal_at_answer_acc: Option<f64>,
    /// Length of the anneal that `anneal_at_answer_acc` starts, in optimizer steps.
    pub anneal_steps: u64,
    /// The rate that anneal ends at, as a fraction of `lr`.
    pub anneal_lr_ratio: f64,
    /// AdamW β₁.
    pub beta1: f64,
    /// AdamW β₂.
    pub beta2: f64,
    /// AdamW ε.
    pub eps: f64,
    /// Decoupled weight decay, applied to matrices only (not norms, biases, embeddings, SSM
    /// scalars).
    pub weight_decay: f64,
    /// Global gradient-norm clip (0 = off).
    pub grad_clip: f64,
    /// Micro-batches per optimizer step.
    pub grad_accum: usize,
    /// What the model computes in: `"auto"` (bf16 on CUDA, f32 elsewhere), `"f32"`, `"bf16"`
    /// or `"f16"`. Parameters, optimizer state and checkpoints stay f32 whatever it is (mixed
    /// precision with master weights); norms' statistics, `Δ`, the selection weights, and the
    /// softmax and loss over the vocabulary are computed in f32.
    pub precision: Precision,
    /// Loss weight of the answer tokens of synthetic tasks (passkey digits, recalled values),
    /// relative to 1 for every other token. Retrieval answers are a handful of tokens in a long
    /// sequence; weighting them focuses small-budget training on the skill being measured.
    pub answer_weight: f64,
    /// "Memory reset" (spec §6): each row starts its Mamba state either from zero or from the
    /// detached final state of a random row of the previous micro-batch (unrelated text).
    pub memory_reset: bool,
    /// With `memory_reset`, the probability of a stale state rather than zeros.
    pub stale_state_prob: f64,
    /// Steps between progress lines / metrics records.
    pub log_every: u64,
    /// Steps between validation passes (0 = only at the end).
    pub eval_every: u64,
    /// Batches per validation pass.
    pub val_batches: u64,
    /// Steps between checkpoints (0 = only at the end).
    pub checkpoint_every: u64,
    /// Checkpoints kept (oldest deleted first).
    pub keep_checkpoints: usize,
    /// Threads each micro-batch's rows are split over on the CPU backend (0 = one per core).
    /// Burn's ndarray backend runs a small model's ops on one core each; worker threads with
    /// their own autodiff graphs use the rest. GPU backends ignore it.
    pub threads: usize,
    /// Local devices trained on, data-parallel: `[0]`, `[0, 1]` or `"all"`. Each gets an equal
    /// share of the rows of every batch (`data.batch_size` is the global batch); gradients are
    /// summed across devices before the optimizer step, so N devices train as one.
    pub devices: Devices,
    /// Several machines: `nodes`, this node's `rank`, the orchestrator's and this node's
    /// addresses.
    pub cluster: ClusterConfig,
    /// Fine-tuning: a run folder (`runs/X`) whose newest checkpoint's weights the model
    /// starts from, with a fresh optimizer and schedule. Its `[model]` must equal this one.
    /// Relative to the experiment file. Ignored on `--resume` (the run's own checkpoint wins).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub init_from: Option<PathBuf>,
}

/// The shape of the learning rate after the warm-up (`train.schedule`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LrSchedule {
    /// Cosine from `lr` to `min_lr_ratio · lr` over the steps after the warm-up.
    #[default]
    Cosine,
    /// Warm-up–stable–decay: `lr` until the last `decay_ratio` of the steps, then linear to
    /// `min_lr_ratio · lr`.
    Wsd,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            steps: 1000,
            lr: 2e-3,
            min_lr_ratio: 0.2,
            warmup_ratio: 0.02,
            schedule: LrSchedule::Cosine,
            decay_ratio: 0.2,
            anneal_at_answer_acc: None,
            anneal_steps: 200,
            anneal_lr_ratio: 0.01,
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: 0.001,
            grad_clip: 1.0,
            grad_accum: 1,
            precision: Precision::Auto,
            answer_weight: 1.0,
            memory_reset: false,
            stale_state_prob: 0.5,
            log_every: 10,
            eval_every: 100,
            val_batches: 4,
            checkpoint_every: 200,
            keep_checkpoints: 2,
            threads: 0,
            devices: Devices::default(),
            cluster: ClusterConfig::default(),
            init_from: None,
        }
    }
}

/// Evaluation settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvalConfig {
    /// Run the passkey evaluation when training ends.
    pub passkey_after_training: bool,
    /// Passkey context lengths, as multiples of `data.seq_len`.
    pub passkey_multiples: Vec<usize>,
    /// Key depths, fractions of the filler in `[0, 1]`.
    pub passkey_depths: Vec<f64>,
    /// Trials per (length, depth) cell, each with its own key.
    pub passkey_trials: usize,
    /// Longest context evaluated in one forward pass; longer ones are run in segments where
    /// the model allows it, else refused.
    pub max_context: usize,
}

impl Default for EvalConfig {
    fn default() -> Self {
        Self {
            passkey_after_training: true,
            passkey_multiples: vec![1, 4, 16],
            passkey_depths: vec![0.0, 0.25, 0.5, 0.75, 1.0],
            passkey_trials: 4,
            max_context: 65_536,
        }
    }
}

/// Where and how a run executes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunConfig {
    /// Run name: the folder `dir/name`.
    pub name: String,
    /// Parent folder of runs.
    pub dir: PathBuf,
    /// `auto`, `cuda`, `wgpu` or `cpu`.
    pub backend: BackendKind,
    /// Seed of the model initialisation and of the memory-reset draws.
    pub seed: u64,
}

impl Default for RunConfig {
    fn default() -> Self {
        Self {
            name: "run".into(),
            dir: "runs".into(),
            backend: BackendKind::Auto,
            seed: 0,
        }
    }
}

impl ExperimentConfig {
    /// Reads `path`, applies `overrides` (`section.key=value`, TOML values; bare words are
    /// strings), and validates. Errors name the file and the key.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let mut doc: toml::Table =
            toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        let mut set_keys = vec![];
        for o in overrides {
            apply_override(&mut doc, o).with_context(|| format!("--set {o}"))?;
            set_keys.push((o.split_once('=').map_or(o.as_str(), |(k, _)| k.trim()), o));
        }
        // serde_path_to_error names the key a wrong type sits at (toml's own error from a
        // `Value` has no position), and the key says whether the value came from `--set`.
        let cfg: Self = serde_path_to_error::deserialize(toml::Value::Table(doc)).map_err(|e| {
            let key = e.path().to_string();
            let inner = e.inner().message().trim().to_string();
            let origin = set_keys
                .iter()
                .find(|(k, _)| {
                    // The value itself, or (an unknown key) the section it was set in.
                    let unknown_here = k
                        .strip_prefix(&format!("{key}."))
                        .is_some_and(|leaf| inner.contains(&format!("`{leaf}`")));
                    key == *k
                        || key.starts_with(&format!("{k}."))
                        || key.starts_with(&format!("{k}["))
                        || unknown_here
                })
                .map(|(_, o)| format!("--set {o}"))
                .unwrap_or_else(|| path.display().to_string());
            if key == "." || key.is_empty() {
                anyhow::anyhow!("{inner} (in {origin})")
            } else {
                anyhow::anyhow!("{key}: {inner} (in {origin})")
            }
        })?;
        cfg.validate()
            .with_context(|| format!("in {}", path.display()))?;
        Ok(cfg)
    }

    /// Parses a TOML document (no overrides) and validates it.
    pub fn from_toml_str(text: &str) -> Result<Self> {
        let cfg: Self =
            toml::from_str(text).map_err(|e| anyhow::anyhow!("{}", e.message().trim()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// The resolved config as TOML, as stored in a run folder.
    pub fn to_toml(&self) -> Result<String> {
        Ok(toml::to_string_pretty(self)?)
    }

    /// The run folder `run.dir/run.name`.
    pub fn run_dir(&self) -> PathBuf {
        self.run.dir.join(&self.run.name)
    }

    /// Checks every section; errors name the key.
    pub fn validate(&self) -> Result<()> {
        self.model.validate()?;
        self.data.validate()?;
        self.model
            .validate_seq_len("data.seq_len", self.data.seq_len)?;
        let t = &self.train;
        if t.init_from
            .as_ref()
            .is_some_and(|p| p.as_os_str().is_empty())
        {
            bail!("train.init_from must not be empty (leave it out to start from scratch)");
        }
        if t.steps == 0 {
            bail!("train.steps must be > 0");
        }
        for (key, v) in [("train.lr", t.lr), ("train.eps", t.eps)] {
            if !(v > 0.0 && v.is_finite()) {
                bail!("{key} must be a positive number (got {v})");
            }
        }
        for (key, v) in [
            ("train.min_lr_ratio", t.min_lr_ratio),
            ("train.warmup_ratio", t.warmup_ratio),
            ("train.decay_ratio", t.decay_ratio),
            ("train.anneal_lr_ratio", t.anneal_lr_ratio),
            ("train.stale_state_prob", t.stale_state_prob),
        ] {
            if !(0.0..=1.0).contains(&v) {
                bail!("{key} must be in [0, 1] (got {v})");
            }
        }
        if t.schedule == LrSchedule::Wsd && t.warmup_ratio + t.decay_ratio > 1.0 {
            bail!(
                "train.warmup_ratio ({}) + train.decay_ratio ({}) must be ≤ 1 with \
                 train.schedule = \"wsd\"",
                t.warmup_ratio,
                t.decay_ratio
            );
        }
        if let Some(v) = t.anneal_at_answer_acc {
            if !(v > 0.0 && v <= 1.0) {
                bail!("train.anneal_at_answer_acc must be in (0, 1] (got {v})");
            }
            if t.anneal_steps == 0 {
                bail!("train.anneal_steps must be ≥ 1 with train.anneal_at_answer_acc");
            }
        }
        for (key, v) in [("train.beta1", t.beta1), ("train.beta2", t.beta2)] {
            if !(0.0..1.0).contains(&v) {
                bail!("{key} must be in [0, 1) (got {v})");
            }
        }
        if t.weight_decay < 0.0 || t.grad_clip < 0.0 {
            bail!("train.weight_decay and train.grad_clip must be ≥ 0");
        }
        if !(t.answer_weight >= 0.0 && t.answer_weight.is_finite()) {
            bail!("train.answer_weight must be ≥ 0 (got {})", t.answer_weight);
        }
        if t.grad_accum == 0 {
            bail!("train.grad_accum must be ≥ 1");
        }
        if t.log_every == 0 {
            bail!("train.log_every must be ≥ 1");
        }
        if t.keep_checkpoints == 0 {
            bail!("train.keep_checkpoints must be ≥ 1");
        }
        validate_parallel(&t.devices, &t.cluster, self.data.batch_size)?;
        let e = &self.eval;
        if e.passkey_multiples.contains(&0) {
            bail!(
                "eval.passkey_multiples must be ≥ 1 (got {:?})",
                e.passkey_multiples
            );
        }
        if let Some(d) = e.passkey_depths.iter().find(|d| !(0.0..=1.0).contains(*d)) {
            bail!("eval.passkey_depths must be in [0, 1] (got {d})");
        }
        if e.passkey_multiples.is_empty() || e.passkey_depths.is_empty() {
            bail!("eval.passkey_multiples and eval.passkey_depths must not be empty");
        }
        if e.max_context == 0 {
            bail!("eval.max_context must be ≥ 1");
        }
        if e.passkey_trials == 0 {
            bail!("eval.passkey_trials must be ≥ 1");
        }
        validate_run_name(&self.run.name)?;
        Ok(())
    }
}

/// `run.name` must be one plain folder name: `..`, `.`, separators or an absolute path would put
/// the run folder (and the files it overwrites) outside `run.dir`.
pub fn validate_run_name(name: &str) -> Result<()> {
    use std::path::Component;
    let mut parts = Path::new(name).components();
    let single = matches!(
        (parts.next(), parts.next()),
        (Some(Component::Normal(_)), None)
    );
    if !single || name.contains(['/', '\\']) || name.trim().is_empty() {
        bail!(
            "run.name must be a single folder name inside run.dir, without `/`, `\\`, `.` or \
             `..` (got {name:?})"
        );
    }
    Ok(())
}

/// Sets `section.key=value` in a TOML table. The value is parsed as TOML (numbers, booleans,
/// arrays, quoted strings); anything else is taken as a bare string.
pub fn apply_override(doc: &mut toml::Table, assignment: &str) -> Result<()> {
    let (key, raw) = assignment
        .split_once('=')
        .context("expected section.key=value")?;
    let path: Vec<&str> = key.trim().split('.').collect();
    if path.iter().any(|p| p.is_empty()) {
        bail!("`{key}` is not a dotted key like train.lr");
    }
    let value = toml::from_str::<toml::Table>(&format!("v = {}", raw.trim()))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.trim().to_string()));
    let (last, parents) = path.split_last().expect("non-empty path");
    let mut table = doc;
    for p in parents {
        let entry = table
            .entry(p.to_string())
            .or_insert_with(|| toml::Value::Table(Default::default()));
        table = entry
            .as_table_mut()
            .with_context(|| format!("`{p}` in `{key}` is not a section"))?;
    }
    table.insert(last.to_string(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The resolved config a run folder stores reads back as the same experiment, in the
    /// TOML layout experiment files use (flat `[[data.sources]]` tables).
    #[test]
    fn resolved_config_round_trips() {
        let cfg = ExperimentConfig::default();
        let text = cfg.to_toml().unwrap();
        assert_eq!(ExperimentConfig::from_toml_str(&text).unwrap(), cfg);
        assert!(
            text.contains("[[data.sources]]\nkind = \"passkey\"\nweight = 1.0\n"),
            "{text}"
        );
        for section in ["[model]", "[data]", "[train]", "[eval]", "[run]"] {
            assert!(text.contains(section), "{section} in {text}");
        }
    }

    /// The model library stays free of the data crate (and the data crate of the model
    /// library): only this crate joins them.
    #[test]
    fn core_and_data_do_not_depend_on_each_other() {
        let manifest = |krate: &str| {
            let path = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("..")
                .join(krate)
                .join("Cargo.toml");
            std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
        };
        assert!(!manifest("ramba-core").contains("ramba-data"));
        assert!(!manifest("ramba-data").contains("ramba-core"));
    }

    #[test]
    fn overrides_set_nested_keys_and_parse_values() {
        let mut doc = toml::Table::new();
        apply_override(&mut doc, "train.lr=3e-4").unwrap();
        apply_override(&mut doc, "run.name=quick").unwrap();
        apply_override(&mut doc, "model.hsa.top_k = 4").unwrap();
        assert_eq!(doc["train"]["lr"].as_float(), Some(3e-4));
        assert_eq!(doc["run"]["name"].as_str(), Some("quick"));
        assert_eq!(doc["model"]["hsa"]["top_k"].as_integer(), Some(4));
        assert!(apply_override(&mut doc, "no_equals").is_err());
        assert!(apply_override(&mut doc, "train..lr=1").is_err());
        // `train.lr` is a value, not a section.
        assert!(apply_override(&mut doc, "train.lr.x=1").is_err());
    }
}
