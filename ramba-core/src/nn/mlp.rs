//! SwiGLU MLP: `W_down (SiLU(W_gate x) ∘ W_up x)`.

use burn::nn::Linear;
use burn::prelude::*;

use super::{linear, Autocast};

/// See the module docs.
#[derive(Module, Debug)]
pub struct SwiGluMlp<B: Backend> {
    gate: Linear<B>,
    up: Linear<B>,
    down: Linear<B>,
}

impl<B: Backend> SwiGluMlp<B> {
    /// `d → hidden → d`, no biases.
    pub fn new(d: usize, hidden: usize, std: f64, device: &B::Device) -> Self {
        Self {
            gate: linear(d, hidden, false, std, device),
            up: linear(d, hidden, false, std, device),
            down: linear(hidden, d, false, std, device),
        }
    }
}

impl<B: crate::ops::RambaBackend> SwiGluMlp<B> {
    /// `[.., d]` → `[.., d]`.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        self.down.forward_autocast(
            crate::ops::norm::silu(self.gate.forward_autocast(x.clone()))
                * self.up.forward_autocast(x),
        )
    }
}
