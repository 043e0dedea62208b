//! The forward and backward formulas of the norm nodes, in plain tensor ops of one backend, f32
//! inside and the input's dtype outside. Rows are `[rows, d]`; `rstd` is `1 / rms` per row,
//! `[rows, 1]` f32.

use burn::prelude::*;
use burn::tensor::activation::sigmoid;
use burn::tensor::DType;

const F32: DType = DType::F32;

/// `(y, rstd)` of RMSNorm.
pub fn rms_norm_forward<B: Backend>(
    x: Tensor<B, 2>,
    gamma: Tensor<B, 1>,
    epsilon: f64,
) -> (Tensor<B, 2>, Tensor<B, 2>) {
    let dtype = x.dtype();
    let xf = x.cast(F32);
    let rstd = (xf.clone().square().mean_dim(1) + epsilon).sqrt().recip();
    let y = xf * rstd.clone() * gamma.cast(F32).unsqueeze::<2>();
    (y.cast(dtype), rstd)
}

/// `(dx, dγ)` of RMSNorm for `dy`: with `x̂ = x·rstd` and `g = dy·γ`,
/// `dx = rstd·(g − x̂·mean(g·x̂))` and `dγ = Σ_rows dy·x̂`.
pub fn rms_norm_backward<B: Backend>(
    x: Tensor<B, 2>,
    gamma: Tensor<B, 1>,
    rstd: Tensor<B, 2>,
    dy: Tensor<B, 2>,
) -> (Tensor<B, 2>, Tensor<B, 1>) {
    let dtype = x.dtype();
    let xhat = x.cast(F32) * rstd.clone();
    let dy = dy.cast(F32);
    let gamma_dtype = gamma.dtype();
    let g = dy.clone() * gamma.cast(F32).unsqueeze::<2>();
    let d_gamma = sum_rows(dy * xhat.clone()).cast(gamma_dtype);
    let proj = (g.clone() * xhat.clone()).mean_dim(1);
    let dx = (g - xhat * proj) * rstd;
    (dx.cast(dtype), d_gamma)
}

/// `(y, rstd)` of the gated RMSNorm, `RMSNorm(x · SiLU(z)) · γ` (`rstd` of the gated input).
pub fn gated_rms_norm_forward<B: Backend>(
    x: Tensor<B, 2>,
    z: Tensor<B, 2>,
    gamma: Tensor<B, 1>,
    epsilon: f64,
) -> (Tensor<B, 2>, Tensor<B, 2>) {
    let dtype = x.dtype();
    let zf = z.cast(F32);
    let gated = x.cast(F32) * (zf.clone() * sigmoid(zf));
    let rstd = (gated.clone().square().mean_dim(1) + epsilon)
        .sqrt()
        .recip();
    let y = gated * rstd.clone() * gamma.cast(F32).unsqueeze::<2>();
    (y.cast(dtype), rstd)
}

/// `(dx, dz, dγ)` of the gated RMSNorm: the RMSNorm backward at `u = x·SiLU(z)`, then
/// `dx = du·SiLU(z)` and `dz = du·x·σ(z)·(1 + z·(1 − σ(z)))`.
pub fn gated_rms_norm_backward<B: Backend>(
    x: Tensor<B, 2>,
    z: Tensor<B, 2>,
    gamma: Tensor<B, 1>,
    rstd: Tensor<B, 2>,
    dy: Tensor<B, 2>,
) -> (Tensor<B, 2>, Tensor<B, 2>, Tensor<B, 1>) {
    let dtype = x.dtype();
    let (xf, zf) = (x.cast(F32), z.cast(F32));
    let s = sigmoid(zf.clone());
    let silu = zf.clone() * s.clone();
    let uhat = xf.clone() * silu.clone() * rstd.clone();
    let dy = dy.cast(F32);
    let gamma_dtype = gamma.dtype();
    let g = dy.clone() * gamma.cast(F32).unsqueeze::<2>();
    let d_gamma = sum_rows(dy * uhat.clone()).cast(gamma_dtype);
    let proj = (g.clone() * uhat.clone()).mean_dim(1);
    let du = (g - uhat * proj) * rstd;
    let dx = du.clone() * silu;
    let dz = du * xf * s.clone() * (s.neg().add_scalar(1.0) * zf).add_scalar(1.0);
    (dx.cast(dtype), dz.cast(dtype), d_gamma)
}

/// `Σ_rows t` of `t [rows, d]`, as a reduction along contiguous rows of the transposed copy.
/// CubeCL reduces a strided axis with one unit per output, each walking every row (640
/// outputs over 32K rows for a norm's scale at 8 × 4096 tokens); the copy costs one pass.
/// (Call N's profile: 365 reductions took 317 ms of a 1.45 s profiled step.)
pub fn sum_rows<B: Backend>(t: Tensor<B, 2>) -> Tensor<B, 1> {
    let [rows, d] = t.dims();
    // A reshape of the swapped view makes it contiguous.
    t.swap_dims(0, 1)
        .reshape([d * rows])
        .reshape([d, rows])
        .sum_dim(1)
        .reshape([d])
}

/// `dx = dy · σ(x)·(1 + x·(1 − σ(x)))`.
pub fn silu_backward<B: Backend>(x: Tensor<B, 1>, dy: Tensor<B, 1>) -> Tensor<B, 1> {
    let dtype = x.dtype();
    let xf = x.cast(F32);
    let s = sigmoid(xf.clone());
    let dx = dy.cast(F32) * s.clone() * (s.neg().add_scalar(1.0) * xf).add_scalar(1.0);
    dx.cast(dtype)
}
