//! [`super::chunk_scan_backward`] on tensor cores (`cmma`, 16×16×16 tiles, f32 accumulation)
//! for f16 and bf16 inputs with `P = 64` and `N` a multiple of 32: the same gradients, with the
//! chunk's products as matrix products. Per chunk and head, with `H` the chunk-start state,
//! `G` the gradient reaching the chunk-end state, `K = decay ∘ (dY·Xᵀ)` and `KD = K·diag(Δ)`:
//!
//! ```text
//! dX = diag(Δ) ((CB ∘ decay)ᵀ·dY + diag(e) B·Gᵀ) + D dY      (three products: S, B·Gᵀ, C·Hᵀ)
//! dB = KDᵀ·C + diag(Δ ∘ e) X·G                                 (summed over the group's heads)
//! dC = KD·B + diag(exp(cum)) dY·H                              (summed over the group's heads)
//! ```
//!
//! and the per-token sums of the scalar kernel's header (`x_sᵀ G B_s` is the row sum of
//! `X ∘ (B·Gᵀ)`, `dy_tᵀ H C_t` that of `dY ∘ (C·Hᵀ)`) for `dΔ`, `dA` and `dD`.
//!
//! Grid: one cube of [`WARPS`] planes per `(batch, group, chunk, split)`: it stages the chunk's
//! `B` and `C` once and walks `heads / groups / splits` of the group's heads, so `dB` and `dC`
//! accumulate in shared memory (f32) and leave once per cube as f32 partials
//! `[splits, B, L, G, N]`, summed by [`sum_splits`] (splits only exist to fill the device when
//! there are few chunks; the sum's order is fixed, so results do not depend on scheduling).
//! Plane `w` works on rows `16 (w mod 4) …` of the chunk and half of the output columns
//! (`w / 4`). Per head:
//! 1. stage `x`, `dy` (input dtype), `G`, `H` (f32 rounded to the input dtype; `⟨G, H⟩` from the
//!    f32 values on the way);
//! 2. `C·Bᵀ` (planes 0–3) and `dY·Xᵀ` (planes 4–7) for the causal tiles, f32;
//! 3. element-wise: `CB ∘ decay` and `KD` as the input dtype (zero above the diagonal), and
//!    `CB ∘ K ∘ Δ`, `CB ∘ K` for the row and column sums;
//! 4. `dX` through per-plane f32 scratch tiles, with the row sums for `dΔ`;
//! 5. `dΔ`, `dA` and `dD` per token as in the scalar kernel;
//! 6. the head's `dB`, `dC` added to the shared accumulators.
//!
//! Shapes: as [`super::chunk_scan_backward`], plus the f32 partials above. Shared rows are padded
//! (8 elements of the input dtype, 4 of f32) so fragment bases stay 32-byte aligned.

use burn::tensor::{DType, Shape};
use burn_cubecl::{tensor::CubeTensor, CubeRuntime};
use cubecl::prelude::*;
use cubecl::{cmma, ir::StorageType};

use super::chunk_scan_backward::ChunkScanGradients;
use super::chunk_scan_cmma::{HEAD_DIM, PAD_H};
use super::{empty_like_shape, load_chunk_decay, ScanShape, CHUNK};
use crate::fragments::{load_a, load_b, new_acc};
use crate::launch::{address_type_of, cube_count_for, zeros_like_shape};

/// Planes per cube: two per 16-row strip of the chunk.
pub const WARPS: usize = 8;
const THREADS: usize = WARPS * 32;
const STRIPS: usize = CHUNK / 16;
/// Row stride of the f32 tiles (scores, scratch).
const PAD: usize = CHUNK + 4;
/// Cubes to aim for before splitting a group's heads over several cubes.
const TARGET_CUBES: usize = 1024;

/// A column-major fragment `A` at `off` (`A[i, k] = src[off + k · stride + i]`): the transpose
/// of a row-major tile.
#[cube]
fn load_a_transposed<F: Float>(src: &Slice<F>, off: usize, stride: u32) -> cmma::Matrix<F> {
    cmma::Matrix::<F>::from_slice(
        cmma::MatrixIdent::A,
        16usize,
        16usize,
        16usize,
        cmma::MatrixLayout::ColMajor,
        &src.slice(off, src.len()),
        stride,
    )
}

