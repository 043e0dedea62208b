//! HSA forward on tensor cores (`cmma`, 16×16×16 tiles with f32 accumulation), for the paper's
//! layout: `G = 16` query heads per KV head (one full tile of rows), `D = S = 64`, f16 or bf16
//! inputs. Other shapes and devices without `cmma` (lavapipe) take the scalar
//! kernel of [`super::forward`]; both compute the same function and save the same `lse`.
//!
//! Grid: cubes of [`WARPS`] planes, one plane (warp) per `(batch, token, KV head)` item, no
//! cube-wide barriers. Per valid slot the plane:
//! 1. `S = Q·K_cᵀ`: 4 column tiles × 4 k-steps, `Q` rows and `K_c` read straight from global
//!    memory as fragments (`K_c` as a column-major `B`), stored to the plane's f32 scratch;
//! 2. two lanes a row (interleaved columns, combined by a plane shuffle): max,
//!    `lse = m + log(n + Σ exp(s − m))`, `w·p` written as the input dtype into the plane's `P`
//!    tile;
//! 3. `O += P·V_c` into four accumulator fragments that live across the slots.
//!
//! The accumulators go through the scratch once at the end to be written as the input dtype.
//!
//! Shapes and layouts: as [`super::forward`]. All fragment pointers are 32-byte aligned: rows of
//! 64 elements in global memory, scratch rows padded to [`PAD`] elements.

use cubecl::prelude::*;
use cubecl::{cmma, ir::StorageType};

use super::HsaShape;
pub(crate) use crate::fragments::{load_a, mma_k64, new_acc, rows_times_t};
use crate::launch::{address_type_of, cube_count_for};
use burn_cubecl::{tensor::CubeTensor, CubeRuntime};

/// Planes (warps) per cube.
pub const WARPS: u32 = 4;
/// Query heads per tile (the `m` of the fragments).
pub const TILE_ROWS: usize = 16;
/// Row stride of the f32 scratch tiles, in elements (a multiple of 4, and 68 mod 32 = 4 spreads
/// the rows of a half-row-per-lane softmax over the banks).
pub(crate) const PAD: usize = 68;
/// Row stride of the half-precision `P` tiles (a multiple of 8 for fragment loads).
pub(crate) const PAD_H: usize = 72;
const HEAD_DIM: usize = 64;

#[cube(launch_unchecked, address_type = "dynamic")]
#[allow(clippy::too_many_arguments)]
fn hsa_forward_cmma_kernel<F: Float, W: Float, I: Int>(
    q: &Tensor<F>,
    k: &Tensor<F>,
    v: &Tensor<F>,
    indices: &Tensor<I>,
    weights: &Tensor<W>,
    out: &mut Tensor<F>,
    lse: &mut Tensor<f32>,
    seq: usize,
    n_chunks: usize,
    n_items: usize,
    scale: f32,
    off_by_one: f32,
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

    let mut scratch =
        SharedMemory::<f32>::new_aligned(comptime!(WARPS as usize * TILE_ROWS * PAD), 32usize);
    let mut probs =
        SharedMemory::<F>::new_aligned(comptime!(WARPS as usize * TILE_ROWS * PAD_H), 32usize);
    let tile0 = warp * comptime!(TILE_ROWS * PAD);
    let ptile0 = warp * comptime!(TILE_ROWS * PAD_H);

    let o0 = new_acc();
    let o1 = new_acc();
    let o2 = new_acc();
    let o3 = new_acc();

    let q_all = q.to_slice();
    let k_all = k.to_slice();
    let v_all = v.to_slice();
    // The group's 16 query rows, loaded once for all slots.
    let qa0 = load_a::<F>(&q_all, q_base, HEAD_DIM as u32);
    let qa1 = load_a::<F>(&q_all, q_base + 16, HEAD_DIM as u32);
    let qa2 = load_a::<F>(&q_all, q_base + 32, HEAD_DIM as u32);
    let qa3 = load_a::<F>(&q_all, q_base + 48, HEAD_DIM as u32);

    for slot in 0..top_k {
        let c = i32::cast_from(indices[sel_base + slot]);
        if c >= 0 && (c as usize) < n_chunks {
            let w = f32::cast_from(weights[sel_base + slot]);
            let row0 = ((b * seq + c as usize * chunk) * h_kv + g) * HEAD_DIM;
            // 1. Scores, tile by tile of 16 keys.
            #[unroll]
            for n in 0..comptime!(chunk / 16) {
                let s = new_acc();
                rows_times_t::<F>(
                    &qa0,
                    &qa1,
                    &qa2,
                    &qa3,
                    &k_all,
                    row0 + n * 16 * row_stride,
                    row_stride as u32,
                    &s,
                );
                cmma::store(
                    &mut scratch.slice_mut(tile0 + n * 16, tile0 + comptime!(TILE_ROWS * PAD)),
                    &s,
                    PAD as u32,
                    cmma::MatrixLayout::RowMajor,
                );
            }
            sync_plane();
            // 2. Softmax per row, two lanes a row (interleaved columns), times the slot weight,
            //    as the input dtype.
            let r = lane / 2;
            let h = lane % 2;
            let r0 = tile0 + r * PAD + h;
            let p0 = ptile0 + r * PAD_H + h;
            // With off-by-one the implicit zero logit joins the max (scale > 0, so the max
            // of raw scores scales).
            let mut top = f32::new(-3.0e38);
            if off_by_one > 0.0f32 {
                top = f32::new(0.0);
            }
            for i in 0..comptime!(chunk / 2) {
                top = max(top, scratch[r0 + 2 * i]);
            }
            top = max(top, plane_shuffle_xor(top, 1)) * scale;
            let mut z = 0.0f32;
            for i in 0..comptime!(chunk / 2) {
                z += f32::exp(scratch[r0 + 2 * i] * scale - top);
            }
            z += plane_shuffle_xor(z, 1);
            let l = top + f32::ln(z + off_by_one * f32::exp(0.0f32 - top));
            for i in 0..comptime!(chunk / 2) {
                probs[p0 + 2 * i] = F::cast_from(w * f32::exp(scratch[r0 + 2 * i] * scale - l));
            }
            if h == 0 {
                lse[lse_base + r * top_k + slot] = l;
            }
            sync_plane();
            // 3. O += (w·P)·V, one output column tile at a time; keys are the inner dimension.
            let p_all = probs.to_slice();
            let vs = row_stride as u32;
            let step = 16 * row_stride;
            mma_k64::<F>(
                &p_all,
                ptile0,
                PAD_H as u32,
                &v_all,
                row0,
                vs,
                step,
                cmma::MatrixLayout::RowMajor,
                &o0,
            );
            mma_k64::<F>(
                &p_all,
                ptile0,
                PAD_H as u32,
                &v_all,
                row0 + 16,
                vs,
                step,
                cmma::MatrixLayout::RowMajor,
                &o1,
            );
            mma_k64::<F>(
                &p_all,
                ptile0,
                PAD_H as u32,
                &v_all,
                row0 + 32,
                vs,
                step,
                cmma::MatrixLayout::RowMajor,
                &o2,
            );
            mma_k64::<F>(
                &p_all,
                ptile0,
                PAD_H as u32,
                &v_all,
                row0 + 48,
                vs,
                step,
                cmma::MatrixLayout::RowMajor,
                &o3,
            );
            sync_plane();
        } else {
            if lane < TILE_ROWS {
                lse[lse_base + lane * top_k + slot] = 0.0;
            }
        }
    }

    let end = tile0 + comptime!(TILE_ROWS * PAD);
    cmma::store(
        &mut scratch.slice_mut(tile0, end),
        &o0,
        PAD as u32,
        cmma::MatrixLayout::RowMajor,
    );
    cmma::store(
        &mut scratch.slice_mut(tile0 + 16, end),
        &o1,
        PAD as u32,
        cmma::MatrixLayout::RowMajor,
    );
    cmma::store(
        &mut scratch.slice_mut(tile0 + 32, end),
        &o2,
        PAD as u32,
        cmma::MatrixLayout::RowMajor,
    );
    cmma::store(
        &mut scratch.slice_mut(tile0 + 48, end),
        &o3,
        PAD as u32,
        cmma::MatrixLayout::RowMajor,
    );
    sync_plane();
    let mut i = lane;
    while i < comptime!(TILE_ROWS * HEAD_DIM) {
        let j = i / HEAD_DIM;
        let e = i % HEAD_DIM;
        out[q_base + i] = F::cast_from(scratch[tile0 + j * PAD + e]);
        i += 32;
    }
}

