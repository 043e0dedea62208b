//! Model weights on disk and the layout of a run's checkpoints.
//!
//! Weights are safetensors through `burn-store`, so a checkpoint opens in any safetensors reader
//! (PyTorch, JAX) as well as here. A run keeps its checkpoints in `checkpoints/step-NNNNNNNN/`;
//! `checkpoints/LATEST` names the newest complete one. Finding a checkpoint to load never trusts
//! a single file: [`checkpoint_candidates`] lists `LATEST`'s choice first and every other step
//! folder after it, newest first, so a corrupt newest checkpoint (or a lost `LATEST`) falls back
//! to the previous one through [`first_usable`].

use std::path::{Path, PathBuf};

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

/// At most this many names are quoted per kind of mismatch, each cut to [`MAX_NAME`] characters:
/// a config mismatch touches hundreds of tensors and must still read as one short error.
const MAX_QUOTED: usize = 3;
const MAX_NAME: usize = 80;

fn quote(items: impl IntoIterator<Item = String>, total: usize) -> String {
    let mut out: Vec<String> = items
        .into_iter()
        .take(MAX_QUOTED)
        .map(|s| {
            if s.chars().count() > MAX_NAME {
                format!("{}…", s.chars().take(MAX_NAME).collect::<String>())
            } else {
                s
            }
        })
        .collect();
    if total > out.len() {
        out.push(format!("… {} more", total - out.len()));
    }
    out.join(", ")
}

