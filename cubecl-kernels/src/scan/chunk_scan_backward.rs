//! Backward of the chunked scan, everything but the state passing: `dx`, `dΔ`, `dB`, `dC`, and
//! per-chunk partial sums of `dA` and `dD`.
//!
//! Per chunk, with `H` the state at its start and `G` the gradient reaching the state at its
//! end, `CB[t,s] = C_t·B_s`, `K[t,s] = exp(cum_t − cum_s) (dy_t·x_s)` and `e_s = exp(cum_last −
//! cum_s)` (all for `s ≤ t` inside the chunk):
//!
//! ```text
//! dx_s  = Δ_s Σ_{t≥s} CB[t,s] exp(cum_t − cum_s) dy_t + Δ_s e_s G B_s + D dy_s
//! dB_s  = Δ_s Σ_{t≥s} K[t,s] C_t + Δ_s e_s Gᵀ x_s
//! dC_t  = Σ_{s≤t} K[t,s] Δ_s B_s + exp(cum_t) Hᵀ dy_t
//! dΔ_s  = Σ_{t≥s} CB[t,s] K[t,s] + e_s (x_sᵀ G B_s) + A R_s,   dA = Σ_s Δ_s R_s
//! ```
//!
//! where `R_s = Σ_{t≥s} dcum_t` and `dcum` is the gradient of the in-chunk log decays:
//! `dcum_t = Σ_{s≤t} M[t,s] − Σ_{t'≥t} M[t',t] + exp(cum_t) dy_tᵀ H C_t − W_t`, with
//! `M[t,s] = CB[t,s] K[t,s] Δ_s`, `W_s = Δ_s e_s (x_sᵀ G B_s)`, plus `Σ_s W_s +
//! exp(cum_last) ⟨G, H⟩` on the chunk's last position (through `cum_last`).
//!
//! Shapes: `x`, `dy`, `dx`: `[B, L, H, P]`; `delta`, `d_delta`: `[B, L, H]`; `a`, `d`: `[H]`;
//! `b`, `c`, `db`, `dc`: `[B, L, G, N]`; `starts`, `ends` f32 `[B, H, n_chunks, P, N]` (`H`
//! and `G` of each chunk); `da`, `dd` f32 `[B, H, n_chunks]` (partial sums, reduced by the
//! caller).
//!
//! Grid: one cube per `(batch, group, chunk)`, walking the group's heads so `dB` and `dC`
//! (shared by the group) accumulate in registers and are written once. Shared memory holds
//! `CB`, `K` and `CB ∘ decay` as packed lower triangles (8.3 KiB each) and per-token vectors.

use burn_cubecl::{tensor::CubeTensor, CubeRuntime};
use cubecl::prelude::*;

use super::{empty_like_shape, load_chunk_decay, stage_rows, ScanShape, CHUNK, THREADS};
use crate::launch::{address_type_of, cube_count_for};

use super::chunk_scan::{chunk_cb, TRI};

/// Gradients from [`chunk_scan_backward`].
pub struct ChunkScanGradients<R: CubeRuntime> {
    /// `[B, L, H, P]`.
    pub x: CubeTensor<R>,
    /// `[B, L, H]`.
    pub delta: CubeTensor<R>,
    /// f32 `[B, H, n_chunks]`: per-chunk terms of `dA`, summed by the caller.
    pub a_partials: CubeTensor<R>,
    /// `[B, L, G, N]`.
    pub b: CubeTensor<R>,
    /// `[B, L, G, N]`.
    pub c: CubeTensor<R>,
    /// f32 `[B, H, n_chunks]`: per-chunk terms of `dD`, summed by the caller.
    pub d_partials: CubeTensor<R>,
}