/// `acc += A · B` over `k_steps` tiles: `A` row-major at `a_off + 16 k` (stride `a_stride`),
/// `B` at `b_off + 16 k · b_step` in `layout` (stride `b_stride`).
#[cube]
#[allow(clippy::too_many_arguments)]
fn mma_rows<F: Float>(
    a_src: &Slice<F>,
    a_off: usize,
    a_stride: u32,
    b_src: &Slice<F>,
    b_off: usize,
    b_step: usize,
    b_stride: u32,
    acc: &cmma::Matrix<f32>,
    #[comptime] k_steps: usize,
    #[comptime] layout: cmma::MatrixLayout,
) {
    #[unroll]
    for ks in 0..k_steps {
        let fa = load_a::<F>(a_src, a_off + ks * 16, a_stride);
        let fb = load_b::<F>(b_src, b_off + ks * 16 * b_step, b_stride, layout);
        cmma::execute::<F, F, f32, f32>(&fa, &fb, acc, acc);
    }
}

/// Stores `acc` into the 16×16 tile at column `col` of a plane's scratch rows (`base`, stride
/// [`PAD`]).
#[cube]
fn store_tile(scratch: &mut SharedMemory<f32>, base: usize, col: usize, acc: &cmma::Matrix<f32>) {
    cmma::store(
        &mut scratch.slice_mut(base + col, base + comptime!(16 * PAD)),
        acc,
        PAD as u32,
        cmma::MatrixLayout::RowMajor,
    );
}

/// Copies `CHUNK` rows of `width` elements (row `r` at `src[first + r · row_step …]`) into `dst`
/// (stride `stride`) as `F`, zeros from row `valid` on; unrolled, so each thread has its loads in
/// flight together. No barrier.
#[cube]
#[allow(clippy::too_many_arguments)]
fn stage_rows_unrolled<F: Float>(
    src: &Tensor<F>,
    dst: &mut SharedMemory<F>,
    first: usize,
    row_step: usize,
    valid: usize,
    #[comptime] width: usize,
    #[comptime] stride: usize,
) {
    let tid = UNIT_POS as usize;
    #[unroll]
    for k in 0..comptime!(CHUNK * width / THREADS) {
        let i = tid + k * THREADS;
        let r = i / width;
        let e = i % width;
        let mut v = F::new(0.0);
        if r < valid {
            v = src[first + r * row_step + e];
        }
        dst[r * stride + e] = v;
    }
}

