//! Data handling for ramba: tokenizers, the `[data]` config, deterministic batches from
//! text, pre-tokenized shards, synthetic long-context tasks (passkey and RULER's families)
//! and downstream JSONL examples, the evaluation prompts shared with the evaluator, and the
//! text metrics that score them.
//!
//! Evaluation entry points: [`passkey_prompt`]; [`TaskGenerator::eval_prompt`] for the RULER
//! tasks, scored by [`TaskPrompt::score`]; [`load_examples`] + [`fit_example`] for JSONL
//! tasks, scored by [`Example::score`] and averaged by [`ScoreTally`]; [`metrics`] for the
//! metrics themselves.
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
    fit_example, load_examples, Example, ExampleScore, FittedExample, JsonlFormat, ScoreTally,
    TooLong,
};
pub use pipeline::{AnswerScore, Batch, DataPipeline};
pub use split::Split;
pub use tasks::{
    needle_prompt, passkey_prompt, score_answer, score_items, HaystackText, NeedleValue,
    PasskeyPrompt, PasskeyPrompter, Sample, Task, TaskGenerator, TaskPrompt, FILLER, INSTRUCTION,
    QUESTION,
};
pub use tokenizer::{load_tokenizer, load_tokenizer_in, ByteTokenizer, HfTokenizer, Tokenizer};
