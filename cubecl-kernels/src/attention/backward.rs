//! Attention backward, two passes that recompute the probabilities from the forward's row
//! log-sum-exp (`p = exp(s − lse)`), so nothing of size `L_q × L_k` is stored:
//!
//! 1. `dq`: one cube per `(batch, block of ROWS queries, query head)`, a thread per query row
//!    (the forward's grid). It first forms `delta = rowsum(dO ∘ O)`, then walks the key tiles
//!    the row may see, staging K and V tiles together: `ds = p · (dO·v − delta)`,
//!    `dq += ds · k`. It writes `delta` for pass 2.
//! 2. `dK`/`dV`: one cube per `(batch, block of ROWS keys, KV head)`, a thread per key row. It
//!    walks the `G` query heads of its group and the query tiles that may see its keys
//!    (causal: from the block's first key on; windowed: up to `w` queries past its last),
//!    staging Q, dO, lse and delta: `dv += p · dO`, `dk += ds · q`. Each key row is owned by
//!    one thread, so no atomics and the result is deterministic.
//!
//! Shapes: see the module docs of [`super`]. The portable scalar path, as the forward.

use cubecl::prelude::*;

use super::{first_key, first_query, key_end, load_rows, query_end, visible, AttentionShape, ROWS};
use crate::launch::{address_type_of, cube_count_for};
use burn_cubecl::{tensor::CubeTensor, CubeRuntime};

#[cube(launch_unchecked, address_type = "dynamic")]
#[allow(clippy::too_many_arguments)]
fn attention_backward_dq_kernel<F: Float>(
    q: &Tensor<F>,
    k: &Tensor<F>,
    v: &Tensor<F>,
    out: &Tensor<F>,
    lse: &Tensor<f32>,
    d_out: &Tensor<F>,
    dq: &mut Tensor<F>,
    delta: &mut Tensor<f32>,
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
    #[comptime] head_dim: usize,
    #[comptime] tile: usize,
    #[comptime] unroll: bool,
    #[define(F)] _dtype: StorageType,
) {
    let item = CUBE_POS;
    if item >= n_items {
        terminate!();
    }
    let h_q = comptime!(group * h_kv);
    let rows = comptime!(ROWS as usize);
    let tid = UNIT_POS as usize;
    let h = item % h_q;
    let blk = (item / h_q) % n_blocks;
    let b = item / (h_q * n_blocks);
    let g = h / group;
    let i0 = blk * rows;
    let i = i0 + tid;
    let active = i < seq_q;
    let pos = i + q_offset;
    let row = (b * seq_q + i) * h_q + h;
    let q_base = row * head_dim;
    let kv_base = (b * seq_k * h_kv + g) * head_dim;
    let kv_stride = h_kv * head_dim;

    let mut qr = Array::<f32>::new(head_dim);
    let mut dor = Array::<f32>::new(head_dim);
    let mut acc = Array::<f32>::new(head_dim);
    #[unroll(unroll)]
    for e in 0..head_dim {
        qr[e] = 0.0;
        dor[e] = 0.0;
        acc[e] = 0.0;
    }
    let mut row_delta = 0.0f32;
    let mut row_lse = 0.0f32;
    if active {
        #[unroll(unroll)]
        for e in 0..head_dim {
            qr[e] = f32::cast_from(q[q_base + e]) * scale;
            let d = f32::cast_from(d_out[q_base + e]);
            dor[e] = d;
            row_delta += d * f32::cast_from(out[q_base + e]);
        }
        row_lse = lse[row];
        delta[row] = row_delta;
    }
    let mut sk = SharedMemory::<f32>::new(comptime!(tile * head_dim));
    let mut sv = SharedMemory::<f32>::new(comptime!(tile * head_dim));

    // Keys the block's queries may see: lo..hi.
    let lo = first_key(i0, q_offset, window, causal);
    let hi = key_end(min(i0 + rows, seq_q), seq_k, q_offset, causal);
    let mut t = lo / tile * tile;
    while t < hi {
        load_rows::<F>(
            k, &mut sk, kv_base, kv_stride, t, seq_k, tid, tile, head_dim,
        );
        load_rows::<F>(
            v, &mut sv, kv_base, kv_stride, t, seq_k, tid, tile, head_dim,
        );
        sync_cube();
        if active {
            for r in 0..tile {
                let j = t + r;
                if j < seq_k && visible(j, pos, window, causal) {
                    let mut s = 0.0f32;
                    let mut dp = 0.0f32;
                    #[unroll(unroll)]
                    for e in 0..head_dim {
                        s += qr[e] * sk[r * head_dim + e];
                        dp += dor[e] * sv[r * head_dim + e];
                    }
                    let p = f32::exp(s - row_lse);
                    let ds = p * (dp - row_delta);
                    #[unroll(unroll)]
                    for e in 0..head_dim {
                        acc[e] += ds * sk[r * head_dim + e];
                    }
                }
            }
        }
        sync_cube();
        t += tile;
    }
    if active {
        #[unroll(unroll)]
        for e in 0..head_dim {
            dq[q_base + e] = F::cast_from(acc[e] * scale);
        }
    }
}

