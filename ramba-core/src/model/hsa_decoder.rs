//! The HSA decoder (spec §6): `ramba` and `mamba_nsa` (Mamba-2 blocks; chunk-unaware selection
//! for the latter) and `swa_hsa` (sliding-window blocks).
//!
//! ```text
//! Embedding
//! lower decoder: block × n_lower
//! ChunkMemory(h)                      → landmarks, K, V   (shared by every HSA layer)
//! for each of n_groups:
//!     Retrieval(h)                    → indices, weights  (shared by the group's HSA layers)
//!     repeat hsa_per_group: HSA layer, then block × blocks_per_hsa
//! RMSNorm → LM head
//! ```

use burn::prelude::*;

use super::{attention_mask, run_blocks, LmHead, ModelState};
use crate::config::{mlp_hidden, ModelConfig};
use crate::nn::block::DecoderBlock;
use crate::nn::chunk_memory::{ChunkMemory, ChunkMemoryConfig};
use crate::nn::hsa_layer::{HsaLayer, HsaLayerConfig};
use crate::nn::retrieval::{Retrieval, RetrievalConfig};
use crate::ops::RambaBackend;

/// One HSA layer and the blocks after it.
#[derive(Module, Debug)]
pub struct HsaStage<B: Backend> {
    hsa: HsaLayer<B>,
    blocks: Vec<DecoderBlock<B>>,
}

/// A retrieval and the stages that share its selection.
#[derive(Module, Debug)]
pub struct HsaGroup<B: Backend> {
    retrieval: Retrieval<B>,
    stages: Vec<HsaStage<B>>,
}

/// See the module docs.
#[derive(Module, Debug)]
pub struct HsaDecoder<B: Backend> {
    lm: LmHead<B>,
    lower: Vec<DecoderBlock<B>>,
    memory: ChunkMemory<B>,
    groups: Vec<HsaGroup<B>>,
    window: Option<usize>,
}

impl<B: Backend> HsaDecoder<B> {
    /// From a validated config with `arch = ramba | swa_hsa | mamba_nsa`.
    pub fn new(cfg: &ModelConfig, device: &B::Device) -> Self {
        let window = cfg.attention_window();
        let (hsa, retrieval) = (cfg.hsa_layer_config(), cfg.retrieval_config());
        let stage = || HsaStage {
            hsa: hsa.init(device),
            blocks: (0..cfg.blocks_per_hsa).map(|_| cfg.block(device)).collect(),
        };
        let group = || HsaGroup {
            retrieval: retrieval.init(device),
            stages: (0..cfg.hsa_per_group).map(|_| stage()).collect(),
        };
        Self {
            lm: LmHead::new(cfg, device),
            lower: (0..cfg.n_lower).map(|_| cfg.block(device)).collect(),
            memory: cfg.chunk_memory_config().init(device),
            groups: (0..cfg.n_groups).map(|_| group()).collect(),
            window,
        }
    }

    /// Decoder blocks (HSA layers not counted).
    pub fn n_blocks(&self) -> usize {
        self.lower.len()
            + self
                .groups
                .iter()
                .flat_map(|g| &g.stages)
                .map(|s| s.blocks.len())
                .sum::<usize>()
    }
}

/// The HSA modules' own configs, from the `[model]` and `[model.hsa]` settings: the modules
/// take only what they use, the model maps its settings onto them here.
impl ModelConfig {
    /// The shared chunk memory.
    pub fn chunk_memory_config(&self) -> ChunkMemoryConfig {
        let h = &self.hsa;
        ChunkMemoryConfig::new(
            self.d_model,
            h.retrieval_dim,
            mlp_hidden(h.mlp_hidden, self.d_model),
        )
        .with_chunk_size(h.chunk_size)
        .with_n_kv_heads(h.n_kv_heads)
        .with_head_dim(h.head_dim)
        .with_landmark(h.landmark)
        .with_encoder_layers(h.encoder_layers)
        .with_encoder_heads(h.encoder_heads)
        .with_encoder_kv_heads(h.encoder_kv_heads)
        .with_init_std(self.init_std)
        .with_norm_eps(self.norm_eps)
    }

    /// Each group's chunk selection.
    pub fn retrieval_config(&self) -> RetrievalConfig {
        let h = &self.hsa;
        RetrievalConfig::new(self.d_model, h.retrieval_dim)
            .with_n_heads(h.n_kv_heads)
            .with_chunk_size(h.chunk_size)
            .with_top_k(h.top_k)
            .with_weighting(h.weighting)
            .with_selection(self.selection())
            .with_init_std(self.init_std)
            .with_norm_eps(self.norm_eps)
    }

    /// Every HSA layer.
    pub fn hsa_layer_config(&self) -> HsaLayerConfig {
        let h = &self.hsa;
        HsaLayerConfig::new(self.d_model)
            .with_n_heads(h.n_heads)
            .with_head_dim(h.head_dim)
            .with_chunk_size(h.chunk_size)
            .with_softmax_off_by_one(h.softmax_off_by_one)
            .with_mlp_hidden(h.hsa_mlp.then(|| mlp_hidden(h.mlp_hidden, self.d_model)))
            .with_init_std(self.init_std)
            .with_norm_eps(self.norm_eps)
    }
}

impl<B: RambaBackend> HsaDecoder<B> {
    /// `[batch, seq]` → logits `[batch, seq, vocab]` and the blocks' final state.
    pub fn forward(
        &self,
        tokens: Tensor<B, 2, Int>,
        state: Option<ModelState<B>>,
    ) -> (Tensor<B, 3>, ModelState<B>) {
        let mask = attention_mask(self.window);
        let mut states = state.map(|s| s.blocks).unwrap_or_default().into_iter();
        let mut out = Vec::with_capacity(self.n_blocks());

        let mut x = run_blocks(
            &self.lower,
            self.lm.embed(tokens),
            &mut states,
            mask,
            &mut out,
        );
        let memory = self.memory.forward(x.clone());
        for group in &self.groups {
            let selection = group.retrieval.forward(x.clone(), &memory);
            for stage in &group.stages {
                x = stage.hsa.forward(x, &memory, &selection);
                x = run_blocks(&stage.blocks, x, &mut states, mask, &mut out);
            }
        }
        (self.lm.logits(x), ModelState { blocks: out })
    }
}

impl<B: RambaBackend> HsaDecoder<B> {
    /// What each retrieval group selected for `tokens` (from a zero state), in group order:
    /// for inspecting retrieval (which chunks each token read, with what weight). Runs the
    /// layers [`forward`](Self::forward) runs, up to the last group's retrieval.
    pub fn selections(&self, tokens: Tensor<B, 2, Int>) -> Vec<crate::ops::ChunkSelection<B>> {
        let mask = attention_mask(self.window);
        let mut states = Vec::new().into_iter();
        let mut out = Vec::new();
        let mut x = run_blocks(
            &self.lower,
            self.lm.embed(tokens),
            &mut states,
            mask,
            &mut out,
        );
        let memory = self.memory.forward(x.clone());
        let mut selections = Vec::with_capacity(self.groups.len());
        for (i, group) in self.groups.iter().enumerate() {
            let selection = group.retrieval.forward(x.clone(), &memory);
            if i + 1 < self.groups.len() {
                for stage in &group.stages {
                    x = stage.hsa.forward(x, &memory, &selection);
                    x = run_blocks(&stage.blocks, x, &mut states, mask, &mut out);
                }
            }
            selections.push(selection);
        }
        selections
    }
}
