//! Fused softmax attention (FlashAttention-style): causal, sliding-window or unmasked, grouped
//! query heads, forward with the row log-sum-exp, and a backward that recomputes the
//! probabilities from it, so no `L × L` matrix exists in either direction.
//!
//! [`attention_forward`] and [`attention_backward`] are the entry points the backend calls;
//! they make the inputs contiguous and launch the kernels of the files beside this one.
//!
//! Shapes (sequence-first, as the HSA kernels):
//! - `q`, `out`, `dq`: `[B, L_q, h_q, D]`; `k`, `v`, `dk`, `dv`: `[B, L_k, h_kv, D]`
//! - `lse`, `delta`: `[B, L_q, h_q]`, f32
//!
//! Visibility: query `i` sits at key position `p = i + q_offset`. Causal: key `j` is visible
//! when `j ≤ p`; with a window `w` also when `j > p − w`. Unmasked: every key. Training has
//! `q_offset = 0` and `L_q = L_k`; a decode step has `L_q` new queries after `q_offset`
//! cached keys.

pub mod backward;
pub mod backward_cmma;
pub mod forward;
pub mod forward_cmma;

use burn::tensor::Shape;
use burn_cubecl::{kernel::into_contiguous, tensor::CubeTensor, CubeRuntime};
use cubecl::prelude::*;

/// Threads of a cube: each owns one query row (forward, `dq`) or one key row (`dK`/`dV`).
pub const ROWS: u32 = 64;

/// The sizes and the mask of one attention call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttentionShape {
    /// `B`.
    pub batch: usize,
    /// Queries `L_q`.
    pub seq_q: usize,
    /// Keys `L_k`.
    pub seq_k: usize,
    /// Query heads `h_q`.
    pub h_q: usize,
    /// Key/value heads `h_kv` (divides `h_q`).
    pub h_kv: usize,
    /// `D`.
    pub head_dim: usize,
    /// Key position of query 0.
    pub q_offset: usize,
    /// Keys after a query's position are hidden.
    pub causal: bool,
    /// Only the `window` most recent keys are visible (0: no window). Causal only.
    pub window: usize,
}

impl AttentionShape {
    /// From `q [B, L_q, h_q, D]` and `k [B, L_k, h_kv, D]`.
    pub fn of(q: &Shape, k: &Shape, q_offset: usize, causal: bool, window: usize) -> Self {
        Self {
            batch: q[0],
            seq_q: q[1],
            h_q: q[2],
            head_dim: q[3],
            seq_k: k[1],
            h_kv: k[2],
            q_offset,
            causal,
            window,
        }
    }
    /// Query heads per KV head, `G`.
    pub fn group(&self) -> usize {
        self.h_q / self.h_kv
    }
    /// `1/√D`.
    pub fn scale(&self) -> f32 {
        (self.head_dim as f32).sqrt().recip()
    }
    /// Rows of K/V (forward, `dq`) or of Q/dO (`dK`/`dV`) staged in shared memory at a time:
    /// 8 KiB of f32 a tile, at most one row per thread.
    pub fn tile(&self) -> usize {
        (2048 / self.head_dim.max(1)).clamp(1, ROWS as usize)
    }
    /// `[B, L_q, h_q, D]`.
    pub fn q_shape(&self) -> Shape {
        Shape::new([self.batch, self.seq_q, self.h_q, self.head_dim])
    }
    /// `[B, L_k, h_kv, D]`.
    pub fn kv_shape(&self) -> Shape {
        Shape::new([self.batch, self.seq_k, self.h_kv, self.head_dim])
    }
    /// `[B, L_q, h_q]`.
    pub fn row_shape(&self) -> Shape {
        Shape::new([self.batch, self.seq_q, self.h_q])
    }
    /// Shared memory (bytes) the largest kernel of the family needs: two tiles and two rows
    /// of per-query statistics.
    pub fn shared_bytes(&self) -> usize {
        4 * (2 * self.tile() * self.head_dim + 2 * self.tile())
    }
}

