//! Opening a run folder: its resolved config, tokenizer and newest checkpoint.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Result;
use ramba_core::checkpoint::{first_usable, load_weights};
use ramba_core::model::LanguageModel;
use ramba_data::{load_tokenizer_in, Tokenizer};
use ramba_experiment::ExperimentConfig;

/// A trained model with what is needed to evaluate it.
pub struct LoadedRun<B: burn::prelude::Backend> {
    /// The run's resolved config (`config.toml`).
    pub config: ExperimentConfig,
    /// The model with the newest checkpoint's weights.
    pub model: LanguageModel<B>,
    /// The run's tokenizer.
    pub tokenizer: Arc<dyn Tokenizer>,
    /// The run folder.
    pub dir: PathBuf,
    /// The checkpoint folder the weights came from.
    pub checkpoint: PathBuf,
}

/// Loads `dir/config.toml` and the checkpoint named by `dir/checkpoints/LATEST` (falling back,
/// with a warning, to the newest older one that loads).
pub fn load_run<B: burn::prelude::Backend>(dir: &Path, device: &B::Device) -> Result<LoadedRun<B>> {
    load_run_with(dir, &[], device)
}

/// [`load_run`] with `key=value` overrides of the run's config applied before the model is
/// built (`--set`): how the model runs may change (`model.mamba.segment_inference`,
/// `model.hsa.top_k`), its shapes may not, or the weights fail to load with the tensor named.
pub fn load_run_with<B: burn::prelude::Backend>(
    dir: &Path,
    overrides: &[String],
    device: &B::Device,
) -> Result<LoadedRun<B>> {
    let config_path = dir.join("config.toml");
    if !config_path.exists() {
        anyhow::bail!(
            "{} is not a run folder: it has no config.toml",
            dir.display()
        );
    }
    let config = ExperimentConfig::load(&config_path, overrides)?;
    // The newest checkpoint whose weights load; a corrupt one is reported and skipped.
    let (checkpoint, model) = first_usable(
        dir,
        |ckpt| {
            load_weights(
                config.model.init::<B>(device),
                &ckpt.join("model.safetensors"),
            )
        },
        |w| eprintln!("{w}"),
    )?;
    // Relative tokenizer paths were resolved against the original config's folder and stored
    // resolved; `dir` is the fallback base for hand-written run folders.
    let tokenizer = load_tokenizer_in(&config.data.tokenizer, dir)?;
    Ok(LoadedRun {
        config,
        model,
        tokenizer,
        dir: dir.to_path_buf(),
        checkpoint,
    })
}
