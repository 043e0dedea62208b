//! HSA forward (spec §4–5): per-chunk softmax over each selected chunk, weighted sum of the chunk
//! outputs, and the per-slot log-sum-exp the backward recomputes `p` from.
//!
//! Shapes (all contiguous, sequence-first):
//! - `q`, `out`: `[B, L, h_q, D]`; `k`, `v`: `[B, L, h_kv, D]`
//! - `indices`, `weights`: `[B, L, h_kv, K]`; a negative index marks an invalid slot
//! - `lse`: `[B, L, h_q, K]`, f32; `log(n + Σ exp(s))` of each valid slot, 0 on invalid slots
//!
//! Grid: one cube per `(batch, token, KV head)` item, the `G = h_q / h_kv` query heads of the
//! group together, so each selected chunk's `S × D` key and value tiles are read once for the
//! whole group. Per slot the cube stages the tile in shared memory (rows padded by one element
//! so threads walking rows hit distinct banks), computes the `G × S` scores, a complete softmax
//! per head (no online rescaling: a chunk is small enough to hold), and accumulates
//! `w · p · V` into registers. Index arithmetic is `usize` under `address_type = "dynamic"`, so
//! offsets past 2³² stay exact.

use cubecl::prelude::*;

use super::{load_tile, HsaShape};
use crate::launch::{address_type_of, cube_count_for};
use burn_cubecl::{tensor::CubeTensor, CubeRuntime};

/// Threads per cube of the forward and the dq pass.
pub const ROW_THREADS: u32 = 64;

#[cube(launch_unchecked, address_type = "dynamic")]
#[allow(clippy::too_many_arguments)]
fn hsa_forward_kernel<F: Float, W: Float, I: Int>(
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
    #[comptime] group: usize,
    #[comptime] head_dim: usize,
    #[comptime] chunk: usize,
    #[comptime] top_k: usize,
    #[comptime] h_kv: usize,
    #[define(F, W, I)] _dtypes: [StorageType; 3],
) {
    let item = CUBE_POS;
    if item >= n_items {
        terminate!();
    }
    let threads = comptime!(ROW_THREADS as usize);
    let tid = UNIT_POS as usize;
    let g = item % h_kv;
    let bt = item / h_kv; // batch * seq + token
    let b = bt / seq;
    let h_q = comptime!(group * h_kv);
    let q_base = (bt * h_q + g * group) * head_dim;
    let sel_base = item * top_k;
    let lse_base = (bt * h_q + g * group) * top_k;
    let row_stride = h_kv * head_dim;
    let pad = comptime!(head_dim + 1);

    let mut tile = SharedMemory::<f32>::new(comptime!(chunk * (head_dim + 1)));
    let mut probs = SharedMemory::<f32>::new(comptime!(group * chunk));

    let n_out = comptime!(group * head_dim);
    let per_thread = comptime!(n_out.div_ceil(ROW_THREADS as usize));
    let mut acc = Array::<f32>::new(per_thread);
    #[unroll]
    for m in 0..per_thread {
        acc[m] = 0.0;
    }

    for slot in 0..top_k {
        let c = i32::cast_from(indices[sel_base + slot]);
        // Uniform across the cube: every thread takes the same branch, so the barriers inside
        // are reached by all of them.
        if c >= 0 && (c as usize) < n_chunks {
            let w = f32::cast_from(weights[sel_base + slot]);
            let row0 = ((b * seq + c as usize * chunk) * h_kv + g) * head_dim;
            load_tile::<F>(
                k, &mut tile, row0, row_stride, tid, threads, chunk, head_dim,
            );
            sync_cube();
            // Scores of the G heads against the S keys.
            let mut i = tid;
            while i < comptime!(group * chunk) {
                let j = i / chunk;
                let r = i % chunk;
                let mut dot = 0.0f32;
                for e in 0..head_dim {
                    dot += f32::cast_from(q[q_base + j * head_dim + e]) * tile[r * pad + e];
                }
                probs[i] = dot * scale;
                i += threads;
            }
            sync_cube();
            // Softmax per head (one thread a head), scaled by the slot weight.
            if tid < group {
                let j = tid;
                // With off-by-one the implicit zero logit joins the max.
                let mut top = f32::new(-3.0e38);
                if off_by_one > 0.0f32 {
                    top = f32::new(0.0);
                }
                for r in 0..chunk {
                    top = max(top, probs[j * chunk + r]);
                }
                let mut z = off_by_one * f32::exp(0.0f32 - top);
                for r in 0..chunk {
                    z += f32::exp(probs[j * chunk + r] - top);
                }
                let l = top + f32::ln(z);
                for r in 0..chunk {
                    probs[j * chunk + r] = w * f32::exp(probs[j * chunk + r] - l);
                }
                lse[lse_base + j * top_k + slot] = l;
            }
            // Values of the chunk -> shared (the keys are no longer read).
            load_tile::<F>(
                v, &mut tile, row0, row_stride, tid, threads, chunk, head_dim,
            );
            sync_cube();
            #[unroll]
            for m in 0..per_thread {
                let o = tid + m * threads;
                if o < n_out {
                    let j = o / head_dim;
                    let e = o % head_dim;
                    let mut s = 0.0f32;
                    for r in 0..chunk {
                        s += probs[j * chunk + r] * tile[r * pad + e];
                    }
                    acc[m] += s;
                }
            }
            sync_cube();
        } else {
            if tid < group {
                lse[lse_base + tid * top_k + slot] = 0.0;
            }
        }
    }

    #[unroll]
    for m in 0..per_thread {
        let o = tid + m * threads;
        if o < n_out {
            out[q_base + o] = F::cast_from(acc[m]);
        }
    }
}

/// Launches the forward kernel; returns `(out, lse)`. Inputs must be contiguous.
pub fn hsa_forward<R: CubeRuntime>(
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
        hsa_forward_kernel::launch_unchecked::<R>(
            &client,
            cube_count_for(&client, n_items),
            CubeDim::new_1d(ROW_THREADS),
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
            shape.group(),
            shape.head_dim,
            shape.chunk,
            shape.top_k,
            shape.h_kv,
            dtypes,
        )
    };
    (out, lse)
}
