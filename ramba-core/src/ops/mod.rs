//! The ops seam: the one place where models meet kernels.
//!
//! Models call only [`RambaBackend`]. Its default methods are the reference implementations in
//! [`reference`] (plain Burn tensor ops: exact, differentiable through `Autodiff`, valid on every
//! backend, and the oracle every kernel is tested against). A backend with fused kernels overrides
//! the methods it accelerates; nothing above this module changes.

pub mod reference;

use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::ndarray::NdArray;
use burn::backend::Autodiff;
use burn::prelude::*;
use burn_cubecl::{BoolElement, CubeBackend, CubeRuntime, FloatElement, IntElement};

pub use reference::hsa::HsaOptions;
pub use reference::scan::ScanOptions;
pub use reference::selection::{ChunkSelection, ChunkWeighting, SelectionOptions};

/// Backend extension with the long-context ops of HSA and Mamba-2.
///
/// Shapes use the spec's sequence-first layouts (`docs/hsa-spec.md` in the shared docs).
pub trait RambaBackend: Backend {
    /// Hierarchical sparse attention (spec §4): per-chunk softmax over each selected chunk, then
    /// the chunk outputs summed with the selection weights.
    ///
    /// - `q`: `[batch, seq, h_q, d_h]`
    /// - `k`, `v`: `[batch, seq, h_kv, d_h]` (only the complete chunks are ever read)
    /// - `indices`: `[batch, seq, h_kv, top_k]`, chunk ids; `-1` marks an invalid slot
    /// - `weights`: `[batch, seq, h_kv, top_k]`
    /// - returns `[batch, seq, h_q, d_h]`
    fn hsa(
        q: Tensor<Self, 4>,
        k: Tensor<Self, 4>,
        v: Tensor<Self, 4>,
        indices: Tensor<Self, 4, Int>,
        weights: Tensor<Self, 4>,
        options: HsaOptions,
    ) -> Tensor<Self, 4> {
        reference::hsa::hsa(q, k, v, indices, weights, options)
    }

    /// Causal top-k chunk selection, recency sort and chunk weights (spec §3).
    ///
    /// - `scores`: `[batch, seq, h_kv, n_chunks]`, token-to-landmark scores of the complete chunks
    /// - returns indices and weights `[batch, seq, h_kv, top_k]`
    fn select_chunks(scores: Tensor<Self, 4>, options: SelectionOptions) -> ChunkSelection<Self> {
        reference::selection::select_chunks(scores, options)
    }

    /// Mamba-2 selective scan with a scalar decay per head.
    ///
    /// `h_t = exp(Δ_t A) h_{t-1} + Δ_t B_t x_tᵀ`, `y_t = C_t h_t + D x_t`.
    ///
    /// - `x`: `[batch, seq, heads, head_dim]`
    /// - `delta`: `[batch, seq, heads]` (Δ, already positive)
    /// - `a`: `[heads]` (negative), `d`: `[heads]`
    /// - `b`, `c`: `[batch, seq, groups, d_state]`
    /// - `init_state`: `[batch, heads, head_dim, d_state]`
    /// - returns `y` `[batch, seq, heads, head_dim]` and the final state
    #[allow(clippy::too_many_arguments)]
    fn selective_scan(
        x: Tensor<Self, 4>,
        delta: Tensor<Self, 3>,
        a: Tensor<Self, 1>,
        b: Tensor<Self, 4>,
        c: Tensor<Self, 4>,
        d: Tensor<Self, 1>,
        init_state: Option<Tensor<Self, 4>>,
        options: ScanOptions,
    ) -> (Tensor<Self, 4>, Tensor<Self, 4>) {
        reference::scan::selective_scan(x, delta, a, b, c, d, init_state, options)
    }

    /// Causal depthwise 1-D convolution with carried state.
    ///
    /// - `x`: `[batch, seq, channels]`, `weight`: `[channels, width]`, `bias`: `[channels]`
    /// - `init_state`: `[batch, channels, width - 1]`, the inputs preceding `x`
    /// - returns `y` `[batch, seq, channels]` and the state after `x`
    fn causal_conv1d(
        x: Tensor<Self, 3>,
        weight: Tensor<Self, 2>,
        bias: Option<Tensor<Self, 1>>,
        init_state: Option<Tensor<Self, 3>>,
    ) -> (Tensor<Self, 3>, Tensor<Self, 3>) {
        reference::conv::causal_conv1d(x, weight, bias, init_state)
    }
}

impl RambaBackend for NdArray<f32> {}
impl RambaBackend for NdArray<f64> {}
impl<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement> RambaBackend
    for CubeBackend<R, F, I, BT>
{
}
impl<B: RambaBackend, C: CheckpointStrategy> RambaBackend for Autodiff<B, C> {}
