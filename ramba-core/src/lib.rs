//! ramba-core: the library behind `ramba-train` and `ramba-eval`.
//!
//! - [`ops`]: the ops seam ([`ops::RambaBackend`]) and the reference implementation of every op.
//! - [`nn`]: building blocks (Mamba-2, attention, chunk memory, retrieval, HSA layer).
//! - [`model`]: the language models behind [`model::LanguageModel`], with streaming prefill/step.
//! - [`stream`]: what a stream keeps between calls (chunk stores, growing buffers).
//! - [`config`]: serde model configs with the paper's RAMba-370M as defaults.
//! - [`backend`]: run-time backend selection (`auto | cuda | wgpu | cpu`).
//! - [`optim`]: AdamW as one kernel a parameter where the backend has it.

pub mod backend;
pub mod checkpoint;
pub mod config;
pub mod model;
pub mod nn;
pub mod ops;
pub mod optim;
pub mod precision;
pub mod stream;
#[doc(hidden)]
pub mod testing;
