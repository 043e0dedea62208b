//! `kind = "niah_multi_key"`: RULER's multi-key needle in a haystack: `n_keys` keys, each with its own value, hidden in the
//! haystack; the question asks for one of them, so the others are distractors the model must
//! tell apart by key.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use rand::{Rng, RngCore};
use serde::{Deserialize, Serialize};

use super::needles::{niah_fits, niah_prompt, NiahShape, MAX_NIAH_NEEDLES};
use super::task_prompt::EvalTask;
use super::words::NeedleValue;
use super::{Sample, SyntheticTask, TaskContext, TaskPrompt};

/// Settings of the `niah_multi_key` task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NiahMultiKeyTask {
    /// Keys in the haystack, each with one value; one is asked for, the rest are distractors.
    pub n_keys: usize,
    /// What the needles' values are: `"number"` (seven digits), `"uuid"` or `"word"`.
    pub value: NeedleValue,
    /// Haystack text: a file, or a folder whose `*.txt` / `*.md` files are read in sorted
    /// order (relative to the config file), repeated or cut to length. Absent: the passkey
    /// filler. Needle keys and values never occur in it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub haystack: Option<PathBuf>,
}

impl Default for NiahMultiKeyTask {
    /// 4 needles of seven-digit numbers in the filler (RULER's setting).
    fn default() -> Self {
        Self {
            n_keys: 4,
            value: NeedleValue::Number,
            haystack: None,
        }
    }
}

impl NiahMultiKeyTask {
    fn shape(&self) -> NiahShape {
        NiahShape {
            keys: self.n_keys,
            values: 1,
            queries: 1,
        }
    }
}

impl SyntheticTask for NiahMultiKeyTask {
    fn name(&self) -> &'static str {
        "niah_multi_key"
    }

    fn validate(&self, key: &str) -> Result<()> {
        let n = self.n_keys;
        if !(2..=MAX_NIAH_NEEDLES).contains(&n) {
            bail!("{key}.n_keys must be in 2..={MAX_NIAH_NEEDLES} (got {n})");
        }
        super::validate_haystack(&self.haystack, key)
    }

    fn haystack_path(&self) -> Option<&Path> {
        self.haystack.as_deref()
    }

    fn check_fits(&self, ctx: &TaskContext, len: usize) -> Result<()> {
        niah_fits(ctx, len, self.value, self.shape())
    }

    fn sample(&self, ctx: &TaskContext, len: usize, rng: &mut dyn RngCore) -> Result<Sample> {
        let depth = rng.random_range(0.0..=1.0);
        Ok(self.prompt(ctx, len, depth, rng)?.into_sample())
    }
}

impl EvalTask for NiahMultiKeyTask {
    fn prompt(
        &self,
        ctx: &TaskContext,
        len: usize,
        depth: f64,
        rng: &mut dyn RngCore,
    ) -> Result<TaskPrompt> {
        niah_prompt(ctx, len, self.value, self.shape(), depth, rng)
    }
}
