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
//! and returning the recurrent state of its blocks ([`ModelState`], the training API).
//!
//! Streaming inference ([`StreamState`]): [`LanguageModel::prefill`] over segments, then
//! [`LanguageModel::step`] token by token, equals one forward over the whole stream;
//! [`LanguageModel::forward`] is a prefill on a fresh state, so the two cannot drift.

mod decoder;
mod hsa_decoder;
mod lm_head;
mod stream;

pub use decoder::Decoder;
pub use hsa_decoder::{HsaDecoder, HsaGroup, HsaStage};
pub use lm_head::LmHead;
pub use stream::StreamState;

use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::DType;

use crate::config::{Arch, ModelConfig};
use crate::nn::attention::AttentionSettings;
use crate::nn::block::{BlockState, BlockStream, DecoderBlock, TransformerBlock};
use crate::nn::mamba2::Mamba2Block;
use crate::ops::RambaBackend;
use crate::stream::ChunkStoreKind;

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

    /// The sliding window of this architecture's attention blocks (`None`: full causal).
    pub(crate) fn attention_window(&self) -> Option<usize> {
        (self.arch == Arch::SwaHsa).then_some(self.attention.window)
    }
}

impl<B: RambaBackend> LanguageModel<B> {
    /// `tokens`: `[batch, seq]` → logits `[batch, seq, vocab]`: a prefill on a fresh stream.
    pub fn forward(&self, tokens: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        self.prefill(tokens, &mut self.stream_state(ChunkStoreKind::Device))
    }

    /// Like [`forward`](Self::forward), with the blocks' initial recurrent state (zeros when
    /// `None`) and their final state returned: the training API (memory reset), where the
    /// chunk memory and attention caches start fresh in every call.
    pub fn forward_with_state(
        &self,
        tokens: Tensor<B, 2, Int>,
        state: Option<ModelState<B>>,
    ) -> (Tensor<B, 3>, ModelState<B>) {
        let (h, state) = self.hidden_with_state(tokens, state);
        (self.lm().logits(h), state)
    }

    /// Like [`forward_with_state`](Self::forward_with_state), stopping before the LM head: the
    /// final hidden states `[batch, seq, d_model]`, for [`head_loss`](Self::head_loss) and
    /// [`predictions_at`](Self::predictions_at), so a training step never needs every logit.
    pub fn hidden_with_state(
        &self,
        tokens: Tensor<B, 2, Int>,
        state: Option<ModelState<B>>,
    ) -> (Tensor<B, 3>, ModelState<B>) {
        let mut stream = self.stream_state(ChunkStoreKind::Device);
        if let Some(s) = state {
            stream.seed(s);
        }
        let h = self.run(tokens, &mut stream);
        (h, stream.block_states())
    }

    /// The training loss of hidden states `h` from [`hidden_with_state`](Self::hidden_with_state)
    /// (see [`LmHead::loss`]).
    pub fn head_loss(
        &self,
        h: Tensor<B, 3>,
        targets: Tensor<B, 2, Int>,
        mask: Tensor<B, 2>,
    ) -> Tensor<B, 1> {
        self.lm().loss(h, targets, mask)
    }

    /// The argmax token of the logits at `positions` (flat indices into `[batch · seq]`) of
    /// hidden states `h`, computing the head only at those rows (the answers a batch scores,
    /// not a vocabulary-wide row per token).
    pub fn predictions_at(&self, h: Tensor<B, 3>, positions: &[usize]) -> Vec<u32> {
        if positions.is_empty() {
            return Vec::new();
        }
        let [batch, seq, d] = h.dims();
        let device = h.device();
        let index = Tensor::<B, 1, Int>::from_data(
            TensorData::new(
                positions.iter().map(|&p| p as i64).collect::<Vec<_>>(),
                [positions.len()],
            )
            .convert::<B::IntElem>(),
            &device,
        );
        let rows = h.reshape([batch * seq, d]).select(0, index);
        self.lm()
            .logits(rows.unsqueeze_dim(0))
            .argmax(2)
            .into_data()
            .iter::<i64>()
            .map(|id| id as u32)
            .collect()
    }

    /// A fresh stream for this model; HSA models keep their chunk memory in a store of `kind`
    /// (the others ignore it).
    pub fn stream_state(&self, kind: ChunkStoreKind) -> StreamState<B> {
        match self {
            LanguageModel::Plain(m) => m.stream_state(),
            LanguageModel::Hsa(m) => m.stream_state(kind),
        }
    }

