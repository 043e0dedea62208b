//! `train.init_from`: a run that starts from another run's weights (fine-tuning), with a fresh
//! optimizer and schedule. The other run's `[model]` must be this one's: loading weights into a
//! different shape would fail tensor by tensor, and into a different architecture of the same
//! shapes would silently mean something else.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use burn::prelude::Backend;
use ramba_core::checkpoint::{first_usable, load_weights};
use ramba_core::config::ModelConfig;
use ramba_core::model::LanguageModel;
use ramba_experiment::ExperimentConfig;

/// Model keys that may differ between the two runs: they change how the model runs (in
/// training, or at inference too), not the weights.
const RUNTIME_ONLY: [&str; 2] = ["model.mamba.train_segment", "model.mamba.segment_inference"];

/// `model` with the weights of the newest usable checkpoint of the run folder `from`, and
/// that checkpoint's folder. Errors name `train.init_from` and say what is wrong: no run
/// folder, no checkpoint, or a `[model]` that differs (each differing key with both values).
pub fn init_from<B: Backend>(
    from: &Path,
    config: &ModelConfig,
    model: LanguageModel<B>,
    warn: impl FnMut(&str),
) -> Result<(PathBuf, LanguageModel<B>)> {
    let what = || format!("train.init_from = {}", from.display());
    let config_path = from.join("config.toml");
    if !config_path.is_file() {
        bail!(
            "{}: not a run folder (it has no config.toml); give a folder written by ramba-train",
            what()
        );
    }
    let source = ExperimentConfig::load(&config_path, &[]).with_context(what)?;
    let diffs = model_differences(&source.model, config)?;
    if !diffs.is_empty() {
        bail!(
            "{}: its model differs from this config's ({}); fine-tuning starts from the same \
             model, so copy its [model] section",
            what(),
            diffs.join("; ")
        );
    }
    first_usable(
        from,
        |dir| load_weights(model.clone(), &dir.join("model.safetensors")),
        warn,
    )
    .with_context(what)
}

/// Every key of `[model]` whose value differs, as `key: there → here`.
fn model_differences(there: &ModelConfig, here: &ModelConfig) -> Result<Vec<String>> {
    let a = toml::Value::try_from(there).context("serializing a model config")?;
    let b = toml::Value::try_from(here).context("serializing a model config")?;
    let mut out = vec![];
    diff("model", &a, &b, &mut out);
    Ok(out)
}

fn diff(key: &str, a: &toml::Value, b: &toml::Value, out: &mut Vec<String>) {
    if RUNTIME_ONLY.contains(&key) {
        return;
    }
    match (a, b) {
        (toml::Value::Table(a), toml::Value::Table(b)) => {
            let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
            keys.sort();
            keys.dedup();
            let none = toml::Value::String("(unset)".into());
            for k in keys {
                let sub = format!("{key}.{k}");
                diff(
                    &sub,
                    a.get(k).unwrap_or(&none),
                    b.get(k).unwrap_or(&none),
                    out,
                );
            }
        }
        _ if a != b => out.push(format!("{key}: {a} there, {b} here")),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ramba_core::config::Arch;

    #[test]
    fn differences_name_each_key_with_both_values() {
        let a = ModelConfig::default();
        let mut b = a.clone();
        assert!(model_differences(&a, &b).unwrap().is_empty());
        b.d_model = 512;
        b.hsa.top_k = 4;
        b.arch = Arch::Mamba2;
        b.mamba.train_segment = 128;
        let d = model_differences(&a, &b).unwrap();
        assert_eq!(
            d,
            [
                "model.arch: \"ramba\" there, \"mamba2\" here",
                "model.d_model: 1024 there, 512 here",
                "model.hsa.top_k: 8 there, 4 here",
            ]
        );
    }
}
