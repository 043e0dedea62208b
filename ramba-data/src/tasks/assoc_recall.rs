//! `kind = "assoc_recall"`: `key: value` pairs, the filler, then one key whose value must be
//! recalled (associative recall, as in the Zoology / H3 benchmarks, at long range).

use anyhow::{bail, Result};
use rand::{Rng, RngCore};
use serde::{Deserialize, Serialize};

use super::{Sample, SyntheticTask, TaskContext};

/// Upper bound on `assoc_recall.n_pairs`: keys are distinct 4-letter words, and far more
/// pairs than this could never fit a realistic window anyway.
pub const MAX_ASSOC_PAIRS: usize = 10_000;

/// Settings of the associative-recall task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AssocRecallTask {
    /// Pairs per sample.
    pub n_pairs: usize,
}

impl Default for AssocRecallTask {
    fn default() -> Self {
        Self { n_pairs: 16 }
    }
}

impl SyntheticTask for AssocRecallTask {
    fn name(&self) -> &'static str {
        "assoc_recall"
    }

    fn validate(&self, key: &str) -> Result<()> {
        let n_pairs = self.n_pairs;
        if n_pairs == 0 || n_pairs > MAX_ASSOC_PAIRS {
            bail!("{key}.n_pairs must be in 1..={MAX_ASSOC_PAIRS} (got {n_pairs})");
        }
        Ok(())
    }

    fn check_fits(&self, ctx: &TaskContext, len: usize) -> Result<()> {
        let n_pairs = self.n_pairs;
        let keys: Vec<String> = (0..n_pairs).map(|i| four_letters(i as u64)).collect();
        let values = vec![9999; n_pairs];
        assoc_from(ctx, len, &keys, &values, 0).map(|_| ())
    }

    fn sample(&self, ctx: &TaskContext, len: usize, rng: &mut dyn RngCore) -> Result<Sample> {
        let n_pairs = self.n_pairs;
        // Distinct keys: a duplicate would make the query ambiguous.
        let mut seen = std::collections::HashSet::with_capacity(n_pairs);
        let mut keys: Vec<String> = Vec::with_capacity(n_pairs);
        while keys.len() < n_pairs {
            let k = four_letters(rng.random());
            if seen.insert(k.clone()) {
                keys.push(k);
            }
        }
        let values: Vec<u32> = (0..n_pairs)
            .map(|_| rng.random_range(1000..=9999))
            .collect();
        let query = rng.random_range(0..n_pairs);
        assoc_from(ctx, len, &keys, &values, query)
    }
}

/// The pairs, filler, then `keys[query]:` answered with its value.
fn assoc_from(
    ctx: &TaskContext,
    len: usize,
    keys: &[String],
    values: &[u32],
    query: usize,
) -> Result<Sample> {
    let tok = ctx.tok.as_ref();
    let mut head = Vec::new();
    for (k, v) in keys.iter().zip(values) {
        head.extend(tok.encode(&format!(" {k}: {v}.")));
    }
    let tail = tok.encode(&format!(" {}:", keys[query]));
    let answer = tok.encode(&format!(" {}", values[query]));
    ctx.padded(len, &head, &tail, &answer, "assoc_recall")
}

/// A 4-letter lowercase word from the low bits of `x`.
fn four_letters(x: u64) -> String {
    (0..4)
        .map(|i| char::from(b'a' + ((x >> (8 * i)) % 26) as u8))
        .collect()
}
