//! HSA backward pass 2 on tensor cores: `dK`, `dV` per chunk through the inverted index (see
//! [`super::backward_dkdv`] for the math), for the layout of [`super::forward_cmma`]
//! (`G = 16`, `D = S = 64`, f16/bf16).
//!
//! One cube per chunk key, four planes, plane `w` owning key rows `16w..16w+16` of the chunk,
//! whose `K` and `V` rows stay in registers as `A` fragments. Per entry `(t, k)` of the chunk's
//! list, each plane computes (transposed, so no fragment needs a transpose):
//! ```text
//! Sᵀ  = K_w · Q_tᵀ      dPᵀ = V_w · dO_tᵀ                     (16 keys × 16 heads)
//! Pᵀ  = exp(Sᵀ·scale − lse_t)   dSᵀ = w·Pᵀ ∘ (dPᵀ − D_t)·scale
//! dV_w += (w·Pᵀ) · dO_t         dK_w += dSᵀ · Q_t               (16 keys × 64)
//! ```
//! 16 `mma` of 16³ per plane and entry; `Q_t` and `dO_t` are read as fragments straight from
//! global memory (row-major for the products with `dO_t`/`Q_t`, column-major as `B = Q_tᵀ`).
//! The list order is the index's, so the sums are deterministic.

use cubecl::prelude::*;
use cubecl::{cmma, ir::StorageType};

use super::forward_cmma::{new_acc, TILE_ROWS, WARPS};
use super::index::InvertedIndex;
use super::HsaShape;
use crate::fragments::{load_a, load_b};
use crate::launch::{address_type_of, cube_count_for};
use burn_cubecl::{tensor::CubeTensor, CubeRuntime};

const HEAD_DIM: usize = 64;
/// Tokens per chunk (`S`), one 16-row block per plane.
const CHUNK: usize = 64;
/// Row stride of the 16×16 scratch tiles (elements).
const SPAD: usize = 16;

/// `acc += A·B` with `A` the 16×64 row block held as four k-step fragments and `B` the
/// transposed 16-row block `xᵀ` of `x` (heads × 64, read column-major).
#[cube]
#[allow(clippy::too_many_arguments)]
fn rows_times_t<F: Float>(
    a0: &cmma::Matrix<F>,
    a1: &cmma::Matrix<F>,
    a2: &cmma::Matrix<F>,
    a3: &cmma::Matrix<F>,
    x: &Slice<F>,
    x_off: usize,
    acc: &cmma::Matrix<f32>,
) {
    let b0 = load_b::<F>(x, x_off, HEAD_DIM as u32, cmma::MatrixLayout::ColMajor);
    cmma::execute::<F, F, f32, f32>(a0, &b0, acc, acc);
    let b1 = load_b::<F>(x, x_off + 16, HEAD_DIM as u32, cmma::MatrixLayout::ColMajor);
    cmma::execute::<F, F, f32, f32>(a1, &b1, acc, acc);
    let b2 = load_b::<F>(x, x_off + 32, HEAD_DIM as u32, cmma::MatrixLayout::ColMajor);
    cmma::execute::<F, F, f32, f32>(a2, &b2, acc, acc);
    let b3 = load_b::<F>(x, x_off + 48, HEAD_DIM as u32, cmma::MatrixLayout::ColMajor);
    cmma::execute::<F, F, f32, f32>(a3, &b3, acc, acc);
}