/// Gradients of one attention call.
pub struct AttentionGradients<R: CubeRuntime> {
    /// `[B, L_q, h_q, D]`.
    pub q: CubeTensor<R>,
    /// `[B, L_k, h_kv, D]`.
    pub k: CubeTensor<R>,
    /// `[B, L_k, h_kv, D]`.
    pub v: CubeTensor<R>,
}

/// Forward: `(out [B, L_q, h_q, D], lse [B, L_q, h_q] f32)`, on tensor cores where
/// [`forward_cmma::supported`], else the scalar kernel.
pub fn attention_forward<R: CubeRuntime>(
    q: CubeTensor<R>,
    k: CubeTensor<R>,
    v: CubeTensor<R>,
    q_offset: usize,
    causal: bool,
    window: usize,
) -> (CubeTensor<R>, CubeTensor<R>) {
    let shape = AttentionShape::of(q.meta.shape(), k.meta.shape(), q_offset, causal, window);
    let (q, k, v) = (into_contiguous(q), into_contiguous(k), into_contiguous(v));
    if forward_cmma::supported(&q, &shape) {
        forward_cmma::attention_forward_cmma(q, k, v, shape)
    } else {
        forward::attention_forward(q, k, v, shape)
    }
}

/// Backward: the `dq` pass (which also forms `delta = rowsum(dO ∘ O)`), then the `dK`/`dV`
/// pass over the queries that see each key; on tensor cores where [`forward_cmma::supported`].
#[allow(clippy::too_many_arguments)]
pub fn attention_backward<R: CubeRuntime>(
    q: CubeTensor<R>,
    k: CubeTensor<R>,
    v: CubeTensor<R>,
    out: CubeTensor<R>,
    lse: CubeTensor<R>,
    d_out: CubeTensor<R>,
    q_offset: usize,
    causal: bool,
    window: usize,
) -> AttentionGradients<R> {
    let shape = AttentionShape::of(q.meta.shape(), k.meta.shape(), q_offset, causal, window);
    let (q, k, v) = (into_contiguous(q), into_contiguous(k), into_contiguous(v));
    let (out, lse, d_out) = (
        into_contiguous(out),
        into_contiguous(lse),
        into_contiguous(d_out),
    );
    let (dk, dv, dq) = if forward_cmma::supported(&q, &shape) {
        let (dq, delta) = backward_cmma::attention_backward_dq_cmma(
            q.clone(),
            k.clone(),
            v.clone(),
            out,
            lse.clone(),
            d_out.clone(),
            shape,
        );
        let (dk, dv) =
            backward_cmma::attention_backward_dkdv_cmma(q, k, v, lse, delta, d_out, shape);
        (dk, dv, dq)
    } else {
        let (dq, delta) = backward::attention_backward_dq(
            q.clone(),
            k.clone(),
            v.clone(),
            out,
            lse.clone(),
            d_out.clone(),
            shape,
        );
        let (dk, dv) = backward::attention_backward_dkdv(q, k, v, lse, delta, d_out, shape);
        (dk, dv, dq)
    };
    AttentionGradients {
        q: dq,
        k: dk,
        v: dv,
    }
}

/// Whether the forward and `dq` kernels unroll their loops over the head dim, so each
/// thread's rows live in registers. On CUDA they do. On wgpu they do not: lavapipe's LLVM took
/// 12 minutes to compile the unrolled kernels of the nine test shapes, the rolled ones seconds.
/// The `dK`/`dV` kernel is always unrolled: rolled, lavapipe returned wrong `dK`/`dV` (relative
/// error ~1) at `D = 64` once a thread walked 32 or more (head, query tile) pairs (`G ≥ 8`,
/// `L ≥ 40`), right at fewer, at `D = 16, 32`, and on every shape unrolled; its four row arrays
/// in memory rather than registers are the suspect. `RAMBA_ATTN_UNROLL=0|1` overrides the
/// choice for the forward and `dq` kernels.
pub(crate) fn unroll_rows<R: CubeRuntime>(client: &ComputeClient<R>) -> bool {
    match std::env::var("RAMBA_ATTN_UNROLL").as_deref() {
        Ok("1") => true,
        Ok("0") => false,
        _ => R::name(client) == "cuda",
    }
}

