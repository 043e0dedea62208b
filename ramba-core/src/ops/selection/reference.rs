//! Reference chunk selection (spec §3): causal top-k over complete past chunks and the recency
//! sort, from the dense score matrix (memory `L × C`: fine for a reference and short contexts).
//!
//! Token `t` may select chunk `c` iff `t >= (c+1)·S`, so it sees `min(⌊t/S⌋, C)` chunks and the
//! slots past that count are invalid (index `-1`). The weights are computed by the caller from
//! the selected slots ([`super::chunk_weights`]).

use burn::prelude::*;

use super::SelectionOptions;

/// Indices `[batch, seq, h_kv, top_k]` from `queries [B, L, h_kv, d_r]` and
/// `landmarks [B, C, h_kv, d_r]`: the dense score matrix, then [`select_from_scores`].
pub fn select_chunks<B: Backend>(
    queries: Tensor<B, 4>,
    landmarks: Tensor<B, 4>,
    options: SelectionOptions,
) -> Tensor<B, 4, Int> {
    let dim = queries.dims()[3];
    let scores = queries
        .swap_dims(1, 2)
        .matmul(landmarks.permute([0, 2, 3, 1]))
        .swap_dims(1, 2)
        .div_scalar((dim as f64).sqrt());
    select_from_scores(scores, options)
}

/// Indices from dense scores `[batch, seq, h_kv, n_chunks]` (see the module docs).
pub fn select_from_scores<B: Backend>(
    scores: Tensor<B, 4>,
    options: SelectionOptions,
) -> Tensor<B, 4, Int> {
    let [batch, seq, heads, n_chunks] = scores.dims();
    let device = scores.device();
    let (s, top_k) = (options.chunk_size as i64, options.top_k);
    let kk = top_k.min(n_chunks);
    if kk == 0 {
        return Tensor::full([batch, seq, heads, top_k], -1, &device);
    }

    // Visibility from positions alone, never from score values.
    let start = options.query_start as i64;
    let t = Tensor::<B, 1, Int>::arange(start..start + seq as i64, &device).reshape([seq, 1]);
    let c = Tensor::<B, 1, Int>::arange(1..n_chunks as i64 + 1, &device)
        .mul_scalar(s)
        .reshape([1, n_chunks]);
    let visible = t
        .clone()
        .expand([seq, n_chunks])
        .greater_equal(c.expand([seq, n_chunks]))
        .reshape([1, seq, 1, n_chunks])
        .expand([batch, seq, heads, n_chunks]);
    let masked = scores
        .detach()
        .mask_fill(visible.bool_not(), f32::NEG_INFINITY);
    let (_, top) = masked.topk_with_indices(kk, 3);
    // A slot is valid iff its chunk is visible (c < ⌊t/S⌋), decided from the chunk id: when
    // visible scores are -inf a masked chunk can win the top-k, and it must not count.
    let limit = t
        .div_scalar(s)
        .reshape([1, seq, 1, 1])
        .expand([batch, seq, heads, kk]);
    let valid = top.clone().lower(limit);
    // Invalid slots become -1 so the descending sort puts them last.
    let (indices, _) = top
        .mask_fill(valid.bool_not(), -1)
        .sort_descending_with_indices(3);
    if kk == top_k {
        return indices;
    }
    let pad = [batch, seq, heads, top_k - kk];
    Tensor::cat(vec![indices, Tensor::full(pad, -1, &device)], 3)
}