#[cube(launch_unchecked, address_type = "dynamic")]
#[allow(clippy::too_many_arguments)]
fn hsa_backward_dkdv_cmma_kernel<F: Float, W: Float>(
    q: &Tensor<F>,
    k: &Tensor<F>,
    v: &Tensor<F>,
    weights: &Tensor<W>,
    lse: &Tensor<f32>,
    delta: &Tensor<f32>,
    d_out: &Tensor<F>,
    entries: &Array<u32>,
    offsets: &Array<u32>,
    dk: &mut Tensor<F>,
    dv: &mut Tensor<F>,
    seq: usize,
    n_chunks: usize,
    n_keys: usize,
    scale: f32,
    #[comptime] top_k: usize,
    #[comptime] h_kv: usize,
    #[define(F, W)] _dtypes: [StorageType; 2],
) {
    let key = CUBE_POS;
    let warp = UNIT_POS_Y as usize;
    let lane = UNIT_POS_X as usize;
    let chunk = comptime!(CHUNK);
    if key >= n_keys {
        // Past the chunk keys, one cube per (b, g): zero the incomplete last chunk's rows.
        let bg = key - n_keys;
        if bg < n_keys / n_chunks {
            let g = bg % h_kv;
            let b = bg / h_kv;
            let tail = seq - n_chunks * chunk;
            let mut i = warp * 32 + lane;
            while i < tail * HEAD_DIM {
                let r = n_chunks * chunk + i / HEAD_DIM;
                let at = ((b * seq + r) * h_kv + g) * HEAD_DIM + i % HEAD_DIM;
                dk[at] = F::cast_from(0.0f32);
                dv[at] = F::cast_from(0.0f32);
                i += comptime!(32 * WARPS as usize);
            }
        }
        terminate!();
    }
    let c = key % n_chunks;
    let bg = key / n_chunks;
    let g = bg % h_kv;
    let b = bg / h_kv;
    let h_q = comptime!(TILE_ROWS * h_kv);
    let row_stride = h_kv * HEAD_DIM;
    // This plane's 16 key rows.
    let row0 = ((b * seq + c * chunk + warp * 16) * h_kv + g) * HEAD_DIM;

    let k_all = k.to_slice();
    let v_all = v.to_slice();
    let q_all = q.to_slice();
    let do_all = d_out.to_slice();
    let rs = row_stride as u32;
    let ka0 = load_a::<F>(&k_all, row0, rs);
    let ka1 = load_a::<F>(&k_all, row0 + 16, rs);
    let ka2 = load_a::<F>(&k_all, row0 + 32, rs);
    let ka3 = load_a::<F>(&k_all, row0 + 48, rs);
    let va0 = load_a::<F>(&v_all, row0, rs);
    let va1 = load_a::<F>(&v_all, row0 + 16, rs);
    let va2 = load_a::<F>(&v_all, row0 + 32, rs);
    let va3 = load_a::<F>(&v_all, row0 + 48, rs);
    let dk0 = new_acc();
    let dk1 = new_acc();
    let dk2 = new_acc();
    let dk3 = new_acc();
    let dv0 = new_acc();
    let dv1 = new_acc();
    let dv2 = new_acc();
    let dv3 = new_acc();

    let sq = comptime!(16 * SPAD);
    let mut s_tile =
        SharedMemory::<f32>::new_aligned(comptime!(WARPS as usize * 16 * SPAD), 32usize);
    let mut dp_tile =
        SharedMemory::<f32>::new_aligned(comptime!(WARPS as usize * 16 * SPAD), 32usize);
    let mut pw_tile =
        SharedMemory::<F>::new_aligned(comptime!(WARPS as usize * 16 * SPAD), 32usize);
    let mut ds_tile =
        SharedMemory::<F>::new_aligned(comptime!(WARPS as usize * 16 * SPAD), 32usize);
    let t0 = warp * sq;

    let start = offsets[key] as usize;
    let end = offsets[key + 1] as usize;
    for n in start..end {
        let e = entries[n] as usize;
        let item = e / top_k;
        let slot = e % top_k;
        let bt = item / h_kv;
        let q_base = (bt * h_q + g * TILE_ROWS) * HEAD_DIM;
        let lse_base = (bt * h_q + g * TILE_ROWS) * top_k + slot;
        let w = f32::cast_from(weights[e]);

        let s = new_acc();
        rows_times_t::<F>(&ka0, &ka1, &ka2, &ka3, &q_all, q_base, &s);
        cmma::store(
            &mut s_tile.slice_mut(t0, t0 + sq),
            &s,
            SPAD as u32,
            cmma::MatrixLayout::RowMajor,
        );
        let dp = new_acc();
        rows_times_t::<F>(&va0, &va1, &va2, &va3, &do_all, q_base, &dp);
        cmma::store(
            &mut dp_tile.slice_mut(t0, t0 + sq),
            &dp,
            SPAD as u32,
            cmma::MatrixLayout::RowMajor,
        );
        sync_plane();
        // 256 elements (key r, head j) over 32 lanes.
        #[unroll]
        for m in 0..8usize {
            let i = lane + m * 32;
            let j = i % 16;
            let p = f32::exp(s_tile[t0 + i] * scale - lse[lse_base + j * top_k]);
            pw_tile[t0 + i] = F::cast_from(w * p);
            ds_tile[t0 + i] =
                F::cast_from(w * p * (dp_tile[t0 + i] - delta[lse_base + j * top_k]) * scale);
        }
        sync_plane();
        let pa = load_a::<F>(&pw_tile.to_slice(), t0, SPAD as u32);
        let da = load_a::<F>(&ds_tile.to_slice(), t0, SPAD as u32);
        let hd = HEAD_DIM as u32;
        let ob0 = load_b::<F>(&do_all, q_base, hd, cmma::MatrixLayout::RowMajor);
        cmma::execute::<F, F, f32, f32>(&pa, &ob0, &dv0, &dv0);
        let ob1 = load_b::<F>(&do_all, q_base + 16, hd, cmma::MatrixLayout::RowMajor);
        cmma::execute::<F, F, f32, f32>(&pa, &ob1, &dv1, &dv1);
        let ob2 = load_b::<F>(&do_all, q_base + 32, hd, cmma::MatrixLayout::RowMajor);
        cmma::execute::<F, F, f32, f32>(&pa, &ob2, &dv2, &dv2);
        let ob3 = load_b::<F>(&do_all, q_base + 48, hd, cmma::MatrixLayout::RowMajor);
        cmma::execute::<F, F, f32, f32>(&pa, &ob3, &dv3, &dv3);
        let qb0 = load_b::<F>(&q_all, q_base, hd, cmma::MatrixLayout::RowMajor);
        cmma::execute::<F, F, f32, f32>(&da, &qb0, &dk0, &dk0);
        let qb1 = load_b::<F>(&q_all, q_base + 16, hd, cmma::MatrixLayout::RowMajor);
        cmma::execute::<F, F, f32, f32>(&da, &qb1, &dk1, &dk1);
        let qb2 = load_b::<F>(&q_all, q_base + 32, hd, cmma::MatrixLayout::RowMajor);
        cmma::execute::<F, F, f32, f32>(&da, &qb2, &dk2, &dk2);
        let qb3 = load_b::<F>(&q_all, q_base + 48, hd, cmma::MatrixLayout::RowMajor);
        cmma::execute::<F, F, f32, f32>(&da, &qb3, &dk3, &dk3);
        sync_plane();
    }

    // Accumulators -> the input dtype, through a 16×64 f32 scratch per plane.
    let mut out_tile =
        SharedMemory::<f32>::new_aligned(comptime!(WARPS as usize * 16 * 72), 32usize);
    let o0 = warp * comptime!(16 * 72);
    let oe = o0 + comptime!(16 * 72);
    cmma::store(
        &mut out_tile.slice_mut(o0, oe),
        &dk0,
        72u32,
        cmma::MatrixLayout::RowMajor,
    );
    cmma::store(
        &mut out_tile.slice_mut(o0 + 16, oe),
        &dk1,
        72u32,
        cmma::MatrixLayout::RowMajor,
    );
    cmma::store(
        &mut out_tile.slice_mut(o0 + 32, oe),
        &dk2,
        72u32,
        cmma::MatrixLayout::RowMajor,
    );
    cmma::store(
        &mut out_tile.slice_mut(o0 + 48, oe),
        &dk3,
        72u32,
        cmma::MatrixLayout::RowMajor,
    );
    sync_plane();
    let mut i = lane;
    while i < comptime!(16 * HEAD_DIM) {
        let r = i / HEAD_DIM;
        let col = i % HEAD_DIM;
        dk[row0 + r * row_stride + col] = F::cast_from(out_tile[o0 + r * 72 + col]);
        i += 32;
    }
    sync_plane();
    cmma::store(
        &mut out_tile.slice_mut(o0, oe),
        &dv0,
        72u32,
        cmma::MatrixLayout::RowMajor,
    );
    cmma::store(
        &mut out_tile.slice_mut(o0 + 16, oe),
        &dv1,
        72u32,
        cmma::MatrixLayout::RowMajor,
    );
    cmma::store(
        &mut out_tile.slice_mut(o0 + 32, oe),
        &dv2,
        72u32,
        cmma::MatrixLayout::RowMajor,
    );
    cmma::store(
        &mut out_tile.slice_mut(o0 + 48, oe),
        &dv3,
        72u32,
        cmma::MatrixLayout::RowMajor,
    );
    sync_plane();
    let mut i = lane;
    while i < comptime!(16 * HEAD_DIM) {
        let r = i / HEAD_DIM;
        let col = i % HEAD_DIM;
        dv[row0 + r * row_stride + col] = F::cast_from(out_tile[o0 + r * 72 + col]);
        i += 32;
    }
}

