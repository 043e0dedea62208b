//! Attention backward on tensor cores, the two passes of [`super::backward`] for the inputs of
//! [`super::forward_cmma`] (f16/bf16, `D = 64`): the probabilities are recomputed from the
//! forward's `lse`, nothing of size `L_q × L_k` is stored, and there are no atomics.
//!
//! 1. `dq`: the forward's grid (a cube per `(batch, 64 queries, query head)`, plane `w` owning
//!    query rows `16w..`, its `Q` and `dO` rows held as `A` fragments). It forms
//!    `delta = rowsum(dO ∘ O)`, then per staged tile of 64 keys and values:
//!    ```text
//!    S = Q·Kᵀ   P = exp(S·scale − lse)   dP = dO·Vᵀ   dS = P ∘ (dP − delta)   dQ += dS·K
//!    ```
//!    48 `mma` a tile; `dQ` is scaled once at the end.
//! 2. `dK`/`dV`: a cube per `(batch, 64 keys, KV head)`, plane `w` owning key rows `16w..` with
//!    its `K` and `V` rows as `A` fragments. It walks the group's query heads and the query
//!    tiles that may see its keys, staging `Q`, `dO`, `lse` and `delta`, and works transposed so
//!    no fragment needs a transpose:
//!    ```text
//!    Sᵀ = K·Qᵀ   Pᵀ = exp(Sᵀ·scale − lse)   dV += Pᵀ·dO   dPᵀ = V·dOᵀ   dSᵀ = Pᵀ ∘ (dPᵀ − delta)   dK += dSᵀ·Q
//!    ```
//!    64 `mma` a tile.
//!
//! Shapes: see the module docs of [`super`].

use cubecl::ir::StorageType;
use cubecl::prelude::*;

use super::forward_cmma::{
    products_to_scratch, stage_rows, tile_times_rows, write_rows, BLOCK, FPAD, HEAD_DIM, HPAD,
    WARPS,
};
use super::{first_key, first_query, key_end, query_end, visible, AttentionShape};
use crate::fragments::{load_a, new_acc};
use crate::launch::{address_type_of, cube_count_for};
use burn_cubecl::{tensor::CubeTensor, CubeRuntime};

#[cube(launch_unchecked, address_type = "dynamic")]
#[allow(clippy::too_many_arguments)]
fn attention_backward_dq_cmma_kernel<F: Float>(
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
    let iw = i0 + warp * 16;
    let r = lane / 2;
    let hcol = lane % 2;
    let i = iw + r;
    let row_ok = i < seq_q;
    let pos = i + q_offset;
    let row = (b * seq_q + i) * h_q + h;
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
    let hp = HPAD as u32;

    // The plane's Q and dO rows as fragments, each staged through its P tile.
    stage_rows::<F>(
        q, &mut ptile, p0, q_head, q_stride, iw, seq_q, lane, 32usize, 16usize,
    );
    sync_plane();
    let qa0 = load_a::<F>(&ptile.to_slice(), p0, hp);
    let qa1 = load_a::<F>(&ptile.to_slice(), p0 + 16, hp);
    let qa2 = load_a::<F>(&ptile.to_slice(), p0 + 32, hp);
    let qa3 = load_a::<F>(&ptile.to_slice(), p0 + 48, hp);
    sync_plane();
    stage_rows::<F>(
        d_out, &mut ptile, p0, q_head, q_stride, iw, seq_q, lane, 32usize, 16usize,
    );
    sync_plane();
    let da0 = load_a::<F>(&ptile.to_slice(), p0, hp);
    let da1 = load_a::<F>(&ptile.to_slice(), p0 + 16, hp);
    let da2 = load_a::<F>(&ptile.to_slice(), p0 + 32, hp);
    let da3 = load_a::<F>(&ptile.to_slice(), p0 + 48, hp);
    sync_plane();

    // delta = rowsum(dO ∘ O), two lanes a row.
    let mut part = 0.0f32;
    let mut row_lse = 0.0f32;
    if row_ok {
        let at = q_head + i * q_stride;
        #[unroll]
        for c in 0..32usize {
            let e = 2 * c + hcol;
            part += f32::cast_from(d_out[at + e]) * f32::cast_from(out[at + e]);
        }
        row_lse = lse[row];
    }
    let row_delta = part + plane_shuffle_xor(part, 1);
    if row_ok && hcol == 0 {
        delta[row] = row_delta;
    }

    let lo = first_key(i0, q_offset, window, causal);
    let hi = key_end(min(i0 + BLOCK, seq_q), seq_k, q_offset, causal);
    let plane_on = iw < seq_q;
    let w_lo = first_key(iw, q_offset, window, causal);
    let w_hi = key_end(min(iw + 16, seq_q), seq_k, q_offset, causal);

    let dq0 = new_acc();
    let dq1 = new_acc();
    let dq2 = new_acc();
    let dq3 = new_acc();
    let mut t = lo / BLOCK * BLOCK;
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
            let mut p = Array::<f32>::new(32usize);
            #[unroll]
            for c in 0..32usize {
                let col = 2 * c + hcol;
                let j = t + col;
                let mut x = 0.0f32;
                if row_ok && j < seq_k && visible(j, pos, window, causal) {
                    x = f32::exp(scratch[f0 + r * FPAD + col] * scale - row_lse);
                }
                p[c] = x;
            }
            sync_plane();
            products_to_scratch::<F>(&da0, &da1, &da2, &da3, &sv, &mut scratch, f0);
            sync_plane();
            #[unroll]
            for c in 0..32usize {
                let col = 2 * c + hcol;
                let ds = p[c] * (scratch[f0 + r * FPAD + col] - row_delta);
                ptile[p0 + r * HPAD + col] = F::cast_from(ds);
            }
            sync_plane();
            tile_times_rows::<F>(&ptile, p0, &sk, &dq0, &dq1, &dq2, &dq3);
        }
        sync_cube();
        t += BLOCK;
    }
    write_rows::<F>(
        &dq0,
        &dq1,
        &dq2,
        &dq3,
        &mut scratch,
        f0,
        dq,
        q_head,
        q_stride,
        iw,
        seq_q,
        scale,
        lane,
    );
}

