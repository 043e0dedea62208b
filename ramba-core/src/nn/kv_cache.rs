//! What an attention block keeps between the calls of a stream: the keys and values (after
//! RoPE, before the grouped-query expansion) of earlier positions.
//!
//! - Full causal attention keeps every position, in a buffer that grows by doubling.
//! - A sliding window of `w` keeps the last `w` in a ring: position `p` lives in slot `p mod w`,
//!   so a decoding step writes one slot and attends over the ring in place, whatever the
//!   stream's length.
//!
//! Each call returns the keys and values its queries attend over and which of them each query
//! may not see, decided from absolute positions: the same rule as the whole-sequence masks.

use burn::prelude::*;

use crate::stream::GrowingTensor;

/// See the module docs.
#[derive(Clone, Debug)]
pub enum KvCache<B: Backend> {
    /// Every earlier position, `[B, h_kv, T, d_h]`.
    Full {
        /// Keys.
        keys: GrowingTensor<B, 4>,
        /// Values.
        values: GrowingTensor<B, 4>,
    },
    /// The last `window` positions, `[B, h_kv, window, d_h]` (`None` before the first call).
    Ring {
        /// Window length `w` (a query sees keys `i − w < j ≤ i`).
        window: usize,
        /// Keys and values.
        slots: Option<(Tensor<B, 4>, Tensor<B, 4>)>,
    },
}

/// What a cached attention call attends over.
pub struct CachedKeys<B: Backend> {
    /// `[B, h_kv, T, d_h]`.
    pub keys: Tensor<B, 4>,
    /// `[B, h_kv, T, d_h]`.
    pub values: Tensor<B, 4>,
    /// `[L, T]`: true where query `i` may not see key `j`.
    pub blocked: Tensor<B, 2, Bool>,
}

impl<B: Backend> KvCache<B> {
    /// Empty: full causal (`window = None`) or a sliding window.
    pub fn new(window: Option<usize>) -> Self {
        match window {
            None => KvCache::Full {
                keys: GrowingTensor::new(2),
                values: GrowingTensor::new(2),
            },
            Some(window) => KvCache::Ring {
                window,
                slots: None,
            },
        }
    }

    /// Takes the keys and values `[B, h_kv, L, d_h]` of positions `start..start + L` and
    /// returns what these queries attend over.
    pub fn update(&mut self, k: Tensor<B, 4>, v: Tensor<B, 4>, start: usize) -> CachedKeys<B> {
        let seq = k.dims()[2];
        let device = k.device();
        match self {
            KvCache::Full { keys, values } => {
                keys.append(k);
                values.append(v);
                let total = keys.len() as i64;
                let positions = Tensor::arange(0..total, &device);
                CachedKeys {
                    keys: keys.view().expect("just appended"),
                    values: values.view().expect("just appended"),
                    blocked: blocked_by_position(start, seq, positions, None),
                }
            }
            KvCache::Ring { window, slots } => {
                let w = *window;
                let (ring_k, ring_v) = slots.take().unwrap_or_else(|| {
                    let [batch, heads, _, d_h] = k.dims();
                    let zeros =
                        || Tensor::<B, 4>::zeros([batch, heads, w, d_h], &device).cast(k.dtype());
                    (zeros(), zeros())
                });
                if seq == 1 {
                    // A decoding step: write the slot, then attend over the ring itself.
                    let (ring_k, ring_v) = write_ring(ring_k, ring_v, &k, &v, start, w);
                    let out = CachedKeys {
                        keys: ring_k.clone(),
                        values: ring_v.clone(),
                        blocked: blocked_by_position(
                            start,
                            1,
                            ring_positions(start + 1, w, &device),
                            Some(w),
                        ),
                    };
                    *slots = Some((ring_k, ring_v));
                    return out;
                }
                if start == 0 {
                    // A fresh stream (every training forward): nothing to attend to before.
                    let out = CachedKeys {
                        keys: k.clone(),
                        values: v.clone(),
                        blocked: blocked_by_position(
                            0,
                            seq,
                            Tensor::arange(0..seq as i64, &device),
                            Some(w),
                        ),
                    };
                    *slots = Some(write_ring(ring_k, ring_v, &k, &v, start, w));
                    return out;
                }
                // A segment: its queries need the ring as it was before the segment (a later
                // key of the segment would overwrite a slot an earlier query still sees).
                let positions = Tensor::cat(
                    vec![
                        ring_positions(start, w, &device),
                        Tensor::arange(start as i64..(start + seq) as i64, &device),
                    ],
                    0,
                );
                let out = CachedKeys {
                    keys: Tensor::cat(vec![ring_k.clone(), k.clone()], 2),
                    values: Tensor::cat(vec![ring_v.clone(), v.clone()], 2),
                    blocked: blocked_by_position(start, seq, positions, Some(w)),
                };
                *slots = Some(write_ring(ring_k, ring_v, &k, &v, start, w));
                out
            }
        }
    }
}

/// Writes the last `min(L, w)` of `k, v` (positions `start..start + L`) into their slots.
fn write_ring<B: Backend>(
    mut ring_k: Tensor<B, 4>,
    mut ring_v: Tensor<B, 4>,
    k: &Tensor<B, 4>,
    v: &Tensor<B, 4>,
    start: usize,
    w: usize,
) -> (Tensor<B, 4>, Tensor<B, 4>) {
    let [batch, heads, seq, d_h] = k.dims();
    let end = start + seq;
    let mut p = end.saturating_sub(w).max(start);
    // At most two contiguous runs of slots (one wrap-around).
    while p < end {
        let slot = p % w;
        let n = (w - slot).min(end - p);
        let at = [0..batch, 0..heads, slot..slot + n, 0..d_h];
        ring_k = ring_k.slice_assign(at.clone(), k.clone().narrow(2, p - start, n));
        ring_v = ring_v.slice_assign(at, v.clone().narrow(2, p - start, n));
        p += n;
    }
    (ring_k, ring_v)
}

/// The position each of the `w` ring slots holds once positions `..end` were written (slot `s`:
/// the latest `p < end` with `p ≡ s mod w`), `-1` for a slot not written yet.
fn ring_positions<B: Backend>(end: usize, w: usize, device: &B::Device) -> Tensor<B, 1, Int> {
    let positions: Vec<i64> = (0..w)
        .map(|s| {
            if end == 0 {
                return -1;
            }
            let last = end - 1;
            let back = (last + w - s) % w; // how far behind `last` slot s's latest position is
            if back > last {
                -1
            } else {
                (last - back) as i64
            }
        })
        .collect();
    Tensor::from_data(
        TensorData::new(positions, [w]).convert::<B::IntElem>(),
        device,
    )
}

/// `[L, T]`, true where query position `start + i` may not see the key at `positions[j]`:
/// a future key, one that left the window (`j ≤ i − w`), or an empty slot (`-1`).
pub fn blocked_by_position<B: Backend>(
    start: usize,
    seq: usize,
    positions: Tensor<B, 1, Int>,
    window: Option<usize>,
) -> Tensor<B, 2, Bool> {
    let n_keys = positions.dims()[0];
    let device = positions.device();
    let q = Tensor::<B, 1, Int>::arange(start as i64..(start + seq) as i64, &device)
        .reshape([seq, 1])
        .expand([seq, n_keys]);
    let j = positions.reshape([1, n_keys]).expand([seq, n_keys]);
    let mut blocked = j
        .clone()
        .greater(q.clone())
        .bool_or(j.clone().lower_elem(0));
    if let Some(w) = window {
        blocked = blocked.bool_or(j.lower_equal(q.sub_scalar(w as i64)));
    }
    blocked
}
