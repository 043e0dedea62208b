//! Where a stream keeps its chunk memory: the landmarks and the keys/values of every complete
//! chunk so far. One interface, [`ChunkStore`], two places:
//!
//! - [`DeviceChunkStore`]: everything on the device; a gather indexes the stored keys.
//! - [`OffloadedChunkStore`]: landmarks on the device (selection scores them all), keys and
//!   values in host memory; a gather uploads only the distinct chunks the selection picked,
//!   so device memory grows by the landmarks and pooled values alone (`d_r + d_h·h_kv` values
//!   per chunk instead of `2·S·d_h·h_kv`).
//!
//! Both keep every chunk's mean-pooled value on the device next to its landmark: chunk-unaware
//! (NSA-style) selection reads all of them in its compressed attention
//! ([`compressed_attention_pooled`](crate::ops::selection::unaware::compressed_attention_pooled)),
//! and pooling at append time keeps that read off the host-resident values.
//!
//! A gather runs once per retrieval group and serves every HSA layer of the group. Both stores
//! return the same values: the offloaded one holds the device store's bytes, copied.

use std::collections::HashMap;

use burn::prelude::*;
use burn::tensor::DType;
use serde::{Deserialize, Serialize};

use super::growing::GrowingTensor;
use crate::ops::selection::unaware::mean_pooled_values;

/// Which [`ChunkStore`] a stream uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChunkStoreKind {
    /// [`DeviceChunkStore`].
    #[default]
    Device,
    /// [`OffloadedChunkStore`].
    Offloaded,
}

impl ChunkStoreKind {
    /// An empty store of this kind for chunks of `chunk_size` tokens.
    pub fn create<B: Backend>(self, chunk_size: usize) -> Box<dyn ChunkStore<B>> {
        match self {
            ChunkStoreKind::Device => Box::new(DeviceChunkStore::new(chunk_size)),
            ChunkStoreKind::Offloaded => Box::new(OffloadedChunkStore::new(chunk_size)),
        }
    }
}

/// The key and value tiles of the selected chunks, `[B·h_kv·L, K, S, d_h]` each: rows ordered
/// by (batch, KV head, token), slot `k` of a row holding chunk `indices[b, t, g, k]` (an
/// arbitrary tile where the index is `-1`; HSA gives those slots no weight).
#[derive(Clone, Debug)]
pub struct SelectedChunks<B: Backend> {
    /// Keys.
    pub keys: Tensor<B, 4>,
    /// Values.
    pub values: Tensor<B, 4>,
}

/// The chunk memory of a stream; see the module docs.
pub trait ChunkStore<B: Backend>: Send {
    /// Appends `n` complete chunks: `landmarks [B, n, h_kv, d_r]`, `keys, values
    /// [B, n·S, h_kv, d_h]`.
    fn append(&mut self, landmarks: Tensor<B, 4>, keys: Tensor<B, 4>, values: Tensor<B, 4>);

    /// Complete chunks stored.
    fn n_chunks(&self) -> usize;

    /// Every chunk's landmark, `[B, C, h_kv, d_r]` on the device (`None` while empty).
    fn landmarks(&self) -> Option<Tensor<B, 4>>;

    /// Every chunk's mean-pooled value, `[B, C, h_kv, d_h]` on the device (`None` while
    /// empty), for chunk-unaware selection's compressed attention.
    fn pooled_values(&self) -> Option<Tensor<B, 4>>;

    /// The tiles of the chunks `indices [B, L, h_kv, K]` name (`-1`: no chunk), on the device
    /// (`None` while empty).
    fn gather(&self, indices: &Tensor<B, 4, Int>) -> Option<SelectedChunks<B>>;

    /// Bytes this store holds on the device (capacity included).
    fn device_bytes(&self) -> usize;

    /// Bytes this store holds in host memory.
    fn host_bytes(&self) -> usize;
}

/// Keys and values on the device, `[B, capacity·S, h_kv, d_h]`, grown by doubling.
#[derive(Debug)]
pub struct DeviceChunkStore<B: Backend> {
    chunk_size: usize,
    landmarks: GrowingTensor<B, 4>,
    /// `[B, capacity, h_kv, d_h]`: each chunk's mean-pooled value.
    pooled: GrowingTensor<B, 4>,
    keys: GrowingTensor<B, 4>,
    values: GrowingTensor<B, 4>,
}

