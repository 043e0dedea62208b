//! Retrieval (spec §3): scores every complete past chunk's landmark against a per-token query
//! and selects the top-k, once per group of HSA layers.

use burn::nn::{Linear, RmsNorm};
use burn::prelude::*;

use super::chunk_memory::ChunkMemoryOutput;
use super::{linear, rms_norm};
use crate::config::ModelConfig;
use crate::ops::selection;
use crate::ops::{ChunkSelection, ChunkWeighting, RambaBackend, SelectionOptions};

/// See the module docs.
#[derive(Module, Debug)]
pub struct Retrieval<B: Backend> {
    norm: RmsNorm<B>,
    query: Linear<B>,
    n_heads: usize,
    head_dim: usize,
    chunk_size: usize,
    top_k: usize,
    softmax_weights: bool,
}

impl<B: Backend> Retrieval<B> {
    /// From the `[model.hsa]` settings.
    pub fn new(cfg: &ModelConfig, device: &B::Device) -> Self {
        let h = &cfg.hsa;
        Self {
            norm: rms_norm(cfg.d_model, cfg.norm_eps, device),
            query: linear(cfg.d_model, h.retrieval_dim, false, cfg.init_std, device),
            n_heads: h.n_kv_heads,
            head_dim: h.retrieval_dim / h.n_kv_heads,
            chunk_size: h.chunk_size,
            top_k: h.top_k,
            softmax_weights: h.weighting == ChunkWeighting::Softmax,
        }
    }
}

impl<B: RambaBackend> Retrieval<B> {
    /// `h`: `[batch, seq, d_model]` → indices and weights `[batch, seq, h_kv, top_k]`.
    pub fn forward(&self, h: Tensor<B, 3>, memory: &ChunkMemoryOutput<B>) -> ChunkSelection<B> {
        let [batch, seq, _] = h.dims();
        let options = SelectionOptions {
            chunk_size: self.chunk_size,
            top_k: self.top_k,
            weighting: if self.softmax_weights {
                ChunkWeighting::Softmax
            } else {
                ChunkWeighting::StickBreaking
            },
            query_start: 0,
        };
        let queries = self.query.forward(self.norm.forward(h)).reshape([
            batch,
            seq,
            self.n_heads,
            self.head_dim,
        ]);
        selection::select_chunks(queries, memory.landmarks.clone(), options)
    }
}
