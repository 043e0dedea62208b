//! A plain decoder stack: `mamba2` (Mamba-2 blocks) and `transformer` (causal attention blocks).

use burn::prelude::*;

use super::{run_stream, LmHead, StreamState};
use crate::config::ModelConfig;
use crate::nn::block::DecoderBlock;
use crate::ops::RambaBackend;

/// See the module docs.
#[derive(Module, Debug)]
pub struct Decoder<B: Backend> {
    lm: LmHead<B>,
    blocks: Vec<DecoderBlock<B>>,
    window: Option<usize>,
}

impl<B: Backend> Decoder<B> {
    /// `n_blocks()` blocks of the config's kind.
    pub fn new(cfg: &ModelConfig, device: &B::Device) -> Self {
        let window = cfg.attention_window();
        Self {
            lm: LmHead::new(cfg, device),
            blocks: (0..cfg.n_blocks()).map(|_| cfg.block(device)).collect(),
            window,
        }
    }

    /// The embedding and LM head.
    pub fn lm(&self) -> &LmHead<B> {
        &self.lm
    }

    /// The embedding and LM head, to set the compute dtype.
    pub(crate) fn lm_mut(&mut self) -> &mut LmHead<B> {
        &mut self.lm
    }

    /// Decoder blocks.
    pub fn n_blocks(&self) -> usize {
        self.blocks.len()
    }
}

impl<B: RambaBackend> Decoder<B> {
    /// A fresh stream state: one per block.
    pub fn stream_state(&self) -> StreamState<B> {
        let blocks = self
            .blocks
            .iter()
            .map(|b| b.stream_state(self.window))
            .collect();
        StreamState::new(blocks, None)
    }

    /// `[batch, seq]` at the stream's position → the final residual `[batch, seq, d_model]`
    /// (before the LM head), advancing `state`.
    pub fn run(&self, tokens: Tensor<B, 2, Int>, state: &mut StreamState<B>) -> Tensor<B, 3> {
        let start = state.position;
        let seq = tokens.dims()[1];
        let mut states = state.blocks.iter_mut();
        let x = run_stream(&self.blocks, self.lm.embed(tokens), start, &mut states);
        state.position += seq;
        x
    }
}
