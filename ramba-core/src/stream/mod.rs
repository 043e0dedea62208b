//! Streaming inference support: what a stream keeps between calls beyond the blocks' own
//! states (the model's [`StreamState`](crate::model::StreamState) holds them all).
//!
//! - [`chunk_store`]: the chunk memory of a stream, on the device or offloaded to the host.
//! - [`growing`]: a tensor that grows along one axis with amortised appends (chunk stores, KV
//!   caches).
//! - [`profile`]: time per stage of a stream's later calls (`RAMBA_STREAM_PROFILE=1`).

pub mod chunk_store;
pub mod growing;
pub mod profile;

pub use chunk_store::{
    ChunkStore, ChunkStoreKind, DeviceChunkStore, OffloadedChunkStore, SelectedChunks,
};
pub use growing::GrowingTensor;
pub use profile::{StreamProfile, StreamStage, PROFILE_ENV};
