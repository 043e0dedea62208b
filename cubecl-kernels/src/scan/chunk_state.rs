//! Per-chunk weighted outer-product sums: `out[b, h, c] = Σ_{t ∈ chunk c} w_t · v_t u_tᵀ`.
//!
//! Two uses, told apart by [`Weighting`]:
//! - forward (`u = B`, `v = x`, `w_t = exp(cum_last − cum_t) Δ_t`): each chunk's own
//!   contribution to the state at its end;
//! - backward (`u = C`, `v = dy`, `w_t = exp(cum_t)`): each chunk's local gradient of the state
//!   at its start, through the outputs `exp(cum_t) H C_t`.
//!
//! Shapes: `u [B, L, G, N]`, `v [B, L, H, P]`, `delta [B, L, H]`, `a [H]`; `out` f32
//! `[B, H, n_chunks, P, N]`; `log_decay` f32 `[B, H, n_chunks]` (`A Σ_chunk Δ`, written in the
//! forward weighting only).
//!
//! Grid: one cube per `(batch, head, chunk)`, [`THREADS`] threads each owning `P·N / THREADS`
//! outputs in registers. The chunk's `u` and `v` rows are staged in shared memory 16 tokens at
//! a time; positions past `L` read as zero.

use burn_cubecl::{tensor::CubeTensor, CubeRuntime};
use cubecl::prelude::*;

use super::{empty_like_shape, load_chunk_decay, state_tile_tokens, ScanShape, CHUNK, THREADS};
use crate::launch::{address_type_of, cube_count_for};

/// Which per-token weight the sum uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Weighting {
    /// `exp(cum_last − cum_t) Δ_t` (the forward's chunk states).
    ToChunkEnd,
    /// `exp(cum_t)` (the backward's local state gradients).
    FromChunkStart,
}

#[cube(launch_unchecked, address_type = "dynamic")]
#[allow(clippy::too_many_arguments)]
fn chunk_state_kernel<F: Float>(
    u: &Tensor<F>,
    v: &Tensor<F>,
    delta: &Tensor<F>,
    a: &Tensor<F>,
    out: &mut Tensor<f32>,
    log_decay: &mut Tensor<f32>,
    seq: usize,
    n_chunks: usize,
    n_items: usize,
    #[comptime] heads: usize,
    #[comptime] groups: usize,
    #[comptime] head_dim: usize,
    #[comptime] d_state: usize,
    #[comptime] to_end: bool,
    #[define(F)] _dtype: StorageType,
) {
    let item = CUBE_POS;
    if item >= n_items {
        terminate!();
    }
    let threads = comptime!(THREADS as usize);
    let tile = comptime!(state_tile_tokens());
    let tid = UNIT_POS as usize;
    let c = item % n_chunks;
    let bh = item / n_chunks;
    let h = bh % heads;
    let b = bh / heads;
    let g = h / comptime!(heads / groups);
    let t0 = c * CHUNK;

    let mut dt = SharedMemory::<f32>::new(CHUNK);
    let mut cum = SharedMemory::<f32>::new(CHUNK);
    let mut w = SharedMemory::<f32>::new(CHUNK);
    let mut u_s = SharedMemory::<f32>::new(comptime!(tile * d_state));
    let mut v_s = SharedMemory::<f32>::new(comptime!(tile * head_dim));
    load_chunk_decay::<F>(delta, a, &mut dt, &mut cum, b, h, t0, seq, heads);
    let last = cum[CHUNK - 1];
    if tid < CHUNK {
        if to_end {
            w[tid] = f32::exp(last - cum[tid]) * dt[tid];
        } else {
            w[tid] = f32::exp(cum[tid]);
        }
    }
    if to_end && tid == 0 {
        log_decay[item] = last;
    }

    let n_out = comptime!(head_dim * d_state);
    let per_thread = comptime!(n_out.div_ceil(THREADS as usize));
    let mut acc = Array::<f32>::new(per_thread);
    #[unroll]
    for k in 0..per_thread {
        acc[k] = 0.0;
    }

    for step in 0..comptime!(CHUNK / tile) {
        let r0 = step * tile;
        let mut i = tid;
        while i < comptime!(tile * d_state) {
            let t = t0 + r0 + i / d_state;
            let mut x = f32::new(0.0);
            if t < seq {
                x = f32::cast_from(u[((b * seq + t) * groups + g) * d_state + i % d_state]);
            }
            u_s[i] = x;
            i += threads;
        }
        let mut i = tid;
        while i < comptime!(tile * head_dim) {
            let t = t0 + r0 + i / head_dim;
            let mut x = f32::new(0.0);
            if t < seq {
                x = f32::cast_from(v[((b * seq + t) * heads + h) * head_dim + i % head_dim]);
            }
            v_s[i] = x;
            i += threads;
        }
        sync_cube();
        #[unroll]
        for k in 0..per_thread {
            let o = tid + k * threads;
            if o < n_out {
                let p = o / d_state;
                let n = o % d_state;
                let mut s = f32::new(0.0);
                for r in 0..tile {
                    s += w[r0 + r] * v_s[r * head_dim + p] * u_s[r * d_state + n];
                }
                acc[k] += s;
            }
        }
        sync_cube();
    }

    let base = item * n_out;
    #[unroll]
    for k in 0..per_thread {
        let o = tid + k * threads;
        if o < n_out {
            out[base + o] = acc[k];
        }
    }
}

/// Launches the kernel; returns `(out, log_decay)` (the latter written only for
/// [`Weighting::ToChunkEnd`]). Inputs must be contiguous.
pub fn chunk_state<R: CubeRuntime>(
    u: CubeTensor<R>,
    v: CubeTensor<R>,
    delta: CubeTensor<R>,
    a: CubeTensor<R>,
    shape: ScanShape,
    weighting: Weighting,
) -> (CubeTensor<R>, CubeTensor<R>) {
    if super::chunk_scan_cmma::supported(&v, &shape) && !super::scalar_forced() {
        return super::chunk_state_cmma::chunk_state_cmma(
            u,
            v,
            delta,
            a,
            shape,
            weighting == Weighting::ToChunkEnd,
        );
    }
    let client = v.client.clone();
    let out = empty_like_shape(&v, shape.chunk_states_shape(), burn::tensor::DType::F32);
    let log_decay = empty_like_shape(&v, shape.per_chunk_shape(), burn::tensor::DType::F32);
    let n_items = shape.batch * shape.heads * shape.n_chunks();
    if n_items == 0 {
        return (out, log_decay);
    }
    let address = address_type_of(&[&u, &v, &out]);
    let dtype = v.dtype.into();
    unsafe {
        chunk_state_kernel::launch_unchecked::<R>(
            &client,
            cube_count_for(&client, n_items),
            CubeDim::new_1d(THREADS),
            address,
            u.into_tensor_arg(),
            v.into_tensor_arg(),
            delta.into_tensor_arg(),
            a.into_tensor_arg(),
            out.clone().into_tensor_arg(),
            log_decay.clone().into_tensor_arg(),
            shape.seq,
            shape.n_chunks(),
            n_items,
            shape.heads,
            shape.groups,
            shape.head_dim,
            shape.d_state,
            weighting == Weighting::ToChunkEnd,
            dtype,
        )
    };
    (out, log_decay)
}
