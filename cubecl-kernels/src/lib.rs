//! CubeCL kernels for the ops of `ramba_core::ops::RambaBackend`, generic over Burn's
//! `CubeRuntime` (CUDA and wgpu). One kernel family per file, its launcher beside it, the shapes
//! and the grid mapping documented at the top of each file.
//!
//! - [`adamw`]: one AdamW step of a parameter tensor in one launch.
//! - [`attention`]: fused causal / sliding-window / unmasked softmax attention, forward and
//!   backward.
//! - [`hsa`]: hierarchical sparse attention forward, backward (`dq`/`dw` pass, inverted index,
//!   `dK`/`dV` pass).
//! - [`selection`]: fused top-k chunk selection from retrieval queries and landmarks.
//! - [`scan`]: Mamba-2 selective scan (chunked SSD), forward and backward.
//! - [`conv`]: causal depthwise conv1d with carried state, forward and backward.
//! - [`matmul`]: matrix products through a named cubek kernel (the linear layers).
//! - [`norm`]: RMSNorm, the gated RMSNorm and SiLU, forward and backward, one launch each.
//! - [`cross_entropy`]: the loss's log-sum-exp over the vocabulary and the logits' gradient.
//! - [`embedding`]: the embedding's weight gradient, tokens grouped by id.
//! - [`sort`]: a stable radix sort into CSR groups (HSA's inverted index, the embedding).
//! - [`reduce`]: sums over the leading axis (the parameters' gradients summed over tokens).

pub mod adamw;
pub mod attention;
pub mod conv;
pub mod cross_entropy;
pub mod embedding;
mod fragments;
pub mod hsa;
pub mod launch;
pub mod matmul;
pub mod norm;
pub mod reduce;
pub mod scan;
pub mod selection;
pub mod sort;
