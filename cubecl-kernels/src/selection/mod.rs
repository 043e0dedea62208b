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
//! Grid: one cube per `(batch, KV head, block of TOKENS tokens, chunk split)`, one thread per
//! token. Query and landmark tiles of `DR_TILE` dims are staged in shared memory (rows padded by
//! one element), so each landmark tile is read once for the block's tokens; each thread holds
//! `CHUNK_TILE` running scores and its top-K in registers.
//!
//! Chunk splits: a stream's later calls select for a few thousand tokens among millions of
//! stored chunks, which one cube per token block would walk alone (64 cubes on a GPU of 132
//! SMs, each looping over every chunk). There the chunk range is cut into splits of whole
//! `CHUNK_TILE` tiles, each cube keeps the top-K of its split (scores and ids, partials
//! `[B, L, h, splits, K]`), and [`merge_kernel`] takes each token's top-K of its splits'
//! candidates. Both keep the single pass's order, score descending then chunk id ascending (a
//! total order over distinct ids), so the split result is exactly the unsplit one.

use cubecl::prelude::*;

use crate::launch::{address_type_of, cube_count_for};
use burn_cubecl::{kernel::into_contiguous, tensor::CubeTensor, CubeRuntime};

const TOKENS: u32 = 64;
const CHUNK_TILE: usize = 32;
const DR_TILE: usize = 32;
/// Cubes a split launch aims for: several waves on any current GPU.
const TARGET_CUBES: usize = 4096;
/// The fewest chunk tiles a split covers, so a cube's scoring outweighs its share of the merge.
const MIN_TILES_PER_SPLIT: usize = 8;
/// Threads per cube of the merge.
const MERGE_THREADS: u32 = 128;
/// Score of an empty top-K slot: a chunk enters only with a strictly greater score.
const EMPTY_SCORE: f32 = -3.0e38;

#[cube(launch_unchecked, address_type = "dynamic")]
#[allow(clippy::too_many_arguments)]
fn select_kernel<F: Float, I: Int>(
    queries: &Tensor<F>,
    landmarks: &Tensor<F>,
    indices: &mut Tensor<I>,
    part_scores: &mut Tensor<f32>,
    part_ids: &mut Tensor<i32>,
    seq: usize,
    n_chunks: usize,
    n_blocks: usize,
    n_splits: usize,
    split_chunks: usize,
    n_cubes: usize,
    q_start: usize,
    scale: f32,
    #[comptime] heads: usize,
    #[comptime] dim: usize,
    #[comptime] top_k: usize,
    #[comptime] chunk: usize,
    #[comptime] partial: bool,
    #[define(F, I)] _dtypes: [StorageType; 2],
) {
    let cube = CUBE_POS;
    if cube >= n_cubes {
        terminate!();
    }
    let tokens = comptime!(TOKENS as usize);
    let tid = UNIT_POS as usize;
    let split = cube % n_splits;
    let blk = (cube / n_splits) % n_blocks;
    let bg = cube / n_splits / n_blocks;
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
    // This cube's chunks: whole tiles, so a tile never crosses into the next split.
    let split_begin = split * split_chunks;
    let split_end = min(split_begin + split_chunks, block_visible);

    let q_pad = comptime!(DR_TILE + 1);
    let mut q_tile = SharedMemory::<f32>::new(comptime!(TOKENS as usize * (DR_TILE + 1)));
    let mut l_tile = SharedMemory::<f32>::new(comptime!(CHUNK_TILE * (DR_TILE + 1)));

    let mut top_v = Array::<f32>::new(top_k);
    let mut top_i = Array::<i32>::new(top_k);
    #[unroll]
    for m in 0..top_k {
        top_v[m] = EMPTY_SCORE;
        top_i[m] = -1i32;
    }
    let mut scores = Array::<f32>::new(CHUNK_TILE);

    let q_row = ((b * seq) * heads + g) * dim; // + t·heads·dim
    let l_row = ((b * n_chunks) * heads + g) * dim; // + c·heads·dim
    let mut c0 = split_begin;
    while c0 < split_end {
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
        // The tile's visible chunks, in increasing id.
        #[unroll]
        for m in 0..CHUNK_TILE {
            let c = c0 + m;
            if c < visible {
                insert_top_k(&mut top_v, &mut top_i, scores[m] * scale, c as i32, top_k);
            }
        }
        c0 += comptime!(CHUNK_TILE);
    }

    if in_range {
        if comptime!(partial) {
            // Best first, as kept: the merge reads them in that order.
            let out = (((b * seq + t) * heads + g) * n_splits + split) * top_k;
            #[unroll]
            for m in 0..top_k {
                part_scores[out + m] = top_v[m];
                part_ids[out + m] = top_i[m];
            }
        } else {
            write_by_recency::<I>(
                &mut top_i,
                indices,
                ((b * seq + t) * heads + g) * top_k,
                top_k,
            );
        }
    }
}