#[cube(launch_unchecked, address_type = "dynamic")]
#[allow(clippy::too_many_arguments)]
fn chunk_scan_backward_cmma_kernel<F: Float>(
    x: &Tensor<F>,
    delta: &Tensor<F>,
    a: &Tensor<F>,
    b: &Tensor<F>,
    c: &Tensor<F>,
    d: &Tensor<F>,
    dy: &Tensor<F>,
    starts: &Tensor<f32>,
    ends: &Tensor<f32>,
    dx: &mut Tensor<F>,
    d_delta: &mut Tensor<F>,
    db_parts: &mut Tensor<f32>,
    dc_parts: &mut Tensor<f32>,
    da: &mut Tensor<f32>,
    dd: &mut Tensor<f32>,
    batches: usize,
    seq: usize,
    n_chunks: usize,
    n_items: usize,
    #[comptime] heads: usize,
    #[comptime] groups: usize,
    #[comptime] d_state: usize,
    #[comptime] splits: usize,
    #[define(F)] _dtype: StorageType,
) {
    let item = CUBE_POS;
    if item >= n_items {
        terminate!();
    }
    let tid = UNIT_POS as usize;
    let warp = tid / 32;
    let lane = tid % 32;
    let strip = warp % STRIPS;
    let half = warp / STRIPS;
    let chunk = item % n_chunks;
    let rest = item / n_chunks;
    let split = rest % splits;
    let bg = rest / splits;
    let g = bg % groups;
    let batch = bg / groups;
    let t0 = chunk * CHUNK;
    let mut valid = seq - t0;
    if valid > CHUNK {
        valid = CHUNK;
    }
    let per_split = comptime!(heads / groups / splits);
    let ns = comptime!(d_state + 8);
    let k_state = comptime!(d_state / 16);
    let k_head = comptime!(HEAD_DIM / 16);
    let state_size = comptime!(HEAD_DIM * d_state);
    let row0 = strip * 16;

    let mut bs = SharedMemory::<F>::new_aligned(comptime!(CHUNK * (d_state + 8)), 32usize);
    let mut cs = SharedMemory::<F>::new_aligned(comptime!(CHUNK * (d_state + 8)), 32usize);
    let mut xs = SharedMemory::<F>::new_aligned(comptime!(CHUNK * PAD_H), 32usize);
    let mut dys = SharedMemory::<F>::new_aligned(comptime!(CHUNK * PAD_H), 32usize);
    let mut gs = SharedMemory::<F>::new_aligned(comptime!(HEAD_DIM * (d_state + 8)), 32usize);
    let mut hs = SharedMemory::<F>::new_aligned(comptime!(HEAD_DIM * (d_state + 8)), 32usize);
    // (C·Bᵀ) ∘ decay and K ∘ Δ, as matrix operands.
    let mut cbl = SharedMemory::<F>::new_aligned(comptime!(CHUNK * PAD_H), 32usize);
    let mut kd = SharedMemory::<F>::new_aligned(comptime!(CHUNK * PAD_H), 32usize);
    // Scores C·Bᵀ and dY·Xᵀ, then per-plane scratch tiles.
    let mut fa = SharedMemory::<f32>::new_aligned(comptime!(CHUNK * PAD), 32usize);
    let mut fb = SharedMemory::<f32>::new_aligned(comptime!(CHUNK * PAD), 32usize);
    let mut db_acc = SharedMemory::<f32>::new(comptime!(CHUNK * d_state));
    let mut dc_acc = SharedMemory::<f32>::new(comptime!(CHUNK * d_state));
    let mut dt = SharedMemory::<f32>::new(CHUNK);
    let mut cum = SharedMemory::<f32>::new(CHUNK);
    let mut row_m = SharedMemory::<f32>::new(CHUNK);
    let mut cbk = SharedMemory::<f32>::new(CHUNK);
    let mut dcum = SharedMemory::<f32>::new(CHUNK);
    // Per-row partial sums of x·(B·Gᵀ) and dy·(C·Hᵀ): four per row (two planes × two lanes).
    let mut xgb_p = SharedMemory::<f32>::new(comptime!(CHUNK * 4));
    let mut dyhc_p = SharedMemory::<f32>::new(comptime!(CHUNK * 4));
    let mut red = SharedMemory::<f32>::new(THREADS);
    let mut red2 = SharedMemory::<f32>::new(THREADS);

    let bc0 = ((batch * seq + t0) * groups + g) * d_state;
    stage_rows_unrolled::<F>(
        b,
        &mut bs,
        bc0,
        comptime!(groups * d_state),
        valid,
        d_state,
        ns,
    );
    stage_rows_unrolled::<F>(
        c,
        &mut cs,
        bc0,
        comptime!(groups * d_state),
        valid,
        d_state,
        ns,
    );
    #[unroll]
    for k in 0..comptime!(CHUNK * d_state / THREADS) {
        let i = tid + k * THREADS;
        db_acc[i] = 0.0;
        dc_acc[i] = 0.0;
    }

    // Fragment reads share the lane-mapping of the 16×16 scratch tiles: lane → row `lane / 2`,
    // eight columns from `8 (lane mod 2)`.
    let lr = lane / 2;
    let lc = (lane % 2) * 8;
    let my_scratch = half; // 0: `fa`, 1: `fb`
    let scratch_base = row0 * PAD;

    for j in 0..per_split {
        let h = (g * comptime!(heads / groups)) + split * per_split + j;
        let x0 = ((batch * seq + t0) * heads + h) * HEAD_DIM;
        stage_rows_unrolled::<F>(
            x,
            &mut xs,
            x0,
            comptime!(heads * HEAD_DIM),
            valid,
            HEAD_DIM,
            PAD_H,
        );
        stage_rows_unrolled::<F>(
            dy,
            &mut dys,
            x0,
            comptime!(heads * HEAD_DIM),
            valid,
            HEAD_DIM,
            PAD_H,
        );
        // G and H (`P × N`, all rows valid), and this thread's share of ⟨G, H⟩ in f32.
        let st = ((batch * heads + h) * n_chunks + chunk) * state_size;
        let mut gh = f32::new(0.0);
        #[unroll]
        for k in 0..comptime!(HEAD_DIM * d_state / THREADS) {
            let i = tid + k * THREADS;
            let gv = ends[st + i];
            let hv = starts[st + i];
            gh += gv * hv;
            let at = (i / d_state) * ns + i % d_state;
            gs[at] = F::cast_from(gv);
            hs[at] = F::cast_from(hv);
        }
        red2[tid] = gh;
        // Its barriers publish the staged tiles.
        load_chunk_decay::<F>(delta, a, &mut dt, &mut cum, batch, h, t0, seq, heads);
        let last = cum[CHUNK - 1];

        // 2. C·Bᵀ into `fa` (planes 0–3), dY·Xᵀ into `fb` (planes 4–7), causal tiles only.
        {
            let b_all = bs.to_slice();
            let c_all = cs.to_slice();
            let x_all = xs.to_slice();
            let dy_all = dys.to_slice();
            for jt in 0..STRIPS {
                if jt <= strip {
                    let acc = new_acc();
                    if half == 0 {
                        mma_rows::<F>(
                            &c_all,
                            row0 * ns,
                            ns as u32,
                            &b_all,
                            jt * 16 * ns,
                            1usize,
                            ns as u32,
                            &acc,
                            k_state,
                            cmma::MatrixLayout::ColMajor,
                        );
                        store_tile(&mut fa, scratch_base, jt * 16, &acc);
                    } else {
                        mma_rows::<F>(
                            &dy_all,
                            row0 * PAD_H,
                            PAD_H as u32,
                            &x_all,
                            jt * 16 * PAD_H,
                            1usize,
                            PAD_H as u32,
                            &acc,
                            k_head,
                            cmma::MatrixLayout::ColMajor,
                        );
                        store_tile(&mut fb, scratch_base, jt * 16, &acc);
                    }
                }
            }
        }
        sync_cube();

        // 3. Element-wise over the causal tiles: the operand tiles, and `fa ← CB·K·Δ_s`,
        //    `fb ← CB·K` for the sums.
        let mut i = tid;
        while i < comptime!(CHUNK * CHUNK) {
            let t = i / CHUNK;
            let s = i % CHUNK;
            if s < (t / 16 + 1) * 16 {
                let mut l = F::new(0.0);
                let mut kdv = F::new(0.0);
                if s <= t {
                    let decay = f32::exp(cum[t] - cum[s]);
                    let cbv = fa[t * PAD + s];
                    let kv = decay * fb[t * PAD + s];
                    l = F::cast_from(cbv * decay);
                    kdv = F::cast_from(kv * dt[s]);
                    fa[t * PAD + s] = cbv * kv * dt[s];
                    fb[t * PAD + s] = cbv * kv;
                }
                cbl[t * PAD_H + s] = l;
                kd[t * PAD_H + s] = kdv;
            }
            i += THREADS;
        }
        sync_cube();
        // Row sums Σ_{r≤t} CB·K·Δ_r and column sums Σ_{t≥s} CB·K.
        if tid < CHUNK {
            let mut sum = f32::new(0.0);
            for r in 0..tid + 1 {
                sum += fa[tid * PAD + r];
            }
            row_m[tid] = sum;
        } else if tid < 2 * CHUNK {
            let s = tid - CHUNK;
            let mut sum = f32::new(0.0);
            for t in s..CHUNK {
                sum += fb[t * PAD + s];
            }
            cbk[s] = sum;
        }
        sync_cube();

        // 4. dX, two column tiles per plane, through the plane's scratch rows.
        let d_h = f32::cast_from(d[h]);
        let mut xgb_acc = f32::new(0.0);
        let mut dyhc_acc = f32::new(0.0);
        let mut dxy = f32::new(0.0);
        {
            let b_all = bs.to_slice();
            let c_all = cs.to_slice();
            let dy_all = dys.to_slice();
            let g_all = gs.to_slice();
            let h_all = hs.to_slice();
            let cbl_all = cbl.to_slice();
            #[unroll]
            for q in 0..2usize {
                let pt = half * 2 + q;
                // Σ_{t ≥ s} (CB ∘ decay)[t, s] dy_t over the key strips at or below this one.
                let s1 = new_acc();
                for jt in 0..STRIPS {
                    if jt >= strip {
                        let fa_t =
                            load_a_transposed::<F>(&cbl_all, jt * 16 * PAD_H + row0, PAD_H as u32);
                        let fb_t = load_b::<F>(
                            &dy_all,
                            jt * 16 * PAD_H + pt * 16,
                            PAD_H as u32,
                            cmma::MatrixLayout::RowMajor,
                        );
                        cmma::execute::<F, F, f32, f32>(&fa_t, &fb_t, &s1, &s1);
                    }
                }
                let bg_t = new_acc();
                mma_rows::<F>(
                    &b_all,
                    row0 * ns,
                    ns as u32,
                    &g_all,
                    pt * 16 * ns,
                    1usize,
                    ns as u32,
                    &bg_t,
                    k_state,
                    cmma::MatrixLayout::ColMajor,
                );
                let ch_t = new_acc();
                mma_rows::<F>(
                    &c_all,
                    row0 * ns,
                    ns as u32,
                    &h_all,
                    pt * 16 * ns,
                    1usize,
                    ns as u32,
                    &ch_t,
                    k_state,
                    cmma::MatrixLayout::ColMajor,
                );
                if my_scratch == 0 {
                    store_tile(&mut fa, scratch_base, 0usize, &s1);
                    store_tile(&mut fa, scratch_base, 16usize, &bg_t);
                    store_tile(&mut fa, scratch_base, 32usize, &ch_t);
                } else {
                    store_tile(&mut fb, scratch_base, 0usize, &s1);
                    store_tile(&mut fb, scratch_base, 16usize, &bg_t);
                    store_tile(&mut fb, scratch_base, 32usize, &ch_t);
                }
                sync_plane();
                let s = row0 + lr;
                let dt_s = dt[s];
                let e_s = f32::exp(last - cum[s]);
                #[unroll]
                for cc in 0..8usize {
                    let p = pt * 16 + lc + cc;
                    let at = scratch_base + lr * PAD + lc + cc;
                    let mut v1 = fa[at];
                    let mut v2 = fa[at + 16];
                    let mut v3 = fa[at + 32];
                    if my_scratch == 1 {
                        v1 = fb[at];
                        v2 = fb[at + 16];
                        v3 = fb[at + 32];
                    }
                    let xv = f32::cast_from(xs[s * PAD_H + p]);
                    let dyv = f32::cast_from(dys[s * PAD_H + p]);
                    xgb_acc += xv * v2;
                    dyhc_acc += dyv * v3;
                    dxy += dyv * xv;
                    if s < valid {
                        dx[x0 + s * comptime!(heads * HEAD_DIM) + p] =
                            F::cast_from(dt_s * (v1 + e_s * v2) + d_h * dyv);
                    }
                }
                sync_plane();
            }
        }
        let slot = (row0 + lr) * 4 + half * 2 + lane % 2;
        xgb_p[slot] = xgb_acc;
        dyhc_p[slot] = dyhc_acc;
        red[tid] = dxy;
        sync_cube();

        // 5. Per token: dcum, then R_s = Σ_{t≥s} dcum_t (with the end-state terms), dΔ, dA, dD.
        if tid < CHUNK {
            let s = tid;
            let xgb = xgb_p[s * 4] + xgb_p[s * 4 + 1] + xgb_p[s * 4 + 2] + xgb_p[s * 4 + 3];
            let dyhc = dyhc_p[s * 4] + dyhc_p[s * 4 + 1] + dyhc_p[s * 4 + 2] + dyhc_p[s * 4 + 3];
            let e_s = f32::exp(last - cum[s]);
            let w = dt[s] * e_s * xgb;
            dcum[s] = row_m[s] - dt[s] * cbk[s] + f32::exp(cum[s]) * dyhc - w;
            // `xgb_p[s·4]` keeps the whole sum for dΔ below.
            xgb_p[s * 4] = xgb;
            xgb_p[s * 4 + 1] = w;
        }
        sync_cube();
        if tid == 0 {
            let mut w_sum = f32::new(0.0);
            let mut gh_sum = f32::new(0.0);
            let mut dd_sum = f32::new(0.0);
            for s in 0..CHUNK {
                w_sum += xgb_p[s * 4 + 1];
            }
            for k in 0..THREADS {
                gh_sum += red2[k];
                dd_sum += red[k];
            }
            let mut r = w_sum + f32::exp(last) * gh_sum;
            for k in 0..CHUNK {
                let s = CHUNK - 1 - k;
                r += dcum[s];
                dcum[s] = r;
            }
            let part = (batch * heads + h) * n_chunks + chunk;
            dd[part] = dd_sum;
        }
        sync_cube();
        let a_h = f32::cast_from(a[h]);
        let mut da_term = f32::new(0.0);
        if tid < CHUNK {
            let s = tid;
            da_term = dt[s] * dcum[s];
            if s < valid {
                let v = cbk[s] + f32::exp(last - cum[s]) * xgb_p[s * 4] + a_h * dcum[s];
                d_delta[(batch * seq + t0 + s) * heads + h] = F::cast_from(v);
            }
        }
        red[tid] = da_term;
        sync_cube();
        if tid == 0 {
            let mut sum = f32::new(0.0);
            for k in 0..CHUNK {
                sum += red[k];
            }
            da[(batch * heads + h) * n_chunks + chunk] = sum;
        }

        // 6. This head's dB and dC rows of the plane's strip, half of the column tiles each.
        {
            let b_all = bs.to_slice();
            let c_all = cs.to_slice();
            let x_all = xs.to_slice();
            let dy_all = dys.to_slice();
            let g_all = gs.to_slice();
            let h_all = hs.to_slice();
            let kd_all = kd.to_slice();
            let tiles = comptime!(d_state / 32);
            for q in 0..tiles {
                let nt = half * tiles + q;
                // dB: KDᵀ·C over key strips ≥ this one, and X·G.
                let db1 = new_acc();
                for jt in 0..STRIPS {
                    if jt >= strip {
                        let fa_t =
                            load_a_transposed::<F>(&kd_all, jt * 16 * PAD_H + row0, PAD_H as u32);
                        let fb_t = load_b::<F>(
                            &c_all,
                            jt * 16 * ns + nt * 16,
                            ns as u32,
                            cmma::MatrixLayout::RowMajor,
                        );
                        cmma::execute::<F, F, f32, f32>(&fa_t, &fb_t, &db1, &db1);
                    }
                }
                let db2 = new_acc();
                mma_rows::<F>(
                    &x_all,
                    row0 * PAD_H,
                    PAD_H as u32,
                    &g_all,
                    nt * 16,
                    ns,
                    ns as u32,
                    &db2,
                    k_head,
                    cmma::MatrixLayout::RowMajor,
                );
                // dC: KD·B over key strips ≤ this one, and dY·H.
                let dc1 = new_acc();
                for jt in 0..STRIPS {
                    if jt <= strip {
                        let fa_t = load_a::<F>(&kd_all, row0 * PAD_H + jt * 16, PAD_H as u32);
                        let fb_t = load_b::<F>(
                            &b_all,
                            jt * 16 * ns + nt * 16,
                            ns as u32,
                            cmma::MatrixLayout::RowMajor,
                        );
                        cmma::execute::<F, F, f32, f32>(&fa_t, &fb_t, &dc1, &dc1);
                    }
                }
                let dc2 = new_acc();
                mma_rows::<F>(
                    &dy_all,
                    row0 * PAD_H,
                    PAD_H as u32,
                    &h_all,
                    nt * 16,
                    ns,
                    ns as u32,
                    &dc2,
                    k_head,
                    cmma::MatrixLayout::RowMajor,
                );
                if my_scratch == 0 {
                    store_tile(&mut fa, scratch_base, 0usize, &db1);
                    store_tile(&mut fa, scratch_base, 16usize, &db2);
                    store_tile(&mut fa, scratch_base, 32usize, &dc1);
                    store_tile(&mut fa, scratch_base, 48usize, &dc2);
                } else {
                    store_tile(&mut fb, scratch_base, 0usize, &db1);
                    store_tile(&mut fb, scratch_base, 16usize, &db2);
                    store_tile(&mut fb, scratch_base, 32usize, &dc1);
                    store_tile(&mut fb, scratch_base, 48usize, &dc2);
                }
                sync_plane();
                let s = row0 + lr;
                let scale_b = dt[s] * f32::exp(last - cum[s]);
                let scale_c = f32::exp(cum[s]);
                #[unroll]
                for cc in 0..8usize {
                    let at = scratch_base + lr * PAD + lc + cc;
                    let mut v1 = fa[at];
                    let mut v2 = fa[at + 16];
                    let mut v3 = fa[at + 32];
                    let mut v4 = fa[at + 48];
                    if my_scratch == 1 {
                        v1 = fb[at];
                        v2 = fb[at + 16];
                        v3 = fb[at + 32];
                        v4 = fb[at + 48];
                    }
                    let o = s * d_state + nt * 16 + lc + cc;
                    db_acc[o] += v1 + scale_b * v2;
                    dc_acc[o] += v3 + scale_c * v4;
                }
                sync_plane();
            }
        }
        // The next head overwrites every staged tile.
        sync_cube();
    }

    // The cube's dB and dC partials, rows inside the sequence only.
    let part0 = (((split * batches + batch) * seq + t0) * groups + g) * d_state;
    #[unroll]
    for k in 0..comptime!(CHUNK * d_state / THREADS) {
        let i = tid + k * THREADS;
        let r = i / d_state;
        if r < valid {
            let at = part0 + r * comptime!(groups * d_state) + i % d_state;
            db_parts[at] = db_acc[i];
            dc_parts[at] = dc_acc[i];
        }
    }
}

