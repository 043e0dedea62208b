//! Retrieval (spec §3): scores every complete past chunk's landmark against a per-token query
//! and selects the top-k, once per group of HSA layers.

use burn::config::Config;
use burn::nn::{Linear, RmsNorm};
use burn::prelude::*;

use super::chunk_memory::ChunkMemoryOutput;
use super::{linear, rms_norm, Autocast};
use crate::ops::selection;
use crate::ops::{ChunkSelection, ChunkWeighting, RambaBackend, SelectionMode, SelectionOptions};

/// What a [`Retrieval`] is built from; defaults are RAMba-370M's `[model.hsa]` values. A
/// model builds it from its `ModelConfig`; the module itself knows nothing of the model.
#[derive(Config, Debug)]
pub struct RetrievalConfig {
    /// Model width `d`: the residual the queries are projected from.
    pub d_model: usize,
    /// Width of the queries (and of the chunk memory's landmarks), `d_r`, split over the heads.
    pub retrieval_dim: usize,
    /// Retrieval heads: the HSA layers' KV heads (`h_kv`), each selecting its own chunks.
    #[config(default = 1)]
    pub n_heads: usize,
    /// Tokens per chunk (`S`): with it, a token's visible chunks are the complete ones before it.
    #[config(default = 64)]
    pub chunk_size: usize,
    /// Chunks selected per token (`K`).
    #[config(default = 8)]
    pub top_k: usize,
    /// How the selected chunks' scores become weights.
    #[config(default = "ChunkWeighting::StickBreaking")]
    pub weighting: ChunkWeighting,
    /// Chunk-aware (HSA) or chunk-unaware (NSA-style) learning of the scores.
    #[config(default = "SelectionMode::ChunkAware")]
    pub selection: SelectionMode,
    /// Standard deviation of the normal initialisation of the query projection.
    #[config(default = 0.02)]
    pub init_std: f64,
    /// Epsilon of the input RMSNorm.
    #[config(default = 1e-5)]
    pub norm_eps: f64,
}

impl RetrievalConfig {
    /// Builds the module (parameters drawn in the order checkpoints were always written:
    /// norm, then query).
    pub fn init<B: Backend>(&self, device: &B::Device) -> Retrieval<B> {
        Retrieval {
            norm: rms_norm(self.d_model, self.norm_eps, device),
            query: linear(
                self.d_model,
                self.retrieval_dim,
                false,
                self.init_std,
                device,
            ),
            n_heads: self.n_heads,
            head_dim: self.retrieval_dim / self.n_heads,
            chunk_size: self.chunk_size,
            top_k: self.top_k,
            softmax_weights: self.weighting == ChunkWeighting::Softmax,
            chunk_unaware: self.selection == SelectionMode::ChunkUnaware,
        }
    }
}

/// See the module docs; built by [`RetrievalConfig::init`].
#[derive(Module, Debug)]
pub struct Retrieval<B: Backend> {
    norm: RmsNorm<B>,
    query: Linear<B>,
    n_heads: usize,
    head_dim: usize,
    chunk_size: usize,
    top_k: usize,
    softmax_weights: bool,
    chunk_unaware: bool,
}

impl<B: RambaBackend> Retrieval<B> {
    /// `h`: `[batch, seq, d_model]` → indices and weights `[batch, seq, h_kv, top_k]`.
    pub fn forward(&self, h: Tensor<B, 3>, memory: &ChunkMemoryOutput<B>) -> ChunkSelection<B> {
        let landmarks = memory.landmarks.clone();
        // Chunk-unaware selection's compressed attention reads the chunks' mean-pooled values.
        let pooled = self.chunk_unaware.then(|| {
            selection::unaware::mean_pooled_values(
                memory.values.clone(),
                landmarks.dims()[1],
                self.chunk_size,
            )
        });
        self.select(h, landmarks, pooled, 0)
    }

    /// Selection of `h`'s tokens at positions `query_start..` among `landmarks
    /// [batch, n_chunks, h_kv, d_r]` (a stream's: chunks of earlier calls included).
    /// `pooled [batch, n_chunks, h_kv, d_h]`, the chunks' mean-pooled values, is required by
    /// chunk-unaware selection (its compressed attention reads them) and ignored otherwise.
    ///
    /// # Panics
    /// If the retrieval is chunk-unaware and `pooled` is `None`: a caller bug, not input.
    pub fn select(
        &self,
        h: Tensor<B, 3>,
        landmarks: Tensor<B, 4>,
        pooled: Option<Tensor<B, 4>>,
        query_start: usize,
    ) -> ChunkSelection<B> {
        let pooled = match (self.chunk_unaware, pooled) {
            (true, Some(p)) => Some(p),
            (true, None) => {
                panic!("chunk-unaware selection needs the chunks' mean-pooled values")
            }
            (false, _) => None,
        };
        let [batch, seq, _] = h.dims();
        let options = SelectionOptions {
            chunk_size: self.chunk_size,
            top_k: self.top_k,
            weighting: if self.softmax_weights {
                ChunkWeighting::Softmax
            } else {
                ChunkWeighting::StickBreaking
            },
            query_start,
        };
        let queries = self
            .query
            .forward_autocast(self.norm.forward_autocast(h))
            .reshape([batch, seq, self.n_heads, self.head_dim]);
        match pooled {
            Some(pooled) => selection::unaware::select_chunks_unaware_pooled(
                queries, landmarks, pooled, options,
            ),
            None => selection::select_chunks(queries, landmarks, options),
        }
    }
}