impl<B: Backend> DeviceChunkStore<B> {
    /// Empty, for chunks of `chunk_size` tokens.
    pub fn new(chunk_size: usize) -> Self {
        Self {
            chunk_size,
            landmarks: GrowingTensor::new(1),
            pooled: GrowingTensor::new(1),
            keys: GrowingTensor::new(1),
            values: GrowingTensor::new(1),
        }
    }
}

impl<B: Backend> ChunkStore<B> for DeviceChunkStore<B> {
    fn append(&mut self, landmarks: Tensor<B, 4>, keys: Tensor<B, 4>, values: Tensor<B, 4>) {
        let n = landmarks.dims()[1];
        self.pooled
            .append(mean_pooled_values(values.clone(), n, self.chunk_size));
        self.landmarks.append(landmarks);
        self.keys.append(keys);
        self.values.append(values);
    }

    fn n_chunks(&self) -> usize {
        self.landmarks.len()
    }

    fn landmarks(&self) -> Option<Tensor<B, 4>> {
        self.landmarks.view()
    }

    fn pooled_values(&self) -> Option<Tensor<B, 4>> {
        self.pooled.view()
    }

    fn gather(&self, indices: &Tensor<B, 4, Int>) -> Option<SelectedChunks<B>> {
        let (keys, values) = (self.keys.buffer()?, self.values.buffer()?);
        let [batch, seq, h_kv, top_k] = indices.dims();
        let [_, capacity, _, d_h] = keys.dims();
        let s = self.chunk_size;
        let device = keys.device();
        // Row of token `s` of chunk `c`, KV head `g`, batch `b` in the buffer seen as
        // [B·capacity·h_kv, d_h]: ((b·capacity + c·S + s)·h_kv + g).
        let int5 = |v: Tensor<B, 1, Int>, shape: [usize; 5]| v.reshape(shape);
        let chunk = indices
            .clone()
            .clamp(0, self.n_chunks() as i64 - 1)
            .permute([0, 2, 1, 3]) // [B, h_kv, L, K]
            .unsqueeze_dim::<5>(4)
            .mul_scalar((s * h_kv) as i64);
        let token = int5(
            Tensor::arange(0..s as i64, &device).mul_scalar(h_kv as i64),
            [1, 1, 1, 1, s],
        );
        let head = int5(Tensor::arange(0..h_kv as i64, &device), [1, h_kv, 1, 1, 1]);
        let row = int5(
            Tensor::arange(0..batch as i64, &device).mul_scalar((capacity * h_kv) as i64),
            [batch, 1, 1, 1, 1],
        );
        let ids = (chunk + token + head + row).reshape([batch * h_kv * seq * top_k * s]);
        let tiles = |buf: &Tensor<B, 4>| {
            buf.clone()
                .reshape([batch * capacity * h_kv, d_h])
                .select(0, ids.clone())
                .reshape([batch * h_kv * seq, top_k, s, d_h])
        };
        Some(SelectedChunks {
            keys: tiles(keys),
            values: tiles(values),
        })
    }

    fn device_bytes(&self) -> usize {
        self.landmarks.bytes() + self.pooled.bytes() + self.keys.bytes() + self.values.bytes()
    }

    fn host_bytes(&self) -> usize {
        0
    }
}

/// Landmarks on the device, keys and values in host memory: one byte buffer per (batch row,
/// KV head), chunk after chunk, each chunk `S·d_h` elements of the model's dtype.
#[derive(Debug)]
pub struct OffloadedChunkStore<B: Backend> {
    chunk_size: usize,
    landmarks: GrowingTensor<B, 4>,
    /// `[B, capacity, h_kv, d_h]`: each chunk's mean-pooled value, on the device.
    pooled: GrowingTensor<B, 4>,
    /// `[b·h_kv + g]`: keys of every chunk of batch row `b`, KV head `g`.
    keys: Vec<Vec<u8>>,
    /// Like `keys`.
    values: Vec<Vec<u8>>,
    /// Dtype and head dimension of the stored tiles, set by the first append.
    layout: Option<(DType, usize, usize)>,
}

impl<B: Backend> OffloadedChunkStore<B> {
    /// Empty, for chunks of `chunk_size` tokens.
    pub fn new(chunk_size: usize) -> Self {
        Self {
            chunk_size,
            landmarks: GrowingTensor::new(1),
            pooled: GrowingTensor::new(1),
            keys: Vec::new(),
            values: Vec::new(),
            layout: None,
        }
    }

    /// Bytes of one chunk's tile.
    fn tile_bytes(&self) -> usize {
        self.layout
            .map_or(0, |(dtype, d_h, _)| self.chunk_size * d_h * dtype.size())
    }
}

