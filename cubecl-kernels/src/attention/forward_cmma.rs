//! Attention forward on tensor cores (`cmma`, 16×16×16 tiles, f32 accumulation) for f16/bf16
//! inputs at `D = 64`; other shapes, f32 inputs and devices without `cmma` (lavapipe) take the
//! scalar kernel of [`super::forward`]. Both compute the same function and save the same `lse`.
//!
//! Grid: one cube per `(batch, block of 64 queries, query head)`, four planes (warps), plane `w`
//! owning query rows `16w..16w+16` of the block as four `A` fragments held for the whole call.
//! The cube stages each tile of 64 keys (and values) in shared memory with coalesced loads,
//! rows padded to [`HPAD`] elements; the planes read their `B` fragments from there.
//!
//! Two passes over the key tiles the block may see (causal blocks stop at their last query,
//! windowed ones start `w` keys before their first):
//! 1. `S = Q·Kᵀ` (16 `mma` a tile) into the plane's f32 scratch; two lanes a row keep a running
//!    max and sum of `exp(s·scale − max)` over the visible keys, combined by a plane shuffle into
//!    the row's log-sum-exp at the end.
//! 2. `S` again, `P = exp(S·scale − lse)` (masked keys 0) written in the input dtype into the
//!    plane's `P` tile, `O += P·V` (16 `mma`) into four accumulators.
//!
//! The second pass replaces the online rescaling of FlashAttention: `cmma` accumulators have no
//! per-row access, so rescaling `O` would cost a round trip through shared memory per tile, and
//! the recomputed `Q·Kᵀ` is the same 16 `mma`. `P` is exact (already normalised), and `lse` is
//! what the backward needs anyway.
//!
//! Shapes: see the module docs of [`super`]. Shared memory: 45 KiB a cube.

use cubecl::prelude::*;
use cubecl::{cmma, ir::StorageType};

use super::{first_key, key_end, visible, AttentionShape};
use crate::fragments::{load_a, mma_k64, new_acc, rows_times_t};
use crate::launch::{address_type_of, cube_count_for};
use burn_cubecl::{tensor::CubeTensor, CubeRuntime};

/// Planes (warps) per cube.
pub const WARPS: usize = 4;
/// Rows of a cube's block (queries, or keys in the `dK`/`dV` pass) and of a staged tile.
pub const BLOCK: usize = 16 * WARPS;
/// The head dim the tensor-core kernels take.
pub const HEAD_DIM: usize = 64;
/// Row stride of half-precision tiles in shared memory: a multiple of 8 elements, as fragment
/// loads need, and 8 past 64 so successive rows start on different banks.
pub(crate) const HPAD: usize = 72;
/// Row stride of the f32 scratch tiles (a multiple of 4; 68 mod 32 = 4 spreads the rows a
/// lane pair reads over the banks).
pub(crate) const FPAD: usize = 68;
/// Below this a (scaled) score marks a hidden key.
pub(crate) const HIDDEN: f32 = -1.0e38;

/// Copies rows `row0..row0 + rows` of a `[.., 64]` row sequence (row `r` at
/// `base + r · row_stride`) into `dst` from `dst_off` with row stride [`HPAD`]; rows at or past
/// `n_rows` become zeros. `threads` consecutive units share the copy, `tid` among them.
#[cube]
#[allow(clippy::too_many_arguments)]
pub(crate) fn stage_rows<F: Float>(
    src: &Tensor<F>,
    dst: &mut SharedMemory<F>,
    dst_off: usize,
    base: usize,
    row_stride: usize,
    row0: usize,
    n_rows: usize,
    tid: usize,
    #[comptime] threads: usize,
    #[comptime] rows: usize,
) {
    let mut idx = tid;
    while idx < comptime!(rows * HEAD_DIM) {
        let r = idx / HEAD_DIM;
        let e = idx % HEAD_DIM;
        let row = row0 + r;
        let mut x = F::cast_from(0.0f32);
        if row < n_rows {
            x = src[base + row * row_stride + e];
        }
        dst[dst_off + r * HPAD + e] = x;
        idx += threads;
    }
}

/// `X·Yᵀ` for the plane's 16×64 row block `X` (four k-step fragments) against the 64 staged
/// rows of `y` (stride [`HPAD`]), stored as a 16×64 f32 tile at `f0` of `scratch` (stride
/// [`FPAD`]): four 16-column tiles of 16 `mma` in all.
#[cube]
#[allow(clippy::too_many_arguments)]
pub(crate) fn products_to_scratch<F: Float>(
    x0: &cmma::Matrix<F>,
    x1: &cmma::Matrix<F>,
    x2: &cmma::Matrix<F>,
    x3: &cmma::Matrix<F>,
    y: &SharedMemory<F>,
    scratch: &mut SharedMemory<f32>,
    f0: usize,
) {
    #[unroll]
    for n in 0..4usize {
        let s = new_acc();
        rows_times_t::<F>(
            x0,
            x1,
            x2,
            x3,
            &y.to_slice(),
            n * 16 * HPAD,
            HPAD as u32,
            &s,
        );
        cmma::store(
            &mut scratch.slice_mut(f0 + n * 16, f0 + comptime!(16 * FPAD)),
            &s,
            FPAD as u32,
            cmma::MatrixLayout::RowMajor,
        );
    }
}

