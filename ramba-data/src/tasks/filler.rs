//! `kind = "filler"`: the passkey filler sentences repeated, the haystack without a needle.
//! Plain text the model must model; also what a row falls back to when a sample cannot be built.

use anyhow::Result;
use rand::RngCore;
use serde::{Deserialize, Serialize};

use super::{Sample, SyntheticTask, TaskContext};

/// Settings of the filler task: none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FillerTask {}

impl SyntheticTask for FillerTask {
    fn name(&self) -> &'static str {
        "filler"
    }

    fn validate(&self, _key: &str) -> Result<()> {
        Ok(())
    }

    fn check_fits(&self, _ctx: &TaskContext, _len: usize) -> Result<()> {
        Ok(())
    }

    /// `len` filler tokens starting at a random sentence and token offset; no answer.
    fn sample(&self, ctx: &TaskContext, len: usize, rng: &mut dyn RngCore) -> Result<Sample> {
        Ok(Sample {
            tokens: ctx.parts.filler.window(len, rng),
            answers: Vec::new(),
        })
    }
}