/// Adds row sums of `red` to `rows`: thread `r < n_rows` sums `red[r·width .. (r+1)·width]`
/// into `rows[first_row + r]` (rows past the chunk are skipped). One thread per row, so the
/// result does not depend on scheduling. Barriers before and after.
#[cube]
fn add_rows(
    red: &SharedMemory<f32>,
    rows: &mut SharedMemory<f32>,
    first_row: usize,
    #[comptime] n_rows: usize,
    #[comptime] width: usize,
) {
    let tid = UNIT_POS as usize;
    sync_cube();
    if tid < n_rows && first_row + tid < CHUNK {
        let mut s = f32::new(0.0);
        for i in 0..width {
            s += red[tid * width + i];
        }
        rows[first_row + tid] += s;
    }
    sync_cube();
}

/// Sum of `red[0..THREADS]` by thread 0 into `out[slot]`; barriers before and after.
#[cube]
fn sum_cube(red: &SharedMemory<f32>, out: &mut SharedMemory<f32>, slot: usize) {
    sync_cube();
    if UNIT_POS == 0 {
        let mut s = f32::new(0.0);
        for i in 0..comptime!(THREADS as usize) {
            s += red[i];
        }
        out[slot] = s;
    }
    sync_cube();
}

#[cube(launch_unchecked, address_type = "dynamic")]
#[allow(clippy::too_many_arguments)]
fn chunk_scan_backward_kernel<F: Float>(
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
    db: &mut Tensor<F>,
    dc: &mut Tensor<F>,
    da: &mut Tensor<f32>,
    dd: &mut Tensor<f32>,
    seq: usize,
    n_chunks: usize,
    n_items: usize,
    #[comptime] heads: usize,
    #[comptime] groups: usize,
    #[comptime] head_dim: usize,
    #[comptime] d_state: usize,
    #[comptime] stage: bool,
    #[define(F)] _dtype: StorageType,
) {
    let item = CUBE_POS;
    if item >= n_items {
        terminate!();
    }
    let threads = comptime!(THREADS as usize);
    let tid = UNIT_POS as usize;
    let chunk = item % n_chunks;
    let bg = item / n_chunks;
    let g = bg % groups;
    let batch = bg / groups;
    let t0 = chunk * CHUNK;
    let per_group = comptime!(heads / groups);
    let state_size = comptime!(head_dim * d_state);

    let mut cb = SharedMemory::<f32>::new(TRI);
    let mut km = SharedMemory::<f32>::new(TRI);
    // The head's `CB[t,s] exp(cum_t − cum_s)`, so the dx loop needs no `exp`.
    let mut cbl = SharedMemory::<f32>::new(TRI);
    let mut dt = SharedMemory::<f32>::new(CHUNK);
    let mut cum = SharedMemory::<f32>::new(CHUNK);
    // Per token: x_sᵀ G B_s, dy_tᵀ H C_t, Σ_{t≥s} CB·K, dcum.
    let mut xgb = SharedMemory::<f32>::new(CHUNK);
    let mut dyhc = SharedMemory::<f32>::new(CHUNK);
    let mut cbk = SharedMemory::<f32>::new(CHUNK);
    let mut dcum = SharedMemory::<f32>::new(CHUNK);
    let mut red = SharedMemory::<f32>::new(THREADS as usize);
    let mut red2 = SharedMemory::<f32>::new(THREADS as usize);
    // [⟨G, H⟩, Σ dy·x] of the current head.
    let mut sums = SharedMemory::<f32>::new(3usize);

    // Where shared memory allows, the chunk's B and C rows once for all heads.
    let staged = comptime!(if stage { CHUNK * d_state } else { 1 });
    let mut b_s = SharedMemory::<f32>::new(staged);
    let mut c_s = SharedMemory::<f32>::new(staged);
    if stage {
        stage_rows::<F>(b, &mut b_s, batch, g, t0, seq, groups, d_state);
        stage_rows::<F>(c, &mut c_s, batch, g, t0, seq, groups, d_state);
    }

    // C·Bᵀ of the chunk, shared by the group's heads.
    chunk_cb::<F>(b, c, &mut cb, batch, g, t0, seq, groups, d_state);

    // The dx items' thread mapping: column p, rows r0 + k·rows (so P ≤ THREADS).
    let rows = comptime!(THREADS as usize / head_dim);
    let passes = comptime!(CHUNK.div_ceil(THREADS as usize / head_dim));
    let col = tid % head_dim;
    let r0 = tid / head_dim;
    let mut intra = Array::<f32>::new(passes);
    let mut gb = Array::<f32>::new(passes);
    let mut hc = Array::<f32>::new(passes);
    let n_n = comptime!(CHUNK * d_state);
    let per_n = comptime!(n_n.div_ceil(THREADS as usize));
    let mut db_acc = Array::<f32>::new(per_n);
    let mut dc_acc = Array::<f32>::new(per_n);
    #[unroll]
    for k in 0..per_n {
        db_acc[k] = 0.0;
        dc_acc[k] = 0.0;
    }

    for j in 0..per_group {
        let h = g * per_group + j;
        // Its barriers publish `cb` (first head) and the previous head's last writes.
        load_chunk_decay::<F>(delta, a, &mut dt, &mut cum, batch, h, t0, seq, heads);
        let last = cum[CHUNK - 1];
        let a_h = f32::cast_from(a[h]);
        let d_h = f32::cast_from(d[h]);
        let st = ((batch * heads + h) * n_chunks + chunk) * state_size;
        if tid < CHUNK {
            xgb[tid] = 0.0;
            dyhc[tid] = 0.0;
        }

        // K[t,s] = exp(cum_t − cum_s) dy_t·x_s.
        let mut i = tid;
        while i < comptime!(CHUNK * CHUNK) {
            let t = i / CHUNK;
            let s = i % CHUNK;
            if s <= t {
                let mut dot = f32::new(0.0);
                let decay = f32::exp(cum[t] - cum[s]);
                if t0 + t < seq {
                    let yt = ((batch * seq + t0 + t) * heads + h) * head_dim;
                    let xs = ((batch * seq + t0 + s) * heads + h) * head_dim;
                    for p in 0..head_dim {
                        dot += f32::cast_from(dy[yt + p]) * f32::cast_from(x[xs + p]);
                    }
                    dot *= decay;
                }
                let at = t * (t + 1) / 2 + s;
                km[at] = dot;
                cbl[at] = cb[at] * decay;
            }
            i += threads;
        }
        // ⟨G, H⟩ (through cum_last) and Σ dy·x (dD), as per-thread partials.
        let mut gh = f32::new(0.0);
        let mut i2 = tid;
        while i2 < state_size {
            gh += ends[st + i2] * starts[st + i2];
            i2 += threads;
        }
        red[tid] = gh;
        sum_cube(&red, &mut sums, 0usize);

        // dx, and the per-token x_sᵀ G B_s and dy_tᵀ H C_t, over the CHUNK × P items: each
        // thread owns column `col` and rows r0, r0 + rows, …, so a load of dy[t, col] or of a state
        // row serves all of its rows.
        let mut dxy = f32::new(0.0);
        if r0 < rows {
            #[unroll]
            for k in 0..passes {
                intra[k] = 0.0;
                gb[k] = 0.0;
                hc[k] = 0.0;
            }
            for t in 0..CHUNK {
                if t0 + t < seq {
                    let dyt =
                        f32::cast_from(dy[((batch * seq + t0 + t) * heads + h) * head_dim + col]);
                    #[unroll]
                    for k in 0..passes {
                        let s = r0 + k * rows;
                        if s <= t {
                            intra[k] += cbl[t * (t + 1) / 2 + s] * dyt;
                        }
                    }
                }
            }
            let gp = st + col * d_state;
            for n in 0..d_state {
                let gn = ends[gp + n];
                let hn = starts[gp + n];
                #[unroll]
                for k in 0..passes {
                    let s = r0 + k * rows;
                    if s < CHUNK && t0 + s < seq {
                        if stage {
                            gb[k] += gn * b_s[s * d_state + n];
                            hc[k] += hn * c_s[s * d_state + n];
                        } else {
                            let bs = ((batch * seq + t0 + s) * groups + g) * d_state + n;
                            gb[k] += gn * f32::cast_from(b[bs]);
                            hc[k] += hn * f32::cast_from(c[bs]);
                        }
                    }
                }
            }
        }
        #[unroll]
        for k in 0..passes {
            let s = r0 + k * rows;
            let mut v1 = f32::new(0.0);
            let mut v2 = f32::new(0.0);
            if r0 < rows && s < CHUNK && t0 + s < seq {
                let at = ((batch * seq + t0 + s) * heads + h) * head_dim + col;
                let xs = f32::cast_from(x[at]);
                let dys = f32::cast_from(dy[at]);
                let e_s = f32::exp(last - cum[s]);
                dx[at] = F::cast_from(dt[s] * (intra[k] + e_s * gb[k]) + d_h * dys);
                v1 = xs * gb[k];
                v2 = dys * hc[k];
                dxy += dys * xs;
            }
            red[tid] = v1;
            red2[tid] = v2;
            add_rows(&red, &mut xgb, k * rows, rows, head_dim);
            red[tid] = red2[tid];
            add_rows(&red, &mut dyhc, k * rows, rows, head_dim);
        }
        red[tid] = dxy;
        sum_cube(&red, &mut sums, 1usize);

        // dB and dC over the CHUNK × N items, accumulated over the group's heads.
        #[unroll]
        for k in 0..per_n {
            let o = tid + k * threads;
            let s = o / d_state;
            let n = o % d_state;
            if o < n_n && t0 + s < seq {
                // dB_s: Δ_s (Σ_{t≥s} K[t,s] C_t + e_s Gᵀ x_s)
                let mut kc = f32::new(0.0);
                for t in s..CHUNK {
                    let mut ct = f32::new(0.0);
                    if t0 + t < seq {
                        if stage {
                            ct = c_s[t * d_state + n];
                        } else {
                            ct = f32::cast_from(
                                c[((batch * seq + t0 + t) * groups + g) * d_state + n],
                            );
                        }
                    }
                    kc += km[t * (t + 1) / 2 + s] * ct;
                }
                let row = ((batch * seq + t0 + s) * heads + h) * head_dim;
                let mut gx = f32::new(0.0);
                let mut hdy = f32::new(0.0);
                for p in 0..head_dim {
                    let at = st + p * d_state + n;
                    gx += ends[at] * f32::cast_from(x[row + p]);
                    hdy += starts[at] * f32::cast_from(dy[row + p]);
                }
                db_acc[k] += dt[s] * (kc + f32::exp(last - cum[s]) * gx);
                // dC_t (t = s here): Σ_{r≤t} K[t,r] Δ_r B_r + exp(cum_t) Hᵀ dy_t
                let mut kb = f32::new(0.0);
                for r in 0..s + 1 {
                    let br = if stage {
                        b_s[r * d_state + n]
                    } else {
                        f32::cast_from(b[((batch * seq + t0 + r) * groups + g) * d_state + n])
                    };
                    kb += km[s * (s + 1) / 2 + r] * dt[r] * br;
                }
                dc_acc[k] += kb + f32::exp(cum[s]) * hdy;
            }
        }

        // Per token: Σ_{t≥s} CB·K, then dcum.
        if tid < CHUNK {
            let s = tid;
            let mut colsum = f32::new(0.0);
            for t in s..CHUNK {
                let at = t * (t + 1) / 2 + s;
                colsum += cb[at] * km[at];
            }
            let mut row = f32::new(0.0);
            for r in 0..s + 1 {
                let at = s * (s + 1) / 2 + r;
                row += cb[at] * km[at] * dt[r];
            }
            cbk[s] = colsum;
            let w = dt[s] * f32::exp(last - cum[s]) * xgb[s];
            dcum[s] = row - dt[s] * colsum + f32::exp(cum[s]) * dyhc[s] - w;
            red[s] = w;
        }
        sync_cube();
        // The chunk's last log decay feeds the end state; then R_s = Σ_{t≥s} dcum_t.
        if tid == 0 {
            let mut w_sum = f32::new(0.0);
            for s in 0..CHUNK {
                w_sum += red[s];
            }
            let mut r = w_sum + f32::exp(last) * sums[0usize];
            for i in 0..CHUNK {
                let s = CHUNK - 1 - i;
                r += dcum[s];
                dcum[s] = r;
            }
        }
        sync_cube();
        // dA's chunk term Σ_s Δ_s R_s, summed from the finished `dcum` like dΔ reads it (a
        // running sum inside the loop above came out wrong on CUDA while dΔ was right).
        let mut da_term = f32::new(0.0);
        if tid < CHUNK {
            let s = tid;
            da_term = dt[s] * dcum[s];
            if t0 + s < seq {
                let v = cbk[s] + f32::exp(last - cum[s]) * xgb[s] + a_h * dcum[s];
                d_delta[(batch * seq + t0 + s) * heads + h] = F::cast_from(v);
            }
        }
        red[tid] = da_term;
        sum_cube(&red, &mut sums, 2usize);
        if tid == 0 {
            let part = (batch * heads + h) * n_chunks + chunk;
            da[part] = sums[2usize];
            dd[part] = sums[1usize];
        }
        sync_cube();
    }

    #[unroll]
    for k in 0..per_n {
        let o = tid + k * threads;
        let s = o / d_state;
        let n = o % d_state;
        if o < n_n && t0 + s < seq {
            let at = ((batch * seq + t0 + s) * groups + g) * d_state + n;
            db[at] = F::cast_from(db_acc[k]);
            dc[at] = F::cast_from(dc_acc[k]);
        }
    }
}

