//! Model configuration: plain serde structs whose defaults are the paper's RAMba-370M.
//!
//! Every struct rejects unknown keys, and [`ModelConfig::validate`] names the key at fault, so a
//! typo in an experiment file is an error rather than a silently ignored setting.

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use crate::ops::{ChunkWeighting, SelectionMode};

/// Which architecture a [`ModelConfig`] builds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Arch {
    /// Mamba-2 lower decoder, shared chunk memory, groups of [HSA, Mamba-2 × n] (the paper).
    #[default]
    Ramba,
    /// The same Mamba-2 stack without HSA.
    Mamba2,
    /// Full causal attention with RoPE (the length-generalisation baseline).
    Transformer,
    /// Sliding-window attention (RoPE) + HSA, the layout the authors now recommend.
    SwaHsa,
    /// `ramba`'s layout with chunk-unaware (NSA-style) selection: the paper's "Mamba + NSA"
    /// baseline, whatever `model.hsa.selection` says.
    MambaNsa,
}

impl Arch {
    /// Whether the architecture has HSA layers.
    pub fn has_hsa(self) -> bool {
        matches!(self, Arch::Ramba | Arch::SwaHsa | Arch::MambaNsa)
    }

    /// Whether its decoder blocks are Mamba-2 blocks (else attention blocks).
    pub fn uses_mamba(self) -> bool {
        matches!(self, Arch::Ramba | Arch::Mamba2 | Arch::MambaNsa)
    }
}

/// How a chunk's landmark (its selection key) is pooled from the chunk encoder.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Landmark {
    /// A learned CLS vector appended to each chunk; landmark = W_lmk · CLS output (released code).
    #[default]
    Cls,
    /// landmark = W_lmk · mean of the encoded chunk (the paper's text).
    Mean,
}

/// The whole model. Decoder blocks: `n_lower + n_groups · hsa_per_group · blocks_per_hsa`, for
/// every architecture, so swapping `arch` keeps the depth.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// `ramba`, `mamba2`, `transformer`, `swa_hsa` or `mamba_nsa`.
    pub arch: Arch,
    /// Vocabulary size (50280 for the GPT-NeoX tokenizer; 257 for the byte tokenizer).
    pub vocab_size: usize,
    /// Model width `d`.
    pub d_model: usize,
    /// Blocks of the lower decoder, below the chunk memory.
    pub n_lower: usize,
    /// Retrieval groups; each re-selects chunks from its own residual.
    pub n_groups: usize,
    /// HSA layers per group.
    pub hsa_per_group: usize,
    /// Decoder blocks after each HSA layer.
    pub blocks_per_hsa: usize,
    /// Share the embedding matrix with the LM head.
    pub tie_embeddings: bool,
    /// Standard deviation of the normal initialisation of projections and embeddings.
    pub init_std: f64,
    /// Epsilon of every RMSNorm.
    pub norm_eps: f64,
    /// Mamba-2 blocks.
    pub mamba: MambaConfig,
    /// Chunk memory, retrieval and HSA layers.
    pub hsa: HsaConfig,
    /// Attention blocks (transformer and swa_hsa).
    pub attention: AttentionConfig,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            arch: Arch::Ramba,
            vocab_size: 50280,
            d_model: 1024,
            n_lower: 24,
            n_groups: 1,
            hsa_per_group: 3,
            blocks_per_hsa: 8,
            tie_embeddings: true,
            init_std: 0.02,
            norm_eps: 1e-5,
            mamba: MambaConfig::default(),
            hsa: HsaConfig::default(),
            attention: AttentionConfig::default(),
        }
    }
}

