//! RMSNorm, the gated RMSNorm of Mamba-2 and SiLU, as single graph nodes on the backends that
//! fuse them ([`RambaBackend::fused_norm_and_loss`]: the CubeCL ones; the CPU backend trains
//! through [`reference`], op by op).
//!
//! Differentiated op by op, `x / rms(x) · γ` keeps four activations of `x`'s size (two of them
//! f32 under mixed precision) and the gated form with its SiLU keeps eight; these nodes keep
//! their inputs and one f32 per row (`1 / rms`) and recompute the rest in the backward. All
//! arithmetic is f32, the outputs in the input's dtype.
//!
//! - [`math`]: the forward and backward formulas in plain tensor ops (what every backend's
//!   forward runs, and what the `Autodiff` nodes of [`autodiff`] run on the inner backend);
//! - [`reference`]: the same functions composed of differentiable ops, the oracle of the tests.

pub mod autodiff;
pub mod math;
pub mod reference;

use burn::prelude::*;
use burn::tensor::ops::FloatTensor;

use super::{from_float, into_float, RambaBackend};

/// `x / rms(x) · γ` over the last axis: `x [.., d]` (any float dtype), `gamma [d]`.
pub fn rms_norm<B: RambaBackend, const D: usize>(
    x: Tensor<B, D>,
    gamma: Tensor<B, 1>,
    epsilon: f64,
) -> Tensor<B, D> {
    if !B::fused_norm_and_loss() {
        // At the caller's rank: the summation order the CPU recipes were tuned on.
        return reference::rms_norm(x, gamma, epsilon);
    }
    let shape = x.shape();
    let y = B::rms_norm(rows_of(x), into_float(gamma), epsilon);
    from_float::<B, 2>(y).reshape(shape)
}

/// `x [.., d]` as the primitive of `[rows, d]`, the norms' layout.
fn rows_of<B: RambaBackend, const D: usize>(x: Tensor<B, D>) -> FloatTensor<B> {
    let d = x.dims()[D - 1];
    let rows = x.shape().num_elements() / d;
    into_float(x.reshape([rows, d]))
}

/// Mamba-2's gated RMSNorm `RMSNorm(x · SiLU(z)) · γ`: `x, z [.., d]`, `gamma [d]`.
pub fn gated_rms_norm<B: RambaBackend, const D: usize>(
    x: Tensor<B, D>,
    z: Tensor<B, D>,
    gamma: Tensor<B, 1>,
    epsilon: f64,
) -> Tensor<B, D> {
    if !B::fused_norm_and_loss() {
        return reference::gated_rms_norm(x, z, gamma, epsilon);
    }
    let shape = x.shape();
    let y = B::gated_rms_norm(rows_of(x), rows_of(z), into_float(gamma), epsilon);
    from_float::<B, 2>(y).reshape(shape)
}

/// `x · σ(x)`.
pub fn silu<B: RambaBackend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    if !B::fused_norm_and_loss() {
        return reference::silu(x);
    }
    let shape = x.shape();
    let n = shape.num_elements();
    from_float::<B, 1>(B::silu(into_float(x.reshape([n])))).reshape(shape)
}
