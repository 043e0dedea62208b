//! [`super::chunk_scan`] on tensor cores (`cmma`, 16×16×16 tiles, f32 accumulation) for f16 and
//! bf16 inputs with `P = 64` and `N` a multiple of 16: the same function, with the chunk's
//! three products as matrix products,
//!
//! ```text
//! Y = ((C·Bᵀ) ∘ M) · X  +  diag(exp(cum)) · C·Hᵀ  +  D X,   M[t, s] = exp(cum_t − cum_s) Δ_s [s ≤ t]
//! ```
//!
//! Grid: one cube of [`WARPS`] planes per `(batch, head, chunk)`, all heads and chunks in
//! parallel. The cube stages the chunk's `C`, `B`, `x` and its start state `H` (rounded to the
//! input dtype) in shared memory, zero rows past the sequence (so ragged chunks need no special
//! case); then plane `w` owns output rows `16w … 16w + 15`:
//! 1. `C·Bᵀ` for the key tiles `s ≤ t` only (causal), into its f32 scratch;
//! 2. one lane per row: `M ∘ (C·Bᵀ)` as the input dtype into its `P` tile;
//! 3. `P · X` and `C · Hᵀ` into two sets of four accumulators (one per 16 output columns);
//! 4. through the scratch: `y = (P·X) + exp(cum_t) (C·Hᵀ) + D x`, stored as the input dtype.
//!
//! Shapes: as [`super::chunk_scan`]. Shared rows are padded by 8 elements (16 bytes), which keeps
//! every fragment base 32-byte aligned and spreads a fragment's rows over the banks.

use burn_cubecl::{tensor::CubeTensor, CubeRuntime};
use cubecl::prelude::*;
use cubecl::{cmma, ir::StorageType};

use super::{empty_like_shape, load_chunk_decay, ScanShape, CHUNK};
use crate::fragments::{load_a, load_b, new_acc};
use crate::launch::{address_type_of, cube_count_for};

/// Planes per cube: one per 16 rows of the 64-token chunk.
pub const WARPS: usize = CHUNK / 16;
pub(crate) const HEAD_DIM: usize = 64;
/// Row stride of the f32 scratch tiles.
const PAD: usize = HEAD_DIM + 4;
/// Row stride of the half-precision `P` tiles and of `x`.
pub(crate) const PAD_H: usize = HEAD_DIM + 8;

/// `acc += A[rows, 0..K] · Bᵀ` where the `B` operand's column `j` is row `col0 + j` of `b_src`
/// (`K` = `k_steps · 16`, both row-major with strides `a_stride`, `b_stride`).
#[cube]
#[allow(clippy::too_many_arguments)]
fn rows_dot_rows<F: Float>(
    a_src: &Slice<F>,
    a_off: usize,
    a_stride: u32,
    b_src: &Slice<F>,
    b_off: usize,
    b_stride: u32,
    acc: &cmma::Matrix<f32>,
    #[comptime] k_steps: usize,
) {
    #[unroll]
    for ks in 0..k_steps {
        let fa = load_a::<F>(a_src, a_off + ks * 16, a_stride);
        let fb = load_b::<F>(
            b_src,
            b_off + ks * 16,
            b_stride,
            cmma::MatrixLayout::ColMajor,
        );
        cmma::execute::<F, F, f32, f32>(&fa, &fb, acc, acc);
    }
}

/// Copies `rows` rows (row `r` at `src[first + r · row_step …]`, `width` wide) into `dst` with
/// row stride `stride`, as `F`; rows from `valid_rows` on are zeros. No barrier.
#[cube]
#[allow(clippy::too_many_arguments)]
pub(crate) fn stage<F: Float, S: Float>(
    src: &Tensor<S>,
    dst: &mut SharedMemory<F>,
    first: usize,
    row_step: usize,
    valid_rows: usize,
    #[comptime] rows: usize,
    #[comptime] width: usize,
    #[comptime] stride: usize,
    #[comptime] threads: usize,
) {
    let mut i = UNIT_POS as usize;
    while i < comptime!(rows * width) {
        let r = i / width;
        let e = i % width;
        let mut v = F::new(0.0);
        if r < valid_rows {
            v = F::cast_from(src[first + r * row_step + e]);
        }
        dst[r * stride + e] = v;
        i += threads;
    }
}

