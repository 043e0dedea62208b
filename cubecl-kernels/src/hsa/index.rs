//! The inverted index of a selection (spec §5, backward pass 2): for every chunk, the
//! `(token, slot)` entries that selected it, built on the device in `O(L·K)` time and memory.
//!
//! Entries are the flat slots `e = ((b·L + t)·h_kv + g)·K + k`. Each valid slot gets the key
//! `(b·h_kv + g)·C + c`; invalid slots get the sentinel `n_keys = B·h_kv·C` so they sort last.
//! A stable LSD radix sort with one bit a pass orders the entries by key, keeping entry order
//! (token-major) inside each key, so the lists and every sum over them are deterministic; CSR
//! offsets come from a binary search of the sorted keys. No atomics anywhere.
//!
//! One pass is three launches over tiles of [`TILE`] entries: count the zeros of each tile, an
//! exclusive scan of those counts (one cube), and a stable scatter (zeros first, then ones) with
//! ranks from a block-wide scan. Keys need `⌈log2(n_keys + 1)⌉` bits: 13 passes at 8 × 64K
//! tokens, 17 at 4M.
//!
//! Shapes: `indices [B, L, h_kv, K]` in, `entries [N]` (u32 entry ids sorted by key) and
//! `offsets [n_keys + 1]` (u32) out, `N = B·L·h_kv·K`.

use cubecl::prelude::*;

use super::HsaShape;
use crate::launch::cube_count_for;
use burn_cubecl::{ops::numeric::empty_device_dtype, tensor::CubeTensor, CubeRuntime};

/// Threads of the index kernels.
const THREADS: u32 = 256;
/// Entries per thread in a tile.
const PER_THREAD: usize = 4;
/// Entries per tile (cube) of the radix passes.
pub const TILE: usize = THREADS as usize * PER_THREAD;

#[cube(launch_unchecked)]
fn keys_kernel<I: Int>(
    indices: &Tensor<I>,
    keys: &mut Array<u32>,
    entries: &mut Array<u32>,
    n_entries: usize,
    seq: usize,
    n_chunks: usize,
    n_keys: usize,
    #[comptime] h_kv: usize,
    #[comptime] top_k: usize,
    #[define(I)] _dtype: StorageType,
) {
    let e = CUBE_POS * comptime!(THREADS as usize) + UNIT_POS as usize;
    if e >= n_entries {
        terminate!();
    }
    let item = e / top_k;
    let g = item % h_kv;
    let b = item / (h_kv * seq);
    let c = i32::cast_from(indices[e]);
    let mut key = n_keys;
    if c >= 0 && (c as usize) < n_chunks {
        key = (b * h_kv + g) * n_chunks + c as usize;
    }
    keys[e] = key as u32;
    entries[e] = e as u32;
}

/// Exclusive scan of `THREADS` values in shared memory (Hillis–Steele); returns this thread's
/// exclusive prefix and leaves the total in `sums[THREADS - 1]`.
#[cube]
fn block_exclusive_scan(sums: &mut SharedMemory<u32>, value: u32, tid: usize) -> u32 {
    let n = comptime!(THREADS as usize);
    sums[tid] = value;
    sync_cube();
    let mut offset = 1usize;
    while offset < n {
        let mut add = 0u32;
        if tid >= offset {
            add = sums[tid - offset];
        }
        sync_cube();
        sums[tid] += add;
        sync_cube();
        offset *= 2;
    }
    sums[tid] - value
}

#[cube(launch_unchecked)]
fn count_zeros_kernel(
    keys: &Array<u32>,
    zeros: &mut Array<u32>,
    n_entries: usize,
    n_tiles: usize,
    bit: u32,
) {
    let tile = CUBE_POS;
    if tile >= n_tiles {
        terminate!();
    }
    let tid = UNIT_POS as usize;
    let mut local = 0u32;
    #[unroll]
    for m in 0..PER_THREAD {
        let e = tile * comptime!(TILE) + tid * comptime!(PER_THREAD) + m;
        if e < n_entries && ((keys[e] >> bit) & 1) == 0 {
            local += 1;
        }
    }
    let mut sums = SharedMemory::<u32>::new(comptime!(THREADS as usize));
    let _prefix = block_exclusive_scan(&mut sums, local, tid);
    if tid == 0 {
        zeros[tile] = sums[comptime!(THREADS as usize - 1)];
    }
}