/// Mamba-2 block (Dao & Gu 2024) as used by RAMba.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MambaConfig {
    /// Inner width = `expand · d_model`.
    pub expand: usize,
    /// Channels per SSM head (`P`).
    pub head_dim: usize,
    /// State size per head (`N`).
    pub d_state: usize,
    /// Groups sharing B and C.
    pub n_groups: usize,
    /// Width of the causal depthwise convolution.
    pub conv_width: usize,
    /// SSD chunk length of the scan (speed and memory only).
    pub chunk_size: usize,
    /// Smallest Δ at initialisation.
    pub dt_min: f64,
    /// Largest Δ at initialisation.
    pub dt_max: f64,
    /// Training only (0 = off): the Mamba layers run each `train_segment`-token slice of a row
    /// as an independent sequence, from a zero state, while HSA still sees the whole row (the
    /// reference code's `segment_size`). Information then crosses a segment boundary only
    /// through retrieval, so the model cannot lean on the recurrent state for what it must
    /// retrieve at lengths where that state has long forgotten it. Inference and validation
    /// always run the recurrence over the whole sequence, unless `segment_inference` is set.
    pub train_segment: usize,
    /// With `train_segment` set: outside training too (prefill, decoding steps, validation),
    /// restart the recurrence from zeros at every position that is a multiple of
    /// `train_segment`, so the Mamba layers never carry more context than they did in training,
    /// at any length. It changes how a trained model runs, not its weights.
    pub segment_inference: bool,
}

impl Default for MambaConfig {
    fn default() -> Self {
        Self {
            expand: 2,
            head_dim: 64,
            d_state: 128,
            n_groups: 1,
            conv_width: 4,
            chunk_size: 256,
            dt_min: 1e-3,
            dt_max: 0.1,
            train_segment: 0,
            segment_inference: false,
        }
    }
}

impl MambaConfig {
    /// `expand · d_model`.
    pub fn d_inner(&self, d_model: usize) -> usize {
        self.expand * d_model
    }
    /// SSM heads.
    pub fn n_heads(&self, d_model: usize) -> usize {
        self.d_inner(d_model) / self.head_dim
    }
}

/// Chunk memory, chunk selection and HSA layers (spec §2–§4).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HsaConfig {
    /// Tokens per chunk (`S`).
    pub chunk_size: usize,
    /// Chunks selected per token (`K`).
    pub top_k: usize,
    /// HSA query heads (`h_q`).
    pub n_heads: usize,
    /// HSA KV heads (`h_kv`), also the number of retrieval heads.
    pub n_kv_heads: usize,
    /// Head dimension (`d_h`).
    pub head_dim: usize,
    /// Width of retrieval queries and landmarks (`d_r`), split over the KV heads.
    pub retrieval_dim: usize,
    /// `stick_breaking` (default) or `softmax` chunk weights.
    pub weighting: ChunkWeighting,
    /// `chunk_aware` (default, HSA) or `chunk_unaware` (NSA-style: scores learned from
    /// token-level attention to the mean-pooled keys, not from the chunks' outputs; needs
    /// `landmark = "mean"`). `arch = "mamba_nsa"` is always chunk-unaware.
    pub selection: SelectionMode,
    /// Softmax-off-by-one inside each chunk.
    pub softmax_off_by_one: bool,
    /// The follow-up paper's bypassing residual: `h + MLP(norm(h + HSA(h)))`.
    pub hsa_mlp: bool,
    /// `cls` (default) or `mean` landmarks.
    pub landmark: Landmark,
    /// Bidirectional transformer layers of the chunk encoder (0 = RMSNorm only).
    pub encoder_layers: usize,
    /// Attention heads of the chunk encoder.
    pub encoder_heads: usize,
    /// KV heads of the chunk encoder.
    pub encoder_kv_heads: usize,
    /// Hidden width of SwiGLU MLPs in the encoder and the HSA bypass (0 = ⌊8d/3/64⌋·64).
    pub mlp_hidden: usize,
}

