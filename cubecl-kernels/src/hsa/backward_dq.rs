//! HSA backward, pass 1 (spec §4 "Backward"): `dq`, the slot weights' gradient `dw`, and the
//! per-slot `D = <o_k, dO>` that pass 2 needs, with `p` recomputed from the saved log-sum-exp.
//!
//! Shapes (contiguous): `q`, `d_out`, `dq`: `[B, L, h_q, D]`; `k`, `v`: `[B, L, h_kv, D]`;
//! `indices`, `weights`, `dw`: `[B, L, h_kv, K]`; `lse`, `delta`: `[B, L, h_q, K]` (f32).
//!
//! Per valid slot `k` (chunk `c`, weight `w`) and query head `j`:
//! ```text
//! p   = exp(q_j · K_cᵀ · scale − lse)        dp = dO_j · V_cᵀ
//! D   = Σ_r p_r dp_r   (= <o_k, dO_j>)        dw += D   (summed over the group's heads)
//! ds  = w · p ∘ (dp − D)                      dq_j += ds · K_c · scale
//! ```
//! Grid: the forward's, one cube per `(batch, token, KV head)`.

use cubecl::prelude::*;

use super::forward::ROW_THREADS;
use super::{load_tile, HsaShape};
use crate::launch::{address_type_of, cube_count_for};
use burn_cubecl::{tensor::CubeTensor, CubeRuntime};

#[cube(launch_unchecked, address_type = "dynamic")]
#[allow(clippy::too_many_arguments)]
fn hsa_backward_dq_kernel<F: Float, W: Float, I: Int>(
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
    let bt = item / h_kv;
    let b = bt / seq;
    let h_q = comptime!(group * h_kv);
    let q_base = (bt * h_q + g * group) * head_dim;
    let sel_base = item * top_k;
    let lse_base = (bt * h_q + g * group) * top_k;
    let row_stride = h_kv * head_dim;
    let pad = comptime!(head_dim + 1);

    let mut tile = SharedMemory::<f32>::new(comptime!(chunk * (head_dim + 1)));
    let mut probs = SharedMemory::<f32>::new(comptime!(group * chunk));
    let mut dprobs = SharedMemory::<f32>::new(comptime!(group * chunk));
    let mut dsum = SharedMemory::<f32>::new(group);

    let n_out = comptime!(group * head_dim);
    let per_thread = comptime!(n_out.div_ceil(ROW_THREADS as usize));
    let mut acc = Array::<f32>::new(per_thread);
    #[unroll]
    for m in 0..per_thread {
        acc[m] = 0.0;
    }

    for slot in 0..top_k {
        let c = i32::cast_from(indices[sel_base + slot]);
        if c >= 0 && (c as usize) < n_chunks {
            let w = f32::cast_from(weights[sel_base + slot]);
            let row0 = ((b * seq + c as usize * chunk) * h_kv + g) * head_dim;
            load_tile::<F>(
                k, &mut tile, row0, row_stride, tid, threads, chunk, head_dim,
            );
            sync_cube();
            // p from the saved log-sum-exp.
            let mut i = tid;
            while i < comptime!(group * chunk) {
                let j = i / chunk;
                let r = i % chunk;
                let mut dot = 0.0f32;
                for e in 0..head_dim {
                    dot += f32::cast_from(q[q_base + j * head_dim + e]) * tile[r * pad + e];
                }
                probs[i] = f32::exp(dot * scale - lse[lse_base + j * top_k + slot]);
                i += threads;
            }
            sync_cube();
            load_tile::<F>(
                v, &mut tile, row0, row_stride, tid, threads, chunk, head_dim,
            );
            sync_cube();
            let mut i = tid;
            while i < comptime!(group * chunk) {
                let j = i / chunk;
                let r = i % chunk;
                let mut dot = 0.0f32;
                for e in 0..head_dim {
                    dot += f32::cast_from(d_out[q_base + j * head_dim + e]) * tile[r * pad + e];
                }
                dprobs[i] = dot;
                i += threads;
            }
            sync_cube();
            if tid < group {
                let j = tid;
                let mut d = 0.0f32;
                for r in 0..chunk {
                    d += probs[j * chunk + r] * dprobs[j * chunk + r];
                }
                dsum[j] = d;
                delta[lse_base + j * top_k + slot] = d;
            }
            sync_cube();
            if tid == 0 {
                let mut total = 0.0f32;
                for j in 0..group {
                    total += dsum[j];
                }
                dw[sel_base + slot] = W::cast_from(total);
            }
            // ds (scaled), in place of p.
            let mut i = tid;
            while i < comptime!(group * chunk) {
                let j = i / chunk;
                probs[i] = w * probs[i] * (dprobs[i] - dsum[j]) * scale;
                i += threads;
            }
            load_tile::<F>(
                k, &mut tile, row0, row_stride, tid, threads, chunk, head_dim,
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
                delta[lse_base + tid * top_k + slot] = 0.0;
            }
            if tid == 0 {
                dw[sel_base + slot] = W::cast_from(0.0f32);
            }
        }
    }

    #[unroll]
    for m in 0..per_thread {
        let o = tid + m * threads;
        if o < n_out {
            dq[q_base + o] = F::cast_from(acc[m]);
        }
    }
}

/// Pass 1 outputs: `(dq, dw, delta)`.
#[allow(clippy::too_many_arguments)]
pub fn hsa_backward_dq<R: CubeRuntime>(
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
        hsa_backward_dq_kernel::launch_unchecked::<R>(
            &client,
            cube_count_for(&client, n_items),
            CubeDim::new_1d(ROW_THREADS),
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
            shape.group(),
            shape.head_dim,
            shape.chunk,
            shape.top_k,
            shape.h_kv,
            dtypes,
        )
    };
    (dq, dw, delta)
}