#[cube(launch_unchecked, address_type = "dynamic")]
#[allow(clippy::too_many_arguments)]
fn attention_backward_dkdv_kernel<F: Float>(
    q: &Tensor<F>,
    k: &Tensor<F>,
    v: &Tensor<F>,
    lse: &Tensor<f32>,
    delta: &Tensor<f32>,
    d_out: &Tensor<F>,
    dk: &mut Tensor<F>,
    dv: &mut Tensor<F>,
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
    #[comptime] head_dim: usize,
    #[comptime] tile: usize,
    #[comptime] unroll: bool,
    #[define(F)] _dtype: StorageType,
) {
    let item = CUBE_POS;
    if item >= n_items {
        terminate!();
    }
    let h_q = comptime!(group * h_kv);
    let rows = comptime!(ROWS as usize);
    let tid = UNIT_POS as usize;
    let g = item % h_kv;
    let blk = (item / h_kv) % n_blocks;
    let b = item / (h_kv * n_blocks);
    let j0 = blk * rows;
    let j = j0 + tid;
    let active = j < seq_k;
    let kv_base = ((b * seq_k + j) * h_kv + g) * head_dim;

    let mut kr = Array::<f32>::new(head_dim);
    let mut vr = Array::<f32>::new(head_dim);
    let mut dk_acc = Array::<f32>::new(head_dim);
    let mut dv_acc = Array::<f32>::new(head_dim);
    #[unroll(unroll)]
    for e in 0..head_dim {
        kr[e] = 0.0;
        vr[e] = 0.0;
        dk_acc[e] = 0.0;
        dv_acc[e] = 0.0;
    }
    if active {
        #[unroll(unroll)]
        for e in 0..head_dim {
            kr[e] = f32::cast_from(k[kv_base + e]) * scale;
            vr[e] = f32::cast_from(v[kv_base + e]);
        }
    }
    let mut sq = SharedMemory::<f32>::new(comptime!(tile * head_dim));
    let mut sdo = SharedMemory::<f32>::new(comptime!(tile * head_dim));
    let mut s_lse = SharedMemory::<f32>::new(tile);
    let mut s_delta = SharedMemory::<f32>::new(tile);

    // Queries that may see keys j0..=j_last: lo..hi.
    let j_last = min(j0 + rows, seq_k) - 1;
    let lo = first_query(j0, q_offset, causal);
    let hi = query_end(j_last, seq_q, q_offset, window, causal);
    let q_stride = h_q * head_dim;
    let tid_row = tid;

    // One flat loop over (query head of the group, query tile).
    let t0 = lo / tile * tile;
    let mut n_tiles = 0;
    if hi > t0 {
        n_tiles = (hi - t0).div_ceil(tile);
    }
    let mut it = 0;
    while it < group * n_tiles {
        let h = g * group + it / n_tiles;
        let t = t0 + (it % n_tiles) * tile;
        let q_head_base = (b * seq_q * h_q + h) * head_dim;
        load_rows::<F>(
            q,
            &mut sq,
            q_head_base,
            q_stride,
            t,
            seq_q,
            tid,
            tile,
            head_dim,
        );
        load_rows::<F>(
            d_out,
            &mut sdo,
            q_head_base,
            q_stride,
            t,
            seq_q,
            tid,
            tile,
            head_dim,
        );
        if tid_row < tile {
            let i = t + tid_row;
            let mut a = 0.0f32;
            let mut d = 0.0f32;
            if i < seq_q {
                let row = (b * seq_q + i) * h_q + h;
                a = lse[row];
                d = delta[row];
            }
            s_lse[tid_row] = a;
            s_delta[tid_row] = d;
        }
        sync_cube();
        if active {
            for r in 0..tile {
                let i = t + r;
                if i < seq_q && visible(j, i + q_offset, window, causal) {
                    let mut s = 0.0f32;
                    let mut dp = 0.0f32;
                    #[unroll(unroll)]
                    for e in 0..head_dim {
                        s += kr[e] * sq[r * head_dim + e];
                        dp += vr[e] * sdo[r * head_dim + e];
                    }
                    let p = f32::exp(s - s_lse[r]);
                    let ds = p * (dp - s_delta[r]);
                    #[unroll(unroll)]
                    for e in 0..head_dim {
                        dv_acc[e] += p * sdo[r * head_dim + e];
                        dk_acc[e] += ds * sq[r * head_dim + e];
                    }
                }
            }
        }
        sync_cube();
        it += 1;
    }
    if active {
        #[unroll(unroll)]
        for e in 0..head_dim {
            dk[kv_base + e] = F::cast_from(dk_acc[e] * scale);
            dv[kv_base + e] = F::cast_from(dv_acc[e]);
        }
    }
}

