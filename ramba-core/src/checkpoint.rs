//! Model weights on disk: safetensors through `burn-store`, so a checkpoint opens in any
//! safetensors reader (PyTorch, JAX) as well as here.

use std::path::Path;

use anyhow::{Context, Result};
use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::prelude::*;
use burn_store::{ModuleSnapshot, SafetensorsStore};

/// Writes the module's parameters to `path` (safetensors).
pub fn save_weights<B: Backend, M: Module<B> + ModuleSnapshot<B>>(
    module: &M,
    path: &Path,
) -> Result<()> {
    let mut store = SafetensorsStore::from_file(path);
    module
        .save_into(&mut store)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("writing {}", path.display()))
}

/// Loads the parameters in `path` into `module` (which has the config's structure).
pub fn load_weights<B: Backend, M: Module<B> + ModuleSnapshot<B>>(
    mut module: M,
    path: &Path,
) -> Result<M> {
    let mut store = SafetensorsStore::from_file(path);
    let result = module
        .load_from(&mut store)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("reading {}", path.display()))?;
    if !result.missing.is_empty() || !result.errors.is_empty() {
        anyhow::bail!(
            "{}: does not match the model config (missing {:?}, errors {:?})",
            path.display(),
            result.missing.iter().take(5).collect::<Vec<_>>(),
            result.errors.iter().take(5).collect::<Vec<_>>()
        );
    }
    Ok(module)
}

/// The ids of a module's float parameters in visiting order. Ids are random per process, so a
/// saved optimizer state is re-keyed through this order when a run resumes.
pub fn param_ids<B: Backend, M: Module<B>>(module: &M) -> Vec<ParamId> {
    struct Ids(Vec<ParamId>);
    impl<B: Backend> ModuleVisitor<B> for Ids {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            self.0.push(param.id);
        }
    }
    let mut ids = Ids(vec![]);
    module.visit(&mut ids);
    ids.0
}

/// Folder of the checkpoint of `step` inside a run folder.
pub fn checkpoint_dir(run_dir: &Path, step: u64) -> std::path::PathBuf {
    run_dir.join("checkpoints").join(format!("step-{step:08}"))
}

/// The newest complete checkpoint of a run (named by `checkpoints/LATEST`), if any.
pub fn latest_checkpoint(run_dir: &Path) -> Result<Option<std::path::PathBuf>> {
    let marker = run_dir.join("checkpoints").join("LATEST");
    if !marker.exists() {
        return Ok(None);
    }
    let name = std::fs::read_to_string(&marker)
        .with_context(|| format!("reading {}", marker.display()))?;
    let dir = run_dir.join("checkpoints").join(name.trim());
    if !dir.join("model.safetensors").exists() {
        anyhow::bail!(
            "{} names {}, which has no model.safetensors",
            marker.display(),
            dir.display()
        );
    }
    Ok(Some(dir))
}