/// `out[i] = Σ_k parts[k · len + i]` over `splits` partials, in `k` order, as `out`'s dtype.
#[cube(launch_unchecked, address_type = "dynamic")]
fn sum_splits_kernel<F: Float>(
    parts: &Tensor<f32>,
    out: &mut Tensor<F>,
    len: usize,
    #[comptime] splits: usize,
    #[define(F)] _dtype: StorageType,
) {
    let i = ABSOLUTE_POS;
    if i >= len {
        terminate!();
    }
    let mut s = f32::new(0.0);
    #[unroll]
    for k in 0..splits {
        s += parts[k * len + i];
    }
    out[i] = F::cast_from(s);
}

/// Sums `[splits, …]` f32 partials into a tensor of `shape` in `dtype`.
pub fn sum_splits<R: CubeRuntime>(
    parts: CubeTensor<R>,
    shape: Shape,
    splits: usize,
    dtype: DType,
) -> CubeTensor<R> {
    let out = empty_like_shape(&parts, shape.clone(), dtype);
    let len = shape.num_elements();
    if len == 0 {
        return out;
    }
    let client = parts.client.clone();
    let cubes = len.div_ceil(256);
    let address = address_type_of(&[&parts]);
    unsafe {
        sum_splits_kernel::launch_unchecked::<R>(
            &client,
            cube_count_for(&client, cubes),
            CubeDim::new_1d(256),
            address,
            parts.into_tensor_arg(),
            out.clone().into_tensor_arg(),
            len,
            splits,
            dtype.into(),
        )
    };
    out
}