#[cube(launch_unchecked, address_type = "dynamic")]
#[allow(clippy::too_many_arguments)]
fn attention_backward_dkdv_cmma_kernel<F: Float>(
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
    let g = item % h_kv;
    let blk = (item / h_kv) % n_blocks;
    let b = item / (h_kv * n_blocks);
    let j0 = blk * BLOCK;
    // This plane's first key, and the key row and query-column parity its lane works on.
    let jw = j0 + warp * 16;
    let r = lane / 2;
    let hcol = lane % 2;
    let j = jw + r;
    let key_ok = j < seq_k;
    let kv_base = (b * seq_k * h_kv + g) * HEAD_DIM;
    let kv_stride = h_kv * HEAD_DIM;
    let q_stride = h_q * HEAD_DIM;

    let mut sq = SharedMemory::<F>::new_aligned(comptime!(BLOCK * HPAD), 32usize);
    let mut sdo = SharedMemory::<F>::new_aligned(comptime!(BLOCK * HPAD), 32usize);
    let mut scratch = SharedMemory::<f32>::new_aligned(comptime!(WARPS * 16 * FPAD), 32usize);
    let mut ptile = SharedMemory::<F>::new_aligned(comptime!(WARPS * 16 * HPAD), 32usize);
    let mut s_lse = SharedMemory::<f32>::new(BLOCK);
    let mut s_delta = SharedMemory::<f32>::new(BLOCK);
    let f0 = warp * comptime!(16 * FPAD);
    let p0 = warp * comptime!(16 * HPAD);
    let hp = HPAD as u32;

    stage_rows::<F>(
        k, &mut ptile, p0, kv_base, kv_stride, jw, seq_k, lane, 32usize, 16usize,
    );
    sync_plane();
    let ka0 = load_a::<F>(&ptile.to_slice(), p0, hp);
    let ka1 = load_a::<F>(&ptile.to_slice(), p0 + 16, hp);
    let ka2 = load_a::<F>(&ptile.to_slice(), p0 + 32, hp);
    let ka3 = load_a::<F>(&ptile.to_slice(), p0 + 48, hp);
    sync_plane();
    stage_rows::<F>(
        v, &mut ptile, p0, kv_base, kv_stride, jw, seq_k, lane, 32usize, 16usize,
    );
    sync_plane();
    let va0 = load_a::<F>(&ptile.to_slice(), p0, hp);
    let va1 = load_a::<F>(&ptile.to_slice(), p0 + 16, hp);
    let va2 = load_a::<F>(&ptile.to_slice(), p0 + 32, hp);
    let va3 = load_a::<F>(&ptile.to_slice(), p0 + 48, hp);
    sync_plane();

    // Queries that may see the cube's keys (lo..hi) and the plane's (w_lo..w_hi).
    let lo = first_query(j0, q_offset, causal);
    let hi = query_end(min(j0 + BLOCK, seq_k) - 1, seq_q, q_offset, window, causal);
    let plane_on = jw < seq_k;
    let w_lo = first_query(jw, q_offset, causal);
    let w_hi = query_end(min(jw + 16, seq_k) - 1, seq_q, q_offset, window, causal);

    let dk0 = new_acc();
    let dk1 = new_acc();
    let dk2 = new_acc();
    let dk3 = new_acc();
    let dv0 = new_acc();
    let dv1 = new_acc();
    let dv2 = new_acc();
    let dv3 = new_acc();

    // One flat loop over (query head of the group, query tile).
    let t0 = lo / BLOCK * BLOCK;
    let mut n_tiles = 0;
    if hi > t0 {
        n_tiles = (hi - t0).div_ceil(BLOCK);
    }
    let mut it = 0;
    while it < group * n_tiles {
        let hh = g * group + it / n_tiles;
        let t = t0 + (it % n_tiles) * BLOCK;
        let q_head = (b * seq_q * h_q + hh) * HEAD_DIM;
        stage_rows::<F>(
            q, &mut sq, 0usize, q_head, q_stride, t, seq_q, tid, 128usize, BLOCK,
        );
        stage_rows::<F>(
            d_out, &mut sdo, 0usize, q_head, q_stride, t, seq_q, tid, 128usize, BLOCK,
        );
        if tid < BLOCK {
            let iq = t + tid;
            let mut a = 0.0f32;
            let mut d = 0.0f32;
            if iq < seq_q {
                let at = (b * seq_q + iq) * h_q + hh;
                a = lse[at];
                d = delta[at];
            }
            s_lse[tid] = a;
            s_delta[tid] = d;
        }
        sync_cube();
        if plane_on && t < w_hi && t + BLOCK > w_lo {
            // Sᵀ, then Pᵀ into the P tile (and kept for dSᵀ).
            products_to_scratch::<F>(&ka0, &ka1, &ka2, &ka3, &sq, &mut scratch, f0);
            sync_plane();
            let mut p = Array::<f32>::new(32usize);
            #[unroll]
            for c in 0..32usize {
                let col = 2 * c + hcol;
                let iq = t + col;
                let mut x = 0.0f32;
                if key_ok && iq < seq_q && visible(j, iq + q_offset, window, causal) {
                    x = f32::exp(scratch[f0 + r * FPAD + col] * scale - s_lse[col]);
                }
                p[c] = x;
                ptile[p0 + r * HPAD + col] = F::cast_from(x);
            }
            sync_plane();
            tile_times_rows::<F>(&ptile, p0, &sdo, &dv0, &dv1, &dv2, &dv3);
            // dPᵀ, then dSᵀ over the P tile.
            products_to_scratch::<F>(&va0, &va1, &va2, &va3, &sdo, &mut scratch, f0);
            sync_plane();
            #[unroll]
            for c in 0..32usize {
                let col = 2 * c + hcol;
                let ds = p[c] * (scratch[f0 + r * FPAD + col] - s_delta[col]);
                ptile[p0 + r * HPAD + col] = F::cast_from(ds);
            }
            sync_plane();
            tile_times_rows::<F>(&ptile, p0, &sq, &dk0, &dk1, &dk2, &dk3);
        }
        sync_cube();
        it += 1;
    }

    write_rows::<F>(
        &dk0,
        &dk1,
        &dk2,
        &dk3,
        &mut scratch,
        f0,
        dk,
        kv_base,
        kv_stride,
        jw,
        seq_k,
        scale,
        lane,
    );
    sync_plane();
    write_rows::<F>(
        &dv0,
        &dv1,
        &dv2,
        &dv3,
        &mut scratch,
        f0,
        dv,
        kv_base,
        kv_stride,
        jw,
        seq_k,
        1.0,
        lane,
    );
}