/// Launches the kernel. `starts` and `ends` are the chunk-start states and the gradients
/// reaching the chunk-end states (f32). `dA` and `dD` come back as per-chunk f32 partials (a
/// reduction over batch and chunks is the caller's one tensor op). Inputs must be contiguous.
#[allow(clippy::too_many_arguments)]
pub fn chunk_scan_backward<R: CubeRuntime>(
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
    use burn::tensor::DType;
    let client = x.client.clone();
    let dtype = x.dtype;
    let dx = empty_like_shape(&x, x.meta.shape().clone(), dtype);
    let d_delta = empty_like_shape(&x, delta.meta.shape().clone(), dtype);
    let db = empty_like_shape(&x, b.meta.shape().clone(), dtype);
    let dc = empty_like_shape(&x, c.meta.shape().clone(), dtype);
    let da = crate::launch::zeros_like_shape(&x, shape.per_chunk_shape(), DType::F32);
    let dd = crate::launch::zeros_like_shape(&x, shape.per_chunk_shape(), DType::F32);
    let n_items = shape.batch * shape.groups * shape.n_chunks();
    if n_items > 0 {
        let address = address_type_of(&[&x, &b, &starts]);
        let stage =
            shape.backward_bytes(true) <= client.properties().hardware.max_shared_memory_size;
        unsafe {
            chunk_scan_backward_kernel::launch_unchecked::<R>(
                &client,
                cube_count_for(&client, n_items),
                CubeDim::new_1d(THREADS),
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
                db.clone().into_tensor_arg(),
                dc.clone().into_tensor_arg(),
                da.clone().into_tensor_arg(),
                dd.clone().into_tensor_arg(),
                shape.seq,
                shape.n_chunks(),
                n_items,
                shape.heads,
                shape.groups,
                shape.head_dim,
                shape.d_state,
                stage,
                dtype.into(),
            )
        };
    }
    ChunkScanGradients {
        x: dx,
        delta: d_delta,
        a_partials: da,
        b: db,
        c: dc,
        d_partials: dd,
    }
}
