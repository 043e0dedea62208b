//! Attention in plain tensor ops: the dense `[B, h_q, L_q, L_k]` scores, the mask from
//! positions (the same rule as a stream's KV cache, `nn::kv_cache::blocked_by_position`), a
//! softmax and the weighted values. Exact and portable; memory `O(L_q · L_k)`.

use burn::backend::Autodiff;
use burn::prelude::*;
use burn::tensor::ops::FloatTensor;

use super::AttentionOptions;
use crate::nn::kv_cache::blocked_by_position;
use crate::ops::{from_float, into_float};

/// What a hidden score becomes: far below any real score, finite so a row's softmax stays
/// defined.
const HIDDEN: f32 = -1.0e9;

/// See [`super::attention`] for the shapes; returns `(out [B, L_q, h_q, D], lse [B, L_q, h_q])`.
pub fn forward<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    options: AttentionOptions,
) -> (Tensor<B, 4>, Tensor<B, 3>) {
    let [batch, seq_q, h_q, head_dim] = q.dims();
    let [_, seq_k, h_kv, _] = k.dims();
    let device = q.device();
    let group = h_q / h_kv;
    // `[B, h_kv, L_k, D]` repeated for the `group` query heads each serves.
    let heads = |t: Tensor<B, 4>| {
        t.swap_dims(1, 2)
            .unsqueeze_dim::<5>(2)
            .expand([batch, h_kv, group, seq_k, head_dim])
            .reshape([batch, h_q, seq_k, head_dim])
    };
    let (k, v) = (heads(k), heads(v));
    let q = q.swap_dims(1, 2); // [B, h_q, L_q, D]
    let scale = (head_dim as f64).sqrt().recip();
    let mut scores = q.matmul(k.swap_dims(2, 3)).mul_scalar(scale);
    if options.causal && seq_q > 0 && seq_k > 0 {
        let positions = Tensor::arange(0..seq_k as i64, &device);
        let blocked = blocked_by_position(options.q_offset, seq_q, positions, options.window);
        scores = scores.mask_fill(
            blocked
                .reshape([1, 1, seq_q, seq_k])
                .expand([batch, h_q, seq_q, seq_k]),
            HIDDEN,
        );
    }
    let top = scores.clone().max_dim(3).detach();
    let exp = (scores - top.clone()).exp();
    let sum = exp.clone().sum_dim(3);
    let lse = (top + sum.clone().log())
        .reshape([batch, h_q, seq_q])
        .swap_dims(1, 2);
    let out = (exp / sum).matmul(v).swap_dims(1, 2);
    (out, lse)
}

/// [`forward`]'s output on primitives, differentiable through `B` when it is an autodiff
/// backend (the path of backends without the kernels).
pub fn attention_primitive<B: Backend>(
    q: FloatTensor<B>,
    k: FloatTensor<B>,
    v: FloatTensor<B>,
    options: AttentionOptions,
) -> FloatTensor<B> {
    into_float(forward::<B>(from_float(q), from_float(k), from_float(v), options).0)
}

/// `(dq, dk, dv)` for the output gradient `d_out`, by differentiating [`forward`].
pub fn backward<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    d_out: Tensor<B, 4>,
    options: AttentionOptions,
) -> [Tensor<B, 4>; 3] {
    let lift = |x: Tensor<B, 4>| Tensor::<Autodiff<B>, 4>::from_inner(x).require_grad();
    let inputs = [lift(q), lift(k), lift(v)];
    let [q, k, v] = inputs.clone();
    let (out, _) = forward(q, k, v, options);
    let grads = (out * Tensor::from_inner(d_out)).sum().backward();
    inputs.map(|x| {
        x.grad(&grads)
            .unwrap_or_else(|| x.clone().inner().zeros_like())
    })
}