    /// The next segment of a stream, `tokens [batch, seq]` (`seq ≥ 1`) → logits
    /// `[batch, seq, vocab]`, advancing `state`.
    ///
    /// # Panics
    /// When `seq` is 0, or `state` belongs to another model.
    pub fn prefill(&self, tokens: Tensor<B, 2, Int>, state: &mut StreamState<B>) -> Tensor<B, 3> {
        let h = self.run(tokens, state);
        self.lm().logits(h)
    }

    /// Like [`prefill`](Self::prefill), returning only the last position's logits
    /// `[batch, vocab]` (what generation needs, without a vocabulary-wide row per token).
    pub fn prefill_last(
        &self,
        tokens: Tensor<B, 2, Int>,
        state: &mut StreamState<B>,
    ) -> Tensor<B, 2> {
        let h = self.run(tokens, state);
        let [batch, seq, _] = h.dims();
        let logits = self.lm().logits(h.narrow(1, seq - 1, 1));
        let vocab = logits.dims()[2];
        logits.reshape([batch, vocab])
    }

    /// One token per row, `tokens [batch]` → the next-token logits `[batch, vocab]`.
    pub fn step(&self, tokens: Tensor<B, 1, Int>, state: &mut StreamState<B>) -> Tensor<B, 2> {
        self.prefill_last(tokens.unsqueeze_dim(1), state)
    }

    fn run(&self, tokens: Tensor<B, 2, Int>, state: &mut StreamState<B>) -> Tensor<B, 3> {
        assert!(tokens.dims()[1] > 0, "prefill: an empty segment");
        match self {
            LanguageModel::Plain(m) => m.run(tokens, state),
            LanguageModel::Hsa(m) => m.run(tokens, state),
        }
    }

    fn lm(&self) -> &LmHead<B> {
        match self {
            LanguageModel::Plain(m) => m.lm(),
            LanguageModel::Hsa(m) => m.lm(),
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
        let h = self.run(tokens, &mut self.stream_state(ChunkStoreKind::Device));
        self.lm().loss(h, targets, mask)
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

    /// This model, computing in `dtype` (f32, bf16, f16) with its parameters left in f32: mixed
    /// precision, see [`crate::precision`]. A setting of the model value, not of its weights:
    /// checkpoints do not record it, and a model loaded from one computes in f32.
    pub fn with_compute_dtype(mut self, dtype: DType) -> Self {
        let lm = match &mut self {
            LanguageModel::Plain(m) => m.lm_mut(),
            LanguageModel::Hsa(m) => m.lm_mut(),
        };
        lm.set_compute_dtype(dtype);
        self
    }

    /// The dtype this model computes in ([`with_compute_dtype`](Self::with_compute_dtype)).
    pub fn compute_dtype(&self) -> DType {
        match self {
            LanguageModel::Plain(m) => m.lm().compute_dtype(),
            LanguageModel::Hsa(m) => m.lm().compute_dtype(),
        }
    }
}

/// Masked mean cross-entropy (f32, whatever the logits' dtype): logits `[batch, seq, vocab]`,
/// targets and mask `[batch, seq]` (see [`crate::ops::cross_entropy`]).
pub fn lm_loss<B: RambaBackend>(
    logits: Tensor<B, 3>,
    targets: Tensor<B, 2, Int>,
    mask: Tensor<B, 2>,
) -> Tensor<B, 1> {
    if !B::fused_norm_and_loss() {
        // At rank 3: the summation order the CPU recipes were tuned on.
        return crate::ops::cross_entropy::reference::cross_entropy(logits, targets, mask);
    }
    let [batch, seq, vocab] = logits.dims();
    crate::ops::cross_entropy::cross_entropy(
        logits.reshape([batch * seq, vocab]),
        targets.reshape([batch * seq]),
        mask.reshape([batch * seq]),
    )
}

/// Runs `blocks` in order at stream positions `start..`, each with its stream state.
pub(crate) fn run_stream<'a, B: RambaBackend>(
    blocks: &[DecoderBlock<B>],
    mut x: Tensor<B, 3>,
    start: usize,
    states: &mut std::slice::IterMut<'a, BlockStream<B>>,
) -> Tensor<B, 3> {
    for block in blocks {
        let state = states
            .next()
            .expect("a stream state of another model: fewer block states than blocks");
        x = block.forward_stream(x, start, state);
    }
    x
}
