//! Softmax attention (causal, sliding-window or unmasked; grouped query heads) as one op, so a
//! backend with a fused kernel never materialises the `L × L` scores.
//!
//! - [`attention`]: what models call (tensor API).
//! - [`reference`]: dense scores and mask in plain tensor ops, the oracle of the kernels and the
//!   path of backends without one (CPU).
//! - `autodiff`: the custom backward node `Autodiff<B>` registers when `B` has the kernels.
//! - `cube`: the CubeCL kernels (`cubecl-kernels/src/attention/`) behind the seam.

pub(crate) mod autodiff;
pub(crate) mod cube;
pub mod reference;

use burn::prelude::*;
use burn::tensor::ops::FloatTensor;
use burn::tensor::TensorPrimitive;

use super::RambaBackend;

/// Which keys a query sees. Query `i` sits at key position `i + q_offset`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttentionOptions {
    /// Keys after the query's position are hidden.
    pub causal: bool,
    /// Only the `window` most recent keys (the query's own included) are visible; `causal`
    /// must be set.
    pub window: Option<usize>,
    /// Key position of query 0: 0 when queries and keys are the same tokens, the number of
    /// cached keys before the queries in a decode step.
    pub q_offset: usize,
}

impl AttentionOptions {
    /// Keys `j ≤ i` (the transformer).
    pub fn causal() -> Self {
        Self {
            causal: true,
            window: None,
            q_offset: 0,
        }
    }

    /// Keys `i − window < j ≤ i` (sliding-window attention).
    ///
    /// # Panics
    /// When `window` is 0: no key would be visible.
    pub fn sliding_window(window: usize) -> Self {
        assert!(
            window > 0,
            "attention: a sliding window of 0 keys sees nothing"
        );
        Self {
            window: Some(window),
            ..Self::causal()
        }
    }

    /// Every key (the chunk encoder).
    pub fn bidirectional() -> Self {
        Self {
            causal: false,
            window: None,
            q_offset: 0,
        }
    }

    /// The same mask with query 0 at key position `q_offset`.
    pub fn with_q_offset(self, q_offset: usize) -> Self {
        Self { q_offset, ..self }
    }

    /// The window as the kernels take it (0: none).
    pub(crate) fn window_or_zero(&self) -> usize {
        self.window.unwrap_or(0)
    }
}

/// What the forward keeps for the backward.
#[derive(Clone, Debug)]
pub struct AttentionForward<B: Backend> {
    /// `[B, L_q, h_q, D]`.
    pub out: FloatTensor<B>,
    /// `[B, L_q, h_q]`, f32: `log Σ exp(s)` over the visible keys of each row.
    pub lse: FloatTensor<B>,
}

/// Gradients of the attention op's inputs.
#[derive(Clone, Debug)]
pub struct AttentionGrads<B: Backend> {
    /// `[B, L_q, h_q, D]`.
    pub q: FloatTensor<B>,
    /// `[B, L_k, h_kv, D]`.
    pub k: FloatTensor<B>,
    /// `[B, L_k, h_kv, D]`.
    pub v: FloatTensor<B>,
}

/// Attention on tensors, scores scaled by `1/√D`. Shapes: `q [B, L_q, h_q, D]`,
/// `k, v [B, L_k, h_kv, D]` (`h_kv` divides `h_q`; query head `h` reads KV head
/// `h / (h_q / h_kv)`); returns `[B, L_q, h_q, D]`.
///
/// # Panics
/// When the shapes disagree or a window is set without `causal`: a caller's bug.
pub fn attention<B: RambaBackend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    options: AttentionOptions,
) -> Tensor<B, 4> {
    check_shapes(&q.dims(), &k.dims(), &v.dims(), options);
    Tensor::from_primitive(TensorPrimitive::Float(B::softmax_attention(
        q.into_primitive().tensor(),
        k.into_primitive().tensor(),
        v.into_primitive().tensor(),
        options,
    )))
}

fn check_shapes(q: &[usize; 4], k: &[usize; 4], v: &[usize; 4], options: AttentionOptions) {
    assert_eq!(
        k, v,
        "attention: keys {k:?} and values {v:?} differ in shape"
    );
    assert!(
        q[0] == k[0] && q[3] == k[3],
        "attention: queries {q:?} and keys {k:?} differ in batch or head dim"
    );
    assert!(
        k[2] > 0 && q[2].is_multiple_of(k[2]),
        "attention: {} query heads are not a multiple of {} KV heads",
        q[2],
        k[2]
    );
    assert!(
        options.causal || options.window.is_none(),
        "attention: a sliding window needs the causal mask"
    );
    assert!(
        options.window != Some(0),
        "attention: a sliding window of 0 keys sees nothing"
    );
}
