//! Generation through the streaming path: prompts are prefilled in segments (so their length is
//! bounded by memory for the chunk store, not by one forward pass), then decoded one step at a
//! time, greedy or sampled with temperature and top-p.

use anyhow::{ensure, Result};
use burn::prelude::*;
use ramba_core::model::{LanguageModel, StreamState};
use ramba_core::ops::RambaBackend;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// How the next token is picked from the logits.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sampling {
    /// 0: greedy (the most likely token); else the logits are divided by it before the softmax.
    pub temperature: f64,
    /// Nucleus sampling: draw from the fewest most likely tokens whose probabilities sum to at
    /// least `top_p` (1: from all).
    pub top_p: f64,
    /// Seed of the draws.
    pub seed: u64,
}

impl Sampling {
    /// Greedy decoding.
    pub fn greedy() -> Self {
        Self {
            temperature: 0.0,
            top_p: 1.0,
            seed: 0,
        }
    }
}

/// Picks tokens by a [`Sampling`], one row of logits at a time.
#[derive(Debug)]
pub struct Sampler {
    sampling: Sampling,
    rng: ChaCha8Rng,
}

impl Sampler {
    /// Checks the settings: `temperature ≥ 0`, `0 < top_p ≤ 1`.
    pub fn new(sampling: Sampling) -> Result<Self> {
        ensure!(
            sampling.temperature.is_finite() && sampling.temperature >= 0.0,
            "--temperature must be a number ≥ 0 (got {})",
            sampling.temperature
        );
        ensure!(
            sampling.top_p > 0.0 && sampling.top_p <= 1.0,
            "--top-p must be in (0, 1] (got {})",
            sampling.top_p
        );
        Ok(Self {
            sampling,
            rng: ChaCha8Rng::seed_from_u64(sampling.seed),
        })
    }

    /// The next token from one row of logits.
    pub fn pick(&mut self, logits: &[f32]) -> u32 {
        if self.sampling.temperature == 0.0 {
            return argmax(logits);
        }
        let t = self.sampling.temperature;
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        let mut probs: Vec<(u32, f64)> = logits
            .iter()
            .enumerate()
            .map(|(i, &l)| (i as u32, ((l as f64 - max) / t).exp()))
            .collect();
        let total: f64 = probs.iter().map(|p| p.1).sum();
        probs.sort_by(|a, b| b.1.total_cmp(&a.1));
        // The nucleus: the most likely tokens until their mass reaches top_p.
        let mut kept = 0;
        let mut mass = 0.0;
        for p in &probs {
            kept += 1;
            mass += p.1 / total;
            if mass >= self.sampling.top_p {
                break;
            }
        }
        let nucleus = &probs[..kept];
        let sum: f64 = nucleus.iter().map(|p| p.1).sum();
        let mut u = self.rng.random::<f64>() * sum;
        for &(id, p) in nucleus {
            if u < p {
                return id;
            }
            u -= p;
        }
        nucleus[kept - 1].0
    }
}

/// The index of the largest value (the first on ties).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] {
            best = i;
        }
    }
    best as u32
}

/// Positions `range` of equal-length `rows` as a `[rows, len]` id tensor.
pub fn id_tensor<B: Backend>(
    rows: &[&[u32]],
    range: std::ops::Range<usize>,
    device: &B::Device,
) -> Tensor<B, 2, Int> {
    let ids: Vec<i64> = rows
        .iter()
        .flat_map(|r| r[range.clone()].iter().map(|&t| t as i64))
        .collect();
    Tensor::from_data(
        TensorData::new(ids, [rows.len(), range.len()]).convert::<B::IntElem>(),
        device,
    )
}

/// `[rows, vocab]` logits as one host vector per row.
pub fn host_rows<B: Backend>(logits: Tensor<B, 2>) -> Vec<Vec<f32>> {
    let [rows, vocab] = logits.dims();
    let flat: Vec<f32> = logits
        .into_data()
        .convert::<f32>()
        .to_vec()
        .expect("float data");
    (0..rows)
        .map(|r| flat[r * vocab..(r + 1) * vocab].to_vec())
        .collect()
}