/// Puts chunk `c` with score `s` into the running top-K (best first) if it comes before the
/// K-th in the order score descending, then chunk id ascending. Visiting chunks in increasing
/// id, that is "strictly greater displaces" (ties to the lower id); the merge's candidates come
/// from several splits, and the id rule keeps the order total there too. An empty slot
/// ([`EMPTY_SCORE`], id -1) is displaced by any score above `EMPTY_SCORE`; NaN displaces
/// nothing.
#[cube]
fn insert_top_k(
    top_v: &mut Array<f32>,
    top_i: &mut Array<i32>,
    s: f32,
    c: i32,
    #[comptime] top_k: usize,
) {
    let last = comptime!(top_k - 1);
    if s > top_v[last] || (s == top_v[last] && c < top_i[last]) {
        top_v[last] = s;
        top_i[last] = c;
        #[unroll]
        for u in 0..last {
            let a = comptime!(top_k - 2 - u);
            let b = a + 1;
            if top_v[b] > top_v[a] || (top_v[b] == top_v[a] && top_i[b] < top_i[a]) {
                let tv = top_v[a];
                top_v[a] = top_v[b];
                top_v[b] = tv;
                let ti = top_i[a];
                top_i[a] = top_i[b];
                top_i[b] = ti;
            }
        }
    }
}

/// Sorts `top_i` by recency (chunk ids descending; `-1`, never filled, last) and writes it at
/// `indices[out..out + top_k]`.
#[cube]
fn write_by_recency<I: Int>(
    top_i: &mut Array<i32>,
    indices: &mut Tensor<I>,
    out: usize,
    #[comptime] top_k: usize,
) {
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
    #[unroll]
    for m in 0..top_k {
        indices[out + m] = I::cast_from(top_i[m]);
    }
}

/// Each `(batch, token, KV head)` row's top-K of its splits' candidates (one thread a row):
/// `part_scores, part_ids [rows, n_splits, K]` → `indices [rows, K]` by recency. A candidate
/// displaces the K-th if its score is greater, or equal with a lower chunk id: the single
/// pass's order, in which the splits' candidates are distinct.
#[cube(launch_unchecked, address_type = "dynamic")]
fn merge_kernel<I: Int>(
    part_scores: &Tensor<f32>,
    part_ids: &Tensor<i32>,
    indices: &mut Tensor<I>,
    n_rows: usize,
    n_splits: usize,
    #[comptime] top_k: usize,
    #[define(I)] _dtype: StorageType,
) {
    let row = CUBE_POS * comptime!(MERGE_THREADS as usize) + UNIT_POS as usize;
    if row >= n_rows {
        terminate!();
    }
    let mut top_v = Array::<f32>::new(top_k);
    let mut top_i = Array::<i32>::new(top_k);
    #[unroll]
    for m in 0..top_k {
        top_v[m] = EMPTY_SCORE;
        top_i[m] = -1i32;
    }
    for p in 0..n_splits * top_k {
        let at = row * n_splits * top_k + p;
        let c = part_ids[at];
        if c >= 0 {
            insert_top_k(&mut top_v, &mut top_i, part_scores[at], c, top_k);
        }
    }
    write_by_recency::<I>(&mut top_i, indices, row * top_k, top_k);
}

/// Launches the selection, with as many chunk splits as `default_splits` picks;
/// `int_dtype` is the backend's int element type.
pub fn select_chunks<R: CubeRuntime>(
    queries: CubeTensor<R>,
    landmarks: CubeTensor<R>,
    chunk: usize,
    top_k: usize,
    q_start: usize,
    int_dtype: burn::tensor::DType,
) -> CubeTensor<R> {
    select_chunks_split(queries, landmarks, chunk, top_k, q_start, int_dtype, None)
}

