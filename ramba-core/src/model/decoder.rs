//! A plain decoder stack: `mamba2` (Mamba-2 blocks) and `transformer` (causal attention blocks).

use burn::prelude::*;

use super::{attention_mask, run_blocks, LmHead, ModelState};
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

    /// Decoder blocks.
    pub fn n_blocks(&self) -> usize {
        self.blocks.len()
    }
}

impl<B: RambaBackend> Decoder<B> {
    /// `[batch, seq]` → logits `[batch, seq, vocab]` and the blocks' final state.
    pub fn forward(
        &self,
        tokens: Tensor<B, 2, Int>,
        state: Option<ModelState<B>>,
    ) -> (Tensor<B, 3>, ModelState<B>) {
        let mask = attention_mask(self.window);
        let mut states = state.map(|s| s.blocks).unwrap_or_default().into_iter();
        let mut out = Vec::with_capacity(self.blocks.len());
        let x = run_blocks(
            &self.blocks,
            self.lm.embed(tokens),
            &mut states,
            mask,
            &mut out,
        );
        (self.lm.logits(x), ModelState { blocks: out })
    }
}