/// `acc_d += P·Y[:, 16d..16d + 16]` for `d = 0..4`: the plane's 16×64 `P` tile at `p0` of
/// `p` (stride [`HPAD`]) times the 64 staged rows of `y` (stride [`HPAD`]).
#[cube]
#[allow(clippy::too_many_arguments)]
pub(crate) fn tile_times_rows<F: Float>(
    p: &SharedMemory<F>,
    p0: usize,
    y: &SharedMemory<F>,
    acc0: &cmma::Matrix<f32>,
    acc1: &cmma::Matrix<f32>,
    acc2: &cmma::Matrix<f32>,
    acc3: &cmma::Matrix<f32>,
) {
    let pa = p.to_slice();
    let ys = y.to_slice();
    let stride = HPAD as u32;
    let step = comptime!(16 * HPAD);
    let layout = cmma::MatrixLayout::RowMajor;
    mma_k64::<F>(&pa, p0, stride, &ys, 0usize, stride, step, layout, acc0);
    mma_k64::<F>(&pa, p0, stride, &ys, 16, stride, step, layout, acc1);
    mma_k64::<F>(&pa, p0, stride, &ys, 32, stride, step, layout, acc2);
    mma_k64::<F>(&pa, p0, stride, &ys, 48, stride, step, layout, acc3);
}

/// Writes four 16×16 f32 accumulators (a 16×64 row block) through the plane's scratch at `f0`
/// to rows `row0..` of `dst` (row `r` at `base + r · row_stride`), times `factor`, in the
/// output dtype; rows at or past `n_rows` are left alone.
#[cube]
#[allow(clippy::too_many_arguments)]
pub(crate) fn write_rows<F: Float>(
    acc0: &cmma::Matrix<f32>,
    acc1: &cmma::Matrix<f32>,
    acc2: &cmma::Matrix<f32>,
    acc3: &cmma::Matrix<f32>,
    scratch: &mut SharedMemory<f32>,
    f0: usize,
    dst: &mut Tensor<F>,
    base: usize,
    row_stride: usize,
    row0: usize,
    n_rows: usize,
    factor: f32,
    lane: usize,
) {
    let end = f0 + comptime!(16 * FPAD);
    let layout = cmma::MatrixLayout::RowMajor;
    cmma::store(&mut scratch.slice_mut(f0, end), acc0, FPAD as u32, layout);
    cmma::store(
        &mut scratch.slice_mut(f0 + 16, end),
        acc1,
        FPAD as u32,
        layout,
    );
    cmma::store(
        &mut scratch.slice_mut(f0 + 32, end),
        acc2,
        FPAD as u32,
        layout,
    );
    cmma::store(
        &mut scratch.slice_mut(f0 + 48, end),
        acc3,
        FPAD as u32,
        layout,
    );
    sync_plane();
    let mut idx = lane;
    while idx < comptime!(16 * HEAD_DIM) {
        let r = idx / HEAD_DIM;
        let e = idx % HEAD_DIM;
        if row0 + r < n_rows {
            dst[base + (row0 + r) * row_stride + e] =
                F::cast_from(scratch[f0 + r * FPAD + e] * factor);
        }
        idx += 32;
    }
}

