//! Token embedding and LM head, tied (the paper) or separate.

use burn::nn::{Embedding, EmbeddingConfig, Initializer, Linear, RmsNorm};
use burn::prelude::*;
use burn::tensor::DType;

use crate::config::ModelConfig;
use crate::nn::{linear, rms_norm, Autocast};

/// Embedding in, final RMSNorm and projection to the vocabulary out.
#[derive(Module, Debug)]
pub struct LmHead<B: Backend> {
    embedding: Embedding<B>,
    norm: RmsNorm<B>,
    head: Option<Linear<B>>,
    /// What the model computes in ([`crate::precision`]); the parameters stay f32 whatever it
    /// is, so it is not part of checkpoints.
    compute: DType,
}

impl<B: Backend> LmHead<B> {
    /// From the `[model]` settings.
    pub fn new(cfg: &ModelConfig, device: &B::Device) -> Self {
        Self {
            embedding: EmbeddingConfig::new(cfg.vocab_size, cfg.d_model)
                .with_initializer(Initializer::Normal {
                    mean: 0.0,
                    std: cfg.init_std,
                })
                .init(device),
            norm: rms_norm(cfg.d_model, cfg.norm_eps, device),
            head: (!cfg.tie_embeddings)
                .then(|| linear(cfg.d_model, cfg.vocab_size, false, cfg.init_std, device)),
            compute: DType::F32,
        }
    }

    /// The dtype the model computes in.
    pub fn compute_dtype(&self) -> DType {
        self.compute
    }

    /// Computes in `dtype` from the embedding on (see [`crate::precision`]).
    pub fn set_compute_dtype(&mut self, dtype: DType) {
        self.compute = dtype;
    }
}

impl<B: crate::ops::RambaBackend> LmHead<B> {
    /// `[batch, seq]` → `[batch, seq, d_model]`, in the compute dtype.
    pub fn embed(&self, tokens: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        crate::ops::embedding::embedding(self.embedding.weight.val(), tokens).cast(self.compute)
    }

    /// The training loss of `x [batch, seq, d_model]` against `targets` weighted by `mask`
    /// (`[batch, seq]`): [`crate::model::lm_loss`] of [`logits`](Self::logits), except where
    /// the backend fuses the linear layers, where the head's product and the loss are one node
    /// that never holds all the logits ([`crate::ops::cross_entropy::head`]).
    pub fn loss(
        &self,
        x: Tensor<B, 3>,
        targets: Tensor<B, 2, Int>,
        mask: Tensor<B, 2>,
    ) -> Tensor<B, 1> {
        let biased = self.head.as_ref().is_some_and(|h| h.bias.is_some());
        if !B::fused_linear() || biased {
            return crate::model::lm_loss(self.logits(x), targets, mask);
        }
        let x = self.norm.forward_autocast(x);
        let [batch, seq, d] = x.dims();
        let weight = match &self.head {
            Some(head) => head.weight.val(),
            None => self.embedding.weight.val().transpose(),
        };
        crate::ops::cross_entropy::linear_cross_entropy(
            x.reshape([batch * seq, d]),
            weight,
            targets.reshape([batch * seq]),
            mask.reshape([batch * seq]),
        )
    }

    /// `[batch, seq, d_model]` → logits `[batch, seq, vocab]`, in the compute dtype (the loss
    /// takes them as they are and works in f32 a block of rows at a time: an f32 copy of
    /// a batch's logits is 6.6 GB at 8 × 4096 tokens of a 50,280-token vocabulary).
    pub fn logits(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let x = self.norm.forward_autocast(x);
        match &self.head {
            Some(head) => head.forward_autocast(x),
            // Tied: the embedding `[vocab, d]`, read transposed in place by the fused node.
            None if B::fused_linear() => {
                crate::ops::linear::linear(x, self.embedding.weight.val().transpose(), None)
            }
            // The CPU's product, as one 2-D matmul (the rounding its recipes were tuned on).
            None => {
                let [batch, seq, d] = x.dims();
                let w = self.embedding.weight.val().cast(x.dtype()); // [vocab, d]
                let vocab = w.dims()[0];
                x.reshape([batch * seq, d])
                    .matmul(w.transpose())
                    .reshape([batch, seq, vocab])
            }
        }
    }
}