/// Pass 1: `(dq [B, L_q, h_q, D], delta [B, L_q, h_q] f32)`. Inputs must be contiguous.
pub fn attention_backward_dq<R: CubeRuntime>(
    q: CubeTensor<R>,
    k: CubeTensor<R>,
    v: CubeTensor<R>,
    out: CubeTensor<R>,
    lse: CubeTensor<R>,
    d_out: CubeTensor<R>,
    shape: AttentionShape,
) -> (CubeTensor<R>, CubeTensor<R>) {
    let client = q.client.clone();
    let dq = super::empty_like_shape(&q, shape.q_shape(), q.dtype);
    let delta = super::empty_like_shape(&q, shape.row_shape(), burn::tensor::DType::F32);
    let n_blocks = shape.seq_q.div_ceil(ROWS as usize);
    let n_items = shape.batch * n_blocks * shape.h_q;
    if n_items == 0 {
        return (dq, delta);
    }
    let address = address_type_of(&[&q, &k, &v, &dq]);
    let dtype = q.dtype.into();
    unsafe {
        attention_backward_dq_kernel::launch_unchecked::<R>(
            &client,
            cube_count_for(&client, n_items),
            CubeDim::new_1d(ROWS),
            address,
            q.into_tensor_arg(),
            k.into_tensor_arg(),
            v.into_tensor_arg(),
            out.into_tensor_arg(),
            lse.into_tensor_arg(),
            d_out.into_tensor_arg(),
            dq.clone().into_tensor_arg(),
            delta.clone().into_tensor_arg(),
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
            shape.head_dim,
            shape.tile(),
            super::unroll_rows(&client),
            dtype,
        )
    };
    (dq, delta)
}

/// Pass 2: `(dk, dv)`, each `[B, L_k, h_kv, D]`. Inputs must be contiguous.
#[allow(clippy::too_many_arguments)]
pub fn attention_backward_dkdv<R: CubeRuntime>(
    q: CubeTensor<R>,
    k: CubeTensor<R>,
    v: CubeTensor<R>,
    lse: CubeTensor<R>,
    delta: CubeTensor<R>,
    d_out: CubeTensor<R>,
    shape: AttentionShape,
) -> (CubeTensor<R>, CubeTensor<R>) {
    let client = q.client.clone();
    let dk = super::empty_like_shape(&k, shape.kv_shape(), k.dtype);
    let dv = super::empty_like_shape(&k, shape.kv_shape(), k.dtype);
    let n_blocks = shape.seq_k.div_ceil(ROWS as usize);
    let n_items = shape.batch * n_blocks * shape.h_kv;
    if n_items == 0 {
        return (dk, dv);
    }
    let address = address_type_of(&[&q, &k, &v, &dk]);
    let dtype = q.dtype.into();
    unsafe {
        attention_backward_dkdv_kernel::launch_unchecked::<R>(
            &client,
            cube_count_for(&client, n_items),
            CubeDim::new_1d(ROWS),
            address,
            q.into_tensor_arg(),
            k.into_tensor_arg(),
            v.into_tensor_arg(),
            lse.into_tensor_arg(),
            delta.into_tensor_arg(),
            d_out.into_tensor_arg(),
            dk.clone().into_tensor_arg(),
            dv.clone().into_tensor_arg(),
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
            shape.head_dim,
            shape.tile(),
            // Always unrolled: see `unroll_rows`.
            true,
            dtype,
        )
    };
    (dk, dv)
}