/// Chunk splits for a launch of `token_cubes` cubes (one per batch, KV head and token block)
/// over `tiles` tiles of visible chunks: enough for about [`TARGET_CUBES`] cubes, each split
/// at least [`MIN_TILES_PER_SPLIT`] tiles. Training shapes (many token blocks) get 1.
fn default_splits(token_cubes: usize, tiles: usize) -> usize {
    let most = (tiles / MIN_TILES_PER_SPLIT).max(1);
    (TARGET_CUBES / token_cubes.max(1)).clamp(1, most)
}

/// [`select_chunks`] with the chunk range cut into `splits` parts of whole tiles (fewer where
/// the visible chunks fill fewer tiles; `None`: as many as `default_splits` picks); the
/// result does not depend on `splits`.
pub fn select_chunks_split<R: CubeRuntime>(
    queries: CubeTensor<R>,
    landmarks: CubeTensor<R>,
    chunk: usize,
    top_k: usize,
    q_start: usize,
    int_dtype: burn::tensor::DType,
    splits: Option<usize>,
) -> CubeTensor<R> {
    use burn::tensor::{DType, Shape};
    // The kernel indexes both linearly; CUDA may hand out row-pitched layouts (a `d_r` of 24
    // f32 is not a multiple of the row alignment), which it would misread.
    let (queries, landmarks) = (into_contiguous(queries), into_contiguous(landmarks));
    let [batch, seq, heads, dim] = queries.meta.shape().dims::<4>();
    let n_chunks = landmarks.meta.shape()[1];
    let client = queries.client.clone();
    // Contiguous: the kernel writes linearly, and CUDA may pitch a plain allocation's rows.
    let indices = crate::launch::empty_like_shape(
        &queries,
        Shape::new([batch, seq, heads, top_k]),
        int_dtype,
    );
    let n_blocks = seq.div_ceil(TOKENS as usize);
    if batch * heads * n_blocks == 0 || top_k == 0 {
        return indices;
    }
    // Whole tiles per split, over the chunks the last token can see.
    let max_visible = ((q_start + seq - 1) / chunk).min(n_chunks);
    let tiles = max_visible.div_ceil(CHUNK_TILE).max(1);
    let splits = splits.unwrap_or_else(|| default_splits(batch * heads * n_blocks, tiles));
    let split_chunks = tiles.div_ceil(splits.clamp(1, tiles)) * CHUNK_TILE;
    let n_splits = max_visible.div_ceil(split_chunks).max(1);
    let partial = n_splits > 1;
    // One-element stand-ins where the single pass writes the indices directly.
    let part_shape = match partial {
        true => Shape::new([batch * seq * heads, n_splits, top_k]),
        false => Shape::new([1]),
    };
    let part_scores = crate::launch::empty_like_shape(&queries, part_shape.clone(), DType::F32);
    let part_ids = crate::launch::empty_like_shape(&queries, part_shape, DType::I32);
    let n_cubes = batch * heads * n_blocks * n_splits;
    let address = address_type_of(&[&queries, &landmarks, &indices, &part_scores]);
    unsafe {
        select_kernel::launch_unchecked::<R>(
            &client,
            cube_count_for(&client, n_cubes),
            CubeDim::new_1d(TOKENS),
            address,
            queries.clone().into_tensor_arg(),
            landmarks.into_tensor_arg(),
            indices.clone().into_tensor_arg(),
            part_scores.clone().into_tensor_arg(),
            part_ids.clone().into_tensor_arg(),
            seq,
            n_chunks,
            n_blocks,
            n_splits,
            split_chunks,
            n_cubes,
            q_start,
            (dim as f32).sqrt().recip(),
            heads,
            dim,
            top_k,
            chunk,
            partial,
            [queries.dtype.into(), int_dtype.into()],
        )
    };
    if partial {
        let n_rows = batch * seq * heads;
        unsafe {
            merge_kernel::launch_unchecked::<R>(
                &client,
                cube_count_for(&client, n_rows.div_ceil(MERGE_THREADS as usize)),
                CubeDim::new_1d(MERGE_THREADS),
                address,
                part_scores.into_tensor_arg(),
                part_ids.into_tensor_arg(),
                indices.clone().into_tensor_arg(),
                n_rows,
                n_splits,
                top_k,
                int_dtype.into(),
            )
        };
    }
    indices
}
