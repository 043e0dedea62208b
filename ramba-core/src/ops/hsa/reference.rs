//! Reference HSA (spec §4): attention inside each selected chunk, then a weighted sum.
//!
//! For token `t`, query head `j` in KV group `g = j / G` and valid slot `k` with chunk
//! `c = indices[t, g, k]`:
//!
//! ```text
//! p      = softmax_n(q[t, j] · K[c·S .. (c+1)·S, g]ᵀ / sqrt(d_h))    softmax_n(x) = eˣ / (n + Σ eˣ)
//! o[k]   = p · V[c·S .. (c+1)·S, g]
//! out[t, j] = Σ_k weights[t, g, k] · o[k]
//! ```
//!
//! The selected chunks are gathered into a `[rows, top_k, S, d_h]` tile per (batch, KV head,
//! token): memory `O(L·K·S·d_h)`, fine for a reference and for short training contexts. Invalid
//! slots (index `-1`) are gathered from chunk 0 and multiplied by zero, so their index is never
//! trusted and their weight cannot leak in.

use burn::backend::Autodiff;
use burn::prelude::*;
use burn::tensor::ops::{FloatTensor, IntTensor};
use burn::tensor::TensorPrimitive;

use super::HsaOptions;

/// See the module docs. Shapes: `q [B, L, h_q, d_h]`, `k, v [B, L, h_kv, d_h]`,
/// `indices, weights [B, L, h_kv, K]`; returns `[B, L, h_q, d_h]`.
pub fn hsa<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    indices: Tensor<B, 4, Int>,
    weights: Tensor<B, 4>,
    options: HsaOptions,
) -> Tensor<B, 4> {
    attend(q, k, v, indices, weights, options, false).0
}

/// [`hsa`] on primitives: the backends' reference path (the trait default, and `Autodiff`
/// over a backend without kernels).
pub fn hsa_primitive<B: Backend>(
    q: FloatTensor<B>,
    k: FloatTensor<B>,
    v: FloatTensor<B>,
    indices: IntTensor<B>,
    weights: FloatTensor<B>,
    options: HsaOptions,
) -> FloatTensor<B> {
    let float = |x| Tensor::<B, 4>::from_primitive(TensorPrimitive::Float(x));
    hsa(
        float(q),
        float(k),
        float(v),
        Tensor::from_primitive(indices),
        float(weights),
        options,
    )
    .into_primitive()
    .tensor()
}

/// The forward with the per-slot log-sum-exp the kernels save: `(out, lse [B, L, h_q, K])`,
/// `lse = log(n + Σ exp(s))` on valid slots, 0 on invalid ones.
pub fn forward<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    indices: Tensor<B, 4, Int>,
    weights: Tensor<B, 4>,
    options: HsaOptions,
) -> (Tensor<B, 4>, Tensor<B, 4>) {
    let (out, lse) = attend(q, k, v, indices, weights, options, true);
    (out, lse.expect("lse requested"))
}

/// Gradients `(dq, dk, dv, dweights)` of `Σ out ∘ d_out`, by differentiating [`hsa`] with Burn's
/// autodiff: the oracle of the fused backward.
pub fn backward<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    indices: Tensor<B, 4, Int>,
    weights: Tensor<B, 4>,
    d_out: Tensor<B, 4>,
    options: HsaOptions,
) -> [Tensor<B, 4>; 4] {
    let lift = |x: Tensor<B, 4>| Tensor::<Autodiff<B>, 4>::from_inner(x).require_grad();
    let inputs = [lift(q), lift(k), lift(v), lift(weights)];
    let [q, k, v, w] = inputs.clone();
    let out = hsa(
        q,
        k,
        v,
        Tensor::from_primitive(indices.into_primitive()),
        w,
        options,
    );
    let grads = (out * Tensor::from_inner(d_out)).sum().backward();
    inputs.map(|x| {
        // An input the output does not depend on (no complete chunk) has no gradient: zeros.
        x.grad(&grads)
            .unwrap_or_else(|| x.clone().inner().zeros_like())
    })
}

