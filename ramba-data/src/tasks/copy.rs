//! `kind = "copy"`: a random letter string, the filler, then [`COPY_PROMPT`] and the string
//! again: verbatim recall of a span, the skill chunk retrieval is for.

use anyhow::{bail, Result};
use rand::{Rng, RngCore};
use serde::{Deserialize, Serialize};

use super::{Sample, SyntheticTask, TaskContext};

/// Marker before the repeated string of the copy task.
pub const COPY_PROMPT: &str = " Copy:";

/// Settings of the copy task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CopyTask {
    /// Letters in the string to copy.
    pub span: usize,
}

impl Default for CopyTask {
    fn default() -> Self {
        Self { span: 32 }
    }
}

impl SyntheticTask for CopyTask {
    fn name(&self) -> &'static str {
        "copy"
    }

    fn validate(&self, key: &str) -> Result<()> {
        if self.span == 0 {
            bail!("{key}.span must be > 0");
        }
        Ok(())
    }

    fn check_fits(&self, ctx: &TaskContext, len: usize) -> Result<()> {
        copy_from(ctx, len, &"z".repeat(self.span)).map(|_| ())
    }

    fn sample(&self, ctx: &TaskContext, len: usize, rng: &mut dyn RngCore) -> Result<Sample> {
        let s: String = (0..self.span)
            .map(|_| char::from(b'a' + rng.random_range(0..26u8)))
            .collect();
        copy_from(ctx, len, &s)
    }
}

/// ` s`, filler, [`COPY_PROMPT`], then ` s` as the answer.
fn copy_from(ctx: &TaskContext, len: usize, s: &str) -> Result<Sample> {
    let tok = ctx.tok.as_ref();
    let text = tok.encode(&format!(" {s}"));
    let tail = tok.encode(COPY_PROMPT);
    ctx.padded(len, &text, &tail, &text, "copy")
}