/// Loads the parameters in `path` into `module` (which has the config's structure). A file
/// written for another model config is one short error (counts and a few names), not a dump of
/// every tensor.
pub fn load_weights<B: Backend, M: Module<B> + ModuleSnapshot<B>>(
    mut module: M,
    path: &Path,
) -> Result<M> {
    // Validation and partial loads are checked here, so that the error can be summarised.
    let mut store = SafetensorsStore::from_file(path)
        .validate(false)
        .allow_partial(true);
    let result = module.load_from(&mut store).map_err(|e| {
        let msg = e.to_string();
        let first = msg.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        anyhow::anyhow!(
            "reading {}: {} (truncated or not a safetensors file?)",
            path.display(),
            first.chars().take(200).collect::<String>()
        )
    })?;
    if !result.missing.is_empty() || !result.errors.is_empty() || !result.unused.is_empty() {
        let mut parts = vec![];
        if !result.missing.is_empty() {
            parts.push(format!(
                "{} tensors missing ({})",
                result.missing.len(),
                quote(
                    result.missing.iter().map(|(p, _)| p.clone()),
                    result.missing.len()
                )
            ));
        }
        if !result.errors.is_empty() {
            parts.push(format!(
                "{} tensors of the wrong shape or type ({})",
                result.errors.len(),
                quote(
                    result.errors.iter().map(|e| e.to_string()),
                    result.errors.len()
                )
            ));
        }
        if !result.unused.is_empty() {
            parts.push(format!(
                "{} tensors the model does not have ({})",
                result.unused.len(),
                quote(result.unused.iter().cloned(), result.unused.len())
            ));
        }
        anyhow::bail!(
            "{} was written for a different model config: {}",
            path.display(),
            parts.join("; ")
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

/// The `checkpoints` folder of a run folder.
pub fn checkpoints_dir(run_dir: &Path) -> PathBuf {
    run_dir.join("checkpoints")
}

/// Folder of the checkpoint of `step` inside a run folder.
pub fn checkpoint_dir(run_dir: &Path, step: u64) -> PathBuf {
    checkpoints_dir(run_dir).join(format!("step-{step:08}"))
}

/// The step of a checkpoint folder name `step-N` (digits only), else `None`.
pub fn parse_step_dir(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("step-")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Every `step-N` folder of a run, sorted by step (oldest first). Whether each is complete is
/// not checked here.
pub fn step_dirs(run_dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let dir = checkpoints_dir(run_dir);
    if !dir.exists() {
        return Ok(vec![]);
    }
    let mut out = vec![];
    for entry in std::fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))? {
        let path = entry
            .with_context(|| format!("listing {}", dir.display()))?
            .path();
        let step = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(parse_step_dir);
        if let (Some(step), true) = (step, path.is_dir()) {
            out.push((step, path));
        }
    }
    out.sort();
    Ok(out)
}

/// Whether a run folder holds any checkpoint, complete or not (`LATEST` or a `step-N` folder):
/// a new run must not start there.
pub fn has_checkpoints(run_dir: &Path) -> Result<bool> {
    Ok(checkpoints_dir(run_dir).join("LATEST").exists() || !step_dirs(run_dir)?.is_empty())
}

/// The checkpoint folders to try when loading, in order: the one `checkpoints/LATEST` names
/// (if it names an existing folder), then every other `step-N` folder, newest first. Empty when
/// the run has no checkpoint.
pub fn checkpoint_candidates(run_dir: &Path) -> Result<Vec<PathBuf>> {
    let marker = checkpoints_dir(run_dir).join("LATEST");
    let mut out = vec![];
    if marker.exists() {
        let name = std::fs::read_to_string(&marker)
            .with_context(|| format!("reading {}", marker.display()))?;
        let named = checkpoints_dir(run_dir).join(name.trim());
        // A LATEST naming something else than a step folder (edited by hand, or garbage) is
        // ignored in favour of the folders themselves.
        if parse_step_dir(name.trim()).is_some() && named.is_dir() {
            out.push(named);
        }
    }
    for (_, dir) in step_dirs(run_dir)?.into_iter().rev() {
        if !out.contains(&dir) {
            out.push(dir);
        }
    }
    Ok(out)
}

/// Loads the first usable checkpoint of `run_dir` with `load`, trying [`checkpoint_candidates`]
/// in order. Each one that fails is reported through `warn` (naming the folder and why) before
/// the next is tried, so a fallback is never silent. Errors when there is no checkpoint, or
/// when none loads (listing every failure).
pub fn first_usable<T>(
    run_dir: &Path,
    mut load: impl FnMut(&Path) -> Result<T>,
    mut warn: impl FnMut(&str),
) -> Result<(PathBuf, T)> {
    let candidates = checkpoint_candidates(run_dir)?;
    if candidates.is_empty() {
        anyhow::bail!(
            "{} has no checkpoint (no checkpoints/step-N folder)",
            run_dir.display()
        );
    }
    let mut failures = vec![];
    for (i, dir) in candidates.iter().enumerate() {
        match load(dir) {
            Ok(v) => return Ok((dir.clone(), v)),
            Err(e) => {
                let next = candidates
                    .get(i + 1)
                    .map(|n| format!("falling back to {}", n.display()))
                    .unwrap_or_else(|| "no older checkpoint left".into());
                warn(&format!(
                    "WARNING: checkpoint {} is unusable ({e:#}); {next}",
                    dir.display()
                ));
                failures.push(format!("{}: {e:#}", dir.display()));
            }
        }
    }
    anyhow::bail!(
        "no usable checkpoint in {}:\n  {}",
        run_dir.display(),
        failures.join("\n  ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("ramba-ckpt-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("checkpoints")).unwrap();
        d
    }

    #[test]
    fn step_folder_names_parse_strictly() {
        assert_eq!(parse_step_dir("step-00000012"), Some(12));
        assert_eq!(parse_step_dir("step-7"), Some(7));
        for bad in [
            "step-",
            "step-1a",
            "step--1",
            ".partial-step-00000001",
            "LATEST",
        ] {
            assert_eq!(parse_step_dir(bad), None, "{bad}");
        }
    }

    #[test]
    fn candidates_put_latest_first_then_newest() {
        let run = scratch("cand");
        for s in [3, 6, 9] {
            std::fs::create_dir_all(checkpoint_dir(&run, s)).unwrap();
        }
        std::fs::create_dir_all(run.join("checkpoints/.partial-step-00000012")).unwrap();
        // No LATEST: newest first, and a missing LATEST is not "no checkpoint".
        let names = |v: Vec<PathBuf>| -> Vec<String> {
            v.iter()
                .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
                .collect()
        };
        assert!(has_checkpoints(&run).unwrap());
        assert_eq!(
            names(checkpoint_candidates(&run).unwrap()),
            ["step-00000009", "step-00000006", "step-00000003"]
        );
        std::fs::write(run.join("checkpoints/LATEST"), "step-00000006").unwrap();
        assert_eq!(
            names(checkpoint_candidates(&run).unwrap()),
            ["step-00000006", "step-00000009", "step-00000003"]
        );
        // The fallback reports every failure before the one that loads.
        let mut warnings = vec![];
        let (dir, step) = first_usable(
            &run,
            |d| {
                let s = parse_step_dir(&d.file_name().unwrap().to_string_lossy()).unwrap();
                anyhow::ensure!(s == 3, "corrupt");
                Ok(s)
            },
            |w| warnings.push(w.to_string()),
        )
        .unwrap();
        assert_eq!((step, dir), (3, checkpoint_dir(&run, 3)));
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings[0].contains("step-00000006") && warnings[0].contains("corrupt"));
        let empty = scratch("empty");
        assert!(!has_checkpoints(&empty).unwrap());
        let e = first_usable(&empty, |_| Ok(()), |_| {}).unwrap_err();
        assert!(format!("{e:#}").contains("no checkpoint"), "{e:#}");
    }
}
