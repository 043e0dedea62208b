//! Mamba-2 selective scan with a scalar decay per head:
//! `h_t = exp(Δ_t A) h_{t−1} + Δ_t B_t x_tᵀ`, `y_t = C_t h_t + D x_t`.
//!
//! [`selective_scan`] is what models call; [`reference`] is the chunked SSD form in plain
//! tensor ops (the CPU backend's path and the kernels' oracle); [`cube`] runs the kernels of
//! `cubecl-kernels/src/scan/` on Burn's CubeCL backends; [`autodiff`] makes them one graph node
//! under `Autodiff`.

pub mod autodiff;
pub mod cube;
pub mod reference;

use burn::prelude::*;

use super::{from_float, into_float, RambaBackend};

/// Options of the scan op.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ScanOptions {
    /// Length of the SSD chunks (256 in Mamba-2). Only speed and memory depend on it.
    pub chunk_size: usize,
}

/// Gradients of the scan's inputs, each shaped like its input.
#[derive(Debug)]
pub struct ScanGrads<B: burn::tensor::backend::Backend> {
    /// `[B, L, heads, P]`.
    pub x: burn::tensor::ops::FloatTensor<B>,
    /// `[B, L, heads]`.
    pub delta: burn::tensor::ops::FloatTensor<B>,
    /// `[heads]`.
    pub a: burn::tensor::ops::FloatTensor<B>,
    /// `[B, L, groups, N]`.
    pub b: burn::tensor::ops::FloatTensor<B>,
    /// `[B, L, groups, N]`.
    pub c: burn::tensor::ops::FloatTensor<B>,
    /// `[heads]`.
    pub d: burn::tensor::ops::FloatTensor<B>,
    /// `[B, heads, P, N]`.
    pub init_state: burn::tensor::ops::FloatTensor<B>,
}

/// The scan on tensors. Shapes: `x [B, L, heads, P]`, `delta [B, L, heads]` (Δ, positive),
/// `a`, `d [heads]`, `b`, `c [B, L, groups, N]`, `init_state [B, heads, P, N]`; returns `y`
/// like `x` and the final state.
#[allow(clippy::too_many_arguments)]
pub fn selective_scan<B: RambaBackend>(
    x: Tensor<B, 4>,
    delta: Tensor<B, 3>,
    a: Tensor<B, 1>,
    b: Tensor<B, 4>,
    c: Tensor<B, 4>,
    d: Tensor<B, 1>,
    init_state: Option<Tensor<B, 4>>,
    options: ScanOptions,
) -> (Tensor<B, 4>, Tensor<B, 4>) {
    let (y, state) = B::selective_scan(
        into_float(x),
        into_float(delta),
        into_float(a),
        into_float(b),
        into_float(c),
        into_float(d),
        init_state.map(into_float),
        options,
    );
    (from_float(y), from_float(state))
}

/// One decoding step (see [`RambaBackend::selective_scan_step`]): `x [B, heads, P]`,
/// `delta [B, heads]`, `b`, `c [B, groups, N]`, `state [B, heads, P, N]` → `(y, state after)`.
#[allow(clippy::too_many_arguments)]
pub fn selective_scan_step<B: RambaBackend>(
    x: Tensor<B, 3>,
    delta: Tensor<B, 2>,
    a: Tensor<B, 1>,
    b: Tensor<B, 3>,
    c: Tensor<B, 3>,
    d: Tensor<B, 1>,
    state: Tensor<B, 4>,
) -> (Tensor<B, 3>, Tensor<B, 4>) {
    let (y, state) = B::selective_scan_step(
        into_float(x),
        into_float(delta),
        into_float(a),
        into_float(b),
        into_float(c),
        into_float(d),
        into_float(state),
    );
    (from_float(y), from_float(state))
}