#[cube(launch_unchecked, address_type = "dynamic")]
#[allow(clippy::too_many_arguments)]
fn chunk_scan_cmma_kernel<F: Float>(
    x: &Tensor<F>,
    delta: &Tensor<F>,
    a: &Tensor<F>,
    b: &Tensor<F>,
    c: &Tensor<F>,
    d: &Tensor<F>,
    starts: &Tensor<f32>,
    y: &mut Tensor<F>,
    seq: usize,
    n_chunks: usize,
    n_items: usize,
    #[comptime] heads: usize,
    #[comptime] groups: usize,
    #[comptime] d_state: usize,
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
    let chunk = item % n_chunks;
    let bh = item / n_chunks;
    let h = bh % heads;
    let batch = bh / heads;
    let g = h / comptime!(heads / groups);
    let t0 = chunk * CHUNK;
    let mut valid = seq - t0;
    if valid > CHUNK {
        valid = CHUNK;
    }
    let ns = comptime!(d_state + 8);
    let k_state = comptime!(d_state / 16);

    // The chunk's operands, staged once for the cube's four planes.
    let mut cs = SharedMemory::<F>::new_aligned(comptime!(CHUNK * (d_state + 8)), 32usize);
    let mut bs = SharedMemory::<F>::new_aligned(comptime!(CHUNK * (d_state + 8)), 32usize);
    let mut xs = SharedMemory::<F>::new_aligned(comptime!(CHUNK * PAD_H), 32usize);
    let mut hs = SharedMemory::<F>::new_aligned(comptime!(HEAD_DIM * (d_state + 8)), 32usize);
    let mut dt = SharedMemory::<f32>::new(CHUNK);
    let mut cum = SharedMemory::<f32>::new(CHUNK);
    let rows_bc = comptime!(groups * d_state);
    let bc0 = ((batch * seq + t0) * groups + g) * d_state;
    stage::<F, F>(c, &mut cs, bc0, rows_bc, valid, CHUNK, d_state, ns, threads);
    stage::<F, F>(b, &mut bs, bc0, rows_bc, valid, CHUNK, d_state, ns, threads);
    let x0 = ((batch * seq + t0) * heads + h) * HEAD_DIM;
    stage::<F, F>(
        x,
        &mut xs,
        x0,
        comptime!(heads * HEAD_DIM),
        valid,
        CHUNK,
        HEAD_DIM,
        PAD_H,
        threads,
    );
    // H is `P × N` f32; its rows are the state's rows `p` (all valid).
    let h0 = ((batch * heads + h) * n_chunks + chunk) * comptime!(HEAD_DIM * d_state);
    stage::<F, f32>(
        starts, &mut hs, h0, d_state, HEAD_DIM, HEAD_DIM, d_state, ns, threads,
    );
    // Its barriers publish the staged tiles too.
    load_chunk_decay::<F>(delta, a, &mut dt, &mut cum, batch, h, t0, seq, heads);

    let mut scratch = SharedMemory::<f32>::new_aligned(comptime!(WARPS * 2 * 16 * PAD), 32usize);
    let mut probs = SharedMemory::<F>::new_aligned(comptime!(WARPS * 16 * PAD_H), 32usize);
    let s_tile = warp * comptime!(2 * 16 * PAD);
    let o_tile = s_tile + comptime!(16 * PAD);
    let p_tile = warp * comptime!(16 * PAD_H);
    let row0 = warp * 16;

    let c_all = cs.to_slice();
    let b_all = bs.to_slice();
    let x_all = xs.to_slice();
    let h_all = hs.to_slice();

    // 1. C·Bᵀ for the key tiles at or left of the diagonal.
    for j in 0..WARPS {
        if j <= warp {
            let s = new_acc();
            rows_dot_rows::<F>(
                &c_all,
                row0 * ns,
                ns as u32,
                &b_all,
                j * 16 * ns,
                ns as u32,
                &s,
                k_state,
            );
            cmma::store(
                &mut scratch.slice_mut(s_tile + j * 16, s_tile + comptime!(16 * PAD)),
                &s,
                PAD as u32,
                cmma::MatrixLayout::RowMajor,
            );
        }
    }
    sync_plane();
    // 2. The mixing weights, one lane per row (lanes 16-31 idle: the row count is 16).
    let kcols = (warp + 1) * 16;
    if lane < 16 {
        let t = row0 + lane;
        let ct = cum[t];
        for s in 0..CHUNK {
            if s < kcols {
                let mut m = f32::new(0.0);
                if s <= t {
                    m = scratch[s_tile + lane * PAD + s] * f32::exp(ct - cum[s]) * dt[s];
                }
                probs[p_tile + lane * PAD_H + s] = F::cast_from(m);
            }
        }
    }
    sync_plane();
    // 3. P·X (keys up to the diagonal) and C·Hᵀ, per 16 output columns.
    let p_all = probs.to_slice();
    #[unroll]
    for col in 0..comptime!(HEAD_DIM / 16) {
        let acc = new_acc();
        for j in 0..WARPS {
            if j <= warp {
                let fa = load_a::<F>(&p_all, p_tile + j * 16, PAD_H as u32);
                let fb = load_b::<F>(
                    &x_all,
                    j * 16 * PAD_H + col * 16,
                    PAD_H as u32,
                    cmma::MatrixLayout::RowMajor,
                );
                cmma::execute::<F, F, f32, f32>(&fa, &fb, &acc, &acc);
            }
        }
        cmma::store(
            &mut scratch.slice_mut(s_tile + col * 16, s_tile + comptime!(16 * PAD)),
            &acc,
            PAD as u32,
            cmma::MatrixLayout::RowMajor,
        );
        let carried = new_acc();
        rows_dot_rows::<F>(
            &c_all,
            row0 * ns,
            ns as u32,
            &h_all,
            col * 16 * ns,
            ns as u32,
            &carried,
            k_state,
        );
        cmma::store(
            &mut scratch.slice_mut(o_tile + col * 16, o_tile + comptime!(16 * PAD)),
            &carried,
            PAD as u32,
            cmma::MatrixLayout::RowMajor,
        );
    }
    sync_plane();
    // 4. y = P·X + exp(cum_t) C·Hᵀ + D x, rows inside the sequence only.
    let d_h = f32::cast_from(d[h]);
    let mut i = lane;
    while i < comptime!(16 * HEAD_DIM) {
        let r = i / HEAD_DIM;
        let p = i % HEAD_DIM;
        let t = row0 + r;
        if t < valid {
            let v = scratch[s_tile + r * PAD + p]
                + f32::exp(cum[t]) * scratch[o_tile + r * PAD + p]
                + d_h * f32::cast_from(xs[t * PAD_H + p]);
            y[x0 + t * comptime!(heads * HEAD_DIM) + p] = F::cast_from(v);
        }
        i += 32;
    }
}

