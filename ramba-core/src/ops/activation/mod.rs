//! Small differentiable helpers shared by the ops and the models, and Mamba-2's step size
//! `Δ = softplus(dt + dt_bias)` as one graph node on the backends that fuse the norms
//! ([`RambaBackend::fused_norm_and_loss`]).
//!
//! Differentiated op by op, `softplus(dt + bias)` is a dozen launches each way, and Burn's
//! broadcast backward sums the bias gradient along a strided axis with one unit per output:
//! for ramba-small at 8 × 4096 tokens, 20 units each walking 32K rows, in every Mamba-2 layer.
//! The node of [`autodiff`] keeps `dt` and sums the bias gradient with
//! [`RambaBackend::sum_rows`] (a kernel that spreads the rows over the device).

pub mod autodiff;

use burn::prelude::*;
use burn::tensor::DType;

use super::{from_float, into_float, RambaBackend};

/// `log(1 + exp(x))`, computed without overflow for large `|x|`.
pub fn softplus<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    x.clone().clamp_min(0.0) + x.abs().neg().exp().log1p()
}

/// `softplus(dt + bias)` in f32, returned in `out`: `dt [.., n]` (any float dtype), `bias [n]`.
pub fn biased_softplus<B: RambaBackend, const D: usize>(
    dt: Tensor<B, D>,
    bias: Tensor<B, 1>,
    out: DType,
) -> Tensor<B, D> {
    if !B::fused_norm_and_loss() {
        // At the caller's rank, op by op: the rounding the CPU recipes were tuned on.
        return softplus(dt.cast(DType::F32) + bias.unsqueeze::<D>()).cast(out);
    }
    let shape = dt.shape();
    let n = dt.dims()[D - 1];
    let rows = shape.num_elements() / n;
    let y = B::biased_softplus(into_float(dt.reshape([rows, n])), into_float(bias), out);
    from_float::<B, 2>(y).reshape(shape)
}

/// The formulas of [`biased_softplus`] on one backend, `dt [rows, n]`: forward `(Δ in out)`.
pub(crate) fn biased_softplus_forward<B: Backend>(
    dt: Tensor<B, 2>,
    bias: Tensor<B, 1>,
    out: DType,
) -> Tensor<B, 2> {
    softplus(dt.cast(DType::F32) + bias.cast(DType::F32).unsqueeze::<2>()).cast(out)
}

/// Backward: `(d_dt in dt's dtype, d_bias in bias's dtype)` for `d_delta`; `softplus′ = σ`.
pub(crate) fn biased_softplus_backward<B: RambaBackend>(
    dt: Tensor<B, 2>,
    bias: Tensor<B, 1>,
    d_delta: Tensor<B, 2>,
) -> (Tensor<B, 2>, Tensor<B, 1>) {
    let (dt_dtype, bias_dtype) = (dt.dtype(), bias.dtype());
    let pre = dt.cast(DType::F32) + bias.cast(DType::F32).unsqueeze::<2>();
    let d_pre = d_delta.cast(DType::F32) * burn::tensor::activation::sigmoid(pre);
    let d_bias = from_float::<B, 1>(B::sum_rows(into_float(d_pre.clone()))).cast(bias_dtype);
    (d_pre.cast(dt_dtype), d_bias)
}
