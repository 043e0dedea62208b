//! RMSNorm, the gated RMSNorm of Mamba-2 and SiLU, as single graph nodes.
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

use super::{from_float, into_float, RambaBackend};

/// `x / rms(x) · γ` over the last axis: `x [.., d]` (any float dtype), `gamma [d]`.
pub fn rms_norm<B: RambaBackend, const D: usize>(
    x: Tensor<B, D>,
    gamma: Tensor<B, 1>,
    epsilon: f64,
) -> Tensor<B, D> {
    let shape = x.shape();
    let d = shape.dims::<D>()[D - 1];
    let rows = x.shape().num_elements() / d;
    let y = B::rms_norm(into_float(x.reshape([rows, d])), into_float(gamma), epsilon);
    from_float::<B, 2>(y).reshape(shape)
}

/// Mamba-2's gated RMSNorm `RMSNorm(x · SiLU(z)) · γ`: `x, z [.., d]`, `gamma [d]`.
pub fn gated_rms_norm<B: RambaBackend, const D: usize>(
    x: Tensor<B, D>,
    z: Tensor<B, D>,
    gamma: Tensor<B, 1>,
    epsilon: f64,
) -> Tensor<B, D> {
    let shape = x.shape();
    let d = shape.dims::<D>()[D - 1];
    let rows = x.shape().num_elements() / d;
    let y = B::gated_rms_norm(
        into_float(x.reshape([rows, d])),
        into_float(z.reshape([rows, d])),
        into_float(gamma),
        epsilon,
    );
    from_float::<B, 2>(y).reshape(shape)
}

/// `x · σ(x)`.
pub fn silu<B: RambaBackend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    let shape = x.shape();
    let n = shape.num_elements();
    from_float::<B, 1>(B::silu(into_float(x.reshape([n])))).reshape(shape)
}
