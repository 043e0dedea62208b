//! Downstream tasks from standard JSONL exports, for fine-tuning and evaluation: question
//! answering (`{context, question, answers}`, SQuAD / HotpotQA), summarisation
//! (`{document, summary}`, XSum / CNN-DM) and multiple choice
//! (`{context, question, choices, label}`, LongBench style).
//!
//! An example becomes `context ++ question/choices/cue ++ " answer"`; only the answer carries
//! loss. Too-long examples are cut from the left of the context (keeping the text nearest
//! the question) or skipped, as [`TooLong`] says; the counts are reported.

mod fit;
mod load;
mod record;
mod rows;
mod tally;

use serde::{Deserialize, Serialize};

pub use fit::{fit_example, FittedExample};
pub use load::load_examples;
pub use record::{Example, ExampleScore, MAX_CHOICES};
pub(crate) use rows::ExampleSet;
pub use tally::ScoreTally;

/// Extensions picked up when a JSONL source is a folder.
pub const JSONL_EXTENSIONS: [&str; 1] = ["jsonl"];

/// What the lines of a JSONL source hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JsonlFormat {
    /// `context`, `question`, `answers` (a string, a list, or SQuAD's `{"text": [...]}`;
    /// `answer` also accepted). `context` may be HotpotQA's paragraph list.
    Qa,
    /// `document` (or `article`) and `summary` (or `highlights`).
    Summarization,
    /// `context` (optional), `question`, `choices` (or `choice_A`, `choice_B`, …) and
    /// `label` (or `answer`): a 0-based index or a letter.
    Choice,
}

impl JsonlFormat {
    /// The name in TOML.
    pub fn name(self) -> &'static str {
        match self {
            JsonlFormat::Qa => "qa",
            JsonlFormat::Summarization => "summarization",
            JsonlFormat::Choice => "choice",
        }
    }
}

/// What to do with an example longer than the row (or evaluation window).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TooLong {
    /// Drop tokens from the start of the context until it fits; the question, choices and
    /// answer are never cut (an example whose non-context part alone is too long is
    /// skipped).
    #[default]
    Truncate,
    /// Skip the example.
    Skip,
}