/// Prefills positions `0..upto` of equal-length `rows` into `state`, `segment` tokens per
/// call; `progress(done)` after each call. Returns the last position's logits
/// `[rows, vocab]`.
pub fn prefill_rows<B: RambaBackend>(
    model: &LanguageModel<B>,
    rows: &[&[u32]],
    upto: usize,
    segment: usize,
    state: &mut StreamState<B>,
    device: &B::Device,
    mut progress: impl FnMut(usize),
) -> Result<Tensor<B, 2>> {
    ensure!(segment > 0, "the prefill segment must be > 0 tokens");
    ensure!(upto > 0, "nothing to prefill: an empty prompt");
    ensure!(
        rows.iter().all(|r| r.len() >= upto),
        "prefill: a row is shorter than {upto} tokens"
    );
    let mut at = 0;
    let mut last = None;
    while at < upto {
        let end = (at + segment).min(upto);
        last = Some(model.prefill_last(id_tensor::<B>(rows, at..end, device), state));
        at = end;
        progress(at);
    }
    Ok(last.expect("upto > 0"))
}

/// Decodes up to `max_tokens` tokens per row after a prefill whose last logits are `logits`,
/// one sampler per row. `on_tokens` sees each step's tokens and returns whether to go on.
pub fn decode<B: RambaBackend>(
    model: &LanguageModel<B>,
    state: &mut StreamState<B>,
    mut logits: Tensor<B, 2>,
    max_tokens: usize,
    samplers: &mut [Sampler],
    device: &B::Device,
    mut on_tokens: impl FnMut(&[u32]) -> bool,
) -> Vec<Vec<u32>> {
    let rows = logits.dims()[0];
    assert_eq!(samplers.len(), rows, "one sampler per row");
    let mut out = vec![Vec::new(); rows];
    for n in 0..max_tokens {
        let picked: Vec<u32> = host_rows(logits)
            .iter()
            .zip(samplers.iter_mut())
            .map(|(row, s)| s.pick(row))
            .collect();
        for (o, &t) in out.iter_mut().zip(&picked) {
            o.push(t);
        }
        if !on_tokens(&picked) || n + 1 == max_tokens {
            break;
        }
        let ids: Vec<i64> = picked.iter().map(|&t| t as i64).collect();
        let next = Tensor::<B, 1, Int>::from_data(
            TensorData::new(ids, [rows]).convert::<B::IntElem>(),
            device,
        );
        logits = model.step(next, state);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_takes_the_most_likely_token() {
        let mut s = Sampler::new(Sampling::greedy()).unwrap();
        assert_eq!(s.pick(&[0.1, 2.0, -1.0, 2.0]), 1);
    }

    #[test]
    fn top_p_draws_only_from_the_nucleus() {
        let sampling = Sampling {
            temperature: 1.0,
            top_p: 0.5,
            seed: 3,
        };
        let mut s = Sampler::new(sampling).unwrap();
        // Token 2 alone holds > 50% of the mass: the nucleus is {2}.
        let logits = [0.0, 0.5, 3.0, 0.2];
        assert!((0..50).all(|_| s.pick(&logits) == 2));
        // With top_p = 1 every token is drawn sometimes.
        let mut all = Sampler::new(Sampling {
            top_p: 1.0,
            ..sampling
        })
        .unwrap();
        let flat = [0.0f32; 4];
        let mut seen = [false; 4];
        for _ in 0..200 {
            seen[all.pick(&flat) as usize] = true;
        }
        assert!(seen.iter().all(|&x| x), "{seen:?}");
    }

    #[test]
    fn bad_settings_name_the_flag() {
        let bad = |temperature, top_p| {
            let e = Sampler::new(Sampling {
                temperature,
                top_p,
                seed: 0,
            })
            .unwrap_err();
            format!("{e:#}")
        };
        assert!(bad(-1.0, 1.0).contains("--temperature"));
        assert!(bad(f64::NAN, 1.0).contains("--temperature"));
        assert!(bad(1.0, 0.0).contains("--top-p"));
        assert!(bad(1.0, 1.5).contains("--top-p"));
    }
}
