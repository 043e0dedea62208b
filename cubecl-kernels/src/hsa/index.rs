//! The inverted index of a selection (spec §5, backward pass 2): for every chunk, the
//! `(token, slot)` entries that selected it, built on the device in `O(L·K)` time and memory.
//!
//! Entries are the flat slots `e = ((b·L + t)·h_kv + g)·K + k`. Each valid slot gets the key
//! `(b·h_kv + g)·C + c`; invalid slots get the sentinel `n_keys = B·h_kv·C` so they sort last.
//! [`crate::sort::sort_into_csr`] (a stable radix sort) orders the entries by key, keeping entry
//! order (token-major) inside each key, so the lists and every sum over them are deterministic.
//! No atomics anywhere. Keys need `⌈log2(n_keys + 1)⌉` bits: 13 passes at 8 × 64K tokens, 17
//! at 4M.
//!
//! Shapes: `indices [B, L, h_kv, K]` in, `entries [N]` (u32 entry ids sorted by key) and
//! `offsets [n_keys + 1]` (u32) out, `N = B·L·h_kv·K`.

use cubecl::prelude::*;

use super::HsaShape;
use crate::launch::cube_count_for;
use crate::sort;
use burn_cubecl::{tensor::CubeTensor, CubeRuntime};

/// Threads of the key kernel.
const THREADS: u32 = 256;

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

/// The inverted index of a selection.
pub struct InvertedIndex<R: CubeRuntime> {
    /// `[N]` entry ids `((b·L + t)·h_kv + g)·K + k`, grouped by chunk key, token-major inside.
    pub entries: CubeTensor<R>,
    /// `[B·h_kv·C + 1]` CSR offsets into `entries`.
    pub offsets: CubeTensor<R>,
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
    let keys = sort::u32_buffer(&indices, n_entries);
    let entries = sort::u32_buffer(&indices, n_entries);
    if n_entries == 0 {
        let offsets = sort::u32_buffer(&indices, n_keys + 1);
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

    let (entries, offsets) = sort::sort_into_csr(keys, entries, n_entries, n_keys);
    InvertedIndex { entries, offsets }
}
