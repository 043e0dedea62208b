//! The linear layer composed of differentiable tensor ops: what `Autodiff` builds without the
//! node of [`super::autodiff`] (the CPU backend trains through it), and the oracle that node is
//! tested against.

use burn::prelude::*;

/// `x [.., d_in] · weight [d_in, d_out] + bias [d_out]` in `x`'s dtype, the parameters cast at
/// use (a no-op when they already have it).
pub fn linear<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    weight: Tensor<B, 2>,
    bias: Option<Tensor<B, 1>>,
) -> Tensor<B, D> {
    let dtype = x.dtype();
    burn::tensor::module::linear(x, weight.cast(dtype), bias.map(|b| b.cast(dtype)))
}
