//! Attention forward: online softmax over key tiles, the output and the row log-sum-exp.
//!
//! Shapes: see the module docs of [`super`].
//!
//! Grid: one cube per `(batch, block of ROWS queries, query head)`, one thread per query row.
//! A thread keeps its scaled query row, its `D` output accumulators and the running max and
//! sum in registers; the cube stages each tile of `T` keys, then the same tile of values, in
//! shared memory, where every thread reads the same row at once (a broadcast, no bank
//! conflicts). Key tiles no query of the block may see are never loaded: causal blocks stop at
//! their last query's position, windowed blocks start `w` keys before their first, so a
//! windowed call costs `O(L · w)`.
//!
//! This is the portable scalar path (wgpu, lavapipe, any CUDA card): one FMA per score term,
//! no tensor cores.

use cubecl::prelude::*;

use super::{first_key, key_end, load_rows, visible, AttentionShape, ROWS};
use crate::launch::{address_type_of, cube_count_for};
use burn_cubecl::{tensor::CubeTensor, CubeRuntime};

/// Below this a score marks a hidden key.
const HIDDEN: f32 = -1.0e38;

#[cube(launch_unchecked, address_type = "dynamic")]
#[allow(clippy::too_many_arguments)]
fn attention_forward_kernel<F: Float>(
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
    let q_base = ((b * seq_q + i) * h_q + h) * head_dim;
    let kv_base = (b * seq_k * h_kv + g) * head_dim;
    let kv_stride = h_kv * head_dim;

    let mut qr = Array::<f32>::new(head_dim);
    let mut acc = Array::<f32>::new(head_dim);
    #[unroll(unroll)]
    for e in 0..head_dim {
        qr[e] = 0.0;
        acc[e] = 0.0;
    }
    if active {
        #[unroll(unroll)]
        for e in 0..head_dim {
            qr[e] = f32::cast_from(q[q_base + e]) * scale;
        }
    }
    let mut scores = Array::<f32>::new(tile);
    let mut sm = SharedMemory::<f32>::new(comptime!(tile * head_dim));

    // Keys the block's queries may see: lo..hi.
    let lo = first_key(i0, q_offset, window, causal);
    let hi = key_end(min(i0 + rows, seq_q), seq_k, q_offset, causal);

    let mut m = f32::new(-3.0e38);
    let mut l = 0.0f32;
    let mut t = lo / tile * tile;
    while t < hi {
        load_rows::<F>(
            k, &mut sm, kv_base, kv_stride, t, seq_k, tid, tile, head_dim,
        );
        sync_cube();
        let mut tile_max = f32::new(-3.0e38);
        if active {
            for r in 0..tile {
                let j = t + r;
                let mut s = f32::new(-3.0e38);
                if j < seq_k && visible(j, pos, window, causal) {
                    let mut dot = 0.0f32;
                    #[unroll(unroll)]
                    for e in 0..head_dim {
                        dot += qr[e] * sm[r * head_dim + e];
                    }
                    s = dot;
                }
                scores[r] = s;
                tile_max = max(tile_max, s);
            }
        }
        sync_cube();
        load_rows::<F>(
            v, &mut sm, kv_base, kv_stride, t, seq_k, tid, tile, head_dim,
        );
        sync_cube();
        if active && tile_max > HIDDEN {
            // Rescale what was summed under the old max once per tile, not once per key.
            let m_new = max(m, tile_max);
            let alpha = f32::exp(m - m_new);
            l *= alpha;
            #[unroll(unroll)]
            for e in 0..head_dim {
                acc[e] *= alpha;
            }
            for r in 0..tile {
                let s = scores[r];
                if s > HIDDEN {
                    let p = f32::exp(s - m_new);
                    l += p;
                    #[unroll(unroll)]
                    for e in 0..head_dim {
                        acc[e] += p * sm[r * head_dim + e];
                    }
                }
            }
            m = m_new;
        }
        sync_cube();
        t += tile;
    }

    if active {
        let row = (b * seq_q + i) * h_q + h;
        // A row that sees no key (an empty window) gets zeros and lse 0; the backward skips it.
        let mut inv = 0.0f32;
        let mut row_lse = 0.0f32;
        if l > 0.0 {
            inv = 1.0 / l;
            row_lse = m + f32::ln(l);
        }
        #[unroll(unroll)]
        for e in 0..head_dim {
            out[q_base + e] = F::cast_from(acc[e] * inv);
        }
        lse[row] = row_lse;
    }
}

/// Launches the forward kernel; returns `(out, lse)`. Inputs must be contiguous.
pub fn attention_forward<R: CubeRuntime>(
    q: CubeTensor<R>,
    k: CubeTensor<R>,
    v: CubeTensor<R>,
    shape: AttentionShape,
) -> (CubeTensor<R>, CubeTensor<R>) {
    let client = q.client.clone();
    let out = super::empty_like_shape(&q, shape.q_shape(), q.dtype);
    let lse = super::empty_like_shape(&q, shape.row_shape(), burn::tensor::DType::F32);
    let n_blocks = shape.seq_q.div_ceil(ROWS as usize);
    let n_items = shape.batch * n_blocks * shape.h_q;
    if n_items == 0 {
        return (out, lse);
    }
    let address = address_type_of(&[&q, &k, &v, &out]);
    let dtype = q.dtype.into();
    unsafe {
        attention_forward_kernel::launch_unchecked::<R>(
            &client,
            cube_count_for(&client, n_items),
            CubeDim::new_1d(ROWS),
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
            shape.head_dim,
            shape.tile(),
            super::unroll_rows(&client),
            dtype,
        )
    };
    (out, lse)
}
