//! ramba-eval: evaluations of trained runs (passkey retrieval, perplexity by context length),
//! used by the `ramba-eval` CLI and by `ramba-train` after training.

pub mod bench;
pub mod passkey;
pub mod perplexity;
pub mod run;
