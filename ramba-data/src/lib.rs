//! Data handling for ramba: tokenizers, the `[data]` config, deterministic batches from
//! text, pre-tokenized shards and synthetic long-context tasks, and the passkey
//! retrieval prompts shared with the evaluator.
//!
//! ```no_run
//! use std::path::Path;
//! use ramba_data::{DataConfig, DataPipeline, Split};
//!
//! let cfg = DataConfig::from_toml_file(Path::new("configs/exp.toml"))?;
//! let data = DataPipeline::from_config(&cfg, Path::new("configs"))?;
//! let batch = data.batch(Split::Train, 0); // same (seed, split, step) → same batch
//! # Ok::<(), anyhow::Error>(())
//! ```

pub mod config;
pub mod downstream;
mod files;
pub mod metrics;
pub mod pipeline;
mod rng;
pub mod shards;
mod source;
pub mod split;
pub mod tasks;
pub mod text;
pub mod tokenizer;

#[cfg(test)]
mod test_util;

pub use config::{DataConfig, ShardDtype, SourceConfig};
pub use downstream::{
    fit_example, load_examples, Example, ExampleScore, FittedExample, JsonlFormat, TooLong,
};
pub use pipeline::{AnswerScore, Batch, DataPipeline};
pub use split::Split;
pub use tasks::{
    needle_prompt, passkey_prompt, score_answer, score_items, HaystackText, NeedleValue,
    PasskeyPrompt, Sample, Task, TaskGenerator, TaskPrompt, FILLER, INSTRUCTION, QUESTION,
};
pub use tokenizer::{load_tokenizer, load_tokenizer_in, ByteTokenizer, HfTokenizer, Tokenizer};