/// One cube: `before[i] = Σ_{j<i} zeros[j]`, and `before[n_tiles]` = the total.
#[cube(launch_unchecked)]
fn scan_tiles_kernel(zeros: &Array<u32>, before: &mut Array<u32>, n_tiles: usize) {
    let tid = UNIT_POS as usize;
    let n = comptime!(THREADS as usize);
    let mut sums = SharedMemory::<u32>::new(comptime!(THREADS as usize));
    let mut carry = 0u32;
    let mut start = 0usize;
    while start < n_tiles {
        let i = start + tid;
        let mut value = 0u32;
        if i < n_tiles {
            value = zeros[i];
        }
        let prefix = block_exclusive_scan(&mut sums, value, tid);
        if i < n_tiles {
            before[i] = carry + prefix;
        }
        let total = sums[n - 1];
        sync_cube();
        carry += total;
        start += n;
    }
    if tid == 0 {
        before[n_tiles] = carry;
    }
}

#[cube(launch_unchecked)]
fn scatter_kernel(
    keys: &Array<u32>,
    entries: &Array<u32>,
    before: &Array<u32>,
    keys_out: &mut Array<u32>,
    entries_out: &mut Array<u32>,
    n_entries: usize,
    n_tiles: usize,
    bit: u32,
) {
    let tile = CUBE_POS;
    if tile >= n_tiles {
        terminate!();
    }
    let tid = UNIT_POS as usize;
    let base = tile * comptime!(TILE) + tid * comptime!(PER_THREAD);
    let mut local = 0u32;
    #[unroll]
    for m in 0..PER_THREAD {
        let e = base + m;
        if e < n_entries && ((keys[e] >> bit) & 1) == 0 {
            local += 1;
        }
    }
    let mut sums = SharedMemory::<u32>::new(comptime!(THREADS as usize));
    let mut zero_rank = block_exclusive_scan(&mut sums, local, tid);
    let total_zeros = before[n_tiles];
    let zeros_before_tile = before[tile];
    let ones_before_tile = (tile * comptime!(TILE)) as u32 - zeros_before_tile;
    let mut one_rank = (tid * comptime!(PER_THREAD)) as u32 - zero_rank;
    #[unroll]
    for m in 0..PER_THREAD {
        let e = base + m;
        if e < n_entries {
            let key = keys[e];
            let is_zero = ((key >> bit) & 1) == 0;
            let pos = select(
                is_zero,
                zeros_before_tile + zero_rank,
                total_zeros + ones_before_tile + one_rank,
            );
            if is_zero {
                zero_rank += 1;
            } else {
                one_rank += 1;
            }
            keys_out[pos as usize] = key;
            entries_out[pos as usize] = entries[e];
        }
    }
}

