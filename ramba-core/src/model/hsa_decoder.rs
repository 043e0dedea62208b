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

use super::{run_stream, LmHead, StreamState};
use crate::config::{mlp_hidden, ModelConfig};
use crate::nn::block::DecoderBlock;
use crate::nn::chunk_memory::{ChunkMemory, ChunkMemoryConfig};
use crate::nn::hsa_layer::{HsaLayer, HsaLayerConfig};
use crate::nn::retrieval::{Retrieval, RetrievalConfig};
use crate::ops::RambaBackend;
use crate::stream::profile::timed;
use crate::stream::{ChunkStoreKind, StreamStage};

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

    /// The embedding and LM head.
    pub fn lm(&self) -> &LmHead<B> {
        &self.lm
    }

    /// The embedding and LM head, to set the compute dtype.
    pub(crate) fn lm_mut(&mut self) -> &mut LmHead<B> {
        &mut self.lm
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
    /// A fresh stream state, its chunk memory kept in a store of `kind`.
    pub fn stream_state(&self, kind: ChunkStoreKind) -> StreamState<B> {
        let blocks = self
            .lower
            .iter()
            .chain(
                self.groups
                    .iter()
                    .flat_map(|g| &g.stages)
                    .flat_map(|s| &s.blocks),
            )
            .map(|b| b.stream_state(self.window))
            .collect();
        StreamState::new(blocks, Some((self.memory.chunk_size(), kind)))
    }

    /// `[batch, seq]` at the stream's position → the final residual `[batch, seq, d_model]`
    /// (before the LM head), advancing `state`.
    ///
    /// A stream's first call is the whole-sequence model (the training forward, fused kernels
    /// where the backend has them): its chunk memory is its own. Later calls first store the
    /// chunks they complete, then select among all stored chunks with the causal rule at their
    /// absolute positions, and read the selected chunks' keys and values gathered from the
    /// store, once per retrieval group.
    pub fn run(&self, tokens: Tensor<B, 2, Int>, state: &mut StreamState<B>) -> Tensor<B, 3> {
        let start = state.position;
        let seq = tokens.dims()[1];
        if start > 0 && seq > GATHERED_TOKENS_PER_PASS {
            // A later call reads `[seq, K, S, d_h]` gathered tiles per retrieval group; a long
            // segment would need them all at once (a 64K-token segment: beyond wgpu's largest
            // buffer, and a CUDA launch grid's batch axis). Passes of a bounded length give
            // the same result, since a stream is exact for any split of its tokens.
            let passes = (0..seq)
                .step_by(GATHERED_TOKENS_PER_PASS)
                .map(|from| {
                    let to = (from + GATHERED_TOKENS_PER_PASS).min(seq);
                    self.run(tokens.clone().slice(s![.., from..to]), state)
                })
                .collect();
            return Tensor::cat(passes, 1);
        }
        let device = tokens.device();
        let hsa = state
            .hsa
            .as_mut()
            .expect("a stream state of a model without HSA");
        let mut states = state.blocks.iter_mut();
        // Only later calls are profiled: a first call is the whole-sequence forward.
        let mut profile = state.profile.as_mut().filter(|_| start > 0);
        let lower = timed::<B, _>(&mut profile, StreamStage::Lower, &device, || {
            run_stream(&self.lower, self.lm.embed(tokens), start, &mut states)
        });
        let mut x = lower.clone();
        if start == 0 {
            let memory = self.memory.forward(lower.clone());
            for group in &self.groups {
                let selection = group.retrieval.forward(x.clone(), &memory);
                for stage in &group.stages {
                    x = stage.hsa.forward(x, &memory, &selection);
                    x = run_stream(&stage.blocks, x, start, &mut states);
                }
            }
            hsa.keep(memory, lower);
        } else {
            timed::<B, _>(&mut profile, StreamStage::Store, &device, || {
                hsa.extend(&self.memory, lower)
            });
            let landmarks = hsa.store.landmarks();
            let pooled = hsa.store.pooled_values();
            for group in &self.groups {
                let read = landmarks.clone().map(|l| {
                    let pooled = pooled.clone();
                    let selection =
                        timed::<B, _>(&mut profile, StreamStage::Select, &device, || {
                            group.retrieval.select(x.clone(), l, pooled, start)
                        });
                    let chunks = timed::<B, _>(&mut profile, StreamStage::Gather, &device, || {
                        hsa.store.gather(&selection.indices)
                    });
                    (chunks, selection)
                });
                let chunks = read.as_ref().and_then(|(c, s)| c.as_ref().map(|c| (c, s)));
                for stage in &group.stages {
                    x = timed::<B, _>(&mut profile, StreamStage::Hsa, &device, || {
                        stage.hsa.forward_gathered(x, chunks)
                    });
                    x = timed::<B, _>(&mut profile, StreamStage::Blocks, &device, || {
                        run_stream(&stage.blocks, x, start, &mut states)
                    });
                }
            }
            if let Some(p) = profile {
                p.end_pass();
            }
        }
        state.position += seq;
        x
    }
}

/// The longest pass of a stream's later calls ([`HsaDecoder::run`] splits longer segments):
/// the gathered tiles of 4096 tokens take 4 MiB (quickstart) to 128 MiB (passkey-4k) per group.
const GATHERED_TOKENS_PER_PASS: usize = 4096;

impl<B: RambaBackend> HsaDecoder<B> {
    /// What each retrieval group selected for `tokens` (from a zero state), in group order:
    /// for inspecting retrieval (which chunks each token read, with what weight). Runs the
    /// layers [`forward`](Self::forward) runs, up to the last group's retrieval.
    pub fn selections(&self, tokens: Tensor<B, 2, Int>) -> Vec<crate::ops::ChunkSelection<B>> {
        // A fresh stream's first call is the whole-sequence forward: the blocks run on their
        // own zero states, and the state is dropped afterwards.
        let mut state = self.stream_state(ChunkStoreKind::Device);
        let mut states = state.blocks.iter_mut();
        let mut x = run_stream(&self.lower, self.lm.embed(tokens), 0, &mut states);
        let memory = self.memory.forward(x.clone());
        let mut selections = Vec::with_capacity(self.groups.len());
        for (i, group) in self.groups.iter().enumerate() {
            let selection = group.retrieval.forward(x.clone(), &memory);
            if i + 1 < self.groups.len() {
                for stage in &group.stages {
                    x = stage.hsa.forward(x, &memory, &selection);
                    x = run_stream(&stage.blocks, x, 0, &mut states);
                }
            }
            selections.push(selection);
        }
        selections
    }
}
