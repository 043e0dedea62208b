//! HSA backward pass 1 on tensor cores: `dq`, `dw` and `D` (see [`super::backward_dq`] for
//! the math), for the layout of [`super::forward_cmma`] (`G = 16`, `D = S = 64`, f16/bf16).
//!
//! Per valid slot, one plane per `(batch, token, KV head)`:
//! 1. `S = Q·K_cᵀ` and `dP = dO·V_cᵀ` (4 column tiles each), stored to two f32 scratch tiles;
//! 2. lanes 0..16 take a row: `p = exp(s·scale − lse)`, `D = Σ p·dp`,
//!    `ds = w·p·(dp − D)·scale` (written as the input dtype), and `D`; `dw = Σ_rows D` by a
//!    plane sum;
//! 3. `dq += dS·K_c` into four accumulator fragments that live across the slots.

use cubecl::prelude::*;
use cubecl::{cmma, ir::StorageType};

use super::forward_cmma::{load_a, mma_k64, new_acc, rows_times_t, PAD, PAD_H, TILE_ROWS, WARPS};
use super::HsaShape;
use crate::launch::{address_type_of, cube_count_for};
use burn_cubecl::{tensor::CubeTensor, CubeRuntime};

const HEAD_DIM: usize = 64;

#[cube(launch_unchecked, address_type = "dynamic")]
#[allow(clippy::too_many_arguments)]
fn hsa_backward_dq_cmma_kernel<F: Float, W: Float, I: Int>(
    q: &Tensor<F>,
    k: &Tensor<F>,
    v: &Tensor<F>,
    indices: &Tensor<I>,
    weights: &Tensor<W>,
    lse: &Tensor<f32>,
    d_out: &Tensor<F>,
    dq: &mut Tensor<F>,
    dw: &mut Tensor<W>,
    delta: &mut Tensor<f32>,
    seq: usize,
    n_chunks: usize,
    n_items: usize,
    scale: f32,
    #[comptime] chunk: usize,
    #[comptime] top_k: usize,
    #[comptime] h_kv: usize,
    #[define(F, W, I)] _dtypes: [StorageType; 3],
) {
    let warp = UNIT_POS_Y as usize;
    let lane = UNIT_POS_X as usize;
    let item = CUBE_POS * comptime!(WARPS as usize) + warp;
    if item >= n_items {
        terminate!();
    }
    let g = item % h_kv;
    let bt = item / h_kv;
    let b = bt / seq;
    let h_q = comptime!(TILE_ROWS * h_kv);
    let q_base = (bt * h_q + g * TILE_ROWS) * HEAD_DIM;
    let sel_base = item * top_k;
    let lse_base = (bt * h_q + g * TILE_ROWS) * top_k;
    let row_stride = h_kv * HEAD_DIM;

    let tile = comptime!(TILE_ROWS * PAD);
    let mut s_tile =
        SharedMemory::<f32>::new_aligned(comptime!(WARPS as usize * TILE_ROWS * PAD), 32usize);
    let mut dp_tile =
        SharedMemory::<f32>::new_aligned(comptime!(WARPS as usize * TILE_ROWS * PAD), 32usize);
    let mut ds_tile =
        SharedMemory::<F>::new_aligned(comptime!(WARPS as usize * TILE_ROWS * PAD_H), 32usize);
    let tile0 = warp * tile;
    let htile0 = warp * comptime!(TILE_ROWS * PAD_H);

    let a0 = new_acc();
    let a1 = new_acc();
    let a2 = new_acc();
    let a3 = new_acc();

    let q_all = q.to_slice();
    let do_all = d_out.to_slice();
    let k_all = k.to_slice();
    let v_all = v.to_slice();
    // The group's query and output-gradient rows, loaded once for all slots.
    let qa0 = load_a::<F>(&q_all, q_base, HEAD_DIM as u32);
    let qa1 = load_a::<F>(&q_all, q_base + 16, HEAD_DIM as u32);
    let qa2 = load_a::<F>(&q_all, q_base + 32, HEAD_DIM as u32);
    let qa3 = load_a::<F>(&q_all, q_base + 48, HEAD_DIM as u32);
    let oa0 = load_a::<F>(&do_all, q_base, HEAD_DIM as u32);
    let oa1 = load_a::<F>(&do_all, q_base + 16, HEAD_DIM as u32);
    let oa2 = load_a::<F>(&do_all, q_base + 32, HEAD_DIM as u32);
    let oa3 = load_a::<F>(&do_all, q_base + 48, HEAD_DIM as u32);

    for slot in 0..top_k {
        let c = i32::cast_from(indices[sel_base + slot]);
        if c >= 0 && (c as usize) < n_chunks {
            let w = f32::cast_from(weights[sel_base + slot]);
            let row0 = ((b * seq + c as usize * chunk) * h_kv + g) * HEAD_DIM;
            #[unroll]
            for n in 0..4usize {
                let s = new_acc();
                let rs = row_stride as u32;
                rows_times_t::<F>(
                    &qa0,
                    &qa1,
                    &qa2,
                    &qa3,
                    &k_all,
                    row0 + n * 16 * row_stride,
                    rs,
                    &s,
                );
                cmma::store(
                    &mut s_tile.slice_mut(tile0 + n * 16, tile0 + tile),
                    &s,
                    PAD as u32,
                    cmma::MatrixLayout::RowMajor,
                );
                let dp = new_acc();
                rows_times_t::<F>(
                    &oa0,
                    &oa1,
                    &oa2,
                    &oa3,
                    &v_all,
                    row0 + n * 16 * row_stride,
                    rs,
                    &dp,
                );
                cmma::store(
                    &mut dp_tile.slice_mut(tile0 + n * 16, tile0 + tile),
                    &dp,
                    PAD as u32,
                    cmma::MatrixLayout::RowMajor,
                );
            }
            sync_plane();
            // Two lanes a row, interleaved columns.
            let r = lane / 2;
            let h = lane % 2;
            let r0 = tile0 + r * PAD + h;
            let h0 = htile0 + r * PAD_H + h;
            let l = lse[lse_base + r * top_k + slot];
            let mut d = 0.0f32;
            for i in 0..comptime!(HEAD_DIM / 2) {
                d += f32::exp(s_tile[r0 + 2 * i] * scale - l) * dp_tile[r0 + 2 * i];
            }
            d += plane_shuffle_xor(d, 1);
            for i in 0..comptime!(HEAD_DIM / 2) {
                let p = f32::exp(s_tile[r0 + 2 * i] * scale - l);
                ds_tile[h0 + 2 * i] = F::cast_from(w * p * (dp_tile[r0 + 2 * i] - d) * scale);
            }
            if h == 0 {
                delta[lse_base + r * top_k + slot] = d;
            } else {
                // Each row's D once in the plane sum below.
                d = 0.0f32;
            }
            let total = plane_sum(d);
            if lane == 0 {
                dw[sel_base + slot] = W::cast_from(total);
            }
            sync_plane();
            let ds_all = ds_tile.to_slice();
            let ks = row_stride as u32;
            let step = 16 * row_stride;
            mma_k64::<F>(
                &ds_all,
                htile0,
                PAD_H as u32,
                &k_all,
                row0,
                ks,
                step,
                cmma::MatrixLayout::RowMajor,
                &a0,
            );
            mma_k64::<F>(
                &ds_all,
                htile0,
                PAD_H as u32,
                &k_all,
                row0 + 16,
                ks,
                step,
                cmma::MatrixLayout::RowMajor,
                &a1,
            );
            mma_k64::<F>(
                &ds_all,
                htile0,
                PAD_H as u32,
                &k_all,
                row0 + 32,
                ks,
                step,
                cmma::MatrixLayout::RowMajor,
                &a2,
            );
            mma_k64::<F>(
                &ds_all,
                htile0,
                PAD_H as u32,
                &k_all,
                row0 + 48,
                ks,
                step,
                cmma::MatrixLayout::RowMajor,
                &a3,
            );
            sync_plane();
        } else {
            if lane < TILE_ROWS {
                delta[lse_base + lane * top_k + slot] = 0.0;
            }
            if lane == 0 {
                dw[sel_base + slot] = W::cast_from(0.0f32);
            }
        }
    }

    let end = tile0 + tile;
    cmma::store(
        &mut s_tile.slice_mut(tile0, end),
        &a0,
        PAD as u32,
        cmma::MatrixLayout::RowMajor,
    );
    cmma::store(
        &mut s_tile.slice_mut(tile0 + 16, end),
        &a1,
        PAD as u32,
        cmma::MatrixLayout::RowMajor,
    );
    cmma::store(
        &mut s_tile.slice_mut(tile0 + 32, end),
        &a2,
        PAD as u32,
        cmma::MatrixLayout::RowMajor,
    );
    cmma::store(
        &mut s_tile.slice_mut(tile0 + 48, end),
        &a3,
        PAD as u32,
        cmma::MatrixLayout::RowMajor,
    );
    sync_plane();
    let mut i = lane;
    while i < comptime!(TILE_ROWS * HEAD_DIM) {
        dq[q_base + i] = F::cast_from(s_tile[tile0 + (i / HEAD_DIM) * PAD + i % HEAD_DIM]);
        i += 32;
    }
}

