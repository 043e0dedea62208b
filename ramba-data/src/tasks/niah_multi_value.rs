//! `kind = "niah_multi_value"`: RULER's multi-value needle in a haystack: one key filed with `n_values` different values,
//! each its own needle; the answer must list all of them.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use rand::{Rng, RngCore};
use serde::{Deserialize, Serialize};

use super::needles::{niah_fits, niah_prompt, NiahShape, MAX_NIAH_NEEDLES};
use super::task_prompt::EvalTask;
use super::words::NeedleValue;
use super::{Sample, SyntheticTask, TaskContext, TaskPrompt};

/// Settings of the `niah_multi_value` task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NiahMultiValueTask {
    /// Values filed under the one key, each its own needle; all must be answered.
    pub n_values: usize,
    /// What the needles' values are: `"number"` (seven digits), `"uuid"` or `"word"`.
    pub value: NeedleValue,
    /// Haystack text: a file, or a folder whose `*.txt` / `*.md` files are read in sorted
    /// order (relative to the config file), repeated or cut to length. Absent: the passkey
    /// filler. Needle keys and values never occur in it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub haystack: Option<PathBuf>,
}

impl Default for NiahMultiValueTask {
    /// 4 needles of seven-digit numbers in the filler (RULER's setting).
    fn default() -> Self {
        Self {
            n_values: 4,
            value: NeedleValue::Number,
            haystack: None,
        }
    }
}

impl NiahMultiValueTask {
    fn shape(&self) -> NiahShape {
        NiahShape {
            keys: 1,
            values: self.n_values,
            queries: 1,
        }
    }
}

impl SyntheticTask for NiahMultiValueTask {
    fn name(&self) -> &'static str {
        "niah_multi_value"
    }

    fn validate(&self, key: &str) -> Result<()> {
        let n = self.n_values;
        if !(2..=MAX_NIAH_NEEDLES).contains(&n) {
            bail!("{key}.n_values must be in 2..={MAX_NIAH_NEEDLES} (got {n})");
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

impl EvalTask for NiahMultiValueTask {
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
