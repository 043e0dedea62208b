//! Outputs of the chunked scan: for each chunk, the part within the chunk, the carried state's
//! part and the skip,
//! `y_t = Σ_{s≤t} (C_t·B_s) exp(cum_t − cum_s) Δ_s x_s + exp(cum_t) H C_t + D x_t`.
//!
//! Shapes: `x`, `y`: `[B, L, H, P]`; `delta`: `[B, L, H]`; `a`, `d`: `[H]`; `b`, `c`:
//! `[B, L, G, N]`; `starts` f32 `[B, H, n_chunks, P, N]` (the state at each chunk's start, from
//! [`super::state_passing`]).
//!
//! Grid: one cube per `(batch, group, chunk)`; it computes the chunk's `C·Bᵀ` once into shared
//! memory (packed lower triangle) and then walks the group's heads: per head the mixing matrix
//! `(C·Bᵀ) ∘ decay ∘ Δ` (another triangle), then the outputs, each thread one column `p` and
//! every `THREADS / P`-th row (so `P ≤ THREADS`).

use burn_cubecl::{tensor::CubeTensor, CubeRuntime};
use cubecl::prelude::*;

use super::{empty_like_shape, load_chunk_decay, stage_rows, ScanShape, CHUNK, THREADS};
use crate::launch::{address_type_of, cube_count_for};

/// Entries of a packed `CHUNK × CHUNK` lower triangle (row `t` starts at `t (t + 1) / 2`).
pub(crate) const TRI: usize = CHUNK * (CHUNK + 1) / 2;

/// `C_t · B_s` for `s ≤ t` (zero past `L`) into the packed lower triangle `cb`.
#[cube]
#[allow(clippy::too_many_arguments)]
pub(crate) fn chunk_cb<F: Float>(
    b: &Tensor<F>,
    c: &Tensor<F>,
    cb: &mut SharedMemory<f32>,
    batch: usize,
    g: usize,
    t0: usize,
    seq: usize,
    #[comptime] groups: usize,
    #[comptime] d_state: usize,
) {
    let threads = comptime!(THREADS as usize);
    let mut i = UNIT_POS as usize;
    while i < comptime!(CHUNK * CHUNK) {
        let t = i / CHUNK;
        let s = i % CHUNK;
        if s <= t {
            let mut dot = f32::new(0.0);
            if t0 + t < seq {
                let ct = ((batch * seq + t0 + t) * groups + g) * d_state;
                let bs = ((batch * seq + t0 + s) * groups + g) * d_state;
                for n in 0..d_state {
                    dot += f32::cast_from(c[ct + n]) * f32::cast_from(b[bs + n]);
                }
            }
            cb[t * (t + 1) / 2 + s] = dot;
        }
        i += threads;
    }
}

