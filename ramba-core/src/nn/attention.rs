//! Multi-head self-attention with RoPE and grouped-query heads, in three masks: causal (the
//! transformer baseline), sliding-window causal (SWA), and bidirectional (the chunk encoder).
//!
//! The whole-sequence forward runs the attention op (fused kernels on CUDA and wgpu, dense
//! scores on the CPU); a stream's cached forward attends densely over its cache's keys.

use burn::nn::{Linear, RmsNorm};
use burn::prelude::*;
use burn::tensor::activation::softmax;

use super::kv_cache::KvCache;
use super::rope::apply_rope;
use super::{linear, rms_norm, Autocast};
use crate::ops::attention::{attention, AttentionOptions};
use crate::ops::RambaBackend;

/// Which key positions a query may attend to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttentionMask {
    /// Keys `j ≤ i`.
    Causal,
    /// Keys `i − window < j ≤ i`.
    Window(usize),
    /// All keys (inside one chunk of the encoder).
    Bidirectional,
}

/// Settings of one attention layer.
#[derive(Clone, Debug)]
pub struct AttentionSettings {
    /// Model width.
    pub d_model: usize,
    /// Query heads.
    pub n_heads: usize,
    /// KV heads.
    pub n_kv_heads: usize,
    /// Bias on the q/k/v projections (Qwen2-style encoder).
    pub qkv_bias: bool,
    /// Per-head RMSNorm on q and k.
    pub qk_norm: bool,
    /// RoPE base.
    pub rope_theta: f64,
    /// Init std of the projections.
    pub init_std: f64,
    /// RMSNorm epsilon.
    pub norm_eps: f64,
}

/// See the module docs.
#[derive(Module, Debug)]
pub struct SelfAttention<B: Backend> {
    q: Linear<B>,
    k: Linear<B>,
    v: Linear<B>,
    o: Linear<B>,
    q_norm: Option<RmsNorm<B>>,
    k_norm: Option<RmsNorm<B>>,
    n_heads: usize,
    n_kv_heads: usize,
    head_dim: usize,
    rope_theta: f64,
}

impl<B: Backend> SelfAttention<B> {
    /// Builds the projections; head dim = `d_model / n_heads`.
    pub fn new(s: &AttentionSettings, device: &B::Device) -> Self {
        let head_dim = s.d_model / s.n_heads;
        let kv = s.n_kv_heads * head_dim;
        Self {
            q: linear(s.d_model, s.d_model, s.qkv_bias, s.init_std, device),
            k: linear(s.d_model, kv, s.qkv_bias, s.init_std, device),
            v: linear(s.d_model, kv, s.qkv_bias, s.init_std, device),
            o: linear(s.d_model, s.d_model, false, s.init_std, device),
            q_norm: s.qk_norm.then(|| rms_norm(head_dim, s.norm_eps, device)),
            k_norm: s.qk_norm.then(|| rms_norm(head_dim, s.norm_eps, device)),
            n_heads: s.n_heads,
            n_kv_heads: s.n_kv_heads,
            head_dim,
            rope_theta: s.rope_theta,
        }
    }
}

impl<B: RambaBackend> SelfAttention<B> {
    /// Like [`forward`](Self::forward) in a stream: the keys and values of earlier calls come
    /// from `cache` (full causal or a sliding window, the cache's kind), and this call's are
    /// added to it.
    pub fn forward_cached(
        &self,
        x: Tensor<B, 3>,
        start: usize,
        cache: &mut KvCache<B>,
    ) -> Tensor<B, 3> {
        let (q, k, v) = self.project(x, start);
        let cached = cache.update(k, v, start);
        self.attend(q, cached.keys, cached.values, Some(cached.blocked))
    }

