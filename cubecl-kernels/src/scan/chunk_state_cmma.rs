//! [`super::chunk_state`] on tensor cores (`cmma`, f32 accumulation) for f16 and bf16 inputs
//! with `P = 64` and `N` a multiple of 16: per chunk, `out = (w ∘ V)ᵀ · U`, a `P × 64` by
//! `64 × N` product.
//!
//! Grid: one cube of [`WARPS`] planes per `(batch, head, chunk)`. The cube stages the chunk's
//! `U` rows and its `V` rows scaled by the token weights `w_t` (rounded to the input dtype),
//! zero rows past the sequence; plane `w` computes output rows `p = 16w … 16w + 15` (`V`'s
//! columns, read as a column-major `A`), all `N` columns, through its f32 scratch to coalesced
//! stores.
//!
//! Shapes and weightings: as [`super::chunk_state`].

use burn_cubecl::{tensor::CubeTensor, CubeRuntime};
use cubecl::prelude::*;
use cubecl::{cmma, ir::StorageType};

use super::chunk_scan_cmma::{stage, HEAD_DIM, PAD_H, WARPS};
use super::{empty_like_shape, load_chunk_decay, ScanShape, CHUNK};
use crate::fragments::{load_b, new_acc};
use crate::launch::{address_type_of, cube_count_for};

#[cube(launch_unchecked, address_type = "dynamic")]
#[allow(clippy::too_many_arguments)]
fn chunk_state_cmma_kernel<F: Float>(
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
    #[comptime] d_state: usize,
    #[comptime] to_end: bool,
    #[define(F)] _dtype: StorageType,
) {
    let item = CUBE_POS;
    if item >= n_items {
        terminate!();
    }
    let threads = comptime!(WARPS * 32);
    let tid = UNIT_POS as usize;
    let warp = tid / 32;
    let lane = tid % 32;
    let c = item % n_chunks;
    let bh = item / n_chunks;
    let h = bh % heads;
    let b = bh / heads;
    let g = h / comptime!(heads / groups);
    let t0 = c * CHUNK;
    let mut valid = seq - t0;
    if valid > CHUNK {
        valid = CHUNK;
    }
    let ns = comptime!(d_state + 8);
    let sp = comptime!(d_state + 4);

    let mut dt = SharedMemory::<f32>::new(CHUNK);
    let mut cum = SharedMemory::<f32>::new(CHUNK);
    let mut w = SharedMemory::<f32>::new(CHUNK);
    let mut us = SharedMemory::<F>::new_aligned(comptime!(CHUNK * (d_state + 8)), 32usize);
    let mut vw = SharedMemory::<F>::new_aligned(comptime!(CHUNK * PAD_H), 32usize);
    let mut scratch =
        SharedMemory::<f32>::new_aligned(comptime!(WARPS * 16 * (d_state + 4)), 32usize);

    let u0 = ((b * seq + t0) * groups + g) * d_state;
    stage::<F, F>(
        u,
        &mut us,
        u0,
        comptime!(groups * d_state),
        valid,
        CHUNK,
        d_state,
        ns,
        threads,
    );
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
    sync_cube();
    let v0 = ((b * seq + t0) * heads + h) * HEAD_DIM;
    let mut i = tid;
    while i < comptime!(CHUNK * HEAD_DIM) {
        let r = i / HEAD_DIM;
        let p = i % HEAD_DIM;
        let mut x = F::new(0.0);
        if r < valid {
            x = F::cast_from(w[r] * f32::cast_from(v[v0 + r * comptime!(heads * HEAD_DIM) + p]));
        }
        vw[r * PAD_H + p] = x;
        i += threads;
    }
    sync_cube();

    let u_all = us.to_slice();
    let v_all = vw.to_slice();
    let tile = warp * comptime!(16 * (d_state + 4));
    #[unroll]
    for nt in 0..comptime!(d_state / 16) {
        let acc = new_acc();
        #[unroll]
        for ks in 0..comptime!(CHUNK / 16) {
            // A = (w ∘ V)ᵀ: element (p, s) at vw[s · PAD_H + p], a column-major fragment.
            let fa = cmma::Matrix::<F>::from_slice(
                cmma::MatrixIdent::A,
                16usize,
                16usize,
                16usize,
                cmma::MatrixLayout::ColMajor,
                &v_all.slice(ks * 16 * PAD_H + warp * 16, v_all.len()),
                PAD_H as u32,
            );
            let fb = load_b::<F>(
                &u_all,
                ks * 16 * ns + nt * 16,
                ns as u32,
                cmma::MatrixLayout::RowMajor,
            );
            cmma::execute::<F, F, f32, f32>(&fa, &fb, &acc, &acc);
        }
        cmma::store(
            &mut scratch.slice_mut(tile + nt * 16, tile + comptime!(16 * (d_state + 4))),
            &acc,
            sp as u32,
            cmma::MatrixLayout::RowMajor,
        );
    }
    sync_plane();
    let base = item * comptime!(HEAD_DIM * d_state) + warp * comptime!(16 * d_state);
    let mut i = lane;
    while i < comptime!(16 * d_state) {
        let r = i / d_state;
        let n = i % d_state;
        out[base + i] = scratch[tile + r * sp + n];
        i += 32;
    }
}

/// Launches the tensor-core `chunk_state`; returns `(out, log_decay)` as
/// [`super::chunk_state::chunk_state`] does. Inputs must be contiguous and
/// [`super::chunk_scan_cmma::supported`].
pub fn chunk_state_cmma<R: CubeRuntime>(
    u: CubeTensor<R>,
    v: CubeTensor<R>,
    delta: CubeTensor<R>,
    a: CubeTensor<R>,
    shape: ScanShape,
    to_end: bool,
) -> (CubeTensor<R>, CubeTensor<R>) {
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
        chunk_state_cmma_kernel::launch_unchecked::<R>(
            &client,
            cube_count_for(&client, n_items),
            CubeDim::new_1d((WARPS * 32) as u32),
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
            shape.d_state,
            to_end,
            dtype,
        )
    };
    (out, log_decay)
}
