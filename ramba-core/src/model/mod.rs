//! Language models behind one interface, [`LanguageModel`].
//!
//! | `arch` | struct | blocks |
//! |---|---|---|
//! | `ramba` | [`HsaDecoder`] | Mamba-2 |
//! | `swa_hsa` | [`HsaDecoder`] | sliding-window attention |
//! | `mamba_nsa` | [`HsaDecoder`] (chunk-unaware selection) | Mamba-2 |
//! | `mamba2` | [`Decoder`] | Mamba-2 |
//! | `transformer` | [`Decoder`] | causal attention |
//!
//! Every model maps token ids `[batch, seq]` to logits `[batch, seq, vocab]`, optionally taking
//! and returning the recurrent state of its blocks ([`ModelState`]).

mod decoder;
mod hsa_decoder;
mod lm_head;

pub use decoder::Decoder;
pub use hsa_decoder::{HsaDecoder, HsaGroup, HsaStage};
pub use lm_head::LmHead;

use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;

use crate::config::{Arch, ModelConfig};
use crate::nn::attention::{AttentionMask, AttentionSettings};
use crate::nn::block::{BlockState, DecoderBlock, TransformerBlock};
use crate::nn::mamba2::Mamba2Block;
use crate::ops::RambaBackend;

/// Recurrent state of every decoder block, in stack order.
#[derive(Clone, Debug)]
pub struct ModelState<B: Backend> {
    /// One entry per decoder block.
    pub blocks: Vec<BlockState<B>>,
}

impl<B: Backend> ModelState<B> {
    /// Cuts the state off the autodiff graph.
    pub fn detach(self) -> Self {
        Self {
            blocks: self.blocks.into_iter().map(BlockState::detach).collect(),
        }
    }

    /// The state of batch rows `rows` only.
    pub fn rows(&self, rows: std::ops::Range<usize>) -> Self {
        Self {
            blocks: self.blocks.iter().map(|b| b.rows(rows.clone())).collect(),
        }
    }

    /// The states of consecutive row ranges joined back into one (the inverse of
    /// [`rows`](Self::rows)).
    pub fn cat(parts: Vec<Self>) -> Self {
        let n_blocks = parts.first().map_or(0, |p| p.blocks.len());
        let mut columns: Vec<Vec<BlockState<B>>> = (0..n_blocks).map(|_| Vec::new()).collect();
        for part in parts {
            assert_eq!(part.blocks.len(), n_blocks, "states of different models");
            for (column, block) in columns.iter_mut().zip(part.blocks) {
                column.push(block);
            }
        }
        Self {
            blocks: columns.into_iter().map(BlockState::cat).collect(),
        }
    }
}

impl<B: AutodiffBackend> ModelState<B> {
    /// The state on the inner backend, off the autodiff graph.
    pub fn inner(self) -> ModelState<B::InnerBackend> {
        ModelState {
            blocks: self.blocks.into_iter().map(BlockState::inner).collect(),
        }
    }

    /// A state of the inner backend as a constant of this one (no gradient flows into it).
    pub fn from_inner(s: ModelState<B::InnerBackend>) -> Self {
        Self {
            blocks: s.blocks.into_iter().map(BlockState::from_inner).collect(),
        }
    }
}

/// Any of the models; see the module docs.
#[derive(Module, Debug)]
#[allow(clippy::large_enum_variant)]
pub enum LanguageModel<B: Backend> {
    /// `mamba2` and `transformer`.
    Plain(Decoder<B>),
    /// `ramba`, `swa_hsa` and `mamba_nsa`.
    Hsa(HsaDecoder<B>),
}

impl ModelConfig {
    /// Builds the model this config describes (call [`ModelConfig::validate`] first).
    pub fn init<B: Backend>(&self, device: &B::Device) -> LanguageModel<B> {
        if self.arch.has_hsa() {
            LanguageModel::Hsa(HsaDecoder::new(self, device))
        } else {
            LanguageModel::Plain(Decoder::new(self, device))
        }
    }

