//! Retrieval maps (`ramba-eval retrieval-map`): for each token of a prompt, which chunks each
//! retrieval group and head selected and with what weight, so a user can watch HSA find a
//! needle. JSON holds every token's slots; the PNG per (group, head) is a chunk × token map.

use std::path::Path;

use anyhow::{bail, Result};
use burn::prelude::*;
use ramba_core::model::LanguageModel;
use ramba_core::ops::RambaBackend;
use ramba_data::Tokenizer;
use ramba_report::{heatmap, write_json_pretty};
use serde::Serialize;

/// Most columns (token bins) and rows (chunk bins) a PNG has: beyond that cells would be
/// thinner than their borders; bins then average their tokens' weights.
pub const MAX_BINS: usize = 128;

/// One retrieval head's choices.
#[derive(Clone, Debug, Serialize)]
pub struct HeadMap {
    /// Per token: the selected chunk ids, most recent first (invalid slots left out).
    pub chunks: Vec<Vec<usize>>,
    /// Per token: the weights of those chunks.
    pub weights: Vec<Vec<f64>>,
}

/// The whole prompt's retrieval.
#[derive(Clone, Debug, Serialize)]
pub struct RetrievalMap {
    /// Prompt tokens.
    pub tokens: usize,
    /// Tokens per chunk.
    pub chunk_size: usize,
    /// Complete chunks of the prompt.
    pub n_chunks: usize,
    /// `groups[g][h]`: retrieval group `g`, KV head `h`.
    pub groups: Vec<Vec<HeadMap>>,
}

/// Runs the model's retrieval over `tokens`. Errors for models without HSA.
pub fn retrieval_map<B: RambaBackend>(
    model: &LanguageModel<B>,
    tokens: &[u32],
    chunk_size: usize,
    device: &B::Device,
) -> Result<RetrievalMap> {
    let ids: Vec<i64> = tokens.iter().map(|&t| t as i64).collect();
    let input = Tensor::<B, 2, Int>::from_data(
        TensorData::new(ids, [1, tokens.len()]).convert::<B::IntElem>(),
        device,
    );
    let Some(selections) = model.selections(input) else {
        bail!("this model has no HSA layers, so nothing is retrieved (arch mamba2 or transformer)");
    };
    let groups = selections
        .into_iter()
        .map(|sel| {
            let [_, seq, heads, k] = sel.indices.dims();
            let idx: Vec<i64> = sel
                .indices
                .into_data()
                .convert::<i64>()
                .to_vec()
                .expect("int data");
            let w: Vec<f64> = sel
                .weights
                .into_data()
                .convert::<f64>()
                .to_vec()
                .expect("float data");
            (0..heads)
                .map(|h| {
                    let slots = |t: usize| (0..k).map(move |s| (t * heads + h) * k + s);
                    HeadMap {
                        chunks: (0..seq)
                            .map(|t| {
                                slots(t)
                                    .filter(|&i| idx[i] >= 0)
                                    .map(|i| idx[i] as usize)
                                    .collect()
                            })
                            .collect(),
                        weights: (0..seq)
                            .map(|t| slots(t).filter(|&i| idx[i] >= 0).map(|i| w[i]).collect())
                            .collect(),
                    }
                })
                .collect()
        })
        .collect();
    Ok(RetrievalMap {
        tokens: tokens.len(),
        chunk_size,
        n_chunks: tokens.len() / chunk_size,
        groups,
    })
}

impl RetrievalMap {
    /// The chunk × token weights of one head, binned to at most [`MAX_BINS`] per axis: a cell
    /// is the weight its tokens gave its chunks together, averaged over the tokens (so with
    /// no binning, the weight that token gave that chunk); `None` where no token of the bin
    /// could see any chunk of it yet (the future).
    pub fn binned(&self, group: usize, head: usize) -> Vec<Vec<Option<f64>>> {
        let map = &self.groups[group][head];
        let (tb, cb) = self.bin_widths();
        let (cols, rows) = (self.tokens.div_ceil(tb), self.n_chunks.div_ceil(cb));
        let mut sum = vec![vec![0.0; cols]; rows];
        for (t, (chunks, weights)) in map.chunks.iter().zip(&map.weights).enumerate() {
            for (&c, &w) in chunks.iter().zip(weights) {
                sum[c / cb][t / tb] += w;
            }
        }
        (0..rows)
            .map(|r| {
                (0..cols)
                    .map(|col| {
                        // Token t sees chunk c once t ≥ (c + 1)·S: the bin's last token and
                        // its first chunk decide whether any pair of the cell is visible.
                        let last_token = ((col + 1) * tb).min(self.tokens) - 1;
                        let first_chunk = r * cb;
                        let visible = last_token >= (first_chunk + 1) * self.chunk_size;
                        let in_bin = (last_token + 1 - col * tb) as f64;
                        visible.then(|| sum[r][col] / in_bin)
                    })
                    .collect()
            })
            .collect()
    }

