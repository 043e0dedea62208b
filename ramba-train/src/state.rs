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
use ramba_core::checkpoint::{checkpoint_dir, checkpoints_dir, param_ids, save_weights, step_dirs};
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
    /// The step an anneal started at (`train.anneal_at_answer_acc`), so that a resumed run
    /// continues it rather than waiting for the trigger again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anneal_from: Option<u64>,
}

fn recorder() -> BinFileRecorder<FullPrecisionSettings> {
    BinFileRecorder::<FullPrecisionSettings>::new()
}

/// Saves a complete checkpoint and points `LATEST` at it, then prunes (see [`prune`]).
///
/// Atomic: everything is written into `checkpoints/.partial-step-N/`, which is renamed to
/// `step-N` only once complete, and `LATEST` is replaced (write + rename) after that. A kill at
/// any point leaves the previous checkpoint valid and at worst a `.partial-*` folder, which the
/// next save of that step clears. A stale `step-N` (left by an older version, or by a run that
/// fell back to an earlier checkpoint and is now re-running step N) is replaced.
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
    let name = dir
        .file_name()
        .context("checkpoint folder has no name")?
        .to_string_lossy()
        .into_owned();
    let checkpoints = checkpoints_dir(run_dir);
    let partial = checkpoints.join(format!(".partial-{name}"));
    if partial.exists() {
        std::fs::remove_dir_all(&partial)
            .with_context(|| format!("clearing the leftover {}", partial.display()))?;
    }
    std::fs::create_dir_all(&partial).with_context(|| format!("creating {}", partial.display()))?;
    save_weights(model, &partial.join("model.safetensors"))?;
    for (file, o) in [
        ("optim_decay", &optim.decay),
        ("optim_no_decay", &optim.no_decay),
    ] {
        recorder()
            .record(o.to_record(), partial.join(file))
            .map_err(|e| anyhow::anyhow!("{e:?}"))
            .with_context(|| format!("writing {}", partial.join(file).display()))?;
    }
    let state = TrainState {
        param_order: param_ids(model).iter().map(|id| id.to_string()).collect(),
        ..state.clone()
    };
    std::fs::write(
        partial.join("state.json"),
        serde_json::to_string_pretty(&state)?,
    )
    .with_context(|| format!("writing {}", partial.join("state.json").display()))?;

    if dir.exists() {
        // Moved aside first so that `step-N` is never half-deleted: either the stale folder or
        // the new one is there.
        let stale = checkpoints.join(format!(".stale-{name}"));
        if stale.exists() {
            std::fs::remove_dir_all(&stale)
                .with_context(|| format!("removing {}", stale.display()))?;
        }
        std::fs::rename(&dir, &stale)
            .with_context(|| format!("moving the stale {} aside", dir.display()))?;
        std::fs::remove_dir_all(&stale)
            .with_context(|| format!("removing the stale {}", stale.display()))?;
    }
    std::fs::rename(&partial, &dir)
        .with_context(|| format!("renaming {} to {}", partial.display(), dir.display()))?;

    let tmp = checkpoints.join("LATEST.tmp");
    std::fs::write(&tmp, name.as_bytes()).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, checkpoints.join("LATEST"))
        .with_context(|| format!("writing {}", checkpoints.join("LATEST").display()))?;
    prune(run_dir, &state, keep)?;
    Ok(dir)
}

/// Keeps the newest `keep` checkpoints of this run, the one just saved (`saved`) always among
/// them. Only checkpoints this run wrote are candidates: `step-N` folders with `N` below the
/// saved step whose `state.json` reads and has this run's seed. Anything else (a folder of a
/// higher step, a corrupt or foreign one) is left alone: deleting by folder name alone once
/// removed every valid checkpoint because a corrupt `step-99999999` sorted last.
pub fn prune(run_dir: &Path, saved: &TrainState, keep: usize) -> Result<()> {
    let ours: Vec<PathBuf> = step_dirs(run_dir)?
        .into_iter()
        .filter(|(step, dir)| {
            *step < saved.step
                && read_state(dir).is_ok_and(|s| s.step == *step && s.seed == saved.seed)
        })
        .map(|(_, dir)| dir)
        .collect();
    // `keep - 1` older ones beside the one just saved.
    let excess = ours.len().saturating_sub(keep.saturating_sub(1));
    for p in ours.into_iter().take(excess) {
        std::fs::remove_dir_all(&p)
            .with_context(|| format!("removing old checkpoint {}", p.display()))?;
    }
    Ok(())
}

/// The AdamW optimizer type of a model `M` on backend `B` (its state is Burn's `AdamWState`,
/// so checkpoints of runs before the fused kernel load unchanged).
pub type AdamWOptim<M, B> =
    burn::optim::adaptor::OptimizerAdaptor<ramba_core::optim::FusedAdamW, M, B>;

/// Loads the optimizer states of checkpoint `dir` into `optim`, re-keyed to `model`'s ids, onto
/// `device` (the model's).
pub fn load_optimizer<B, M>(
    dir: &Path,
    model: &M,
    optim: AdamWPair<AdamWOptim<M, B>>,
    state: &TrainState,
    device: &B::Device,
) -> Result<AdamWPair<AdamWOptim<M, B>>>
where
    B: AutodiffBackend,
    B::InnerBackend: ramba_core::ops::RambaBackend,
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
    let load = |o: AdamWOptim<M, B>, name: &str| -> Result<AdamWOptim<M, B>> {
        let path = dir.join(name);
        // Burn's own message for a short file suggests a record-version mismatch; the usual
        // cause here is a truncated or corrupt file, so that is what the error says.
        let size = std::fs::metadata(path.with_extension("bin"))
            .map(|m| m.len())
            .with_context(|| format!("reading {}.bin", path.display()))?;
        let record: <AdamWOptim<M, B> as Optimizer<M, B>>::Record =
            recorder().load(path.clone(), device).map_err(|_| {
                anyhow::anyhow!(
                    "{}.bin ({size} bytes) is truncated or corrupt: it does not decode as an \
                     AdamW state of this model",
                    path.display()
                )
            })?;
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
