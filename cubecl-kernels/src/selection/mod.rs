//! Fused chunk selection (spec §3): scores every visible chunk's landmark against each token's
//! retrieval query on the fly, keeps the best `K` in registers, and returns them sorted by
//! recency. The dense `L × C` score matrix is never materialised.
//!
//! Shapes: `queries [B, L, h, d_r]`, `landmarks [B, C, h, d_r]` (any float dtype, f32
//! arithmetic) → `indices [B, L, h, K]` (the backend's int type), most recent chunk first, `-1`
//! in slots past the visible count.
//!
//! Rules (the reference's, exactly): token `t` (absolute position `q_start + t`) sees chunk `c`
//! iff `q_start + t ≥ (c + 1)·S` and `c < C`; validity comes from that, never from a score, so
//! a `-inf` or NaN score cannot admit an invisible chunk (it is simply never inserted). Chunks
//! are visited in increasing id and a new score must be strictly greater to displace one, so
//! ties go to the lower chunk id.
//!
//! Grid: one cube per `(batch, KV head, block of TOKENS tokens)`, one thread per token. Query
//! and landmark tiles of `DR_TILE` dims are staged in shared memory (rows padded by one element),
//! so each landmark tile is read once for the block's tokens; each thread holds `CHUNK_TILE`
//! running scores and its top-K in registers.

use cubecl::prelude::*;

use crate::launch::{address_type_of, cube_count_for};
use burn_cubecl::{tensor::CubeTensor, CubeRuntime};

const TOKENS: u32 = 64;
const CHUNK_TILE: usize = 32;
const DR_TILE: usize = 32;

#[cube(launch_unchecked, address_type = "dynamic")]
#[allow(clippy::too_many_arguments)]
fn select_kernel<F: Float, I: Int>(
    queries: &Tensor<F>,
    landmarks: &Tensor<F>,
    indices: &mut Tensor<I>,
    seq: usize,
    n_chunks: usize,
    n_blocks: usize,
    n_cubes: usize,
    q_start: usize,
    scale: f32,
    #[comptime] heads: usize,
    #[comptime] dim: usize,
    #[comptime] top_k: usize,
    #[comptime] chunk: usize,
    #[define(F, I)] _dtypes: [StorageType; 2],
) {
    let cube = CUBE_POS;
    if cube >= n_cubes {
        terminate!();
    }
    let tokens = comptime!(TOKENS as usize);
    let tid = UNIT_POS as usize;
    let blk = cube % n_blocks;
    let bg = cube / n_blocks;
    let g = bg % heads;
    let b = bg / heads;
    let t = blk * tokens + tid;
    let in_range = t < seq;
    // Chunks this token may select; the block's last token bounds the loop for all.
    let mut visible = 0usize;
    if in_range {
        visible = min((q_start + t) / chunk, n_chunks);
    }
    let last_t = min(blk * tokens + tokens, seq) - 1;
    let block_visible = min((q_start + last_t) / chunk, n_chunks);

    let q_pad = comptime!(DR_TILE + 1);
    let mut q_tile = SharedMemory::<f32>::new(comptime!(TOKENS as usize * (DR_TILE + 1)));
    let mut l_tile = SharedMemory::<f32>::new(comptime!(CHUNK_TILE * (DR_TILE + 1)));

    let mut top_v = Array::<f32>::new(top_k);
    let mut top_i = Array::<i32>::new(top_k);
    #[unroll]
    for m in 0..top_k {
        top_v[m] = -3.0e38f32;
        top_i[m] = -1i32;
    }
    let mut scores = Array::<f32>::new(CHUNK_TILE);

    let q_row = ((b * seq) * heads + g) * dim; // + t·heads·dim
    let l_row = ((b * n_chunks) * heads + g) * dim; // + c·heads·dim
    let mut c0 = 0usize;
    while c0 < block_visible {
        #[unroll]
        for m in 0..CHUNK_TILE {
            scores[m] = 0.0;
        }
        let mut d0 = 0usize;
        while d0 < dim {
            // Stage the block's queries and the tile's landmarks for dims d0..d0+DR_TILE.
            let mut i = tid;
            while i < comptime!(TOKENS as usize * DR_TILE) {
                let r = i / comptime!(DR_TILE);
                let d = i % comptime!(DR_TILE);
                let tt = blk * tokens + r;
                let mut x = 0.0f32;
                if tt < seq && d0 + d < dim {
                    x = f32::cast_from(queries[q_row + tt * heads * dim + d0 + d]);
                }
                q_tile[r * q_pad + d] = x;
                i += tokens;
            }
            let mut i = tid;
            while i < comptime!(CHUNK_TILE * DR_TILE) {
                let r = i / comptime!(DR_TILE);
                let d = i % comptime!(DR_TILE);
                let c = c0 + r;
                let mut x = 0.0f32;
                if c < n_chunks && d0 + d < dim {
                    x = f32::cast_from(landmarks[l_row + c * heads * dim + d0 + d]);
                }
                l_tile[r * q_pad + d] = x;
                i += tokens;
            }
            sync_cube();
            for d in 0..comptime!(DR_TILE) {
                let x = q_tile[tid * q_pad + d];
                #[unroll]
                for m in 0..CHUNK_TILE {
                    scores[m] += x * l_tile[m * q_pad + d];
                }
            }
            sync_cube();
            d0 += comptime!(DR_TILE);
        }
        // Insert the tile's visible chunks in increasing id (strictly greater displaces).
        #[unroll]
        for m in 0..CHUNK_TILE {
            let c = c0 + m;
            let s = scores[m] * scale;
            if c < visible && s > top_v[comptime!(top_k - 1)] {
                top_v[comptime!(top_k - 1)] = s;
                top_i[comptime!(top_k - 1)] = c as i32;
                #[unroll]
                for u in 0..comptime!(top_k - 1) {
                    let hi = comptime!(top_k - 2 - u);
                    if top_v[hi + 1] > top_v[hi] {
                        let tv = top_v[hi];
                        top_v[hi] = top_v[hi + 1];
                        top_v[hi + 1] = tv;
                        let ti = top_i[hi];
                        top_i[hi] = top_i[hi + 1];
                        top_i[hi + 1] = ti;
                    }
                }
            }
        }
        c0 += comptime!(CHUNK_TILE);
    }

    // Recency: chunk ids descending; -1 (never filled) sorts last.
    #[unroll]
    for pass in 0..top_k {
        #[unroll]
        for u in 0..comptime!(top_k - 1) {
            let _ = pass;
            if top_i[u + 1] > top_i[u] {
                let ti = top_i[u];
                top_i[u] = top_i[u + 1];
                top_i[u + 1] = ti;
            }
        }
    }
    if in_range {
        let out = ((b * seq + t) * heads + g) * top_k;
        #[unroll]
        for m in 0..top_k {
            indices[out + m] = I::cast_from(top_i[m]);
        }
    }
}