#[allow(clippy::too_many_arguments)]
fn attend<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    indices: Tensor<B, 4, Int>,
    weights: Tensor<B, 4>,
    options: HsaOptions,
    with_lse: bool,
) -> (Tensor<B, 4>, Option<Tensor<B, 4>>) {
    let [batch, seq, h_q, _] = q.dims();
    let [_, seq_kv, h_kv, d_h] = k.dims();
    let top_k = indices.dims()[3];
    let s = options.chunk_size;
    let n_chunks = seq_kv / s;
    let device = q.device();
    if n_chunks == 0 || top_k == 0 {
        // No complete chunk exists, so no token can read anything.
        let lse = with_lse.then(|| Tensor::zeros([batch, seq, h_q, top_k], &device));
        return (q.zeros_like(), lse);
    }

    // Chunk tiles, one row per (batch, kv head, chunk): [B*h_kv*C, S*d_h].
    let tiles = |x: Tensor<B, 4>| {
        x.slice([0..batch, 0..n_chunks * s])
            .reshape([batch, n_chunks, s, h_kv, d_h])
            .permute([0, 3, 1, 2, 4])
            .reshape([batch * h_kv * n_chunks, s * d_h])
    };
    let k_tiles = tiles(k);
    let v_tiles = tiles(v);

    // [B, L, h_kv, K] -> [B, h_kv, L, K], rows ordered like the tiles' (batch, kv head).
    let base = Tensor::<B, 1, Int>::arange(0..(batch * h_kv) as i64, &device)
        .mul_scalar(n_chunks as i64)
        .reshape([batch, h_kv, 1, 1]);
    let flat = (indices
        .clone()
        .permute([0, 2, 1, 3])
        .clamp(0, n_chunks as i64 - 1)
        + base)
        .reshape([batch * h_kv * seq * top_k]);

    let rows = batch * h_kv * seq;
    let k_sel = k_tiles
        .select(0, flat.clone())
        .reshape([rows, top_k, s, d_h]);
    let v_sel = v_tiles.select(0, flat).reshape([rows, top_k, s, d_h]);
    attend_tiles(q, k_sel, v_sel, indices, weights, options, with_lse)
}

/// HSA over the selected chunks' key and value tiles, already gathered: `k_sel, v_sel
/// [B·h_kv·L, K, S, d_h]` (rows ordered by batch, KV head, token; slot `k` of a row is the chunk
/// `indices[b, t, g, k]`, any tile where that index is `-1`), `q [B, L, h_q, d_h]`, `indices,
/// weights [B, L, h_kv, K]`. The whole-sequence op gathers from its own keys; a stream gathers
/// from its chunk store, which may keep them in host memory.
pub fn attend_tiles<B: Backend>(
    q: Tensor<B, 4>,
    k_sel: Tensor<B, 4>,
    v_sel: Tensor<B, 4>,
    indices: Tensor<B, 4, Int>,
    weights: Tensor<B, 4>,
    options: HsaOptions,
    with_lse: bool,
) -> (Tensor<B, 4>, Option<Tensor<B, 4>>) {
    let [batch, seq, h_q, d_h] = q.dims();
    let [_, _, h_kv, top_k] = indices.dims();
    let group = h_q / h_kv;
    let rows = batch * h_kv * seq;
    let valid = indices.permute([0, 2, 1, 3]).greater_equal_elem(0);

    // Queries of one KV group: [rows, 1, G, d_h], shared by the K slots.
    let q = q
        .reshape([batch, seq, h_kv, group, d_h])
        .permute([0, 2, 1, 3, 4])
        .reshape([rows, 1, group, d_h])
        .expand([rows, top_k, group, d_h]);
    let scale = (d_h as f64).sqrt().recip();
    let logits = q.matmul(k_sel.swap_dims(2, 3)).mul_scalar(scale); // [rows, K, G, S]
    let lse = with_lse.then(|| {
        // Zero on invalid slots, masked in the logits' own [rows, K, G] layout.
        let keep = valid.clone().float().reshape([rows, top_k, 1]);
        (log_sum_exp(logits.clone().detach(), options.softmax_off_by_one)
            .reshape([rows, top_k, group])
            * keep)
            .reshape([batch, h_kv, seq, top_k, group])
            .permute([0, 2, 1, 4, 3]) // [B, L, h_kv, G, K]
            .reshape([batch, seq, h_q, top_k])
    });
    let p = chunk_softmax(logits, options.softmax_off_by_one);
    let o = p.matmul(v_sel); // [rows, K, G, d_h]

    let w = (weights.permute([0, 2, 1, 3]) * valid.float()).reshape([rows, top_k, 1, 1]);
    let out = (o * w)
        .sum_dim(1) // [rows, 1, G, d_h]
        .reshape([batch, h_kv, seq, group, d_h])
        .permute([0, 2, 1, 3, 4])
        .reshape([batch, seq, h_q, d_h]);
    (out, lse)
}

/// `log(n + Σ exp(x))` over the last axis (kept, size 1), `n = 1` with `off_by_one`.
fn log_sum_exp<B: Backend, const D: usize>(x: Tensor<B, D>, off_by_one: bool) -> Tensor<B, D> {
    let m = x.clone().max_dim(D - 1);
    let m = if off_by_one { m.clamp_min(0.0) } else { m };
    let mut z = (x - m.clone()).exp().sum_dim(D - 1);
    if off_by_one {
        z = z + m.clone().neg().exp();
    }
    m + z.log()
}

/// Softmax over the last axis; with `off_by_one` the denominator gets an extra `+1`
/// (`exp(x_i) / (1 + Σ exp(x))`), so a query can attend to "nothing".
pub fn chunk_softmax<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    off_by_one: bool,
) -> Tensor<B, D> {
    if !off_by_one {
        return burn::tensor::activation::softmax(x, D - 1);
    }
    // Shift by m = max(max x, 0): the implicit zero logit of the "+1" joins the max.
    let m = x.clone().max_dim(D - 1).clamp_min(0.0).detach();
    let e = (x - m.clone()).exp();
    let denom = e.clone().sum_dim(D - 1) + m.neg().exp();
    e / denom
}
