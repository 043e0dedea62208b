//! Hierarchical sparse attention kernels (spec §4–5): forward, backward pass 1 (`dq`, `dw`),
//! the device-built inverted index, and backward pass 2 (`dK`, `dV`).
//!
//! [`hsa_forward`] and [`hsa_backward`] are the entry points the backend calls; they make the
//! inputs contiguous and launch the kernels of the files beside this one.

pub mod backward_dkdv;
pub mod backward_dkdv_cmma;
pub mod backward_dq;
pub mod backward_dq_cmma;
pub mod forward;
pub mod forward_cmma;
pub mod index;

use burn::tensor::Shape;
use burn_cubecl::{kernel::into_contiguous, tensor::CubeTensor, CubeRuntime};
use cubecl::prelude::*;

pub(crate) use crate::launch::{empty_like_shape, zeros_like_shape};

/// The sizes of one HSA call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HsaShape {
    /// `B`.
    pub batch: usize,
    /// `L`.
    pub seq: usize,
    /// Query heads `h_q`.
    pub h_q: usize,
    /// Key/value heads `h_kv` (divides `h_q`).
    pub h_kv: usize,
    /// `D`.
    pub head_dim: usize,
    /// Tokens per chunk `S`.
    pub chunk: usize,
    /// Selected chunks per token `K`.
    pub top_k: usize,
}

impl HsaShape {
    /// From `q [B, L, h_q, D]`, `k [B, L, h_kv, D]` and `indices [B, L, h_kv, K]`.
    pub fn of(q: &Shape, k: &Shape, indices: &Shape, chunk: usize) -> Self {
        Self {
            batch: q[0],
            seq: q[1],
            h_q: q[2],
            h_kv: k[2],
            head_dim: q[3],
            chunk,
            top_k: indices[3],
        }
    }
    /// Query heads per KV head, `G`.
    pub fn group(&self) -> usize {
        self.h_q / self.h_kv
    }
    /// Complete chunks, `C = ⌊L/S⌋`.
    pub fn n_chunks(&self) -> usize {
        self.seq / self.chunk
    }
    /// `1/√D`.
    pub fn scale(&self) -> f32 {
        (self.head_dim as f32).sqrt().recip()
    }
    /// `[B, L, h_q, D]`.
    pub fn q_shape(&self) -> Shape {
        Shape::new([self.batch, self.seq, self.h_q, self.head_dim])
    }
    /// `[B, L, h_kv, D]`.
    pub fn kv_shape(&self) -> Shape {
        Shape::new([self.batch, self.seq, self.h_kv, self.head_dim])
    }
    /// `[B, L, h_kv, K]`.
    pub fn sel_shape(&self) -> Shape {
        Shape::new([self.batch, self.seq, self.h_kv, self.top_k])
    }
    /// `[B, L, h_q, K]`.
    pub fn lse_shape(&self) -> Shape {
        Shape::new([self.batch, self.seq, self.h_q, self.top_k])
    }
    /// Shared memory (bytes) the largest kernel of the family needs at this shape; the backend
    /// falls back to the reference when a device offers less.
    pub fn shared_bytes(&self) -> usize {
        let g = self.group();
        let dq = self.chunk * (self.head_dim + 1) + 2 * g * self.chunk + g;
        let dkdv = 2 * g * self.head_dim + 2 * g * self.chunk;
        4 * dq.max(dkdv)
    }
}

/// Gradients of one HSA call.
pub struct HsaGradients<R: CubeRuntime> {
    /// `[B, L, h_q, D]`.
    pub q: CubeTensor<R>,
    /// `[B, L, h_kv, D]`.
    pub k: CubeTensor<R>,
    /// `[B, L, h_kv, D]`.
    pub v: CubeTensor<R>,
    /// `[B, L, h_kv, K]`.
    pub weights: CubeTensor<R>,
}

