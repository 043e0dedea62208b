//! `kind = "multi_key"`: several pass keys, each filed under a word, in the filler; the
//! question asks for one word's key, so the model must retrieve by content, not by position.

use anyhow::{bail, Result};
use rand::{Rng, RngCore};
use serde::{Deserialize, Serialize};

use super::{
    answer_text, Needle, Sample, SyntheticTask, TaskContext, DEFAULT_MAX_KEY, DEFAULT_MIN_KEY,
};

/// Names the needles of the multi-key task are filed under.
pub const MULTI_KEY_WORDS: [&str; 32] = [
    "apple", "river", "falcon", "marble", "candle", "forest", "copper", "violet", "harbor",
    "pepper", "meadow", "silver", "rocket", "garden", "lantern", "walnut", "canyon", "ember",
    "glacier", "island", "jasmine", "kettle", "lemon", "mirror", "nickel", "orchid", "pebble",
    "quartz", "saddle", "thunder", "velvet", "willow",
];

/// Settings of the multi-key task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MultiKeyTask {
    /// Needles per sample, each under a different word of [`MULTI_KEY_WORDS`].
    pub n_keys: usize,
}

impl Default for MultiKeyTask {
    fn default() -> Self {
        Self { n_keys: 4 }
    }
}

impl SyntheticTask for MultiKeyTask {
    fn name(&self) -> &'static str {
        "multi_key"
    }

    fn validate(&self, key: &str) -> Result<()> {
        let n_keys = self.n_keys;
        if n_keys == 0 || n_keys > MULTI_KEY_WORDS.len() {
            bail!(
                "{key}.n_keys must be in 1..={} (got {n_keys})",
                MULTI_KEY_WORDS.len()
            );
        }
        Ok(())
    }

    fn check_fits(&self, ctx: &TaskContext, len: usize) -> Result<()> {
        let n_keys = self.n_keys;
        let mut words: Vec<&str> = MULTI_KEY_WORDS.to_vec();
        words.sort_by_key(|w| std::cmp::Reverse(w.len()));
        let keys = vec![DEFAULT_MAX_KEY; n_keys];
        multi_key_from(ctx, len, &words[..n_keys], &keys, &vec![0.5; n_keys], 0).map(|_| ())
    }

    fn sample(&self, ctx: &TaskContext, len: usize, rng: &mut dyn RngCore) -> Result<Sample> {
        let n_keys = self.n_keys;
        let words: Vec<&str> = rand::seq::index::sample(rng, MULTI_KEY_WORDS.len(), n_keys)
            .into_iter()
            .map(|i| MULTI_KEY_WORDS[i])
            .collect();
        let keys: Vec<u64> = (0..n_keys)
            .map(|_| rng.random_range(DEFAULT_MIN_KEY..=DEFAULT_MAX_KEY))
            .collect();
        let depths: Vec<f64> = (0..n_keys).map(|_| rng.random_range(0.0..=1.0)).collect();
        let query = rng.random_range(0..n_keys);
        multi_key_from(ctx, len, &words, &keys, &depths, query)
    }
}

/// The instruction, the filler with `words[i]`'s key sentence at `depths[i]`, and the
/// question for `words[query]`, answered.
fn multi_key_from(
    ctx: &TaskContext,
    len: usize,
    words: &[&str],
    keys: &[u64],
    depths: &[f64],
    query: usize,
) -> Result<Sample> {
    let tok = ctx.tok.as_ref();
    let needles: Vec<Needle> = words
        .iter()
        .zip(keys)
        .zip(depths)
        .map(|((w, k), &depth)| Needle {
            depth,
            tokens: tok.encode(&format!(" The pass key for {w} is {k}.")),
        })
        .collect();
    let w = words[query];
    let question = tok.encode(&format!(
        " What is the pass key for {w}? The pass key for {w} is"
    ));
    let answer = tok.encode(&answer_text(keys[query]));
    let Some((prompt, _)) = ctx.parts.haystack(
        len,
        &ctx.parts.instruction,
        &needles,
        &question,
        answer.len(),
    ) else {
        bail!(
            "multi_key with {} keys does not fit in {len} tokens with tokenizer {}",
            words.len(),
            tok.name()
        );
    };
    Ok(Sample::with_answer(prompt, &answer))
}
