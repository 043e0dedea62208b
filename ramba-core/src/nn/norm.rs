//! Gated RMSNorm of Mamba-2: `RMSNorm(x · SiLU(z)) · γ` (the gate is applied before the norm, as
//! `norm_before_gate = False` in mamba_ssm).

use burn::module::Param;
use burn::prelude::*;
use burn::tensor::activation::silu;
use burn::tensor::DType;

/// See the module docs.
#[derive(Module, Debug)]
pub struct GatedRmsNorm<B: Backend> {
    /// Scale `γ`, `[d]`.
    pub gamma: Param<Tensor<B, 1>>,
    /// Added to the mean square.
    pub epsilon: f64,
}

impl<B: Backend> GatedRmsNorm<B> {
    /// `γ = 1`.
    pub fn new(d: usize, epsilon: f64, device: &B::Device) -> Self {
        Self {
            gamma: Param::from_tensor(Tensor::ones([d], device)),
            epsilon,
        }
    }

    /// `x, z`: `[.., d]` → `[.., d]`, in `x`'s dtype; the mean square is taken in f32 (see
    /// [`Autocast`](super::Autocast)).
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>, z: Tensor<B, D>) -> Tensor<B, D> {
        let dtype = x.dtype();
        let x = x * silu(z);
        let rms = (x.clone().cast(DType::F32).square().mean_dim(D - 1) + self.epsilon).sqrt();
        x / rms.cast(dtype) * self.gamma.val().cast(dtype).unsqueeze()
    }
}