/// `x [B, n·S, h_kv, d_h]` read back to the host, appended to one buffer per (row, head).
fn append_host<B: Backend>(buffers: &mut Vec<Vec<u8>>, x: Tensor<B, 4>) {
    let [batch, len, h_kv, _] = x.dims();
    if buffers.is_empty() {
        buffers.resize(batch * h_kv, Vec::new());
    }
    assert_eq!(
        buffers.len(),
        batch * h_kv,
        "appends of different batch sizes"
    );
    // [B, h_kv, n·S, d_h]: each (row, head) is one contiguous run of bytes.
    let data = x.permute([0, 2, 1, 3]).into_data();
    let bytes = data.as_bytes();
    let per = bytes.len() / (batch * h_kv).max(1);
    debug_assert_eq!(per % len.max(1), 0);
    for (i, buf) in buffers.iter_mut().enumerate() {
        buf.extend_from_slice(&bytes[i * per..(i + 1) * per]);
    }
}

impl<B: Backend> ChunkStore<B> for OffloadedChunkStore<B> {
    fn append(&mut self, landmarks: Tensor<B, 4>, keys: Tensor<B, 4>, values: Tensor<B, 4>) {
        let [_, _, h_kv, d_h] = keys.dims();
        self.layout.get_or_insert((keys.dtype(), d_h, h_kv));
        let n = landmarks.dims()[1];
        self.pooled
            .append(mean_pooled_values(values.clone(), n, self.chunk_size));
        self.landmarks.append(landmarks);
        append_host(&mut self.keys, keys);
        append_host(&mut self.values, values);
    }

    fn n_chunks(&self) -> usize {
        self.landmarks.len()
    }

    fn landmarks(&self) -> Option<Tensor<B, 4>> {
        self.landmarks.view()
    }

    fn pooled_values(&self) -> Option<Tensor<B, 4>> {
        self.pooled.view()
    }

    fn gather(&self, indices: &Tensor<B, 4, Int>) -> Option<SelectedChunks<B>> {
        let (dtype, d_h, h_kv) = self.layout?;
        let [batch, seq, _, top_k] = indices.dims();
        let s = self.chunk_size;
        let tile = self.tile_bytes();
        let device = indices.device();
        // One read of the (small) selection; the tiles of the distinct chunks it names are
        // uploaded once each, and the device expands them to the per-token slots.
        let picked = indices.clone().into_data().convert::<i64>();
        let picked = picked.as_slice::<i64>().expect("indices converted to i64");
        let mut slot_of: HashMap<(usize, i64), i64> = HashMap::new();
        let mut order: Vec<(usize, i64)> = Vec::new();
        let mut ids = vec![0i64; batch * h_kv * seq * top_k];
        for b in 0..batch {
            for t in 0..seq {
                for g in 0..h_kv {
                    for k in 0..top_k {
                        let c = picked[((b * seq + t) * h_kv + g) * top_k + k];
                        if c < 0 {
                            continue; // stays on tile 0: an invalid slot gets no weight
                        }
                        let key = (b * h_kv + g, c);
                        let next = order.len() as i64;
                        let id = *slot_of.entry(key).or_insert_with(|| {
                            order.push(key);
                            next
                        });
                        ids[((b * h_kv + g) * seq + t) * top_k + k] = id;
                    }
                }
            }
        }
        let upload = |buffers: &[Vec<u8>]| {
            let n = order.len().max(1);
            let mut bytes = Vec::with_capacity(n * tile);
            for &(bg, c) in &order {
                let at = c as usize * tile;
                bytes.extend_from_slice(&buffers[bg][at..at + tile]);
            }
            if order.is_empty() {
                bytes.resize(tile, 0); // no valid slot anywhere: one zero tile to point at
            }
            Tensor::<B, 3>::from_data(
                TensorData::from_bytes_vec(bytes, [n, s, d_h], dtype),
                &device,
            )
        };
        let ids = Tensor::<B, 1, Int>::from_data(
            TensorData::new(ids, [batch * h_kv * seq * top_k]).convert::<B::IntElem>(),
            &device,
        );
        let expand = |table: Tensor<B, 3>| {
            table
                .select(0, ids.clone())
                .reshape([batch * h_kv * seq, top_k, s, d_h])
        };
        Some(SelectedChunks {
            keys: expand(upload(&self.keys)),
            values: expand(upload(&self.values)),
        })
    }

    fn device_bytes(&self) -> usize {
        self.landmarks.bytes() + self.pooled.bytes()
    }

    fn host_bytes(&self) -> usize {
        self.keys.iter().chain(&self.values).map(Vec::len).sum()
    }
}