/// Whether key `j` is visible to the query at key position `pos` (see the module docs).
#[cube]
pub(crate) fn visible(j: usize, pos: usize, window: usize, #[comptime] causal: bool) -> bool {
    let mut ok = true;
    if comptime!(causal) {
        ok = j <= pos && (window == 0 || j + window > pos);
    }
    ok
}

/// The first key that queries `i0..` may see: `w` keys before the first query's position under
/// a window, else 0.
#[cube]
// The comptime branch stays apart from the runtime test so unmasked kernels compile without it.
#[allow(clippy::collapsible_if)]
pub(crate) fn first_key(
    i0: usize,
    q_offset: usize,
    window: usize,
    #[comptime] causal: bool,
) -> usize {
    let mut lo = 0;
    if comptime!(causal) {
        if window > 0 && i0 + q_offset + 1 > window {
            lo = i0 + q_offset + 1 - window;
        }
    }
    lo
}

/// One past the last key that queries `..i_end` may see: the last query's position when causal,
/// else every key.
#[cube]
pub(crate) fn key_end(
    i_end: usize,
    seq_k: usize,
    q_offset: usize,
    #[comptime] causal: bool,
) -> usize {
    let mut hi = seq_k;
    if comptime!(causal) {
        hi = min(seq_k, i_end + q_offset);
    }
    hi
}

/// The first query that may see key `j0` or a later one: causal queries sit at or after their
/// keys, so the one at position `j0`; unmasked, query 0.
#[cube]
// The comptime branch stays apart from the runtime test so unmasked kernels compile without it.
#[allow(clippy::collapsible_if)]
pub(crate) fn first_query(j0: usize, q_offset: usize, #[comptime] causal: bool) -> usize {
    let mut lo = 0;
    if comptime!(causal) {
        if j0 > q_offset {
            lo = j0 - q_offset;
        }
    }
    lo
}

/// One past the last query that may see key `j_last` or an earlier one: under a window, the
/// query `w − 1` positions past `j_last` (none when even that precedes query 0), else every
/// query.
#[cube]
// As in `first_query`: the comptime branch apart from the runtime tests.
#[allow(clippy::collapsible_if)]
pub(crate) fn query_end(
    j_last: usize,
    seq_q: usize,
    q_offset: usize,
    window: usize,
    #[comptime] causal: bool,
) -> usize {
    let mut hi = seq_q;
    if comptime!(causal) {
        if window > 0 {
            hi = 0;
            if j_last + window > q_offset {
                hi = min(seq_q, j_last + window - q_offset);
            }
        }
    }
    hi
}

/// Copies rows `row0..row0 + tile` of a `[.., D]` row sequence (row `r` at
/// `base + r · row_stride`) into shared memory as f32, `D` a row; rows at or past `n_rows`
/// become zeros.
#[cube]
#[allow(clippy::too_many_arguments)]
pub(crate) fn load_rows<F: Float>(
    src: &Tensor<F>,
    dst: &mut SharedMemory<f32>,
    base: usize,
    row_stride: usize,
    row0: usize,
    n_rows: usize,
    tid: usize,
    #[comptime] tile: usize,
    #[comptime] head_dim: usize,
) {
    let threads = comptime!(ROWS as usize);
    let mut idx = tid;
    while idx < comptime!(tile * head_dim) {
        let r = idx / head_dim;
        let e = idx % head_dim;
        let row = row0 + r;
        let mut x = 0.0f32;
        if row < n_rows {
            x = f32::cast_from(src[base + row * row_stride + e]);
        }
        dst[idx] = x;
        idx += threads;
    }
}

pub(crate) use crate::launch::{empty_like_shape, zeros_like_shape};
