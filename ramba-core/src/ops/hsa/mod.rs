//! Hierarchical sparse attention (spec §4): attention inside each selected chunk, then the chunk
//! outputs summed with the selection weights.
//!
//! - [`hsa`]: what models call (tensor API; checks the indices in debug builds).
//! - [`reference`]: plain tensor ops, the oracle of every kernel and the path of backends
//!   without one (CPU).
//! - `autodiff`: the custom backward node `Autodiff<B>` registers when `B` has the kernels.
//! - `cube`: the CubeCL kernels (`cubecl-kernels/src/hsa/`) behind the seam.

pub(crate) mod autodiff;
pub(crate) mod cube;
pub mod reference;

use burn::prelude::*;
use burn::tensor::ops::FloatTensor;
use burn::tensor::TensorPrimitive;

use super::RambaBackend;

/// Options of the HSA op.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HsaOptions {
    /// Tokens per chunk (`S`).
    pub chunk_size: usize,
    /// `n = 1` in the softmax denominator (softmax-off-by-one) instead of `n = 0`.
    pub softmax_off_by_one: bool,
}

/// What the forward keeps for the backward.
#[derive(Clone, Debug)]
pub struct HsaForward<B: Backend> {
    /// `[B, L, h_q, D]`.
    pub out: FloatTensor<B>,
    /// `[B, L, h_q, K]`, f32: `log(n + Σ exp(s))` of each valid slot's scores (0 elsewhere).
    pub lse: FloatTensor<B>,
}

/// Gradients of the HSA op's differentiable inputs.
#[derive(Clone, Debug)]
pub struct HsaGrads<B: Backend> {
    /// `[B, L, h_q, D]`.
    pub q: FloatTensor<B>,
    /// `[B, L, h_kv, D]`.
    pub k: FloatTensor<B>,
    /// `[B, L, h_kv, D]`.
    pub v: FloatTensor<B>,
    /// `[B, L, h_kv, K]`.
    pub weights: FloatTensor<B>,
}

/// HSA on tensors. Shapes: `q [B, L, h_q, D]`, `k, v [B, L, h_kv, D]`,
/// `indices, weights [B, L, h_kv, K]` (index `-1` marks an invalid slot); returns
/// `[B, L, h_q, D]`.
///
/// # Panics
/// In debug builds, when an index lies outside `-1..C` (`C = ⌊L/S⌋` complete chunks): a caller's
/// bug that release builds would silently skip.
pub fn hsa<B: RambaBackend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    indices: Tensor<B, 4, Int>,
    weights: Tensor<B, 4>,
    options: HsaOptions,
) -> Tensor<B, 4> {
    if cfg!(debug_assertions) {
        check_indices(&indices, k.dims()[1] / options.chunk_size);
    }
    Tensor::from_primitive(TensorPrimitive::Float(B::hsa(
        q.into_primitive().tensor(),
        k.into_primitive().tensor(),
        v.into_primitive().tensor(),
        indices.into_primitive(),
        weights.into_primitive().tensor(),
        options,
    )))
}

/// Panics naming the first index outside `-1..n_chunks` (a device read: debug builds only).
pub fn check_indices<B: Backend>(indices: &Tensor<B, 4, Int>, n_chunks: usize) {
    let data = indices.to_data().convert::<i64>();
    let values = data.as_slice::<i64>().expect("int data");
    if let Some((at, bad)) = values
        .iter()
        .enumerate()
        .find(|(_, &c)| c < -1 || c >= n_chunks as i64)
    {
        panic!(
            "hsa: chunk index {bad} at flat position {at} is outside -1..{n_chunks} \
             (the keys hold {n_chunks} complete chunks)"
        );
    }
}

/// HSA of a stream's queries over the chunk tiles its chunk store gathered for the selection:
/// `q [B, L, h_q, D]`, `k_sel, v_sel [B·h_kv·L, K, S, D]` (rows by batch, KV head, token; see
/// [`reference::attend_tiles`]), `indices, weights [B, L, h_kv, K]`; returns `[B, L, h_q, D]`.
///
/// Plain tensor ops on every backend: the kernels read the chunks of the queries' own sequence
/// (keys as long as the queries), while a stream's queries read chunks of earlier calls, held
/// by the store and brought in only where selected.
pub fn hsa_gathered<B: Backend>(
    q: Tensor<B, 4>,
    k_sel: Tensor<B, 4>,
    v_sel: Tensor<B, 4>,
    indices: Tensor<B, 4, Int>,
    weights: Tensor<B, 4>,
    options: HsaOptions,
) -> Tensor<B, 4> {
    reference::attend_tiles(q, k_sel, v_sel, indices, weights, options, false).0
}
