//! ramba-eval: evaluations of trained runs (passkey retrieval, RULER tasks, downstream JSONL
//! tasks, perplexity by context length),
//! used by the `ramba-eval` CLI and by `ramba-train` after training.

pub mod bench;
pub mod decode;
pub mod downstream;
pub mod generate;
pub mod grid;
pub mod passkey;
pub mod perplexity;
pub mod retrieval_map;
pub mod ruler;
pub mod run;
