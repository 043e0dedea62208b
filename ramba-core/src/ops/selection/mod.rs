//! Chunk selection (spec §3): causal top-k over the complete past chunks, recency sort, and the
//! chunk weights.
//!
//! Selection itself returns indices only ([`RambaBackend::select_chunks`]: the fused kernel on
//! CubeCL backends, [`reference`] elsewhere) and is not differentiable. The weights are ordinary
//! tensor ops on the `K` selected slots' scores ([`slot_scores`], [`chunk_weights`]), so
//! gradients reach the retrieval queries and the landmarks only through the selected slots and
//! no custom backward is needed.
//!
//! [`unaware`] is the chunk-unaware (NSA-style) ablation: the same selection, its weights
//! detached, and scores learned from token-level attention to the mean-pooled keys instead.

pub(crate) mod cube;
pub mod reference;
pub mod unaware;

use burn::prelude::*;
use burn::tensor::DType;
use serde::{Deserialize, Serialize};

use super::{softplus, RambaBackend};

/// How chunk scores are learned (`model.hsa.selection`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SelectionMode {
    /// HSA: the selected chunks' weights multiply their outputs, so scores learn from what
    /// each chunk contributes (the paper's method).
    #[default]
    ChunkAware,
    /// NSA-style ablation ([`unaware`]): scores learn only from token-level attention to the
    /// mean-pooled keys; the selected chunks' weights carry no gradient.
    ChunkUnaware,
}

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
    /// Absolute position of the first query token (0 unless a stream continues earlier
    /// tokens): token `t` sees chunk `c` iff `query_start + t ≥ (c + 1)·S`.
    pub query_start: usize,
}

/// Selected chunks per token and KV head.
#[derive(Clone, Debug)]
pub struct ChunkSelection<B: Backend> {
    /// `[batch, seq, h_kv, top_k]`: chunk ids, most recent first; `-1` for invalid slots.
    pub indices: Tensor<B, 4, Int>,
    /// `[batch, seq, h_kv, top_k]`: chunk weights (0 on invalid slots).
    pub weights: Tensor<B, 4>,
    /// Chunk-unaware selection only: `[batch, seq, h_kv, d_h]`, the token-level attention
    /// readout of the chunks' mean-pooled values ([`unaware::compressed_attention`]) that the
    /// HSA layers add to their output; `None` for chunk-aware selection.
    pub compressed: Option<Tensor<B, 4>>,
}

/// Selection and weights from retrieval queries and landmarks.
///
/// - `queries`: `[batch, seq, h_kv, d_r]`, the per-token retrieval queries
/// - `landmarks`: `[batch, n_chunks, h_kv, d_r]`, one per complete chunk
/// - scores are `<q_t, lmk_c> / √d_r`; returns indices and weights `[batch, seq, h_kv, top_k]`
pub fn select_chunks<B: RambaBackend>(
    queries: Tensor<B, 4>,
    landmarks: Tensor<B, 4>,
    options: SelectionOptions,
) -> ChunkSelection<B> {
    let [batch, seq, heads, _] = queries.dims();
    let device = queries.device();
    if landmarks.dims()[1] == 0 || options.top_k == 0 {
        return ChunkSelection {
            indices: Tensor::full([batch, seq, heads, options.top_k], -1, &device),
            weights: Tensor::zeros([batch, seq, heads, options.top_k], &device),
            compressed: None,
        };
    }
    let indices = Tensor::<B, 4, Int>::from_primitive(B::select_chunks(
        queries.clone().detach().into_primitive().tensor(),
        landmarks.clone().detach().into_primitive().tensor(),
        options,
    ));
    let valid = indices.clone().greater_equal_elem(0);
    // Weights are computed in at least f32 whatever the activations' dtype (spec §3).
    let mut scores = slot_scores(queries, landmarks, indices.clone());
    if matches!(scores.dtype(), DType::BF16 | DType::F16) {
        scores = scores.cast(DType::F32);
    }
    let weights = chunk_weights(scores, valid, options.weighting);
    ChunkSelection {
        indices,
        weights,
        compressed: None,
    }
}

/// The selected slots' scores `<q_t, lmk_c> / √d_r`, `[batch, seq, h, K]`, differentiable in
/// the queries and the landmarks. Invalid slots (index `-1`) score chunk 0; callers mask them.
///
/// Two equivalent evaluations, whichever stores less: the dense `[B, L, h, C]` score matrix
/// then a gather (short contexts: `C ≤ K·d_r`), or the `K` landmarks gathered per token
/// (`[B, L, h, K, d_r]`, long contexts).
pub fn slot_scores<B: Backend>(
    queries: Tensor<B, 4>,
    landmarks: Tensor<B, 4>,
    indices: Tensor<B, 4, Int>,
) -> Tensor<B, 4> {
    let [batch, seq, heads, dim] = queries.dims();
    let n_chunks = landmarks.dims()[1];
    let top_k = indices.dims()[3];
    let scale = (dim as f64).sqrt().recip();
    let idx = indices.clamp(0, n_chunks as i64 - 1);
    if n_chunks <= top_k * dim {
        let dense = queries
            .swap_dims(1, 2)
            .matmul(landmarks.permute([0, 2, 3, 1]))
            .swap_dims(1, 2); // [B, L, h, C]
        return dense.gather(3, idx).mul_scalar(scale);
    }
    let device = queries.device();
    let rows = landmarks
        .permute([0, 2, 1, 3])
        .reshape([batch * heads * n_chunks, dim]);
    let base = Tensor::<B, 1, Int>::arange(0..(batch * heads) as i64, &device)
        .mul_scalar(n_chunks as i64)
        .reshape([batch, 1, heads, 1]);
    let flat = (idx + base).reshape([batch * seq * heads * top_k]);
    let picked = rows
        .select(0, flat)
        .reshape([batch, seq, heads, top_k, dim]);
    (picked * queries.unsqueeze_dim::<5>(3))
        .sum_dim(4)
        .reshape([batch, seq, heads, top_k])
        .mul_scalar(scale)
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
            // -inf scores of valid slots are clamped so a row of them cannot make 0/0.
            let masked = scores
                .clamp_min(-1.0e30)
                .mask_fill(valid.bool_not(), -1.0e30);
            burn::tensor::activation::softmax(masked, D - 1) * keep
        }
    }
}
