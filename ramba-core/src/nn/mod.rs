//! Building blocks, in the shape of `burn-nn` modules: a config (a `#[derive(Config)]` struct
//! of the module's own, or a section of [`ModelConfig`](crate::config::ModelConfig)), an `init`,
//! the module, and `forward` with shapes. The HSA modules (chunk memory, retrieval, HSA layer)
//! have configs of their own, which the model fills from its `ModelConfig`.

pub mod attention;
pub mod autocast;
pub mod block;
pub mod chunk_memory;
pub mod hsa_layer;
pub mod kv_cache;
pub mod mamba2;
pub mod mlp;
pub mod norm;
pub mod retrieval;
pub mod rope;

pub use autocast::Autocast;

use burn::nn::{Initializer, Linear, LinearConfig};
use burn::prelude::*;

/// A linear layer with normal(0, std) weights.
pub(crate) fn linear<B: Backend>(
    d_in: usize,
    d_out: usize,
    bias: bool,
    std: f64,
    device: &B::Device,
) -> Linear<B> {
    LinearConfig::new(d_in, d_out)
        .with_bias(bias)
        .with_initializer(Initializer::Normal { mean: 0.0, std })
        .init(device)
}

/// An RMSNorm over the last axis.
pub(crate) fn rms_norm<B: Backend>(d: usize, eps: f64, device: &B::Device) -> burn::nn::RmsNorm<B> {
    burn::nn::RmsNormConfig::new(d)
        .with_epsilon(eps)
        .init(device)
}
