//! Outputs of the chunked scan: for each chunk, the part within the chunk, the carried state's
//! part and the skip,
//! `y_t = Σ_{s≤t} (C_t·B_s) exp(cum_t − cum_s) Δ_s x_s + exp(cum_t) H C_t + D x_t`.
//!
//! Shapes: `x`, `y`: `[B, L, H, P]`; `delta`: `[B, L, H]`; `a`, `d`: `[H]`; `b`, `c`:
//! `[B, L, G, N]`; `starts` f32 `[B, H, n_chunks, P, N]` (the state at each chunk's start, from
//! [`super::state_passing`]).
//!
//! Grid: one cube per `(batch, group, chunk)`; it computes the chunk's `C·Bᵀ` once into shared
//! memory (`CHUNK × CHUNK`, lower triangle) and then walks the group's heads, each thread owning
//! `CHUNK·P / THREADS` outputs.

use burn_cubecl::{tensor::CubeTensor, CubeRuntime};
use cubecl::prelude::*;

use super::{empty_like_shape, load_chunk_decay, ScanShape, CHUNK, THREADS};
use crate::launch::{address_type_of, cube_count_for};

/// `C_t · B_s` for `s ≤ t` (zero above the diagonal and past `L`) into `cb[t·CHUNK + s]`.
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
        let mut dot = f32::new(0.0);
        if s <= t && t0 + t < seq {
            let ct = ((batch * seq + t0 + t) * groups + g) * d_state;
            let bs = ((batch * seq + t0 + s) * groups + g) * d_state;
            for n in 0..d_state {
                dot += f32::cast_from(c[ct + n]) * f32::cast_from(b[bs + n]);
            }
        }
        cb[i] = dot;
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

    let mut cb = SharedMemory::<f32>::new(comptime!(CHUNK * CHUNK));
    let mut dt = SharedMemory::<f32>::new(CHUNK);
    let mut cum = SharedMemory::<f32>::new(CHUNK);
    chunk_cb::<F>(b, c, &mut cb, batch, g, t0, seq, groups, d_state);

    let n_out = comptime!(CHUNK * head_dim);
    let per_thread = comptime!(n_out.div_ceil(THREADS as usize));
    for j in 0..per_group {
        let h = g * per_group + j;
        // Its barriers publish `cb` (first head); the barrier closing each head retires that
        // head's reads of `dt` and `cum` before the next one overwrites them.
        load_chunk_decay::<F>(delta, a, &mut dt, &mut cum, batch, h, t0, seq, heads);
        let d_h = f32::cast_from(d[h]);
        let start = ((batch * heads + h) * n_chunks + chunk) * comptime!(head_dim * d_state);
        #[unroll]
        for k in 0..per_thread {
            let o = tid + k * threads;
            let t = o / head_dim;
            let p = o % head_dim;
            if o < n_out && t0 + t < seq {
                let mut acc = f32::new(0.0);
                for s in 0..t + 1 {
                    let xs = f32::cast_from(x[((batch * seq + t0 + s) * heads + h) * head_dim + p]);
                    acc += cb[t * CHUNK + s] * f32::exp(cum[t] - cum[s]) * dt[s] * xs;
                }
                let ct = ((batch * seq + t0 + t) * groups + g) * d_state;
                let hp = start + p * d_state;
                let mut carried = f32::new(0.0);
                for n in 0..d_state {
                    carried += f32::cast_from(c[ct + n]) * starts[hp + n];
                }
                let at = ((batch * seq + t0 + t) * heads + h) * head_dim + p;
                acc += f32::exp(cum[t]) * carried + d_h * f32::cast_from(x[at]);
                y[at] = F::cast_from(acc);
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
            dtype,
        )
    };
    y
}