/// Pass 1 on tensor cores: `(dq, delta)`. Inputs contiguous and
/// [`super::forward_cmma::supported`].
#[allow(clippy::too_many_arguments)]
pub fn attention_backward_dq_cmma<R: CubeRuntime>(
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
    let n_blocks = shape.seq_q.div_ceil(BLOCK);
    let n_items = shape.batch * n_blocks * shape.h_q;
    if n_items == 0 {
        return (dq, delta);
    }
    let address = address_type_of(&[&q, &k, &v, &d_out]);
    let dtype = q.dtype.into();
    unsafe {
        attention_backward_dq_cmma_kernel::launch_unchecked::<R>(
            &client,
            cube_count_for(&client, n_items),
            CubeDim::new_2d(32, WARPS as u32),
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
            dtype,
        )
    };
    (dq, delta)
}

/// Pass 2 on tensor cores: `(dk, dv)`. Inputs contiguous and
/// [`super::forward_cmma::supported`].
#[allow(clippy::too_many_arguments)]
pub fn attention_backward_dkdv_cmma<R: CubeRuntime>(
    q: CubeTensor<R>,
    k: CubeTensor<R>,
    v: CubeTensor<R>,
    lse: CubeTensor<R>,
    delta: CubeTensor<R>,
    d_out: CubeTensor<R>,
    shape: AttentionShape,
) -> (CubeTensor<R>, CubeTensor<R>) {
    let client = q.client.clone();
    let n_blocks = shape.seq_k.div_ceil(BLOCK);
    let n_items = shape.batch * n_blocks * shape.h_kv;
    if n_items == 0 {
        return (
            super::zeros_like_shape(&k, shape.kv_shape(), k.dtype),
            super::zeros_like_shape(&k, shape.kv_shape(), k.dtype),
        );
    }
    let dk = super::empty_like_shape(&k, shape.kv_shape(), k.dtype);
    let dv = super::empty_like_shape(&k, shape.kv_shape(), k.dtype);
    let address = address_type_of(&[&q, &k, &v, &d_out]);
    let dtype = q.dtype.into();
    unsafe {
        attention_backward_dkdv_cmma_kernel::launch_unchecked::<R>(
            &client,
            cube_count_for(&client, n_items),
            CubeDim::new_2d(32, WARPS as u32),
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
            dtype,
        )
    };
    (dk, dv)
}
