//! Reference Mamba-2 selective scan, in the chunked "state space duality" form.
//!
//! The recurrence `h_t = exp(Δ_t A) h_{t−1} + Δ_t B_t x_tᵀ`, `y_t = C_t h_t + D x_t` is evaluated
//! chunk by chunk (Mamba-2, Dao & Gu 2024, §6), which turns `L` sequential steps into a few
//! batched matmuls, so it is usable for training:
//!
//! 1. inside a chunk, `y = (C Bᵀ ∘ decay) · (Δ x)` with `decay[l, s] = exp(Σ_{s<r≤l} Δ_r A)`;
//! 2. each chunk's contribution to the state at its end;
//! 3. the states at chunk starts, from a `(n_chunks+1)²` decay matrix applied to
//!    `[init_state, chunk states]` (this also yields the final state);
//! 4. the carried state's contribution to each position.
//!
//! A sequence that is not a multiple of the chunk is padded with `Δ = 0, x = 0`, which neither
//! decays nor feeds the state, so the final state is exact. Tests compare against the naive
//! step-by-step recurrence.

use burn::prelude::*;
use burn::tensor::ops::FloatTensor;

use super::{ScanGrads, ScanOptions};
use crate::ops::vjp::{grad, track};
use crate::ops::{from_float, into_float};

/// See the module docs and [`RambaBackend::selective_scan`](crate::ops::RambaBackend).
#[allow(clippy::too_many_arguments)]
pub fn selective_scan<B: Backend>(
    x: Tensor<B, 4>,
    delta: Tensor<B, 3>,
    a: Tensor<B, 1>,
    b: Tensor<B, 4>,
    c: Tensor<B, 4>,
    d: Tensor<B, 1>,
    init_state: Option<Tensor<B, 4>>,
    options: ScanOptions,
) -> (Tensor<B, 4>, Tensor<B, 4>) {
    let [batch, seq, heads, p] = x.dims();
    let [_, _, groups, n] = b.dims();
    let device = x.device();
    let q = options.chunk_size.min(seq).max(1);
    let n_chunks = seq.div_ceil(q);
    let padded = n_chunks * q;
    let pad = padded - seq;

    let skip = x.clone() * d.reshape([1, 1, heads, 1]);
    let (x, delta, b, c) = if pad > 0 {
        (
            x.pad_seq(pad),
            Tensor::cat(vec![delta, Tensor::zeros([batch, pad, heads], &device)], 1),
            b.pad_seq(pad),
            c.pad_seq(pad),
        )
    } else {
        (x, delta, b, c)
    };

    // Heads share B and C within a group.
    let per_group = heads / groups;
    let to_heads = |t: Tensor<B, 4>| {
        t.reshape([batch, padded, groups, 1, n])
            .expand([batch, padded, groups, per_group, n])
            .reshape([batch, n_chunks, q, heads, n])
            .permute([0, 3, 1, 2, 4]) // [B, H, nc, Q, N]
    };
    let b = to_heads(b);
    let c = to_heads(c);
    let xd = (x * delta.clone().unsqueeze_dim(3))
        .reshape([batch, n_chunks, q, heads, p])
        .permute([0, 3, 1, 2, 4]); // [B, H, nc, Q, P]
    let log_decay = (delta * a.reshape([1, 1, heads]))
        .reshape([batch, n_chunks, q, heads])
        .permute([0, 3, 1, 2]); // [B, H, nc, Q]
    let cum = log_decay.cumsum(3);

    // 1. Within chunks.
    let intra = segment_decay(cum.clone());
    let y_diag = (c.clone().matmul(b.clone().swap_dims(3, 4)) * intra).matmul(xd.clone());

    // 2. Chunk states: Σ_s exp(cum_last − cum_s) B_s (Δx)_sᵀ, as [B, H, nc, N, P].
    let last = cum
        .clone()
        .slice([0..batch, 0..heads, 0..n_chunks, q - 1..q]); // [B,H,nc,1]
    let to_end = (last.clone() - cum.clone()).exp().unsqueeze_dim(4); // [B,H,nc,Q,1]
    let states = (b * to_end).swap_dims(3, 4).matmul(xd);

    // 3. States at chunk starts.
    let init = match init_state {
        Some(s) => s.swap_dims(2, 3), // [B, H, N, P]
        None => Tensor::zeros([batch, heads, n, p], &device),
    };
    let all = Tensor::cat(vec![init.unsqueeze_dim(2), states], 2).reshape([
        batch,
        heads,
        n_chunks + 1,
        n * p,
    ]);
    let chunk_cum = Tensor::cat(
        vec![
            Tensor::zeros([batch, heads, 1], &device),
            last.reshape([batch, heads, n_chunks]).cumsum(2),
        ],
        2,
    );
    let carried = segment_decay(chunk_cum.unsqueeze_dim::<4>(2))
        .reshape([batch, heads, n_chunks + 1, n_chunks + 1])
        .matmul(all)
        .reshape([batch, heads, n_chunks + 1, n, p]);
    let starts = carried.clone().slice([0..batch, 0..heads, 0..n_chunks]);
    let final_state = carried
        .slice([0..batch, 0..heads, n_chunks..n_chunks + 1])
        .reshape([batch, heads, n, p])
        .swap_dims(2, 3); // [B, H, P, N]

    // 4. The carried state's contribution.
    let y_off = c.matmul(starts) * cum.exp().unsqueeze_dim(4);

    let y = (y_diag + y_off)
        .permute([0, 2, 3, 1, 4]) // [B, nc, Q, H, P]
        .reshape([batch, padded, heads, p])
        .slice([0..batch, 0..seq]);
    (y + skip, final_state)
}