#[cube(launch_unchecked, address_type = "dynamic")]
#[allow(clippy::too_many_arguments)]
fn attention_forward_cmma_kernel<F: Float>(
    q: &Tensor<F>,
    k: &Tensor<F>,
    v: &Tensor<F>,
    out: &mut Tensor<F>,
    lse: &mut Tensor<f32>,
    seq_q: usize,
    seq_k: usize,
    q_offset: usize,
    window: usize,
    n_blocks: usize,
    n_items: usize,
    scale: f32,
    #[comptime] causal: bool,
    #[comptime] group: usize,
    #[comptime] h_kv: usize,
    #[define(F)] _dtype: StorageType,
) {
    let item = CUBE_POS;
    if item >= n_items {
        terminate!();
    }
    let warp = UNIT_POS_Y as usize;
    let lane = UNIT_POS_X as usize;
    let tid = warp * 32 + lane;
    let h_q = comptime!(group * h_kv);
    let h = item % h_q;
    let blk = (item / h_q) % n_blocks;
    let b = item / (h_q * n_blocks);
    let g = h / group;
    let i0 = blk * BLOCK;
    // This plane's first query, and the row and column parity its lane works on.
    let iw = i0 + warp * 16;
    let r = lane / 2;
    let hcol = lane % 2;
    let i = iw + r;
    let row_ok = i < seq_q;
    let pos = i + q_offset;
    let q_head = (b * seq_q * h_q + h) * HEAD_DIM;
    let q_stride = h_q * HEAD_DIM;
    let kv_base = (b * seq_k * h_kv + g) * HEAD_DIM;
    let kv_stride = h_kv * HEAD_DIM;

    let mut sk = SharedMemory::<F>::new_aligned(comptime!(BLOCK * HPAD), 32usize);
    let mut sv = SharedMemory::<F>::new_aligned(comptime!(BLOCK * HPAD), 32usize);
    let mut scratch = SharedMemory::<f32>::new_aligned(comptime!(WARPS * 16 * FPAD), 32usize);
    let mut ptile = SharedMemory::<F>::new_aligned(comptime!(WARPS * 16 * HPAD), 32usize);
    let f0 = warp * comptime!(16 * FPAD);
    let p0 = warp * comptime!(16 * HPAD);

    // The plane's query rows, staged through its P tile (zeros past seq_q).
    stage_rows::<F>(
        q, &mut ptile, p0, q_head, q_stride, iw, seq_q, lane, 32usize, 16usize,
    );
    sync_plane();
    let qa0 = load_a::<F>(&ptile.to_slice(), p0, HPAD as u32);
    let qa1 = load_a::<F>(&ptile.to_slice(), p0 + 16, HPAD as u32);
    let qa2 = load_a::<F>(&ptile.to_slice(), p0 + 32, HPAD as u32);
    let qa3 = load_a::<F>(&ptile.to_slice(), p0 + 48, HPAD as u32);
    sync_plane();

    // Keys the cube's queries may see (lo..hi), and the plane's own range.
    let lo = first_key(i0, q_offset, window, causal);
    let hi = key_end(min(i0 + BLOCK, seq_q), seq_k, q_offset, causal);
    let plane_on = iw < seq_q;
    let w_lo = first_key(iw, q_offset, window, causal);
    let w_hi = key_end(min(iw + 16, seq_q), seq_k, q_offset, causal);
    let t_start = lo / BLOCK * BLOCK;

    // Pass 1: the row log-sum-exp.
    let mut m = f32::new(-3.0e38);
    let mut l = 0.0f32;
    let mut t = t_start;
    while t < hi {
        stage_rows::<F>(
            k, &mut sk, 0usize, kv_base, kv_stride, t, seq_k, tid, 128usize, BLOCK,
        );
        sync_cube();
        if plane_on && t < w_hi && t + BLOCK > w_lo {
            products_to_scratch::<F>(&qa0, &qa1, &qa2, &qa3, &sk, &mut scratch, f0);
            sync_plane();
            let mut s = Array::<f32>::new(32usize);
            let mut tile_max = f32::new(-3.0e38);
            #[unroll]
            for c in 0..32usize {
                let col = 2 * c + hcol;
                let j = t + col;
                let mut x = f32::new(-3.0e38);
                if row_ok && j < seq_k && visible(j, pos, window, causal) {
                    x = scratch[f0 + r * FPAD + col] * scale;
                }
                s[c] = x;
                tile_max = max(tile_max, x);
            }
            if tile_max > HIDDEN {
                let m_new = max(m, tile_max);
                l *= f32::exp(m - m_new);
                #[unroll]
                for c in 0..32usize {
                    if s[c] > HIDDEN {
                        l += f32::exp(s[c] - m_new);
                    }
                }
                m = m_new;
            }
        }
        sync_cube();
        t += BLOCK;
    }
    // The two lanes of a row combine their partial sums.
    let m_row = max(m, plane_shuffle_xor(m, 1));
    let part = l * f32::exp(m - m_row);
    let total = part + plane_shuffle_xor(part, 1);
    // A row that sees no key gets zeros and lse 0 (its P is all zeros below).
    let mut row_lse = 0.0f32;
    if total > 0.0 {
        row_lse = m_row + f32::ln(total);
    }

    // Pass 2: O = P·V with P = exp(S·scale − lse).
    let o0 = new_acc();
    let o1 = new_acc();
    let o2 = new_acc();
    let o3 = new_acc();
    t = t_start;
    while t < hi {
        stage_rows::<F>(
            k, &mut sk, 0usize, kv_base, kv_stride, t, seq_k, tid, 128usize, BLOCK,
        );
        stage_rows::<F>(
            v, &mut sv, 0usize, kv_base, kv_stride, t, seq_k, tid, 128usize, BLOCK,
        );
        sync_cube();
        if plane_on && t < w_hi && t + BLOCK > w_lo {
            products_to_scratch::<F>(&qa0, &qa1, &qa2, &qa3, &sk, &mut scratch, f0);
            sync_plane();
            #[unroll]
            for c in 0..32usize {
                let col = 2 * c + hcol;
                let j = t + col;
                let mut p = 0.0f32;
                if row_ok && total > 0.0 && j < seq_k && visible(j, pos, window, causal) {
                    p = f32::exp(scratch[f0 + r * FPAD + col] * scale - row_lse);
                }
                ptile[p0 + r * HPAD + col] = F::cast_from(p);
            }
            sync_plane();
            tile_times_rows::<F>(&ptile, p0, &sv, &o0, &o1, &o2, &o3);
        }
        sync_cube();
        t += BLOCK;
    }

    write_rows::<F>(
        &o0,
        &o1,
        &o2,
        &o3,
        &mut scratch,
        f0,
        out,
        q_head,
        q_stride,
        iw,
        seq_q,
        1.0,
        lane,
    );
    if row_ok && hcol == 0 {
        lse[(b * seq_q + i) * h_q + h] = row_lse;
    }
}

