//! AdamW whose step is one kernel a parameter tensor on backends that have it
//! ([`RambaBackend::fused_adamw`]), and Burn's own `AdamW` elsewhere.
//!
//! The update is Burn's: with `g` the gradient, `m ← β₁·m + (1 − β₁)·g`,
//! `v ← β₂·v + (1 − β₂)·g²`, and `p ← p·(1 − lr·λ) − lr · (m / (1 − β₁ᵗ)) / (√(v / (1 − β₂ᵗ)) + ε)`.
//! The state is Burn's `AdamWState`, so checkpoints written by either optimizer load into the
//! other. The CPU backend keeps Burn's op-by-op `AdamW` (bit for bit the trajectory its recipes
//! were tuned on).

use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::LearningRate;
use burn::optim::{AdamW, AdamWConfig, AdamWState, AdaptiveMomentumState, SimpleOptimizer};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{DType, TensorPrimitive};

pub use cubecl_kernels::adamw::AdamWScalars;

use crate::ops::RambaBackend;

/// AdamW's settings (Burn's `AdamWConfig` keeps its fields private).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWSettings {
    pub beta_1: f32,
    pub beta_2: f32,
    pub epsilon: f32,
    pub weight_decay: f32,
}

impl Default for AdamWSettings {
    /// Burn's defaults.
    fn default() -> Self {
        Self {
            beta_1: 0.9,
            beta_2: 0.999,
            epsilon: 1e-5,
            weight_decay: 1e-4,
        }
    }
}

/// AdamW, fused where the backend fuses it (see the module docs).
#[derive(Clone)]
pub struct FusedAdamW {
    settings: AdamWSettings,
    /// Burn's op-by-op AdamW with the same settings: the path of backends without the kernel.
    fallback: AdamW,
}

impl FusedAdamW {
    pub fn new(settings: AdamWSettings) -> Self {
        let fallback = AdamWConfig::new()
            .with_beta_1(settings.beta_1)
            .with_beta_2(settings.beta_2)
            .with_epsilon(settings.epsilon)
            .with_weight_decay(settings.weight_decay)
            .build();
        Self { settings, fallback }
    }

    /// The optimizer of a module `M` trained on `B`.
    pub fn init<B: AutodiffBackend, M: burn::module::AutodiffModule<B>>(
        self,
    ) -> OptimizerAdaptor<Self, M, B>
    where
        B::InnerBackend: RambaBackend,
    {
        OptimizerAdaptor::from(self)
    }
}

impl<B: RambaBackend> SimpleOptimizer<B> for FusedAdamW {
    type State<const D: usize> = AdamWState<B, D>;

    fn step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<B, D>,
        grad: Tensor<B, D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<B, D>, Option<Self::State<D>>) {
        let f32_tensors = tensor.dtype() == DType::F32 && grad.dtype() == DType::F32;
        if !B::fused_adamw() || !f32_tensors {
            return SimpleOptimizer::<B>::step(&self.fallback, lr, tensor, grad, state);
        }
        let s = self.settings;
        let (m, v, time) = match state {
            Some(state) => (
                state.momentum.moment_1,
                state.momentum.moment_2,
                state.momentum.time + 1,
            ),
            None => (grad.zeros_like(), grad.zeros_like(), 1),
        };
        let t = time as i32;
        let scalars = AdamWScalars {
            lr: lr as f32,
            beta_1: s.beta_1,
            beta_2: s.beta_2,
            epsilon: s.epsilon,
            decay: (lr * s.weight_decay as f64) as f32,
            bias_correction_1: 1.0 - s.beta_1.powi(t),
            bias_correction_2: 1.0 - s.beta_2.powi(t),
        };
        let shape = tensor.shape();
        let n = shape.num_elements();
        let prim = |x: Tensor<B, D>| x.reshape([n]).into_primitive().tensor();
        let (p, m, v) = B::adamw_step(prim(tensor), prim(grad), prim(m), prim(v), scalars);
        let back =
            |x| Tensor::<B, D>::from_primitive(TensorPrimitive::Float(x)).reshape(shape.clone());
        let state = AdamWState {
            momentum: AdaptiveMomentumState {
                time,
                moment_1: back(m),
                moment_2: back(v),
                max_moment_2: None,
            },
        };
        (back(p), Some(state))
    }

    fn to_device<const D: usize>(state: Self::State<D>, device: &B::Device) -> Self::State<D> {
        <AdamW as SimpleOptimizer<B>>::to_device(state, device)
    }
}