    /// Queries `[B, h, L, d_h]` and keys, values `[B, h_kv, L, d_h]` of `x`, RoPE at positions
    /// `start..`.
    fn project(&self, x: Tensor<B, 3>, start: usize) -> (Tensor<B, 4>, Tensor<B, 4>, Tensor<B, 4>) {
        let [batch, seq, _] = x.dims();
        let heads = |t: Tensor<B, 3>, n: usize| t.reshape([batch, seq, n, self.head_dim]);
        let mut q = heads(self.q.forward_autocast(x.clone()), self.n_heads);
        let mut k = heads(self.k.forward_autocast(x.clone()), self.n_kv_heads);
        let v = heads(self.v.forward_autocast(x), self.n_kv_heads);
        if let (Some(qn), Some(kn)) = (&self.q_norm, &self.k_norm) {
            q = qn.forward_autocast(q);
            k = kn.forward_autocast(k);
        }
        let q = apply_rope(q.swap_dims(1, 2), start, self.rope_theta);
        let k = apply_rope(k.swap_dims(1, 2), start, self.rope_theta);
        (q, k, v.swap_dims(1, 2))
    }

    /// Attention of `q [B, h, L, d_h]` over `k, v [B, h_kv, T, d_h]`; `blocked [L, T]` marks
    /// the keys each query may not see (`None`: all visible).
    fn attend(
        &self,
        q: Tensor<B, 4>,
        k: Tensor<B, 4>,
        v: Tensor<B, 4>,
        blocked: Option<Tensor<B, 2, Bool>>,
    ) -> Tensor<B, 3> {
        let [batch, _, seq, _] = q.dims();
        let n_keys = k.dims()[2];
        // Grouped-query heads: each KV head serves `group` consecutive query heads.
        let group = self.n_heads / self.n_kv_heads;
        let expand = |t: Tensor<B, 4>| {
            t.unsqueeze_dim::<5>(2)
                .expand([batch, self.n_kv_heads, group, n_keys, self.head_dim])
                .reshape([batch, self.n_heads, n_keys, self.head_dim])
        };
        let (k, v) = if group > 1 {
            (expand(k), expand(v))
        } else {
            (k, v)
        };

        let scale = (self.head_dim as f64).sqrt().recip();
        let mut scores = q.matmul(k.swap_dims(2, 3)).mul_scalar(scale); // [B, H, L, T]
        if let Some(blocked) = blocked {
            scores = scores.mask_fill(
                blocked
                    .reshape([1, 1, seq, n_keys])
                    .expand([batch, self.n_heads, seq, n_keys]),
                -1.0e9,
            );
        }
        let out = softmax(scores, 3).matmul(v); // [B, H, L, dh]
        self.o.forward_autocast(out.swap_dims(1, 2).reshape([
            batch,
            seq,
            self.n_heads * self.head_dim,
        ]))
    }
}

impl<B: RambaBackend> SelfAttention<B> {
    /// `x`: `[batch, seq, d_model]` at positions `start..start + seq` → `[batch, seq, d_model]`.
    ///
    /// Through the attention op ([`ops::attention`](crate::ops::attention)): fused on backends
    /// with the kernels, so no `[seq, seq]` scores exist there; the dense reference elsewhere.
    pub fn forward(&self, x: Tensor<B, 3>, start: usize, mask: AttentionMask) -> Tensor<B, 3> {
        let [batch, seq, _] = x.dims();
        let (q, k, v) = self.project(x, start);
        let options = match mask {
            AttentionMask::Causal => AttentionOptions::causal(),
            AttentionMask::Window(w) => AttentionOptions::sliding_window(w),
            AttentionMask::Bidirectional => AttentionOptions::bidirectional(),
        };
        // The op takes sequence-first heads, `[B, L, h, D]`.
        let out = attention(
            q.swap_dims(1, 2),
            k.swap_dims(1, 2),
            v.swap_dims(1, 2),
            options,
        );
        self.o
            .forward_autocast(out.reshape([batch, seq, self.n_heads * self.head_dim]))
    }
}