/// Shared memory of the kernel at `d_state` (bytes, f16/bf16 inputs).
pub fn shared_bytes(d_state: usize) -> usize {
    let ns = d_state + 8;
    2 * (4 * CHUNK * ns + 4 * CHUNK * PAD_H)
        + 4 * (2 * CHUNK * PAD + 2 * CHUNK * d_state + 5 * CHUNK + 8 * CHUNK + 2 * THREADS)
}

/// Whether the kernel applies: what [`super::chunk_scan_cmma::supported`] asks, `N` a multiple
/// of 32 (each plane takes half of the state's column tiles) and room for the staged tiles.
pub fn supported<R: CubeRuntime>(x: &CubeTensor<R>, shape: &ScanShape) -> bool {
    super::chunk_scan_cmma::supported(x, shape)
        && shape.d_state.is_multiple_of(32)
        && shape.heads.is_multiple_of(shape.groups)
        && shared_bytes(shape.d_state) <= x.client.properties().hardware.max_shared_memory_size
}

/// Head splits per group: the fewest (dividing the group's heads) that give the launch
/// [`TARGET_CUBES`] cubes.
fn splits_for(shape: &ScanShape) -> usize {
    let per_group = shape.heads / shape.groups;
    let cubes = shape.batch * shape.groups * shape.n_chunks();
    (1..=per_group)
        .find(|s| per_group.is_multiple_of(*s) && cubes * s >= TARGET_CUBES)
        .unwrap_or(per_group)
}