impl Default for HsaConfig {
    fn default() -> Self {
        Self {
            chunk_size: 64,
            top_k: 8,
            n_heads: 16,
            n_kv_heads: 1,
            head_dim: 64,
            retrieval_dim: 1024,
            weighting: ChunkWeighting::StickBreaking,
            selection: SelectionMode::ChunkAware,
            softmax_off_by_one: false,
            hsa_mlp: false,
            landmark: Landmark::Cls,
            encoder_layers: 1,
            encoder_heads: 16,
            encoder_kv_heads: 16,
            mlp_hidden: 0,
        }
    }
}

/// Attention blocks of the `transformer` and `swa_hsa` architectures.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AttentionConfig {
    /// Query heads; head dim = `d_model / n_heads`.
    pub n_heads: usize,
    /// KV heads (grouped-query attention).
    pub n_kv_heads: usize,
    /// Sliding window of `swa_hsa` blocks, in tokens (a token sees itself and `window − 1` before).
    pub window: usize,
    /// RoPE base.
    pub rope_theta: f64,
    /// SwiGLU hidden width (0 = ⌊8d/3/64⌋·64).
    pub mlp_hidden: usize,
}

impl Default for AttentionConfig {
    fn default() -> Self {
        Self {
            n_heads: 16,
            n_kv_heads: 16,
            window: 512,
            rope_theta: 10_000.0,
            mlp_hidden: 0,
        }
    }
}

/// SwiGLU hidden width: the explicit value, or `⌊8d/3/64⌋·64` (at least 64).
pub fn mlp_hidden(explicit: usize, d_model: usize) -> usize {
    if explicit > 0 {
        explicit
    } else {
        ((8 * d_model / 3) / 64 * 64).max(64)
    }
}

fn positive(key: &str, value: usize) -> Result<()> {
    if value == 0 {
        bail!("{key} must be > 0");
    }
    Ok(())
}

fn divides(key: &str, value: usize, of_key: &str, of: usize) -> Result<()> {
    positive(key, value)?;
    if !of.is_multiple_of(value) {
        bail!("{key} = {value} must divide {of_key} = {of}");
    }
    Ok(())
}

