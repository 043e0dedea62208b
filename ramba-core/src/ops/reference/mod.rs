//! Reference implementations of the ops in [`RambaBackend`](super::RambaBackend).
//!
//! Plain Burn tensor ops only: slow but exact, differentiable through `Autodiff`, valid on every
//! backend. Every kernel is tested against these, and these are tested against hand-derived
//! cases, naive loops and finite differences (see `tests/` in this crate).

pub mod conv;
pub mod hsa;
pub mod scan;
pub mod selection;

use burn::prelude::*;

/// `log(1 + exp(x))`, computed without overflow for large `|x|`.
pub fn softplus<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    x.clone().clamp_min(0.0) + x.abs().neg().exp().log1p()
}