/// Shared memory of the kernel at `d_state` (bytes, f16/bf16 inputs).
fn shared_bytes(d_state: usize) -> usize {
    let ns = d_state + 8;
    2 * (2 * CHUNK * ns + CHUNK * PAD_H + HEAD_DIM * ns + WARPS * 16 * PAD_H)
        + 4 * (2 * CHUNK + WARPS * 2 * 16 * PAD)
}

/// Whether the tensor-core kernels (this one and [`super::chunk_state_cmma`], which needs less
/// shared memory) apply: f16/bf16 inputs, `P = 64`, `N` a multiple of 16, a
/// device with 16×16×16 `cmma` for the dtype, 32-lane planes and room for the staged chunk.
pub fn supported<R: CubeRuntime>(x: &CubeTensor<R>, shape: &ScanShape) -> bool {
    use cubecl::ir::features::MmaConfig;
    let half = matches!(
        x.dtype,
        burn::tensor::DType::BF16 | burn::tensor::DType::F16
    );
    if !half
        || shape.head_dim != HEAD_DIM
        || !shape.d_state.is_multiple_of(16)
        || shape.d_state == 0
    {
        return false;
    }
    let dtype: StorageType = x.dtype.into();
    let mma = MmaConfig {
        a_type: dtype,
        b_type: dtype,
        cd_type: StorageType::Scalar(cubecl::ir::ElemType::Float(cubecl::ir::FloatKind::F32)),
        m: 16,
        n: 16,
        k: 16,
    };
    let props = x.client.properties();
    props.features.matmul.cmma.contains(&mma)
        && props.hardware.plane_size_max == 32
        && props.hardware.plane_size_min == 32
        && shared_bytes(shape.d_state) <= props.hardware.max_shared_memory_size
}

/// Launches the tensor-core `chunk_scan`; returns `y` in `x`'s dtype. Inputs must be contiguous
/// and [`supported`].
#[allow(clippy::too_many_arguments)]
pub fn chunk_scan_cmma<R: CubeRuntime>(
    x: CubeTensor<R>,
    delta: CubeTensor<R>,
    a: CubeTensor<R>,
    b: CubeTensor<R>,
    c: CubeTensor<R>,
    d: CubeTensor<R>,
    starts: CubeTensor<R>,
    shape: ScanShape,
) -> CubeTensor<R> {
    let client = x.client.clone();
    let y = empty_like_shape(&x, x.meta.shape().clone(), x.dtype);
    let n_items = shape.batch * shape.heads * shape.n_chunks();
    if n_items == 0 {
        return y;
    }
    let dtype = x.dtype.into();
    let address = address_type_of(&[&x, &b, &starts]);
    unsafe {
        chunk_scan_cmma_kernel::launch_unchecked::<R>(
            &client,
            cube_count_for(&client, n_items),
            CubeDim::new_1d((WARPS * 32) as u32),
            address,
            x.into_tensor_arg(),
            delta.into_tensor_arg(),
            a.into_tensor_arg(),
            b.into_tensor_arg(),
            c.into_tensor_arg(),
            d.into_tensor_arg(),
            starts.into_tensor_arg(),
            y.clone().into_tensor_arg(),
            shape.seq,
            shape.n_chunks(),
            n_items,
            shape.heads,
            shape.groups,
            shape.d_state,
            dtype,
        )
    };
    y
}
