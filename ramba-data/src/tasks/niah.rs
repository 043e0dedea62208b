//! `kind = "niah"`: RULER's single needle in a haystack. One key's value (a number, a UUID or
//! a word) hidden in the filler or in text from files, asked for at the end.

use std::path::{Path, PathBuf};

use anyhow::Result;
use rand::{Rng, RngCore};
use serde::{Deserialize, Serialize};

use super::needles::{niah_fits, niah_prompt, NiahShape};
use super::task_prompt::EvalTask;
use super::words::NeedleValue;
use super::{Sample, SyntheticTask, TaskContext, TaskPrompt};

/// Settings of the single-needle task.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NiahTask {
    /// What the needle's value is: `"number"` (seven digits), `"uuid"` or `"word"`.
    pub value: NeedleValue,
    /// Haystack text: a file, or a folder whose `*.txt` / `*.md` files are read in sorted
    /// order (relative to the config file), repeated or cut to length. Absent: the passkey
    /// filler. Needle keys and values never occur in it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub haystack: Option<PathBuf>,
}

const SHAPE: NiahShape = NiahShape {
    keys: 1,
    values: 1,
    queries: 1,
};

impl SyntheticTask for NiahTask {
    fn name(&self) -> &'static str {
        "niah"
    }

    fn validate(&self, key: &str) -> Result<()> {
        super::validate_haystack(&self.haystack, key)
    }

    fn haystack_path(&self) -> Option<&Path> {
        self.haystack.as_deref()
    }

    fn check_fits(&self, ctx: &TaskContext, len: usize) -> Result<()> {
        niah_fits(ctx, len, self.value, SHAPE)
    }

    fn sample(&self, ctx: &TaskContext, len: usize, rng: &mut dyn RngCore) -> Result<Sample> {
        let depth = rng.random_range(0.0..=1.0);
        Ok(self.prompt(ctx, len, depth, rng)?.into_sample())
    }
}

impl EvalTask for NiahTask {
    fn prompt(
        &self,
        ctx: &TaskContext,
        len: usize,
        depth: f64,
        rng: &mut dyn RngCore,
    ) -> Result<TaskPrompt> {
        niah_prompt(ctx, len, self.value, SHAPE, depth, rng)
    }
}
