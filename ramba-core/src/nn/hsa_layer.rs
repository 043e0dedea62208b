//! HSA layer (spec §4): NoPE queries from the layer's own residual attend inside the chunks the
//! group's [`Retrieval`](super::retrieval::Retrieval) selected, over the shared chunk memory.

use burn::nn::{Linear, RmsNorm};
use burn::prelude::*;

use super::chunk_memory::ChunkMemoryOutput;
use super::mlp::SwiGluMlp;
use super::{linear, rms_norm};
use crate::config::{mlp_hidden, ModelConfig};
use crate::ops::{ChunkSelection, HsaOptions, RambaBackend};

/// See the module docs. With `hsa_mlp` the output is `h + MLP(norm(h + W_O·O))` (the follow-up
/// paper's bypassing residual), else `h + W_O·O`.
#[derive(Module, Debug)]
pub struct HsaLayer<B: Backend> {
    norm: RmsNorm<B>,
    query: Linear<B>,
    out: Linear<B>,
    mlp_norm: Option<RmsNorm<B>>,
    mlp: Option<SwiGluMlp<B>>,
    n_heads: usize,
    head_dim: usize,
    chunk_size: usize,
    softmax_off_by_one: bool,
}

impl<B: Backend> HsaLayer<B> {
    /// From the `[model.hsa]` settings.
    pub fn new(cfg: &ModelConfig, device: &B::Device) -> Self {
        let h = &cfg.hsa;
        let inner = h.n_heads * h.head_dim;
        Self {
            norm: rms_norm(cfg.d_model, cfg.norm_eps, device),
            query: linear(cfg.d_model, inner, false, cfg.init_std, device),
            out: linear(inner, cfg.d_model, false, cfg.init_std, device),
            mlp_norm: h
                .hsa_mlp
                .then(|| rms_norm(cfg.d_model, cfg.norm_eps, device)),
            mlp: h.hsa_mlp.then(|| {
                SwiGluMlp::new(
                    cfg.d_model,
                    mlp_hidden(h.mlp_hidden, cfg.d_model),
                    cfg.init_std,
                    device,
                )
            }),
            n_heads: h.n_heads,
            head_dim: h.head_dim,
            chunk_size: h.chunk_size,
            softmax_off_by_one: h.softmax_off_by_one,
        }
    }
}

impl<B: RambaBackend> HsaLayer<B> {
    /// `h`: `[batch, seq, d_model]` → `[batch, seq, d_model]`.
    pub fn forward(
        &self,
        h: Tensor<B, 3>,
        memory: &ChunkMemoryOutput<B>,
        selection: &ChunkSelection<B>,
    ) -> Tensor<B, 3> {
        let [batch, seq, d] = h.dims();
        let q = self.query.forward(self.norm.forward(h.clone())).reshape([
            batch,
            seq,
            self.n_heads,
            self.head_dim,
        ]);
        let o = crate::ops::hsa::hsa(
            q,
            memory.keys.clone(),
            memory.values.clone(),
            selection.indices.clone(),
            selection.weights.clone(),
            HsaOptions {
                chunk_size: self.chunk_size,
                softmax_off_by_one: self.softmax_off_by_one,
            },
        );
        let o = self
            .out
            .forward(o.reshape([batch, seq, self.n_heads * self.head_dim]));
        match (&self.mlp_norm, &self.mlp) {
            (Some(norm), Some(mlp)) => h.clone() + mlp.forward(norm.forward(h + o)),
            _ => {
                debug_assert_eq!(o.dims()[2], d);
                h + o
            }
        }
    }
}
