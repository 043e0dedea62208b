//! Mamba-2 selective scan with a scalar decay per head:
//! `h_t = exp(Δ_t A) h_{t−1} + Δ_t B_t x_tᵀ`, `y_t = C_t h_t + D x_t`.
//!
//! [`selective_scan`] is what models call; [`reference`] is the chunked SSD form in plain
//! tensor ops (the path of every backend until the scan kernels land, and their oracle).

pub mod reference;

use burn::prelude::*;

use super::{from_float, into_float, RambaBackend};

/// Options of the scan op.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ScanOptions {
    /// Length of the SSD chunks (256 in Mamba-2). Only speed and memory depend on it.
    pub chunk_size: usize,
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
