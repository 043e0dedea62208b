//! Layers that compute in the dtype of their input, whatever their parameters' dtype: the
//! mixed-precision forward of [`crate::precision`]. Parameters stay f32 (the optimizer's master
//! weights) and are cast at use, as PyTorch's autocast does; with f32 inputs every cast is a
//! no-op, so f32 models run exactly as before.

use crate::ops::RambaBackend;
use burn::nn::{Linear, RmsNorm};
use burn::prelude::*;

/// A module's forward in the dtype of its input.
pub trait Autocast<B: Backend> {
    /// `x [.., d_in]` → `[.., d_out]`, in `x`'s dtype.
    fn forward_autocast<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D>;
}

impl<B: RambaBackend> Autocast<B> for Linear<B> {
    /// [`crate::ops::linear::linear`]: on backends that fuse it, one graph node whose weight
    /// gradient is written straight into f32.
    fn forward_autocast<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        crate::ops::linear::linear(x, self.weight.val(), self.bias.as_ref().map(|b| b.val()))
    }
}

impl<B: RambaBackend> Autocast<B> for RmsNorm<B> {
    /// [`crate::ops::norm::rms_norm`]: the statistic and the scaling in f32, the output in `x`'s
    /// dtype; on backends that fuse it, one graph node keeping only `x` and one f32 per row.
    fn forward_autocast<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        crate::ops::norm::rms_norm(x, self.gamma.val(), self.epsilon)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;
    use burn::tensor::Distribution;

    type Cpu = NdArray<f32>;

    /// With f32 inputs the autocast forward is the module's own (the norm up to rounding: it
    /// multiplies by `1 / rms` where Burn's divides by `rms`).
    #[test]
    fn f32_inputs_are_unchanged() {
        let device = Default::default();
        let lin = crate::nn::linear::<Cpu>(6, 5, true, 0.3, &device);
        let norm = crate::nn::rms_norm::<Cpu>(6, 1e-5, &device);
        let x = Tensor::<Cpu, 3>::random([2, 3, 6], Distribution::Normal(0.0, 1.0), &device);
        lin.forward(x.clone())
            .into_data()
            .assert_eq(&lin.forward_autocast(x.clone()).into_data(), true);
        norm.forward(x.clone()).into_data().assert_approx_eq::<f32>(
            &norm.forward_autocast(x).into_data(),
            burn::tensor::Tolerance::relative(1e-6),
        );
    }
}