/// Pass 1 on tensor cores: `(dq, dw, delta)`. Inputs contiguous and
/// [`super::forward_cmma::supported`].
#[allow(clippy::too_many_arguments)]
pub fn hsa_backward_dq_cmma<R: CubeRuntime>(
    q: CubeTensor<R>,
    k: CubeTensor<R>,
    v: CubeTensor<R>,
    indices: CubeTensor<R>,
    weights: CubeTensor<R>,
    lse: CubeTensor<R>,
    d_out: CubeTensor<R>,
    shape: HsaShape,
) -> (CubeTensor<R>, CubeTensor<R>, CubeTensor<R>) {
    let client = q.client.clone();
    let dq = super::empty_like_shape(&q, shape.q_shape(), q.dtype);
    let dw = super::empty_like_shape(&q, shape.sel_shape(), weights.dtype);
    let delta = super::empty_like_shape(&q, shape.lse_shape(), burn::tensor::DType::F32);
    let n_items = shape.batch * shape.seq * shape.h_kv;
    if n_items == 0 {
        return (dq, dw, delta);
    }
    let dtypes = [q.dtype.into(), weights.dtype.into(), indices.dtype.into()];
    let address = address_type_of(&[&q, &k, &v, &d_out, &dq]);
    unsafe {
        hsa_backward_dq_cmma_kernel::launch_unchecked::<R>(
            &client,
            cube_count_for(&client, n_items.div_ceil(WARPS as usize)),
            CubeDim::new_2d(32, WARPS),
            address,
            q.into_tensor_arg(),
            k.into_tensor_arg(),
            v.into_tensor_arg(),
            indices.into_tensor_arg(),
            weights.into_tensor_arg(),
            lse.into_tensor_arg(),
            d_out.into_tensor_arg(),
            dq.clone().into_tensor_arg(),
            dw.clone().into_tensor_arg(),
            delta.clone().into_tensor_arg(),
            shape.seq,
            shape.n_chunks(),
            n_items,
            shape.scale(),
            shape.chunk,
            shape.top_k,
            shape.h_kv,
            dtypes,
        )
    };
    (dq, dw, delta)
}
