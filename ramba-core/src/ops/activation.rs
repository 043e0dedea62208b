//! Small differentiable helpers shared by the ops and the models.

use burn::prelude::*;

/// `log(1 + exp(x))`, computed without overflow for large `|x|`.
pub fn softplus<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    x.clone().clamp_min(0.0) + x.abs().neg().exp().log1p()
}