/// Whether the tensor-core kernels apply: f16/bf16 inputs, `D = 64`, at least 16 queries (a
/// decode step of a few queries stays on the scalar kernel), a device with 16×16×16 `cmma` for
/// that dtype, 32-lane planes and the shared memory, and `RAMBA_ATTN_KERNEL` not `scalar`.
pub fn supported<R: CubeRuntime>(q: &CubeTensor<R>, shape: &AttentionShape) -> bool {
    use cubecl::ir::features::MmaConfig;
    if std::env::var("RAMBA_ATTN_KERNEL").is_ok_and(|v| v == "scalar") {
        return false;
    }
    let half = matches!(
        q.dtype,
        burn::tensor::DType::BF16 | burn::tensor::DType::F16
    );
    if !half || shape.head_dim != HEAD_DIM || shape.seq_q < 16 {
        return false;
    }
    let dtype: StorageType = q.dtype.into();
    let mma = MmaConfig {
        a_type: dtype,
        b_type: dtype,
        cd_type: StorageType::Scalar(cubecl::ir::ElemType::Float(cubecl::ir::FloatKind::F32)),
        m: 16,
        n: 16,
        k: 16,
    };
    let props = q.client.properties();
    props.features.matmul.cmma.contains(&mma)
        && props.hardware.plane_size_max == 32
        && props.hardware.max_shared_memory_size >= shared_bytes(q.dtype.size())
}

/// Shared memory of the largest tensor-core kernel (the `dK`/`dV` pass): two staged tiles, the
/// planes' f32 scratch and half-precision tiles, and two rows of per-query statistics.
pub(crate) fn shared_bytes(elem: usize) -> usize {
    elem * (2 * BLOCK * HPAD + WARPS * 16 * HPAD) + 4 * (WARPS * 16 * FPAD + 2 * BLOCK)
}

/// Launches the tensor-core forward; returns `(out, lse)`. Inputs must be contiguous and
/// [`supported`].
pub fn attention_forward_cmma<R: CubeRuntime>(
    q: CubeTensor<R>,
    k: CubeTensor<R>,
    v: CubeTensor<R>,
    shape: AttentionShape,
) -> (CubeTensor<R>, CubeTensor<R>) {
    let client = q.client.clone();
    let out = super::empty_like_shape(&q, shape.q_shape(), q.dtype);
    let lse = super::empty_like_shape(&q, shape.row_shape(), burn::tensor::DType::F32);
    let n_blocks = shape.seq_q.div_ceil(BLOCK);
    let n_items = shape.batch * n_blocks * shape.h_q;
    if n_items == 0 {
        return (out, lse);
    }
    let address = address_type_of(&[&q, &k, &v, &out]);
    let dtype = q.dtype.into();
    unsafe {
        attention_forward_cmma_kernel::launch_unchecked::<R>(
            &client,
            cube_count_for(&client, n_items),
            CubeDim::new_2d(32, WARPS as u32),
            address,
            q.into_tensor_arg(),
            k.into_tensor_arg(),
            v.into_tensor_arg(),
            out.clone().into_tensor_arg(),
            lse.clone().into_tensor_arg(),
            shape.seq_q,
            shape.seq_k,
            shape.q_offset,
            shape.window,
            n_blocks,
            n_items,
            shape.scale(),
            shape.causal,
            shape.group(),
            shape.h_kv,
            dtype,
        )
    };
    (out, lse)
}
