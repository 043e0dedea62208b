//! Greedy decoding of answers, the two ways the evaluations score them.
//!
//! * **Teacher-forced** ([`teacher_forced`]): one forward pass over `prompt + answer`; the
//!   argmax at every answer position and at the one after it. Greedy decoding reproduces
//!   the answer iff each of those is the next answer token, and it then stops iff the last
//!   one does not carry the answer on.
//! * **Free generation** ([`generate`]): what greedy decoding actually writes. It starts from
//!   the same teacher-forced pass (the greedy output agrees with the answer up to the first
//!   position where the argmax differs, so that prefix and the differing token come for
//!   free), then continues one token per step until the text holds a stop or the
//!   budget runs out. List answers in another order than the reference are only judged
//!   right this way.
//!
//! Continuation steps go through the streaming path (prefill, then one step per token), the
//! decoder [`crate::generate`] builds on.

use burn::prelude::*;
use ramba_core::model::LanguageModel;
use ramba_core::ops::RambaBackend;
use ramba_core::stream::ChunkStoreKind;

use crate::generate::{argmax, host_rows, id_tensor};

/// A prompt and the answer teacher forcing feeds after it.
pub trait Forced {
    /// The prompt's tokens.
    fn prompt(&self) -> &[u32];
    /// The reference answer's tokens.
    fn answer(&self) -> &[u32];
}

impl Forced for ramba_data::PasskeyPrompt {
    fn prompt(&self) -> &[u32] {
        &self.prompt
    }
    fn answer(&self) -> &[u32] {
        &self.answer
    }
}

impl Forced for ramba_data::TaskPrompt {
    fn prompt(&self) -> &[u32] {
        &self.prompt
    }
    fn answer(&self) -> &[u32] {
        &self.answer
    }
}

/// Argmax next-token predictions at positions `from..to` of each row of `tokens`
/// (`[rows, len]`, row-major).
fn argmax_rows<B: RambaBackend>(
    model: &LanguageModel<B>,
    tokens: &[u32],
    rows: usize,
    positions: std::ops::Range<usize>,
    device: &B::Device,
) -> Vec<Vec<u32>> {
    let len = tokens.len() / rows;
    let ids: Vec<i64> = tokens.iter().map(|&t| t as i64).collect();
    let input = Tensor::<B, 2, Int>::from_data(
        TensorData::new(ids, [rows, len]).convert::<B::IntElem>(),
        device,
    );
    let width = positions.len();
    let pred: Vec<i64> = model
        .forward(input)
        .slice([0..rows, positions])
        .argmax(2)
        .into_data()
        .convert::<i64>()
        .to_vec()
        .expect("argmax yields integer data");
    pred.chunks(width)
        .map(|r| r.iter().map(|&t| t as u32).collect())
        .collect()
}

/// For each prompt, the argmax predictions after each of its last prompt token and answer
/// tokens (`answer.len() + 1` of them), prompts of equal shape batched up to `batch_tokens`
/// tokens per forward pass.
pub fn teacher_forced<B: RambaBackend, P: Forced>(
    model: &LanguageModel<B>,
    prompts: &[P],
    batch_tokens: usize,
    device: &B::Device,
) -> Vec<Vec<u32>> {
    let shape = |p: &P| (p.prompt().len(), p.answer().len());
    let mut out = Vec::with_capacity(prompts.len());
    let mut i = 0;
    while i < prompts.len() {
        let (plen, alen) = shape(&prompts[i]);
        let len = plen + alen;
        let rows = (batch_tokens / len.max(1)).max(1);
        let group: Vec<&P> = prompts[i..]
            .iter()
            .take(rows)
            .take_while(|p| shape(p) == (plen, alen))
            .collect();
        i += group.len();
        let tokens: Vec<u32> = group
            .iter()
            .flat_map(|p| p.prompt().iter().chain(p.answer()).copied())
            .collect();
        out.extend(argmax_rows(
            model,
            &tokens,
            group.len(),
            plen - 1..plen + alen,
            device,
        ));
    }
    out
}

/// What greedy decoding writes up to and including its first deviation from `answer`, given
/// the teacher-forced predictions `pred` (`answer.len() + 1` tokens); the whole answer and
/// the token after it when there is no deviation.
pub fn greedy_prefix(answer: &[u32], pred: &[u32]) -> Vec<u32> {
    let agree = answer.iter().zip(pred).take_while(|(a, p)| a == p).count();
    answer[..agree]
        .iter()
        .copied()
        .chain(pred.get(agree).copied())
        .collect()
}

/// Greedy continuation of `prompt` whose first tokens are `start` (from [`greedy_prefix`]):
/// one token per step until `done` holds for the tokens so far or there are `budget` of
/// them. Returns the generated tokens.
///
/// Runs through the streaming path (one prefill of `prompt + start`, then one step per
/// token; [`crate::generate`] is the same generator with sampling), so a continuation costs
/// one token's work per step instead of the whole sequence again.
///
/// # Panics
/// If `prompt` is empty: there is nothing to continue (callers build non-empty prompts).
pub fn generate<B: RambaBackend>(
    model: &LanguageModel<B>,
    prompt: &[u32],
    start: Vec<u32>,
    budget: usize,
    done: impl Fn(&[u32]) -> bool,
    device: &B::Device,
) -> Vec<u32> {
    assert!(!prompt.is_empty(), "generate: an empty prompt");
    let mut out = start;
    if done(&out) || out.len() >= budget {
        return out;
    }
    let seq: Vec<u32> = prompt.iter().chain(&out).copied().collect();
    // Answers are generated for prompts within eval.max_context (longer cells are skipped
    // before): the chunk memory stays on the device and the prompt is one prefill.
    let mut state = model.stream_state(ChunkStoreKind::Device);
    let mut logits = model.prefill_last(id_tensor::<B>(&[&seq], 0..seq.len(), device), &mut state);
    loop {
        let next = argmax(&host_rows(logits)[0]);
        out.push(next);
        if done(&out) || out.len() >= budget {
            return out;
        }
        let id = Tensor::<B, 1, Int>::from_data(
            TensorData::new(vec![next as i64], [1]).convert::<B::IntElem>(),
            device,
        );
        logits = model.step(id, &mut state);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_prefix_stops_at_the_first_deviation() {
        assert_eq!(greedy_prefix(&[1, 2, 3], &[1, 2, 3, 9]), vec![1, 2, 3, 9]);
        assert_eq!(greedy_prefix(&[1, 2, 3], &[1, 5, 3, 9]), vec![1, 5]);
        assert_eq!(greedy_prefix(&[1, 2, 3], &[7, 2, 3, 9]), vec![7]);
    }
}