    /// Tokens per column and chunks per row of the PNG maps.
    fn bin_widths(&self) -> (usize, usize) {
        (
            self.tokens.div_ceil(MAX_BINS).max(1),
            self.n_chunks.div_ceil(MAX_BINS).max(1),
        )
    }

    /// For the last token: each head's chunks, weights and the text of the chunks.
    pub fn last_token_summary(&self, tok: &dyn Tokenizer, tokens: &[u32]) -> String {
        let mut out = String::new();
        let s = self.chunk_size;
        for (g, heads) in self.groups.iter().enumerate() {
            for (h, map) in heads.iter().enumerate() {
                out += &format!("group {g} head {h}, last token selected:\n");
                let (Some(chunks), Some(weights)) = (map.chunks.last(), map.weights.last()) else {
                    continue;
                };
                if chunks.is_empty() {
                    out += "  nothing (no complete chunk before it)\n";
                }
                for (&c, &w) in chunks.iter().zip(weights) {
                    let text = tok.decode(&tokens[c * s..(c + 1) * s]).replace('\n', " ");
                    out += &format!(
                        "  chunk {c:>5} (tokens {}..{}) weight {w:.3}: {text:?}\n",
                        c * s,
                        (c + 1) * s
                    );
                }
            }
        }
        out
    }

    /// Writes `{stem}.json` and `{stem}_g{group}_h{head}.png` per retrieval head into `dir`.
    pub fn write(&self, dir: &Path, stem: &str) -> Result<()> {
        write_json_pretty(dir.join(format!("{stem}.json")), self)?;
        let (tb, cb) = self.bin_widths();
        for g in 0..self.groups.len() {
            for h in 0..self.groups[g].len() {
                let values = self.binned(g, h);
                let cols = values.first().map_or(0, Vec::len);
                let x = sparse_ticks(cols, tb);
                let y = sparse_ticks(values.len(), cb);
                heatmap(
                    &dir.join(format!("{stem}_g{g}_h{h}.png")),
                    &format!(
                        "Retrieval weights (group {g}, head {h}; S = {})",
                        self.chunk_size
                    ),
                    "token position",
                    "chunk",
                    &x,
                    &y,
                    &values,
                )?;
            }
        }
        Ok(())
    }
}

/// Labels of `n` bins of `width` each: the first position of about every twelfth bin, blank
/// between (a label per column would overlap).
fn sparse_ticks(n: usize, width: usize) -> Vec<String> {
    let every = (n / 12).max(1);
    (0..n)
        .map(|i| {
            if i.is_multiple_of(every) {
                (i * width).to_string()
            } else {
                String::new()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Token `t` selects chunk `t - 1` with weight 1 (chunks of one token): the map has that
    /// weight on the diagonal, zeros where a visible chunk was not selected, and nothing
    /// where the chunk is not complete yet.
    #[test]
    fn cells_are_weights_and_the_future_is_empty() {
        let chunks = (0..4).map(|t| (0..t).rev().take(1).collect()).collect();
        let weights = (0..4usize).map(|t| vec![1.0; t.min(1)]).collect();
        let map = RetrievalMap {
            tokens: 4,
            chunk_size: 1,
            n_chunks: 4,
            groups: vec![vec![HeadMap { chunks, weights }]],
        };
        let b = map.binned(0, 0);
        assert_eq!(b[0], [None, Some(1.0), Some(0.0), Some(0.0)]);
        assert_eq!(b[2], [None, None, None, Some(1.0)]);
        assert_eq!(b[3], [None; 4]);
        assert_eq!(sparse_ticks(3, 10), ["0", "10", "20"]);
        assert_eq!(sparse_ticks(24, 1)[..3], ["0", "", "2"]);
    }
}
