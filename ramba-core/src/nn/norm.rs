//! Gated RMSNorm of Mamba-2: `RMSNorm(x · SiLU(z)) · γ` (the gate is applied before the norm, as
//! `norm_before_gate = False` in mamba_ssm).

use burn::module::Param;
use burn::prelude::*;

use crate::ops::RambaBackend;

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
}

impl<B: RambaBackend> GatedRmsNorm<B> {
    /// `x, z`: `[.., d]` → `[.., d]`, in `x`'s dtype: one graph node
    /// ([`crate::ops::norm::gated_rms_norm`], f32 inside, keeping `x`, `z` and one f32 a row).
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>, z: Tensor<B, D>) -> Tensor<B, D> {
        crate::ops::norm::gated_rms_norm(x, z, self.gamma.val(), self.epsilon)
    }
}
