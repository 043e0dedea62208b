//! Reference chunk selection (spec §3): causal top-k over complete past chunks, recency sort,
//! and the chunk weights.
//!
//! Token `t` may select chunk `c` iff `t >= (c+1)·S`, so it sees `min(⌊t/S⌋, C)` chunks and the
//! slots past that count are invalid (index `-1`, weight `0`). The top-k and the sort are not
//! differentiable; gradients reach the scores only through the weights of the selected slots.

use burn::prelude::*;
use serde::{Deserialize, Serialize};

use super::softplus;

/// How the selected chunks' scores become weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ChunkWeighting {
    /// `w_k = σ(s_k) · Π_{i<k} (1 − σ(s_i))` over the recency-sorted slots; `Σ w ≤ 1`.
    #[default]
    StickBreaking,
    /// Softmax over the valid slots; a token with no valid slot gets all zeros.
    Softmax,
}

/// Options of the selection op.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SelectionOptions {
    /// Tokens per chunk (`S`).
    pub chunk_size: usize,
    /// Chunks selected per token (`K`).
    pub top_k: usize,
    /// Score-to-weight mapping.
    pub weighting: ChunkWeighting,
}

/// Selected chunks per token and KV head.
#[derive(Clone, Debug)]
pub struct ChunkSelection<B: Backend> {
    /// `[batch, seq, h_kv, top_k]`: chunk ids, most recent first; `-1` for invalid slots.
    pub indices: Tensor<B, 4, Int>,
    /// `[batch, seq, h_kv, top_k]`: chunk weights (0 on invalid slots).
    pub weights: Tensor<B, 4>,
}

/// See the module docs. `scores`: `[batch, seq, h_kv, n_chunks]`.
pub fn select_chunks<B: Backend>(
    scores: Tensor<B, 4>,
    options: SelectionOptions,
) -> ChunkSelection<B> {
    let [batch, seq, heads, n_chunks] = scores.dims();
    let device = scores.device();
    let (s, top_k) = (options.chunk_size as i64, options.top_k);
    let kk = top_k.min(n_chunks);
    if kk == 0 {
        return ChunkSelection {
            indices: Tensor::full([batch, seq, heads, top_k], -1, &device),
            weights: Tensor::zeros([batch, seq, heads, top_k], &device),
        };
    }

    // Visibility from positions alone, never from score values.
    let t = Tensor::<B, 1, Int>::arange(0..seq as i64, &device).reshape([seq, 1]);
    let c = Tensor::<B, 1, Int>::arange(1..n_chunks as i64 + 1, &device)
        .mul_scalar(s)
        .reshape([1, n_chunks]);
    let visible = t
        .clone()
        .expand([seq, n_chunks])
        .greater_equal(c.expand([seq, n_chunks]))
        .reshape([1, seq, 1, n_chunks])
        .expand([batch, seq, heads, n_chunks]);
    let slot = Tensor::<B, 1, Int>::arange(0..kk as i64, &device).reshape([1, kk]);
    let valid = slot
        .expand([seq, kk])
        .lower(t.div_scalar(s).expand([seq, kk]))
        .reshape([1, seq, 1, kk])
        .expand([batch, seq, heads, kk]);

    let masked = scores
        .clone()
        .detach()
        .mask_fill(visible.bool_not(), -1.0e30);
    let (_, top) = masked.topk_with_indices(kk, 3);
    // Invalid slots become -1 so the descending sort puts them last.
    let (indices, _) = top
        .mask_fill(valid.clone().bool_not(), -1)
        .sort_descending_with_indices(3);
    let picked = scores.gather(3, indices.clone().clamp_min(0));
    let weights = chunk_weights(picked, valid.clone(), options.weighting);

    if kk == top_k {
        return ChunkSelection { indices, weights };
    }
    let pad = [batch, seq, heads, top_k - kk];
    ChunkSelection {
        indices: Tensor::cat(vec![indices, Tensor::full(pad, -1, &device)], 3),
        weights: Tensor::cat(vec![weights, Tensor::zeros(pad, &device)], 3),
    }
}

/// Weights of recency-sorted slot scores `[.., K]`; `valid` marks the usable slots, which come
/// first in every row.
pub fn chunk_weights<B: Backend, const D: usize>(
    scores: Tensor<B, D>,
    valid: Tensor<B, D, Bool>,
    weighting: ChunkWeighting,
) -> Tensor<B, D> {
    let keep = valid.clone().float();
    match weighting {
        ChunkWeighting::StickBreaking => {
            // σ(s_k)·Π_{i<k}(1−σ(s_i)) = exp(s_k − Σ_{i≤k} softplus(s_i)): no products of
            // small numbers, no log of zero. The exponent is ≤ 0 on valid slots; invalid slots
            // hold arbitrary scores (a gather of chunk 0), so they are masked before the exp:
            // exp(large)·0 would be NaN, in the forward pass and in the gradient.
            let cum = (softplus(scores.clone()) * keep).cumsum(D - 1);
            (scores - cum)
                .mask_fill(valid.bool_not(), f32::NEG_INFINITY)
                .exp()
        }
        ChunkWeighting::Softmax => {
            let masked = scores.mask_fill(valid.bool_not(), -1.0e30);
            burn::tensor::activation::softmax(masked, D - 1) * keep
        }
    }
}