/// The reference on primitives (the trait's default, and `Autodiff`'s path for backends without
/// the kernels).
#[allow(clippy::too_many_arguments)]
pub fn selective_scan_primitive<B: Backend>(
    x: FloatTensor<B>,
    delta: FloatTensor<B>,
    a: FloatTensor<B>,
    b: FloatTensor<B>,
    c: FloatTensor<B>,
    d: FloatTensor<B>,
    init_state: Option<FloatTensor<B>>,
    options: ScanOptions,
) -> (FloatTensor<B>, FloatTensor<B>) {
    let (y, state) = selective_scan::<B>(
        from_float(x),
        from_float(delta),
        from_float(a),
        from_float(b),
        from_float(c),
        from_float(d),
        init_state.map(from_float),
        options,
    );
    (into_float(y), into_float(state))
}

/// Gradients of every input given `dy` and the final state's gradient, by differentiating
/// [`selective_scan`] under `Autodiff<B>` (the oracle of the backward kernels).
#[allow(clippy::too_many_arguments)]
pub fn backward<B: Backend>(
    x: Tensor<B, 4>,
    delta: Tensor<B, 3>,
    a: Tensor<B, 1>,
    b: Tensor<B, 4>,
    c: Tensor<B, 4>,
    d: Tensor<B, 1>,
    init_state: Tensor<B, 4>,
    dy: Tensor<B, 4>,
    d_final_state: Tensor<B, 4>,
    options: ScanOptions,
) -> ScanGrads<B> {
    let (tx, tdelta, ta, tb, tc, td, tinit) = (
        track(&x),
        track(&delta),
        track(&a),
        track(&b),
        track(&c),
        track(&d),
        track(&init_state),
    );
    let (y, state) = selective_scan(
        tx.clone(),
        tdelta.clone(),
        ta.clone(),
        tb.clone(),
        tc.clone(),
        td.clone(),
        Some(tinit.clone()),
        options,
    );
    let loss =
        (y * Tensor::from_inner(dy)).sum() + (state * Tensor::from_inner(d_final_state)).sum();
    let grads = loss.backward();
    ScanGrads {
        x: grad(&tx, &grads),
        delta: grad(&tdelta, &grads),
        a: grad(&ta, &grads),
        b: grad(&tb, &grads),
        c: grad(&tc, &grads),
        d: grad(&td, &grads),
        init_state: grad(&tinit, &grads),
    }
}

/// One decoding step: `x [B, heads, P]`, `delta [B, heads]`, `b`, `c [B, groups, N]`,
/// `state [B, heads, P, N]` → `(y [B, heads, P], state after)`; the recurrence itself.
#[allow(clippy::too_many_arguments)]
pub fn step<B: Backend>(
    x: Tensor<B, 3>,
    delta: Tensor<B, 2>,
    a: Tensor<B, 1>,
    b: Tensor<B, 3>,
    c: Tensor<B, 3>,
    d: Tensor<B, 1>,
    state: Tensor<B, 4>,
) -> (Tensor<B, 3>, Tensor<B, 4>) {
    let [batch, heads, p] = x.dims();
    let [_, groups, n] = b.dims();
    let per_group = heads / groups;
    let to_heads = |t: Tensor<B, 3>| {
        t.reshape([batch, groups, 1, n])
            .expand([batch, groups, per_group, n])
            .reshape([batch, heads, 1, n])
    };
    let decay = (delta.clone() * a.reshape([1, heads]))
        .exp()
        .reshape([batch, heads, 1, 1]);
    let input = (x.clone() * delta.unsqueeze_dim(2)).unsqueeze_dim::<4>(3); // [B, H, P, 1]
    let state = state * decay + input * to_heads(b);
    let y = (state.clone() * to_heads(c))
        .sum_dim(3)
        .reshape([batch, heads, p])
        + x * d.reshape([1, heads, 1]);
    (y, state)
}

/// `exp(cum[.., i] − cum[.., j])` for `j ≤ i`, zero above the diagonal: `[.., T] -> [.., T, T]`.
fn segment_decay<B: Backend>(cum: Tensor<B, 4>) -> Tensor<B, 5> {
    let [d0, d1, d2, t] = cum.dims();
    let rows = cum.clone().unsqueeze_dim::<5>(4).expand([d0, d1, d2, t, t]);
    let cols = cum.unsqueeze_dim::<5>(3).expand([d0, d1, d2, t, t]);
    let upper = Tensor::<B, 2, Bool>::tril_mask([t, t], 0, &rows.device())
        .reshape([1, 1, 1, t, t])
        .expand([d0, d1, d2, t, t]);
    // `tril_mask` is true strictly above the diagonal (j > i). Masking before the exp keeps the (positive, possibly huge) upper entries from overflowing.
    (rows - cols).mask_fill(upper, f32::NEG_INFINITY).exp()
}

/// Zero-padding at the end of the sequence axis (axis 1).
trait PadSeq {
    fn pad_seq(self, pad: usize) -> Self;
}

impl<B: Backend> PadSeq for Tensor<B, 4> {
    fn pad_seq(self, pad: usize) -> Self {
        let [b, _, h, d] = self.dims();
        let zeros = Tensor::zeros([b, pad, h, d], &self.device());
        Tensor::cat(vec![self, zeros], 1)
    }
}
