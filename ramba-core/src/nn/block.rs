//! Decoder blocks: a pre-norm transformer block, and [`DecoderBlock`], the block kind a model
//! stacks (Mamba-2 or attention), so one model struct serves several architectures.

use burn::nn::RmsNorm;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;

use super::attention::{AttentionMask, AttentionSettings, SelfAttention};
use super::kv_cache::KvCache;
use super::mamba2::{Mamba2Block, Mamba2State};
use super::mlp::SwiGluMlp;
use super::{rms_norm, Autocast};
use crate::ops::RambaBackend;

/// `x + Attn(norm(x))`, then `x + MLP(norm(x))`.
#[derive(Module, Debug)]
pub struct TransformerBlock<B: Backend> {
    attn_norm: RmsNorm<B>,
    attn: SelfAttention<B>,
    mlp_norm: RmsNorm<B>,
    mlp: SwiGluMlp<B>,
}

impl<B: Backend> TransformerBlock<B> {
    /// One block of width `s.d_model` with a SwiGLU of `mlp_hidden`.
    pub fn new(s: &AttentionSettings, mlp_hidden: usize, device: &B::Device) -> Self {
        Self {
            attn_norm: rms_norm(s.d_model, s.norm_eps, device),
            attn: SelfAttention::new(s, device),
            mlp_norm: rms_norm(s.d_model, s.norm_eps, device),
            mlp: SwiGluMlp::new(s.d_model, mlp_hidden, s.init_std, device),
        }
    }
}

impl<B: RambaBackend> TransformerBlock<B> {
    /// Like [`forward`](Self::forward) in a stream, attending also to the keys `cache` holds.
    pub fn forward_cached(
        &self,
        x: Tensor<B, 3>,
        start: usize,
        cache: &mut KvCache<B>,
    ) -> Tensor<B, 3> {
        let x = x.clone()
            + self
                .attn
                .forward_cached(self.attn_norm.forward_autocast(x), start, cache);
        x.clone() + self.mlp.forward(self.mlp_norm.forward_autocast(x))
    }
}

impl<B: RambaBackend> TransformerBlock<B> {
    /// `[batch, seq, d]` at positions `start..` → `[batch, seq, d]`.
    pub fn forward(&self, x: Tensor<B, 3>, start: usize, mask: AttentionMask) -> Tensor<B, 3> {
        let x = x.clone()
            + self
                .attn
                .forward(self.attn_norm.forward_autocast(x), start, mask);
        x.clone() + self.mlp.forward(self.mlp_norm.forward_autocast(x))
    }
}

/// A block of a decoder stack.
#[derive(Module, Debug)]
#[allow(clippy::large_enum_variant)]
pub enum DecoderBlock<B: Backend> {
    /// Mamba-2 (ramba, mamba2).
    Mamba(Mamba2Block<B>),
    /// Causal attention, full (transformer) or sliding-window (swa_hsa).
    Attention(TransformerBlock<B>),
}

/// Per-block recurrent state; attention blocks carry none here.
#[derive(Clone, Debug)]
pub enum BlockState<B: Backend> {
    /// State of a Mamba-2 block.
    Mamba(Mamba2State<B>),
    /// Attention blocks keep no state across calls of `forward`.
    Stateless,
}

impl<B: Backend> BlockState<B> {
    /// Cuts the state off the autodiff graph.
    pub fn detach(self) -> Self {
        match self {
            BlockState::Mamba(s) => BlockState::Mamba(s.detach()),
            BlockState::Stateless => BlockState::Stateless,
        }
    }

    /// The state of batch rows `rows` only.
    pub fn rows(&self, rows: std::ops::Range<usize>) -> Self {
        match self {
            BlockState::Mamba(s) => BlockState::Mamba(s.rows(rows)),
            BlockState::Stateless => BlockState::Stateless,
        }
    }

    /// One block's states of consecutive row ranges, joined along the batch.
    pub fn cat(parts: Vec<Self>) -> Self {
        let mut mamba = Vec::with_capacity(parts.len());
        for part in parts {
            match part {
                BlockState::Mamba(s) => mamba.push(s),
                BlockState::Stateless => return BlockState::Stateless,
            }
        }
        BlockState::Mamba(Mamba2State::cat(mamba))
    }
}

impl<B: AutodiffBackend> BlockState<B> {
    /// The state on the inner backend, off the autodiff graph.
    pub fn inner(self) -> BlockState<B::InnerBackend> {
        match self {
            BlockState::Mamba(s) => BlockState::Mamba(s.inner()),
            BlockState::Stateless => BlockState::Stateless,
        }
    }

    /// A state of the inner backend as a constant of this one.
    pub fn from_inner(s: BlockState<B::InnerBackend>) -> Self {
        match s {
            BlockState::Mamba(s) => BlockState::Mamba(Mamba2State::from_inner(s)),
            BlockState::Stateless => BlockState::Stateless,
        }
    }
}

impl<B: RambaBackend> DecoderBlock<B> {
    /// `[batch, seq, d]` → `[batch, seq, d]` and the state after it. `mask` applies to attention
    /// blocks.
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        state: Option<BlockState<B>>,
        mask: AttentionMask,
    ) -> (Tensor<B, 3>, BlockState<B>) {
        match self {
            DecoderBlock::Mamba(m) => {
                let state = match state {
                    Some(BlockState::Mamba(s)) => Some(s),
                    _ => None,
                };
                let (y, s) = m.forward(x, state);
                (y, BlockState::Mamba(s))
            }
            DecoderBlock::Attention(t) => (t.forward(x, 0, mask), BlockState::Stateless),
        }
    }
}

/// What a decoder block carries between the calls of a stream.
#[derive(Clone, Debug)]
pub enum BlockStream<B: Backend> {
    /// A Mamba-2 block's conv and SSM states (`None`: zeros, before the first token).
    Mamba(Option<Mamba2State<B>>),
    /// An attention block's keys and values.
    Attention(KvCache<B>),
}

impl<B: RambaBackend> DecoderBlock<B> {
    /// A fresh stream state for this block; `window` is the attention blocks' sliding window
    /// (`None`: full causal).
    pub fn stream_state(&self, window: Option<usize>) -> BlockStream<B> {
        match self {
            DecoderBlock::Mamba(_) => BlockStream::Mamba(None),
            DecoderBlock::Attention(_) => BlockStream::Attention(KvCache::new(window)),
        }
    }

    /// `x [batch, seq, d]` at positions `start..start + seq` of a stream → `[batch, seq, d]`,
    /// updating `state`. A single token runs the Mamba block's decoding step.
    pub fn forward_stream(
        &self,
        x: Tensor<B, 3>,
        start: usize,
        state: &mut BlockStream<B>,
    ) -> Tensor<B, 3> {
        match (self, state) {
            (DecoderBlock::Mamba(m), BlockStream::Mamba(s)) => {
                let [batch, seq, _] = x.dims();
                let (y, next) = if seq == 1 {
                    let device = x.device();
                    let before = match s.take() {
                        Some(state) if !m.restarts_at(start, &device) => state,
                        _ => m.zero_state(batch, &device),
                    };
                    m.step(x, before)
                } else {
                    m.forward_at(x, s.take(), start)
                };
                *s = Some(next);
                y
            }
            (DecoderBlock::Attention(t), BlockStream::Attention(cache)) => {
                t.forward_cached(x, start, cache)
            }
            _ => panic!("a stream state of another model: block kinds differ"),
        }
    }
}