/// Launches the tensor-core backward (see [`super::chunk_scan_backward::chunk_scan_backward`]
/// for the arguments). Inputs must be contiguous and [`supported`].
#[allow(clippy::too_many_arguments)]
pub fn chunk_scan_backward_cmma<R: CubeRuntime>(
    x: CubeTensor<R>,
    delta: CubeTensor<R>,
    a: CubeTensor<R>,
    b: CubeTensor<R>,
    c: CubeTensor<R>,
    d: CubeTensor<R>,
    dy: CubeTensor<R>,
    starts: CubeTensor<R>,
    ends: CubeTensor<R>,
    shape: ScanShape,
) -> ChunkScanGradients<R> {
    let client = x.client.clone();
    let dtype = x.dtype;
    let splits = splits_for(&shape);
    let dx = empty_like_shape(&x, x.meta.shape().clone(), dtype);
    let d_delta = empty_like_shape(&x, delta.meta.shape().clone(), dtype);
    let bc_shape = b.meta.shape().clone();
    let parts_shape = Shape::new([splits, shape.batch, shape.seq, shape.groups, shape.d_state]);
    let db_parts = empty_like_shape(&x, parts_shape.clone(), DType::F32);
    let dc_parts = empty_like_shape(&x, parts_shape, DType::F32);
    let da = zeros_like_shape(&x, shape.per_chunk_shape(), DType::F32);
    let dd = zeros_like_shape(&x, shape.per_chunk_shape(), DType::F32);
    let n_items = shape.batch * shape.groups * shape.n_chunks() * splits;
    if n_items > 0 {
        let address = address_type_of(&[&x, &b, &starts, &db_parts]);
        unsafe {
            chunk_scan_backward_cmma_kernel::launch_unchecked::<R>(
                &client,
                cube_count_for(&client, n_items),
                CubeDim::new_1d(THREADS as u32),
                address,
                x.into_tensor_arg(),
                delta.into_tensor_arg(),
                a.into_tensor_arg(),
                b.into_tensor_arg(),
                c.into_tensor_arg(),
                d.into_tensor_arg(),
                dy.into_tensor_arg(),
                starts.into_tensor_arg(),
                ends.into_tensor_arg(),
                dx.clone().into_tensor_arg(),
                d_delta.clone().into_tensor_arg(),
                db_parts.clone().into_tensor_arg(),
                dc_parts.clone().into_tensor_arg(),
                da.clone().into_tensor_arg(),
                dd.clone().into_tensor_arg(),
                shape.batch,
                shape.seq,
                shape.n_chunks(),
                n_items,
                shape.heads,
                shape.groups,
                shape.d_state,
                splits,
                dtype.into(),
            )
        };
    }
    ChunkScanGradients {
        x: dx,
        delta: d_delta,
        a_partials: da,
        b: sum_splits(db_parts, bc_shape.clone(), splits, dtype),
        c: sum_splits(dc_parts, bc_shape, splits, dtype),
        d_partials: dd,
    }
}
