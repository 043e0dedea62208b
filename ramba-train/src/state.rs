//! Training checkpoints: `checkpoints/step-NNNNNNNN/` with `model.safetensors`, the two AdamW
//! states, and `state.json` (step, seed, parameter order). `checkpoints/LATEST` is rewritten
//! atomically after a checkpoint is complete, so a crash mid-save leaves the previous one valid.
//!
//! Nothing else needs saving for an exact resume: batches and memory-reset draws are pure
//! functions of (seed, step).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use burn::module::{AutodiffModule, ParamId};
use burn::optim::Optimizer;
use burn::record::{BinFileRecorder, FullPrecisionSettings, Recorder};
use burn::tensor::backend::AutodiffBackend;
use burn_store::ModuleSnapshot;
use ramba_core::checkpoint::{checkpoint_dir, param_ids, save_weights};
use serde::{Deserialize, Serialize};

use crate::optim::AdamWPair;

/// `state.json` of a checkpoint.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainState {
    /// Optimizer steps completed.
    pub step: u64,
    /// `run.seed` of the run.
    pub seed: u64,
    /// Tokens trained on so far.
    pub tokens: u64,
    /// Parameter ids in visiting order at save time (ids are per process; see
    /// [`ramba_core::checkpoint::param_ids`]).
    pub param_order: Vec<String>,
}

fn recorder() -> BinFileRecorder<FullPrecisionSettings> {
    BinFileRecorder::<FullPrecisionSettings>::new()
}

/// Saves a complete checkpoint and points `LATEST` at it; keeps the newest `keep`.
pub fn save_checkpoint<B, M, O>(
    run_dir: &Path,
    model: &M,
    optim: &AdamWPair<O>,
    state: &TrainState,
    keep: usize,
) -> Result<PathBuf>
where
    B: AutodiffBackend,
    M: AutodiffModule<B> + ModuleSnapshot<B>,
    O: Optimizer<M, B>,
{
    let dir = checkpoint_dir(run_dir, state.step);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    save_weights(model, &dir.join("model.safetensors"))?;
    for (name, o) in [
        ("optim_decay", &optim.decay),
        ("optim_no_decay", &optim.no_decay),
    ] {
        recorder()
            .record(o.to_record(), dir.join(name))
            .map_err(|e| anyhow::anyhow!("{e:?}"))
            .with_context(|| format!("writing {}", dir.join(name).display()))?;
    }
    let state = TrainState {
        param_order: param_ids(model).iter().map(|id| id.to_string()).collect(),
        ..state.clone()
    };
    std::fs::write(
        dir.join("state.json"),
        serde_json::to_string_pretty(&state)?,
    )?;

    let checkpoints = run_dir.join("checkpoints");
    let tmp = checkpoints.join("LATEST.tmp");
    std::fs::write(&tmp, dir.file_name().unwrap().to_string_lossy().as_bytes())?;
    std::fs::rename(&tmp, checkpoints.join("LATEST"))?;

    let mut old: Vec<PathBuf> = std::fs::read_dir(&checkpoints)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_dir()
                && p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("step-"))
        })
        .collect();
    old.sort();
    let excess = old.len().saturating_sub(keep);
    for p in old.into_iter().take(excess) {
        std::fs::remove_dir_all(&p)
            .with_context(|| format!("removing old checkpoint {}", p.display()))?;
    }
    Ok(dir)
}

/// The AdamW optimizer type of a model `M` on backend `B`.
pub type AdamWOptim<M, B> = burn::optim::adaptor::OptimizerAdaptor<burn::optim::AdamW, M, B>;

/// Loads the optimizer states of checkpoint `dir` into `optim`, re-keyed to `model`'s ids.
pub fn load_optimizer<B, M>(
    dir: &Path,
    model: &M,
    optim: AdamWPair<AdamWOptim<M, B>>,
    state: &TrainState,
) -> Result<AdamWPair<AdamWOptim<M, B>>>
where
    B: AutodiffBackend,
    M: AutodiffModule<B>,
{
    let now = param_ids(model);
    if now.len() != state.param_order.len() {
        anyhow::bail!(
            "{}: the checkpoint has {} parameters, the model {}",
            dir.display(),
            state.param_order.len(),
            now.len()
        );
    }
    let map: HashMap<String, ParamId> = state.param_order.iter().cloned().zip(now).collect();
    let device = Default::default();
    let load = |o: AdamWOptim<M, B>, name: &str| -> Result<AdamWOptim<M, B>> {
        let path = dir.join(name);
        let record: <AdamWOptim<M, B> as Optimizer<M, B>>::Record = recorder()
            .load(path.clone(), &device)
            .map_err(|e| anyhow::anyhow!("{e:?}"))
            .with_context(|| format!("reading {}", path.display()))?;
        let rekeyed = record
            .into_iter()
            .map(|(id, r)| {
                map.get(&id.to_string())
                    .map(|new| (*new, r))
                    .with_context(|| format!("{}: unknown parameter {id}", path.display()))
            })
            .collect::<Result<_>>()?;
        Ok(o.load_record(rekeyed))
    };
    Ok(AdamWPair {
        decay: load(optim.decay, "optim_decay")?,
        no_decay: load(optim.no_decay, "optim_no_decay")?,
    })
}

/// Reads `state.json` of a checkpoint.
pub fn read_state(dir: &Path) -> Result<TrainState> {
    let path = dir.join("state.json");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}
