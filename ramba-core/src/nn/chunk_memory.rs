//! Chunk memory (spec §2): built once from the lower decoder's output and shared by every HSA
//! layer. Each complete chunk of `S` tokens is encoded on its own by a small bidirectional
//! transformer; its landmark (selection key) and its tokens' keys and values come from the
//! encoder output. Bidirectional encoding is causal from the reader's side, since a chunk becomes
//! readable only once complete.

use burn::config::Config;
use burn::module::Param;
use burn::nn::{Linear, RmsNorm};
use burn::prelude::*;

use super::attention::{AttentionMask, AttentionSettings};
use super::block::TransformerBlock;
use super::{linear, rms_norm, Autocast};
use crate::config::Landmark;
use crate::ops::RambaBackend;

/// The memory HSA layers read.
#[derive(Clone, Debug)]
pub struct ChunkMemoryOutput<B: Backend> {
    /// `[batch, n_chunks, h_kv, d_r / h_kv]`.
    pub landmarks: Tensor<B, 4>,
    /// `[batch, seq, h_kv, d_h]`; positions past the last complete chunk are zero (never read).
    pub keys: Tensor<B, 4>,
    /// `[batch, seq, h_kv, d_h]`, like `keys`.
    pub values: Tensor<B, 4>,
}

/// See the module docs; built by [`ChunkMemoryConfig::init`].
#[derive(Module, Debug)]
pub struct ChunkMemory<B: Backend> {
    cls: Option<Param<Tensor<B, 1>>>,
    encoder: Vec<TransformerBlock<B>>,
    norm: RmsNorm<B>,
    landmark: Linear<B>,
    key: Linear<B>,
    value: Linear<B>,
    chunk_size: usize,
    n_kv_heads: usize,
    head_dim: usize,
    retrieval_dim: usize,
}

/// What a [`ChunkMemory`] is built from; defaults are RAMba-370M's `[model.hsa]` values. A
/// model builds it from its `ModelConfig`; the module itself knows nothing of the model.
#[derive(Config, Debug)]
pub struct ChunkMemoryConfig {
    /// Model width `d`.
    pub d_model: usize,
    /// Landmark width (`d_r`), split over the KV heads: the retrieval queries' width.
    pub retrieval_dim: usize,
    /// SwiGLU hidden width of the encoder layers (resolved, not 0).
    pub mlp_hidden: usize,
    /// Tokens per chunk (`S`).
    #[config(default = 64)]
    pub chunk_size: usize,
    /// KV heads (`h_kv`), also the number of retrieval heads.
    #[config(default = 1)]
    pub n_kv_heads: usize,
    /// Key/value head dimension (`d_h`).
    #[config(default = 64)]
    pub head_dim: usize,
    /// CLS or mean landmarks.
    #[config(default = "Landmark::Cls")]
    pub landmark: Landmark,
    /// Bidirectional encoder layers (0 = RMSNorm only).
    #[config(default = 1)]
    pub encoder_layers: usize,
    /// Encoder attention heads.
    #[config(default = 16)]
    pub encoder_heads: usize,
    /// Encoder KV heads.
    #[config(default = 16)]
    pub encoder_kv_heads: usize,
    /// Standard deviation of the normal initialisation.
    #[config(default = 0.02)]
    pub init_std: f64,
    /// RMSNorm epsilon.
    #[config(default = 1e-5)]
    pub norm_eps: f64,
}

impl ChunkMemoryConfig {
    /// Builds the module (parameters drawn in the same order as always: CLS, encoder, norm,
    /// landmark, key, value).
    pub fn init<B: Backend>(&self, device: &B::Device) -> ChunkMemory<B> {
        let d = self.d_model;
        let settings = AttentionSettings {
            d_model: d,
            n_heads: self.encoder_heads,
            n_kv_heads: self.encoder_kv_heads,
            qkv_bias: true,
            qk_norm: true,
            rope_theta: 10_000.0,
            init_std: self.init_std,
            norm_eps: self.norm_eps,
        };
        let cls = (self.landmark == Landmark::Cls).then(|| {
            Param::from_tensor(Tensor::random(
                [d],
                burn::tensor::Distribution::Normal(0.0, self.init_std),
                device,
            ))
        });
        let kv = self.n_kv_heads * self.head_dim;
        ChunkMemory {
            cls,
            encoder: (0..self.encoder_layers)
                .map(|_| TransformerBlock::new(&settings, self.mlp_hidden, device))
                .collect(),
            norm: rms_norm(d, self.norm_eps, device),
            landmark: linear(d, self.retrieval_dim, false, self.init_std, device),
            key: linear(d, kv, false, self.init_std, device),
            value: linear(d, kv, false, self.init_std, device),
            chunk_size: self.chunk_size,
            n_kv_heads: self.n_kv_heads,
            head_dim: self.head_dim,
            retrieval_dim: self.retrieval_dim,
        }
    }
}

impl<B: RambaBackend> ChunkMemory<B> {
    /// Tokens per chunk (`S`).
    pub fn chunk_size(&self) -> usize {
        self.chunk_size
    }

    /// `h`: `[batch, seq, d_model]`, the residual after the lower decoder.
    pub fn forward(&self, h: Tensor<B, 3>) -> ChunkMemoryOutput<B> {
        let [batch, seq, d] = h.dims();
        let s = self.chunk_size;
        let n_chunks = seq / s;
        let device = h.device();
        // The memory is in the activations' dtype (the compute dtype of mixed precision).
        let dtype = h.dtype();
        let zeros = |shape: [usize; 4]| Tensor::<B, 4>::zeros(shape, (&device, dtype));
        let kv_shape = [batch, seq, self.n_kv_heads, self.head_dim];
        let lmk_heads = [
            batch,
            n_chunks,
            self.n_kv_heads,
            self.retrieval_dim / self.n_kv_heads,
        ];
        if n_chunks == 0 {
            return ChunkMemoryOutput {
                landmarks: zeros(lmk_heads),
                keys: zeros(kv_shape),
                values: zeros(kv_shape),
            };
        }

        let rows = batch * n_chunks;
        let mut x = h.slice([0..batch, 0..n_chunks * s]).reshape([rows, s, d]);
        if let Some(cls) = &self.cls {
            // The CLS vector goes last, at in-chunk position S.
            let cls = cls
                .val()
                .cast(dtype)
                .reshape([1, 1, d])
                .expand([rows, 1, d]);
            x = Tensor::cat(vec![x, cls], 1);
        }
        for layer in &self.encoder {
            x = layer.forward(x, 0, AttentionMask::Bidirectional);
        }
        let e = self.norm.forward_autocast(x);
        let tokens = e.clone().slice([0..rows, 0..s]);
        let pooled = match self.cls {
            Some(_) => e.slice([0..rows, s..s + 1]).reshape([rows, d]),
            None => tokens.clone().mean_dim(1).reshape([rows, d]),
        };
        let landmarks = self.landmark.forward_autocast(pooled).reshape(lmk_heads);

        let tokens = tokens.reshape([batch, n_chunks * s, d]);
        let project = |lin: &Linear<B>| {
            let x = lin.forward_autocast(tokens.clone()).reshape([
                batch,
                n_chunks * s,
                self.n_kv_heads,
                self.head_dim,
            ]);
            let tail = seq - n_chunks * s;
            if tail == 0 {
                x
            } else {
                Tensor::cat(
                    vec![x, zeros([batch, tail, self.n_kv_heads, self.head_dim])],
                    1,
                )
            }
        };
        ChunkMemoryOutput {
            keys: project(&self.key),
            values: project(&self.value),
            landmarks,
        }
    }
}