/// Whether the tensor-core kernel applies: `G = 16`, `D = S = 64`, f16/bf16
/// inputs, and a device with 16×16×16 `cmma` for that dtype.
pub fn supported<R: CubeRuntime>(q: &CubeTensor<R>, shape: &HsaShape) -> bool {
    use cubecl::ir::features::MmaConfig;
    let dtype: StorageType = q.dtype.into();
    let half = matches!(
        q.dtype,
        burn::tensor::DType::BF16 | burn::tensor::DType::F16
    );
    let mma = MmaConfig {
        a_type: dtype,
        b_type: dtype,
        cd_type: StorageType::Scalar(cubecl::ir::ElemType::Float(cubecl::ir::FloatKind::F32)),
        m: 16,
        n: 16,
        k: 16,
    };
    half && shape.group() == TILE_ROWS
        && shape.head_dim == HEAD_DIM
        && shape.chunk == 64
        && q.client.properties().features.matmul.cmma.contains(&mma)
        && q.client.properties().hardware.plane_size_max == 32
}

/// Launches the tensor-core forward; returns `(out, lse)`. Inputs must be contiguous and
/// [`supported`].
pub fn hsa_forward_cmma<R: CubeRuntime>(
    q: CubeTensor<R>,
    k: CubeTensor<R>,
    v: CubeTensor<R>,
    indices: CubeTensor<R>,
    weights: CubeTensor<R>,
    shape: HsaShape,
    off_by_one: bool,
) -> (CubeTensor<R>, CubeTensor<R>) {
    let client = q.client.clone();
    let out = super::empty_like_shape(&q, shape.q_shape(), q.dtype);
    let lse = super::empty_like_shape(&q, shape.lse_shape(), burn::tensor::DType::F32);
    let n_items = shape.batch * shape.seq * shape.h_kv;
    if n_items == 0 {
        return (out, lse);
    }
    let dtypes = [q.dtype.into(), weights.dtype.into(), indices.dtype.into()];
    let address = address_type_of(&[&q, &k, &v, &out]);
    unsafe {
        hsa_forward_cmma_kernel::launch_unchecked::<R>(
            &client,
            cube_count_for(&client, n_items.div_ceil(WARPS as usize)),
            CubeDim::new_2d(32, WARPS),
            address,
            q.into_tensor_arg(),
            k.into_tensor_arg(),
            v.into_tensor_arg(),
            indices.into_tensor_arg(),
            weights.into_tensor_arg(),
            out.clone().into_tensor_arg(),
            lse.clone().into_tensor_arg(),
            shape.seq,
            shape.n_chunks(),
            n_items,
            shape.scale(),
            if off_by_one { 1.0 } else { 0.0 },
            shape.chunk,
            shape.top_k,
            shape.h_kv,
            dtypes,
        )
    };
    (out, lse)
}
