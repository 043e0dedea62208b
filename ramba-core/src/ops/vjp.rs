//! Helpers for the references' backward: gradients of a reference op obtained by running it
//! under `Autodiff<B>` (the default `*_backward` methods of `RambaBackend`, and the oracle of
//! the backward kernels).

use burn::backend::Autodiff;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::ops::FloatTensor;

use super::into_float;

/// `t` as a tracked leaf of `Autodiff<B>`.
pub(crate) fn track<B: Backend, const D: usize>(t: &Tensor<B, D>) -> Tensor<Autodiff<B>, D> {
    Tensor::from_inner(t.clone()).require_grad()
}

/// The gradient of a tracked leaf; zeros when the loss does not reach it (e.g. `L = 0`).
pub(crate) fn grad<B: Backend, const D: usize>(
    t: &Tensor<Autodiff<B>, D>,
    grads: &<Autodiff<B> as AutodiffBackend>::Gradients,
) -> FloatTensor<B> {
    into_float(
        t.grad(grads)
            .unwrap_or_else(|| t.clone().inner().zeros_like()),
    )
}