/// Pass 2 on tensor cores: `(dk, dv)`.
#[allow(clippy::too_many_arguments)]
pub fn hsa_backward_dkdv_cmma<R: CubeRuntime>(
    q: CubeTensor<R>,
    k: CubeTensor<R>,
    v: CubeTensor<R>,
    weights: CubeTensor<R>,
    lse: CubeTensor<R>,
    delta: CubeTensor<R>,
    d_out: CubeTensor<R>,
    index: InvertedIndex<R>,
    shape: HsaShape,
) -> (CubeTensor<R>, CubeTensor<R>) {
    let client = q.client.clone();
    let n_keys = shape.batch * shape.h_kv * shape.n_chunks();
    if n_keys == 0 {
        return (
            super::zeros_like_shape(&k, shape.kv_shape(), k.dtype),
            super::zeros_like_shape(&k, shape.kv_shape(), k.dtype),
        );
    }
    let dk = super::empty_like_shape(&k, shape.kv_shape(), k.dtype);
    let dv = super::empty_like_shape(&k, shape.kv_shape(), k.dtype);
    let dtypes = [q.dtype.into(), weights.dtype.into()];
    let address = address_type_of(&[&q, &k, &v, &d_out]);
    unsafe {
        hsa_backward_dkdv_cmma_kernel::launch_unchecked::<R>(
            &client,
            cube_count_for(&client, n_keys + shape.batch * shape.h_kv),
            CubeDim::new_2d(32, WARPS),
            address,
            q.into_tensor_arg(),
            k.into_tensor_arg(),
            v.into_tensor_arg(),
            weights.into_tensor_arg(),
            lse.into_tensor_arg(),
            delta.into_tensor_arg(),
            d_out.into_tensor_arg(),
            index.entries.into_array_arg(),
            index.offsets.into_array_arg(),
            dk.clone().into_tensor_arg(),
            dv.clone().into_tensor_arg(),
            shape.seq,
            shape.n_chunks(),
            n_keys,
            shape.scale(),
            shape.top_k,
            shape.h_kv,
            dtypes,
        )
    };
    (dk, dv)
}
