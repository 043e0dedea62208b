//! The norms and SiLU composed of differentiable tensor ops: what `Autodiff` would build without
//! the nodes of [`super::autodiff`], and the oracle their gradients are tested against.

use burn::prelude::*;
use burn::tensor::activation::silu as burn_silu;
use burn::tensor::DType;

/// `x / rms(x) · γ` over the last axis of `x [.., d]`, the statistic in f32, in `x`'s dtype.
pub fn rms_norm<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    gamma: Tensor<B, 1>,
    epsilon: f64,
) -> Tensor<B, D> {
    let dtype = x.dtype();
    let xf = x.cast(DType::F32);
    let rms = (xf.clone().square().mean_dim(D - 1) + epsilon).sqrt();
    (xf / rms * gamma.cast(DType::F32).unsqueeze()).cast(dtype)
}

/// `RMSNorm(x · SiLU(z)) · γ` over the last axis.
pub fn gated_rms_norm<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    z: Tensor<B, D>,
    gamma: Tensor<B, 1>,
    epsilon: f64,
) -> Tensor<B, D> {
    let dtype = x.dtype();
    let u = x.cast(DType::F32) * burn_silu(z.cast(DType::F32));
    rms_norm(u, gamma, epsilon).cast(dtype)
}

/// `x · σ(x)`.
pub fn silu<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    let dtype = x.dtype();
    burn_silu(x.cast(DType::F32)).cast(dtype)
}
