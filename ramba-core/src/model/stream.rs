//! Streaming inference state: everything a model carries from one call to the next so that
//! `prefill` over segments, then `step` token by token, computes what one forward over the
//! whole stream computes.
//!
//! - per decoder block ([`BlockStream`]): Mamba conv + SSM states, or an attention block's KV
//!   cache (full, or a ring of the sliding window);
//! - for HSA models: the lower decoder's outputs of the chunk not yet complete, and the chunk
//!   memory of every complete chunk in a [`ChunkStore`] (on the device or offloaded);
//! - the stream's position: RoPE angles and the HSA causal rule continue from it.

use burn::prelude::*;

use crate::nn::block::{BlockState, BlockStream};
use crate::nn::chunk_memory::{ChunkMemory, ChunkMemoryOutput};
use crate::ops::RambaBackend;
use crate::stream::{ChunkStore, ChunkStoreKind, StreamProfile};

use super::ModelState;

/// See the module docs; made by [`LanguageModel::stream_state`](super::LanguageModel::stream_state).
pub struct StreamState<B: Backend> {
    pub(crate) position: usize,
    pub(crate) blocks: Vec<BlockStream<B>>,
    pub(crate) hsa: Option<HsaStream<B>>,
    /// Time per stage of the later calls, when profiling (HSA models record it).
    pub(crate) profile: Option<StreamProfile>,
}

/// The HSA part of a stream: the incomplete chunk and the chunk memory.
pub(crate) struct HsaStream<B: Backend> {
    chunk_size: usize,
    /// `[batch, n < S, d_model]`: lower-decoder outputs of the chunk not yet complete.
    pending: Option<Tensor<B, 3>>,
    pub(crate) store: Box<dyn ChunkStore<B>>,
}

impl<B: Backend> std::fmt::Debug for StreamState<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamState")
            .field("position", &self.position)
            .field("blocks", &self.blocks.len())
            .field("chunks", &self.chunk_store().map(|s| s.n_chunks()))
            .finish()
    }
}

impl<B: Backend> StreamState<B> {
    pub(crate) fn new(
        blocks: Vec<BlockStream<B>>,
        chunks: Option<(usize, ChunkStoreKind)>,
    ) -> Self {
        Self {
            position: 0,
            blocks,
            hsa: chunks.map(|(chunk_size, kind)| HsaStream {
                chunk_size,
                pending: None,
                store: kind.create(chunk_size),
            }),
            profile: StreamProfile::from_env(),
        }
    }

    /// This state with profiling on, whatever `RAMBA_STREAM_PROFILE` says.
    pub fn with_profile(mut self) -> Self {
        self.profile.get_or_insert_with(StreamProfile::default);
        self
    }

    /// Time per stage of the later calls so far (`None` unless profiling; see
    /// [`crate::stream::profile`]).
    pub fn profile(&self) -> Option<&StreamProfile> {
        self.profile.as_ref()
    }

    /// Tokens consumed so far: the position of the next token.
    pub fn position(&self) -> usize {
        self.position
    }

    /// The chunk memory (`None` for models without HSA).
    pub fn chunk_store(&self) -> Option<&dyn ChunkStore<B>> {
        self.hsa.as_ref().map(|h| h.store.as_ref())
    }

    /// Starts the Mamba blocks from `state` (the training API's recurrent state), everything
    /// else fresh.
    pub(crate) fn seed(&mut self, state: ModelState<B>) {
        assert_eq!(
            state.blocks.len(),
            self.blocks.len(),
            "a recurrent state of another model"
        );
        for (stream, block) in self.blocks.iter_mut().zip(state.blocks) {
            if let (BlockStream::Mamba(s), BlockState::Mamba(m)) = (stream, block) {
                *s = Some(m);
            }
        }
    }

    /// The blocks' recurrent states in the training API's form (attention blocks: stateless).
    pub(crate) fn block_states(self) -> ModelState<B> {
        ModelState {
            blocks: self
                .blocks
                .into_iter()
                .map(|b| match b {
                    BlockStream::Mamba(Some(m)) => BlockState::Mamba(m),
                    _ => BlockState::Stateless,
                })
                .collect(),
        }
    }
}

impl<B: RambaBackend> HsaStream<B> {
    /// After a stream's first call, which encoded its own chunks as one sequence (`memory`,
    /// from the lower-decoder output `lower [batch, seq, d]`): keeps the complete chunks and
    /// the tail.
    pub(crate) fn keep(&mut self, memory: ChunkMemoryOutput<B>, lower: Tensor<B, 3>) {
        let seq = lower.dims()[1];
        let whole = seq / self.chunk_size * self.chunk_size;
        if whole > 0 {
            self.store.append(
                memory.landmarks,
                memory.keys.narrow(1, 0, whole),
                memory.values.narrow(1, 0, whole),
            );
        }
        self.pending = (seq > whole).then(|| lower.narrow(1, whole, seq - whole));
    }

    /// Before a later call reads the memory: the chunks its lower-decoder output `lower`
    /// completes (with the pending tail) are encoded and stored, the rest becomes the tail.
    pub(crate) fn extend(&mut self, memory: &ChunkMemory<B>, lower: Tensor<B, 3>) {
        let h = match self.pending.take() {
            Some(p) => Tensor::cat(vec![p, lower], 1),
            None => lower,
        };
        let len = h.dims()[1];
        let whole = len / self.chunk_size * self.chunk_size;
        if whole > 0 {
            let m = memory.forward(h.clone().narrow(1, 0, whole));
            self.store.append(m.landmarks, m.keys, m.values);
        }
        self.pending = (len > whole).then(|| h.narrow(1, whole, len - whole));
    }
}
