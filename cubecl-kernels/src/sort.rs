//! A stable LSD radix sort of `u32` keys carrying `u32` entries, and the CSR offsets of the
//! sorted keys: the device-side grouping behind HSA's inverted index and the embedding's
//! gradient. Stable, so entries keep their order inside a key and every sum over a group is
//! deterministic; no atomics.
//!
//! One pass a bit, three launches a pass over tiles of [`TILE`] entries: count the zeros of each
//! tile, an exclusive scan of those counts (one cube), and a stable scatter (zeros first, then
//! ones) with ranks from a block-wide scan. `offsets[k]` is then the first sorted position whose
//! key is `≥ k` (a binary search a key).
//!
//! Shapes: `keys`, `entries` `[N]` u32 in (keys `≤ n_keys`: the value `n_keys` is a sentinel
//! that sorts last); `entries [N]` sorted by key and `offsets [n_keys + 1]` u32 out.

use burn_cubecl::{ops::numeric::empty_device_dtype, tensor::CubeTensor, CubeRuntime};
use cubecl::prelude::*;

use crate::launch::cube_count_for;

/// Threads of the sort kernels.
const THREADS: u32 = 256;
/// Entries per thread in a tile.
const PER_THREAD: usize = 4;
/// Entries per tile (cube) of the radix passes.
pub const TILE: usize = THREADS as usize * PER_THREAD;

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

/// How many of the [`PER_THREAD`] keys from `base` (those before `n_entries`) have `bit` clear.
#[cube]
fn zeros_from(keys: &Array<u32>, base: usize, n_entries: usize, bit: u32) -> u32 {
    let mut count = 0u32;
    #[unroll]
    for m in 0..PER_THREAD {
        let e = base + m;
        if e < n_entries && ((keys[e] >> bit) & 1) == 0 {
            count += 1;
        }
    }
    count
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
    let base = tile * comptime!(TILE) + tid * comptime!(PER_THREAD);
    let local = zeros_from(keys, base, n_entries, bit);
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
    let local = zeros_from(keys, base, n_entries, bit);
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

/// An uninitialised `u32` vector of `len` (at least one) elements on `like`'s device.
pub(crate) fn u32_buffer<R: CubeRuntime>(like: &CubeTensor<R>, len: usize) -> CubeTensor<R> {
    empty_device_dtype(
        like.client.clone(),
        like.device.clone(),
        burn::tensor::Shape::new([len.max(1)]),
        burn::tensor::DType::U32,
    )
}

/// Sorts the first `n_entries` of `entries` by `keys` (both u32, consumed) and returns `(entries sorted by key,
/// offsets [n_keys + 1])`: the entries of key `k` are `offsets[k]..offsets[k + 1]`, in their
/// original order.
pub(crate) fn sort_into_csr<R: CubeRuntime>(
    keys: CubeTensor<R>,
    entries: CubeTensor<R>,
    n_entries: usize,
    n_keys: usize,
) -> (CubeTensor<R>, CubeTensor<R>) {
    let client = keys.client.clone();
    assert!(
        n_entries < u32::MAX as usize && n_keys < u32::MAX as usize,
        "sort_into_csr: {n_entries} entries or {n_keys} keys exceed u32"
    );
    let offsets = u32_buffer(&keys, n_keys + 1);
    let (mut keys, mut entries) = (keys, entries);
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
    (entries, offsets)
}