    /// One decoder block of this architecture.
    pub(crate) fn block<B: Backend>(&self, device: &B::Device) -> DecoderBlock<B> {
        if self.arch.uses_mamba() {
            DecoderBlock::Mamba(Mamba2Block::new(
                self.d_model,
                &self.mamba,
                self.init_std,
                self.norm_eps,
                device,
            ))
        } else {
            let a = &self.attention;
            let settings = AttentionSettings {
                d_model: self.d_model,
                n_heads: a.n_heads,
                n_kv_heads: a.n_kv_heads,
                qkv_bias: false,
                qk_norm: false,
                rope_theta: a.rope_theta,
                init_std: self.init_std,
                norm_eps: self.norm_eps,
            };
            let hidden = crate::config::mlp_hidden(a.mlp_hidden, self.d_model);
            DecoderBlock::Attention(TransformerBlock::new(&settings, hidden, device))
        }
    }

    /// The mask attention blocks of this architecture use.
    /// The sliding window of this architecture's attention blocks (`None`: full causal).
    pub(crate) fn attention_window(&self) -> Option<usize> {
        (self.arch == Arch::SwaHsa).then_some(self.attention.window)
    }
}

impl<B: RambaBackend> LanguageModel<B> {
    /// `tokens`: `[batch, seq]` → logits `[batch, seq, vocab]`.
    pub fn forward(&self, tokens: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        self.forward_with_state(tokens, None).0
    }

    /// Like [`forward`](Self::forward), with the blocks' initial state (zeros when `None`) and
    /// their final state returned.
    pub fn forward_with_state(
        &self,
        tokens: Tensor<B, 2, Int>,
        state: Option<ModelState<B>>,
    ) -> (Tensor<B, 3>, ModelState<B>) {
        match self {
            LanguageModel::Plain(m) => m.forward(tokens, state),
            LanguageModel::Hsa(m) => m.forward(tokens, state),
        }
    }

    /// Mean cross-entropy of `targets` `[batch, seq]` over positions where `mask` `[batch, seq]`
    /// is non-zero (weighted by it).
    pub fn loss(
        &self,
        tokens: Tensor<B, 2, Int>,
        targets: Tensor<B, 2, Int>,
        mask: Tensor<B, 2>,
    ) -> Tensor<B, 1> {
        lm_loss(self.forward(tokens), targets, mask)
    }
}

impl<B: RambaBackend> LanguageModel<B> {
    /// Each retrieval group's chunk selection for `tokens` (see [`HsaDecoder::selections`]);
    /// `None` for architectures without HSA.
    pub fn selections(
        &self,
        tokens: Tensor<B, 2, Int>,
    ) -> Option<Vec<crate::ops::ChunkSelection<B>>> {
        match self {
            LanguageModel::Plain(_) => None,
            LanguageModel::Hsa(m) => Some(m.selections(tokens)),
        }
    }
}

impl<B: Backend> LanguageModel<B> {
    /// Number of decoder blocks (the length of [`ModelState::blocks`]).
    pub fn n_blocks(&self) -> usize {
        match self {
            LanguageModel::Plain(m) => m.n_blocks(),
            LanguageModel::Hsa(m) => m.n_blocks(),
        }
    }
}

/// Masked mean cross-entropy: logits `[batch, seq, vocab]`, targets and mask `[batch, seq]`.
pub fn lm_loss<B: Backend>(
    logits: Tensor<B, 3>,
    targets: Tensor<B, 2, Int>,
    mask: Tensor<B, 2>,
) -> Tensor<B, 1> {
    let logp = burn::tensor::activation::log_softmax(logits, 2);
    let picked = logp.gather(2, targets.unsqueeze_dim(2)).squeeze_dim::<2>(2);
    let total = mask.clone().sum().clamp_min(1e-9);
    (picked * mask).sum().neg() / total
}

/// The mask of attention blocks with an optional sliding window.
pub(crate) fn attention_mask(window: Option<usize>) -> AttentionMask {
    window.map_or(AttentionMask::Causal, AttentionMask::Window)
}

/// Runs `blocks` in order with their states, returning the output and the new states.
pub(crate) fn run_blocks<B: RambaBackend>(
    blocks: &[DecoderBlock<B>],
    mut x: Tensor<B, 3>,
    states: &mut std::vec::IntoIter<BlockState<B>>,
    mask: AttentionMask,
    out: &mut Vec<BlockState<B>>,
) -> Tensor<B, 3> {
    for block in blocks {
        let (y, s) = block.forward(x, states.next(), mask);
        x = y;
        out.push(s);
    }
    x
}