#[cube(launch_unchecked, address_type = "dynamic")]
#[allow(clippy::too_many_arguments)]
fn chunk_scan_kernel<F: Float>(
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

    let mut cb = SharedMemory::<f32>::new(TRI);
    // The head's intra-chunk mixing matrix `(C_t·B_s) exp(cum_t − cum_s) Δ_s`: one `exp` per
    // (t, s) pair per head instead of one per output element and pair.
    let mut mix = SharedMemory::<f32>::new(TRI);
    let mut dt = SharedMemory::<f32>::new(CHUNK);
    let mut cum = SharedMemory::<f32>::new(CHUNK);
    chunk_cb::<F>(b, c, &mut cb, batch, g, t0, seq, groups, d_state);
    // Where shared memory allows, the chunk's C rows once for all heads (the carried-state
    // product reads each 64 times per head).
    let mut c_s = SharedMemory::<f32>::new(comptime!(if stage { CHUNK * d_state } else { 1 }));
    if stage {
        stage_rows::<F>(c, &mut c_s, batch, g, t0, seq, groups, d_state);
    }

    // Each thread owns one column `p` and the rows `r0, r0 + rows, …` of the head's
    // `CHUNK × P` outputs, so the loads of `x[s, p]` and of the state row `H[p, ·]` serve all
    // of its rows.
    let rows = comptime!(THREADS as usize / head_dim);
    let passes = comptime!(CHUNK.div_ceil(THREADS as usize / head_dim));
    let p = tid % head_dim;
    let r0 = tid / head_dim;
    let mut acc = Array::<f32>::new(passes);
    let mut carried = Array::<f32>::new(passes);
    for j in 0..per_group {
        let h = g * per_group + j;
        // Its barriers publish `cb` (first head); the barrier closing each head retires that
        // head's reads of `dt`, `cum` and `mix` before the next one overwrites them.
        load_chunk_decay::<F>(delta, a, &mut dt, &mut cum, batch, h, t0, seq, heads);
        let mut i = tid;
        while i < comptime!(CHUNK * CHUNK) {
            let t = i / CHUNK;
            let s = i % CHUNK;
            if s <= t {
                let at = t * (t + 1) / 2 + s;
                mix[at] = cb[at] * f32::exp(cum[t] - cum[s]) * dt[s];
            }
            i += threads;
        }
        sync_cube();
        if r0 < rows {
            #[unroll]
            for k in 0..passes {
                acc[k] = 0.0;
                carried[k] = 0.0;
            }
            // Within the chunk: Σ_{s≤t} mix[t, s] x[s, p].
            for s in 0..CHUNK {
                if t0 + s < seq {
                    let xs = f32::cast_from(x[((batch * seq + t0 + s) * heads + h) * head_dim + p]);
                    #[unroll]
                    for k in 0..passes {
                        let t = r0 + k * rows;
                        if t < CHUNK && s <= t {
                            acc[k] += mix[t * (t + 1) / 2 + s] * xs;
                        }
                    }
                }
            }
            // The carried state: Σ_n C[t, n] H[p, n].
            let hp = ((batch * heads + h) * n_chunks + chunk) * comptime!(head_dim * d_state)
                + p * d_state;
            for n in 0..d_state {
                let hn = starts[hp + n];
                #[unroll]
                for k in 0..passes {
                    let t = r0 + k * rows;
                    if t < CHUNK && t0 + t < seq {
                        let cv = if stage {
                            c_s[t * d_state + n]
                        } else {
                            f32::cast_from(c[((batch * seq + t0 + t) * groups + g) * d_state + n])
                        };
                        carried[k] += cv * hn;
                    }
                }
            }
            let d_h = f32::cast_from(d[h]);
            #[unroll]
            for k in 0..passes {
                let t = r0 + k * rows;
                if t < CHUNK && t0 + t < seq {
                    let at = ((batch * seq + t0 + t) * heads + h) * head_dim + p;
                    let v = acc[k] + f32::exp(cum[t]) * carried[k] + d_h * f32::cast_from(x[at]);
                    y[at] = F::cast_from(v);
                }
            }
        }
        sync_cube();
    }
}

/// Launches the kernel; returns `y` in `x`'s dtype. Inputs must be contiguous.
#[allow(clippy::too_many_arguments)]
pub fn chunk_scan<R: CubeRuntime>(
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
    let n_items = shape.batch * shape.groups * shape.n_chunks();
    if n_items == 0 {
        return y;
    }
    let dtype = x.dtype.into();
    let address = address_type_of(&[&x, &b, &starts]);
    let stage = shape.forward_bytes(true) <= client.properties().hardware.max_shared_memory_size;
    unsafe {
        chunk_scan_kernel::launch_unchecked::<R>(
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
            starts.into_tensor_arg(),
            y.clone().into_tensor_arg(),
            shape.seq,
            shape.n_chunks(),
            n_items,
            shape.heads,
            shape.groups,
            shape.head_dim,
            shape.d_state,
            stage,
            dtype,
        )
    };
    y
}