/// `offsets[kk]` = the first position whose key is `≥ kk` (binary search), for `kk ≤ n_keys`.
#[cube(launch_unchecked)]
fn offsets_kernel(keys: &Array<u32>, offsets: &mut Array<u32>, n_entries: usize, n_keys: usize) {
    let kk = CUBE_POS * comptime!(THREADS as usize) + UNIT_POS as usize;
    if kk > n_keys {
        terminate!();
    }
    let target = kk as u32;
    let mut lo = 0usize;
    let mut hi = n_entries;
    while lo < hi {
        let mid = (lo + hi) / 2;
        if keys[mid] < target {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    offsets[kk] = lo as u32;
}

/// The inverted index of a selection.
pub struct InvertedIndex<R: CubeRuntime> {
    /// `[N]` entry ids `((b·L + t)·h_kv + g)·K + k`, grouped by chunk key, token-major inside.
    pub entries: CubeTensor<R>,
    /// `[B·h_kv·C + 1]` CSR offsets into `entries`.
    pub offsets: CubeTensor<R>,
}

fn u32_buffer<R: CubeRuntime>(like: &CubeTensor<R>, len: usize) -> CubeTensor<R> {
    empty_device_dtype(
        like.client.clone(),
        like.device.clone(),
        burn::tensor::Shape::new([len.max(1)]),
        burn::tensor::DType::U32,
    )
}

/// Builds the index on the device. `indices` must be contiguous.
pub fn inverted_index<R: CubeRuntime>(indices: CubeTensor<R>, shape: HsaShape) -> InvertedIndex<R> {
    let client = indices.client.clone();
    let n_entries = shape.batch * shape.seq * shape.h_kv * shape.top_k;
    assert!(
        n_entries < u32::MAX as usize,
        "HSA inverted index: {n_entries} slots exceed the u32 entry ids"
    );
    let n_keys = shape.batch * shape.h_kv * shape.n_chunks();
    let offsets = u32_buffer(&indices, n_keys + 1);
    let mut keys = u32_buffer(&indices, n_entries);
    let mut entries = u32_buffer(&indices, n_entries);
    if n_entries == 0 {
        return InvertedIndex { entries, offsets };
    }
    let idx_dtype = indices.dtype;
    unsafe {
        keys_kernel::launch_unchecked::<R>(
            &client,
            cube_count_for(&client, n_entries.div_ceil(THREADS as usize)),
            CubeDim::new_1d(THREADS),
            indices.into_tensor_arg(),
            keys.clone().into_array_arg(),
            entries.clone().into_array_arg(),
            n_entries,
            shape.seq,
            shape.n_chunks(),
            n_keys,
            shape.h_kv,
            shape.top_k,
            idx_dtype.into(),
        )
    };

    let bits = usize::BITS - n_keys.leading_zeros(); // enough for the sentinel n_keys
    let n_tiles = n_entries.div_ceil(TILE);
    let zeros = u32_buffer(&keys, n_tiles);
    let before = u32_buffer(&keys, n_tiles + 1);
    let mut keys_alt = u32_buffer(&keys, n_entries);
    let mut entries_alt = u32_buffer(&keys, n_entries);
    for bit in 0..bits {
        unsafe {
            count_zeros_kernel::launch_unchecked::<R>(
                &client,
                cube_count_for(&client, n_tiles),
                CubeDim::new_1d(THREADS),
                keys.clone().into_array_arg(),
                zeros.clone().into_array_arg(),
                n_entries,
                n_tiles,
                bit,
            );
            scan_tiles_kernel::launch_unchecked::<R>(
                &client,
                CubeCount::Static(1, 1, 1),
                CubeDim::new_1d(THREADS),
                zeros.clone().into_array_arg(),
                before.clone().into_array_arg(),
                n_tiles,
            );
            scatter_kernel::launch_unchecked::<R>(
                &client,
                cube_count_for(&client, n_tiles),
                CubeDim::new_1d(THREADS),
                keys.clone().into_array_arg(),
                entries.clone().into_array_arg(),
                before.clone().into_array_arg(),
                keys_alt.clone().into_array_arg(),
                entries_alt.clone().into_array_arg(),
                n_entries,
                n_tiles,
                bit,
            );
        }
        std::mem::swap(&mut keys, &mut keys_alt);
        std::mem::swap(&mut entries, &mut entries_alt);
    }

    unsafe {
        offsets_kernel::launch_unchecked::<R>(
            &client,
            cube_count_for(&client, (n_keys + 1).div_ceil(THREADS as usize)),
            CubeDim::new_1d(THREADS),
            keys.into_array_arg(),
            offsets.clone().into_array_arg(),
            n_entries,
            n_keys,
        )
    };
    InvertedIndex { entries, offsets }
}
