//! `kind = "niah_multi_query"`: RULER's multi-query needle in a haystack: `n_queries` keys, each with its own value; the
//! question asks for all of them at once and the answer lists their values in question order.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use rand::{Rng, RngCore};
use serde::{Deserialize, Serialize};

use super::needles::{niah_fits, niah_prompt, NiahShape, MAX_NIAH_NEEDLES};
use super::task_prompt::EvalTask;
use super::words::NeedleValue;
use super::{Sample, SyntheticTask, TaskContext, TaskPrompt};

/// Settings of the `niah_multi_query` task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NiahMultiQueryTask {
    /// Keys in the haystack, all asked for in one question.
    pub n_queries: usize,
    /// What the needles' values are: `"number"` (seven digits), `"uuid"` or `"word"`.
    pub value: NeedleValue,
    /// Haystack text: a file, or a folder whose `*.txt` / `*.md` files are read in sorted
    /// order (relative to the config file), repeated or cut to length. Absent: the passkey
    /// filler. Needle keys and values never occur in it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub haystack: Option<PathBuf>,
}

impl Default for NiahMultiQueryTask {
    /// 4 needles of seven-digit numbers in the filler (RULER's setting).
    fn default() -> Self {
        Self {
            n_queries: 4,
            value: NeedleValue::Number,
            haystack: None,
        }
    }
}

impl NiahMultiQueryTask {
    fn shape(&self) -> NiahShape {
        NiahShape {
            keys: self.n_queries,
            values: 1,
            queries: self.n_queries,
        }
    }
}

impl SyntheticTask for NiahMultiQueryTask {
    fn name(&self) -> &'static str {
        "niah_multi_query"
    }

    fn validate(&self, key: &str) -> Result<()> {
        let n = self.n_queries;
        if !(2..=MAX_NIAH_NEEDLES).contains(&n) {
            bail!("{key}.n_queries must be in 2..={MAX_NIAH_NEEDLES} (got {n})");
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

impl EvalTask for NiahMultiQueryTask {
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
