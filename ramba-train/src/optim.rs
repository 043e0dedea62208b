//! Optimizer plumbing: parameter groups (weight decay only on matrices), global-norm gradient
//! clipping, and the two AdamW instances that share one schedule.

use std::collections::HashSet;

use burn::module::{AutodiffModule, ModuleVisitor, Param, ParamId};
use burn::optim::{GradientsParams, Optimizer};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use ramba_core::optim::{AdamWSettings, FusedAdamW};
use ramba_experiment::TrainConfig;

/// Parameters that get weight decay: matrices, except the embedding. Norm gains, biases, SSM
/// scalars (`dt_bias`, `A_log`, `D`) and the CLS vector are 1-D and excluded, as in mamba_ssm and
/// the paper's HF trainer.
pub fn decayed_params<B: Backend, M: burn::module::Module<B>>(model: &M) -> HashSet<ParamId> {
    struct Groups {
        path: Vec<String>,
        decay: HashSet<ParamId>,
    }
    impl<B: Backend> ModuleVisitor<B> for Groups {
        fn enter_module(&mut self, name: &str, _: &str) {
            self.path.push(name.to_string());
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.path.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            if D >= 2 && !self.path.iter().any(|p| p == "embedding") {
                self.decay.insert(param.id);
            }
        }
    }
    let mut g = Groups {
        path: vec![],
        decay: HashSet::new(),
    };
    model.visit(&mut g);
    g.decay
}

/// Global L2 norm of all gradients, and the gradients scaled to norm ≤ `max_norm` (0 = no clip),
/// split into (decayed, not decayed).
pub fn clip_and_split<B: AutodiffBackend, M: AutodiffModule<B>>(
    model: &M,
    mut grads: GradientsParams,
    max_norm: f64,
    decay: &HashSet<ParamId>,
) -> (f64, GradientsParams, GradientsParams) {
    struct Norm<'a, B: AutodiffBackend> {
        grads: &'a GradientsParams,
        sum: Option<Tensor<B::InnerBackend, 1>>,
    }
    impl<B: AutodiffBackend> ModuleVisitor<B> for Norm<'_, B> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            if let Some(g) = self.grads.get::<B::InnerBackend, D>(param.id) {
                let sq = g.square().sum();
                self.sum = Some(match self.sum.take() {
                    Some(s) => s + sq,
                    None => sq,
                });
            }
        }
    }
    let mut norm = Norm::<B> {
        grads: &grads,
        sum: None,
    };
    model.visit(&mut norm);
    let total: f64 = norm
        .sum
        .map_or(0.0, |s| s.into_scalar().elem::<f64>().sqrt());
    let scale = if max_norm > 0.0 && total > max_norm {
        max_norm / (total + 1e-6)
    } else {
        1.0
    };

    struct Split<'a, B: AutodiffBackend> {
        grads: &'a mut GradientsParams,
        decay: &'a HashSet<ParamId>,
        scale: f64,
        with: GradientsParams,
        without: GradientsParams,
        _b: std::marker::PhantomData<B>,
    }
    impl<B: AutodiffBackend> ModuleVisitor<B> for Split<'_, B> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            if let Some(g) = self.grads.remove::<B::InnerBackend, D>(param.id) {
                let g = if self.scale != 1.0 {
                    g.mul_scalar(self.scale)
                } else {
                    g
                };
                let target = if self.decay.contains(&param.id) {
                    &mut self.with
                } else {
                    &mut self.without
                };
                target.register::<B::InnerBackend, D>(param.id, g);
            }
        }
    }
    let mut split = Split::<B> {
        grads: &mut grads,
        decay,
        scale,
        with: GradientsParams::new(),
        without: GradientsParams::new(),
        _b: Default::default(),
    };
    model.visit(&mut split);
    (total, split.with, split.without)
}

/// The two AdamW instances (with and without weight decay) of a run.
pub struct AdamWPair<O> {
    /// For [`decayed_params`].
    pub decay: O,
    /// For everything else.
    pub no_decay: O,
}

/// AdamW of a `[train]` section, with a given weight decay: one kernel a parameter on the GPU
/// backends, Burn's op-by-op AdamW on the CPU ([`FusedAdamW`]).
pub fn adamw(cfg: &TrainConfig, weight_decay: f64) -> FusedAdamW {
    FusedAdamW::new(AdamWSettings {
        beta_1: cfg.beta1 as f32,
        beta_2: cfg.beta2 as f32,
        epsilon: cfg.eps as f32,
        weight_decay: weight_decay as f32,
    })
}

impl<O> AdamWPair<O> {
    /// One update of `model` with both groups at learning rate `lr`.
    pub fn step<B: AutodiffBackend, M: AutodiffModule<B>>(
        &mut self,
        lr: f64,
        model: M,
        with: GradientsParams,
        without: GradientsParams,
    ) -> M
    where
        O: Optimizer<M, B>,
    {
        let model = self.decay.step(lr, model, with);
        self.no_decay.step(lr, model, without)
    }
}
