//! Chunk-unaware selection (NSA-style; the paper's Figure 1(A) and its "Mamba + NSA"
//! baseline), the ablation of HSA's chunk-aware learning.
//!
//! HSA learns which chunks to select from the chunks' own outputs: the weights of the selected
//! chunks multiply their attention outputs, so a chunk's score rises when its output helps
//! (spec §1.7). Here the scores get no gradient from the selected chunks' outputs (their
//! weights are detached); they are learned only from **token-level attention to the
//! mean-pooled keys**, as NSA's compression branch learns its block importance:
//!
//! ```text
//! s[t, c]  = <q_t, k̄_c> / √d_r                (k̄_c: the chunk's mean-pooled key, its landmark)
//! p[t, ·]  = softmax of s[t, c] over the complete chunks before t (zeros when there is none)
//! o_cmp[t] = Σ_c p[t, c] · v̄_c                (v̄_c: the chunk's mean-pooled value)
//! ```
//!
//! The top-k chunks by `s` (the same as by `p`) are selected exactly as in chunk-aware HSA, and
//! `o_cmp` joins the HSA output, so the queries and landmarks learn through `o_cmp` alone. With
//! `landmark = "mean"` a landmark is `W_lmk · mean(chunk)`, the mean of the chunk's
//! landmark-projected tokens: a mean-pooled key.
//!
//! This is the reference implementation (dense `L × C` scores): plain tensor ops, so autodiff
//! gives its backward and every backend runs it.

use burn::prelude::*;

use super::{select_chunks, ChunkSelection, SelectionOptions};
use crate::ops::RambaBackend;

/// Chunk-unaware selection: the chunk-aware selection of the same scores with its weights
/// detached, and the compression readout [`compressed_attention`] in
/// [`ChunkSelection::compressed`].
///
/// - `queries`: `[batch, seq, h_kv, d_r]`; `landmarks`: `[batch, n_chunks, h_kv, d_r]`
/// - `values`: `[batch, seq_kv, h_kv, d_h]`, the chunk memory's values (`seq_kv ≥ n_chunks·S`)
pub fn select_chunks_unaware<B: RambaBackend>(
    queries: Tensor<B, 4>,
    landmarks: Tensor<B, 4>,
    values: Tensor<B, 4>,
    options: SelectionOptions,
) -> ChunkSelection<B> {
    let pooled = mean_pooled_values(values, landmarks.dims()[1], options.chunk_size);
    select_chunks_unaware_pooled(queries, landmarks, pooled, options)
}

/// [`select_chunks_unaware`] given each chunk's mean-pooled value `pooled [batch, n_chunks,
/// h_kv, d_h]` instead of the tokens' values: what a stream has, whose chunk store keeps the
/// pooled values next to the landmarks (the tokens' values may live in host memory).
pub fn select_chunks_unaware_pooled<B: RambaBackend>(
    queries: Tensor<B, 4>,
    landmarks: Tensor<B, 4>,
    pooled: Tensor<B, 4>,
    options: SelectionOptions,
) -> ChunkSelection<B> {
    let compressed =
        compressed_attention_pooled(queries.clone(), landmarks.clone(), pooled, options);
    let selection = select_chunks(queries, landmarks, options);
    ChunkSelection {
        indices: selection.indices,
        weights: selection.weights.detach(),
        compressed: Some(compressed),
    }
}

/// `o_cmp` of the module docs, `[batch, seq, h_kv, d_h]`: token-level attention of each query
/// over the landmarks of the complete chunks before it, reading the chunks' mean-pooled
/// values. Token `t` sees chunk `c` iff `query_start + t ≥ (c + 1)·S`; a token that sees none
/// reads zeros.
pub fn compressed_attention<B: Backend>(
    queries: Tensor<B, 4>,
    landmarks: Tensor<B, 4>,
    values: Tensor<B, 4>,
    options: SelectionOptions,
) -> Tensor<B, 4> {
    let pooled = mean_pooled_values(values, landmarks.dims()[1], options.chunk_size);
    compressed_attention_pooled(queries, landmarks, pooled, options)
}

/// Each of the first `n_chunks` chunks' mean-pooled value `v̄_c`, `[batch, n_chunks, h_kv,
/// d_h]`, from the tokens' values `[batch, seq_kv, h_kv, d_h]` (`seq_kv ≥ n_chunks·S`).
pub fn mean_pooled_values<B: Backend>(
    values: Tensor<B, 4>,
    n_chunks: usize,
    chunk_size: usize,
) -> Tensor<B, 4> {
    let [batch, _, heads, d_h] = values.dims();
    if n_chunks == 0 {
        return Tensor::zeros([batch, 0, heads, d_h], &values.device());
    }
    values
        .narrow(1, 0, n_chunks * chunk_size)
        .reshape([batch, n_chunks, chunk_size, heads, d_h])
        .mean_dim(2)
        .reshape([batch, n_chunks, heads, d_h])
}

/// [`compressed_attention`] given the chunks' mean-pooled values `pooled [batch, n_chunks,
/// h_kv, d_h]` (see [`mean_pooled_values`]).
pub fn compressed_attention_pooled<B: Backend>(
    queries: Tensor<B, 4>,
    landmarks: Tensor<B, 4>,
    pooled: Tensor<B, 4>,
    options: SelectionOptions,
) -> Tensor<B, 4> {
    let [batch, seq, heads, dim] = queries.dims();
    let n_chunks = landmarks.dims()[1];
    let d_h = pooled.dims()[3];
    let device = queries.device();
    if n_chunks == 0 {
        return Tensor::zeros([batch, seq, heads, d_h], &device);
    }
    let s = options.chunk_size;
    // [B, h, L, C]
    let scores = queries
        .swap_dims(1, 2)
        .matmul(landmarks.permute([0, 2, 3, 1]))
        .div_scalar((dim as f64).sqrt());
    let start = options.query_start as i64;
    let t = Tensor::<B, 1, Int>::arange(start..start + seq as i64, &device)
        .reshape([seq, 1])
        .expand([seq, n_chunks]);
    let c = Tensor::<B, 1, Int>::arange(1..n_chunks as i64 + 1, &device)
        .mul_scalar(s as i64)
        .reshape([1, n_chunks])
        .expand([seq, n_chunks]);
    let visible = t
        .greater_equal(c)
        .reshape([1, 1, seq, n_chunks])
        .expand([batch, heads, seq, n_chunks]);
    let keep = visible.clone().float();
    // A finite fill (not -inf) keeps a row with no visible chunk from becoming 0/0; `keep`
    // then zeroes it.
    let masked = scores.mask_fill(visible.bool_not(), -1.0e30);
    let p = burn::tensor::activation::softmax(masked, 3) * keep;
    // [B, h, C, d_h]
    let pooled = pooled.narrow(1, 0, n_chunks).swap_dims(1, 2);
    p.matmul(pooled).swap_dims(1, 2)
}