/// Forward: `(out [B, L, h_q, D], lse [B, L, h_q, K] f32)`.
pub fn hsa_forward<R: CubeRuntime>(
    q: CubeTensor<R>,
    k: CubeTensor<R>,
    v: CubeTensor<R>,
    indices: CubeTensor<R>,
    weights: CubeTensor<R>,
    chunk: usize,
    off_by_one: bool,
) -> (CubeTensor<R>, CubeTensor<R>) {
    let shape = HsaShape::of(q.meta.shape(), k.meta.shape(), indices.meta.shape(), chunk);
    if forward_cmma::supported(&q, &shape) && !scalar_forced() {
        return forward_cmma::hsa_forward_cmma(
            into_contiguous(q),
            into_contiguous(k),
            into_contiguous(v),
            into_contiguous(indices),
            into_contiguous(weights),
            shape,
            off_by_one,
        );
    }
    forward::hsa_forward(
        into_contiguous(q),
        into_contiguous(k),
        into_contiguous(v),
        into_contiguous(indices),
        into_contiguous(weights),
        shape,
        off_by_one,
    )
}

/// Backward: both passes and the index between them.
#[allow(clippy::too_many_arguments)]
pub fn hsa_backward<R: CubeRuntime>(
    q: CubeTensor<R>,
    k: CubeTensor<R>,
    v: CubeTensor<R>,
    indices: CubeTensor<R>,
    weights: CubeTensor<R>,
    lse: CubeTensor<R>,
    d_out: CubeTensor<R>,
    chunk: usize,
) -> HsaGradients<R> {
    let shape = HsaShape::of(q.meta.shape(), k.meta.shape(), indices.meta.shape(), chunk);
    let (q, k, v) = (into_contiguous(q), into_contiguous(k), into_contiguous(v));
    let (indices, weights) = (into_contiguous(indices), into_contiguous(weights));
    let (lse, d_out) = (into_contiguous(lse), into_contiguous(d_out));
    let pass1 = if forward_cmma::supported(&q, &shape) && !scalar_forced() {
        backward_dq_cmma::hsa_backward_dq_cmma
    } else {
        backward_dq::hsa_backward_dq
    };
    let (dq, dw, delta) = pass1(
        q.clone(),
        k.clone(),
        v.clone(),
        indices.clone(),
        weights.clone(),
        lse.clone(),
        d_out.clone(),
        shape,
    );
    let index = index::inverted_index(indices, shape);
    let pass2 = if forward_cmma::supported(&q, &shape) && !scalar_forced() {
        backward_dkdv_cmma::hsa_backward_dkdv_cmma
    } else {
        backward_dkdv::hsa_backward_dkdv
    };
    let (dk, dv) = pass2(q, k, v, weights, lse, delta, d_out, index, shape);
    HsaGradients {
        q: dq,
        k: dk,
        v: dv,
        weights: dw,
    }
}

/// `RAMBA_HSA_KERNEL=scalar` forces the scalar kernels where tensor-core ones apply (to compare
/// the two in one benchmark run).
pub fn scalar_forced() -> bool {
    std::env::var("RAMBA_HSA_KERNEL").is_ok_and(|v| v == "scalar")
}

/// Copies one chunk's `S × D` tile (rows `row_stride` apart from `row0`) into shared memory as
/// f32, rows padded to `D + 1`.
#[cube]
#[allow(clippy::too_many_arguments)]
pub(crate) fn load_tile<F: Float>(
    src: &Tensor<F>,
    tile: &mut SharedMemory<f32>,
    row0: usize,
    row_stride: usize,
    tid: usize,
    threads: usize,
    #[comptime] chunk: usize,
    #[comptime] head_dim: usize,
) {
    let pad = comptime!(head_dim + 1);
    let mut i = tid;
    while i < comptime!(chunk * head_dim) {
        let r = i / head_dim;
        let e = i % head_dim;
        tile[r * pad + e] = f32::cast_from(src[row0 + r * row_stride + e]);
        i += threads;
    }
}