/// Launches the selection kernel. `queries` and `landmarks` must be contiguous; `int_dtype`
/// is the backend's int element type.
pub fn select_chunks<R: CubeRuntime>(
    queries: CubeTensor<R>,
    landmarks: CubeTensor<R>,
    chunk: usize,
    top_k: usize,
    q_start: usize,
    int_dtype: burn::tensor::DType,
) -> CubeTensor<R> {
    let [batch, seq, heads, dim] = queries.meta.shape().dims::<4>();
    let n_chunks = landmarks.meta.shape()[1];
    let client = queries.client.clone();
    // Contiguous: the kernel writes linearly, and CUDA may pitch a plain allocation's rows.
    let indices = crate::launch::empty_like_shape(
        &queries,
        burn::tensor::Shape::new([batch, seq, heads, top_k]),
        int_dtype,
    );
    let n_blocks = seq.div_ceil(TOKENS as usize);
    let n_cubes = batch * heads * n_blocks;
    if n_cubes == 0 || top_k == 0 {
        return indices;
    }
    let dtypes = [queries.dtype.into(), int_dtype.into()];
    let address = address_type_of(&[&queries, &landmarks, &indices]);
    unsafe {
        select_kernel::launch_unchecked::<R>(
            &client,
            cube_count_for(&client, n_cubes),
            CubeDim::new_1d(TOKENS),
            address,
            queries.into_tensor_arg(),
            landmarks.into_tensor_arg(),
            indices.clone().into_tensor_arg(),
            seq,
            n_chunks,
            n_blocks,
            n_cubes,
            q_start,
            (dim as f32).sqrt().recip(),
            heads,
            dim,
            top_k,
            chunk,
            dtypes,
        )
    };
    indices
}