impl ModelConfig {
    /// Parses a `[model]` table (or a whole file of model keys).
    pub fn from_toml_str(text: &str) -> Result<Self> {
        let cfg: Self = toml::from_str(text)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Decoder blocks that are not HSA layers.
    pub fn n_blocks(&self) -> usize {
        self.n_lower + self.n_groups * self.hsa_per_group * self.blocks_per_hsa
    }

    /// Checks every constraint the modules rely on; the error names the key (`model.…`).
    pub fn validate(&self) -> Result<()> {
        positive("model.vocab_size", self.vocab_size)?;
        positive("model.d_model", self.d_model)?;
        if !(self.init_std > 0.0 && self.init_std.is_finite()) {
            bail!(
                "model.init_std must be a positive number (got {})",
                self.init_std
            );
        }
        if self.norm_eps.is_nan() || self.norm_eps <= 0.0 {
            bail!("model.norm_eps must be > 0 (got {})", self.norm_eps);
        }
        if self.n_blocks() == 0 && !self.arch.has_hsa() {
            bail!("model: the {:?} architecture needs at least one block (n_lower, or n_groups · hsa_per_group · blocks_per_hsa)", self.arch);
        }
        if self.arch.uses_mamba() {
            let m = &self.mamba;
            positive("model.mamba.expand", m.expand)?;
            divides(
                "model.mamba.head_dim",
                m.head_dim,
                "model.mamba.expand · model.d_model",
                m.d_inner(self.d_model),
            )?;
            divides(
                "model.mamba.n_groups",
                m.n_groups,
                "the number of SSM heads (expand · d_model / head_dim)",
                m.n_heads(self.d_model),
            )?;
            positive("model.mamba.d_state", m.d_state)?;
            positive("model.mamba.conv_width", m.conv_width)?;
            positive("model.mamba.chunk_size", m.chunk_size)?;
            if !(m.dt_min > 0.0 && m.dt_min <= m.dt_max) {
                bail!(
                    "model.mamba.dt_min ({}) must be > 0 and ≤ model.mamba.dt_max ({})",
                    m.dt_min,
                    m.dt_max
                );
            }
            if m.segment_inference && m.train_segment == 0 {
                bail!(
                    "model.mamba.segment_inference = true needs model.mamba.train_segment > 0 \
                     (the slice length the recurrence restarts at)"
                );
            }
        } else {
            let a = &self.attention;
            divides(
                "model.attention.n_heads",
                a.n_heads,
                "model.d_model",
                self.d_model,
            )?;
            divides(
                "model.attention.n_kv_heads",
                a.n_kv_heads,
                "model.attention.n_heads",
                a.n_heads,
            )?;
            if !(self.d_model / a.n_heads).is_multiple_of(2) {
                bail!(
                    "model.d_model / model.attention.n_heads = {} must be even for RoPE",
                    self.d_model / a.n_heads
                );
            }
            if self.arch == Arch::SwaHsa {
                positive("model.attention.window", a.window)?;
            }
        }
        if self.arch.has_hsa() {
            let h = &self.hsa;
            positive("model.n_groups", self.n_groups)?;
            positive("model.hsa_per_group", self.hsa_per_group)?;
            positive("model.hsa.chunk_size", h.chunk_size)?;
            positive("model.hsa.top_k", h.top_k)?;
            positive("model.hsa.head_dim", h.head_dim)?;
            // `divides` below only checks its divisor: a zero dividend passes it, and a
            // zero head count or retrieval width would divide by zero in the modules.
            positive("model.hsa.n_heads", h.n_heads)?;
            positive("model.hsa.retrieval_dim", h.retrieval_dim)?;
            divides(
                "model.hsa.n_kv_heads",
                h.n_kv_heads,
                "model.hsa.n_heads",
                h.n_heads,
            )?;
            divides(
                "model.hsa.n_kv_heads",
                h.n_kv_heads,
                "model.hsa.retrieval_dim",
                h.retrieval_dim,
            )?;
            if h.encoder_layers > 0 {
                divides(
                    "model.hsa.encoder_heads",
                    h.encoder_heads,
                    "model.d_model",
                    self.d_model,
                )?;
                divides(
                    "model.hsa.encoder_kv_heads",
                    h.encoder_kv_heads,
                    "model.hsa.encoder_heads",
                    h.encoder_heads,
                )?;
                if !(self.d_model / h.encoder_heads).is_multiple_of(2) {
                    bail!(
                        "model.d_model / model.hsa.encoder_heads = {} must be even for RoPE",
                        self.d_model / h.encoder_heads
                    );
                }
            }
            if self.selection() == SelectionMode::ChunkUnaware && h.landmark != Landmark::Mean {
                bail!(
                    "model.hsa.selection = \"chunk_unaware\" (and arch = \"mamba_nsa\") scores \
                     chunks by their mean-pooled keys: set model.hsa.landmark = \"mean\""
                );
            }
            if h.landmark == Landmark::Cls && h.encoder_layers == 0 {
                bail!("model.hsa.landmark = \"cls\" needs model.hsa.encoder_layers ≥ 1 (a CLS vector is only informative after encoding); use landmark = \"mean\"");
            }
        }
        Ok(())
    }

    /// The selection the HSA layers use: `model.hsa.selection`, chunk-unaware for
    /// `mamba_nsa`.
    pub fn selection(&self) -> SelectionMode {
        if self.arch == Arch::MambaNsa {
            SelectionMode::ChunkUnaware
        } else {
            self.hsa.selection
        }
    }

    /// Checks that training sequences of `seq_len` tokens fit the model's chunking.
    pub fn validate_seq_len(&self, key: &str, seq_len: usize) -> Result<()> {
        if self.arch.has_hsa() && !seq_len.is_multiple_of(self.hsa.chunk_size) {
            bail!(
                "model.hsa.chunk_size = {} must divide {key} = {seq_len} (training sequences are whole chunks)",
                self.hsa.chunk_size
            );
        }
        Ok(())
    }
}
