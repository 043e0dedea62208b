//! Token embedding and LM head, tied (the paper) or separate.

use burn::nn::{Embedding, EmbeddingConfig, Initializer, Linear, RmsNorm};
use burn::prelude::*;

use crate::config::ModelConfig;
use crate::nn::{linear, rms_norm};

/// Embedding in, final RMSNorm and projection to the vocabulary out.
#[derive(Module, Debug)]
pub struct LmHead<B: Backend> {
    embedding: Embedding<B>,
    norm: RmsNorm<B>,
    head: Option<Linear<B>>,
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
        }
    }

    /// `[batch, seq]` → `[batch, seq, d_model]`.
    pub fn embed(&self, tokens: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        self.embedding.forward(tokens)
    }

    /// `[batch, seq, d_model]` → logits `[batch, seq, vocab]`.
    pub fn logits(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let x = self.norm.forward(x);
        match &self.head {
            Some(head) => head.forward(x),
            None => {
                let [batch, seq, d] = x.dims();
                let w = self.embedding.weight.val(); // [vocab, d]
                let vocab = w.dims()[0];
                x.reshape([batch * seq, d])
                    .matmul(w.transpose())
                    .reshape([batch, seq, vocab])
            }
        }
    }
}
