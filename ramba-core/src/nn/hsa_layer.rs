//! HSA layer (spec §4): NoPE queries from the layer's own residual attend inside the chunks the
//! group's [`Retrieval`](super::retrieval::Retrieval) selected, over the shared chunk memory.

use burn::config::Config;
use burn::nn::{Linear, RmsNorm};
use burn::prelude::*;

use super::chunk_memory::ChunkMemoryOutput;
use super::mlp::SwiGluMlp;
use super::{linear, rms_norm, Autocast};
use crate::ops::{ChunkSelection, HsaOptions, RambaBackend};
use crate::stream::SelectedChunks;

/// What an [`HsaLayer`] is built from; defaults are RAMba-370M's `[model.hsa]` values. A model
/// builds it from its `ModelConfig`; the module itself knows nothing of the model.
#[derive(Config, Debug)]
pub struct HsaLayerConfig {
    /// Model width `d`.
    pub d_model: usize,
    /// Query heads (`h_q`); groups of them share one of the chunk memory's KV heads.
    #[config(default = 16)]
    pub n_heads: usize,
    /// Head dimension (`d_h`), the same as the chunk memory's keys and values.
    #[config(default = 64)]
    pub head_dim: usize,
    /// Tokens per chunk (`S`), the chunk memory's.
    #[config(default = 64)]
    pub chunk_size: usize,
    /// Softmax-off-by-one inside each chunk (a token may attend to nothing in a chunk).
    #[config(default = false)]
    pub softmax_off_by_one: bool,
    /// Hidden width of the follow-up paper's bypassing MLP: with it the output is
    /// `h + MLP(norm(h + W_O·O))`, without it (`None`) `h + W_O·O`.
    pub mlp_hidden: Option<usize>,
    /// Standard deviation of the normal initialisation of the projections.
    #[config(default = 0.02)]
    pub init_std: f64,
    /// Epsilon of the RMSNorms.
    #[config(default = 1e-5)]
    pub norm_eps: f64,
}

impl HsaLayerConfig {
    /// Builds the layer (parameters drawn in the order checkpoints were always written:
    /// norm, query, out, then the MLP's norm and MLP).
    pub fn init<B: Backend>(&self, device: &B::Device) -> HsaLayer<B> {
        let (d, std, eps) = (self.d_model, self.init_std, self.norm_eps);
        let inner = self.n_heads * self.head_dim;
        let norm = rms_norm(d, eps, device);
        let query = linear(d, inner, false, std, device);
        let out = linear(inner, d, false, std, device);
        let mlp_norm = self.mlp_hidden.map(|_| rms_norm(d, eps, device));
        let mlp = self
            .mlp_hidden
            .map(|hidden| SwiGluMlp::new(d, hidden, std, device));
        HsaLayer {
            norm,
            query,
            out,
            mlp_norm,
            mlp,
            n_heads: self.n_heads,
            head_dim: self.head_dim,
            chunk_size: self.chunk_size,
            softmax_off_by_one: self.softmax_off_by_one,
        }
    }
}

/// See the module docs; built by [`HsaLayerConfig::init`]. With the bypassing MLP the output
/// is `h + MLP(norm(h + W_O·O))`, else `h + W_O·O`.
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

impl<B: RambaBackend> HsaLayer<B> {
    /// `h`: `[batch, seq, d_model]` → `[batch, seq, d_model]`.
    pub fn forward(
        &self,
        h: Tensor<B, 3>,
        memory: &ChunkMemoryOutput<B>,
        selection: &ChunkSelection<B>,
    ) -> Tensor<B, 3> {
        self.apply(h, selection.compressed.as_ref(), |q| {
            crate::ops::hsa::hsa(
                q,
                memory.keys.clone(),
                memory.values.clone(),
                selection.indices.clone(),
                selection.weights.clone(),
                self.options(),
            )
        })
    }

    /// Like [`forward`](Self::forward) in a stream: the group's selection and the selected
    /// chunks' keys and values, gathered from the stream's chunk store (`None`: the store
    /// holds no chunk yet, so nothing is read and the attention output is zero, as in the
    /// whole-sequence op).
    pub fn forward_gathered(
        &self,
        h: Tensor<B, 3>,
        read: Option<(&SelectedChunks<B>, &ChunkSelection<B>)>,
    ) -> Tensor<B, 3> {
        let compressed = read.and_then(|(_, selection)| selection.compressed.as_ref());
        self.apply(h, compressed, |q| match read {
            Some((c, selection)) => crate::ops::hsa::hsa_gathered(
                q,
                c.keys.clone(),
                c.values.clone(),
                selection.indices.clone(),
                selection.weights.clone(),
                self.options(),
            ),
            None => q.zeros_like(),
        })
    }

    fn options(&self) -> HsaOptions {
        HsaOptions {
            chunk_size: self.chunk_size,
            softmax_off_by_one: self.softmax_off_by_one,
        }
    }

    /// The layer around its attention: `attend` maps the queries `[batch, seq, h_q, d_h]` to
    /// the attention output of the same shape; `compressed [batch, seq, h_kv, d_h]`, chunk-unaware
    /// selection's readout, is added to it.
    fn apply(
        &self,
        h: Tensor<B, 3>,
        compressed: Option<&Tensor<B, 4>>,
        attend: impl FnOnce(Tensor<B, 4>) -> Tensor<B, 4>,
    ) -> Tensor<B, 3> {
        let [batch, seq, d] = h.dims();
        let q = self
            .query
            .forward_autocast(self.norm.forward_autocast(h.clone()))
            .reshape([batch, seq, self.n_heads, self.head_dim]);
        let o = attend(q);
        // Chunk-unaware selection: its compression readout (one per KV head) joins the output
        // of every query head of the group, as NSA sums its branches.
        let o = match compressed {
            Some(c) => {
                let [_, _, h_kv, d_h] = c.dims();
                let group = self.n_heads / h_kv;
                o + c
                    .clone()
                    .unsqueeze_dim::<5>(3)
                    .expand([batch, seq, h_kv, group, d_h])
                    .reshape([batch, seq, self.n_heads, d_h])
            }
            None => o,
        };
        let o = self
            .out
            .forward_autocast(o.reshape([batch, seq, self.n_heads * self.head_dim]));
        match (&self.mlp_norm, &self.mlp) {
            (Some(norm), Some(mlp)) => h.clone() + mlp.forward(norm.forward_autocast(h + o)),
            _ => {
                debug_assert_eq!(o.dims()[2], d);
                h + o
            }
        }
    }
}
