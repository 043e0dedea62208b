//! Reporting for ramba runs: PNG charts, metrics files and a training progress display.
//!
//! * [`plot`]: line charts (loss curves, perplexity by length) and heatmaps (passkey accuracy).
//! * [`metrics`]: an append-only `metrics.jsonl` log that survives crashes and resumes, plus
//!   CSV and pretty-JSON writers for result tables.
//! * [`progress`]: a progress bar on a terminal, plain periodic log lines elsewhere (CI).
//!
//! Every fallible function returns [`anyhow::Result`] with context naming the file involved;
//! bad input (non-finite values, ragged tables, unwritable paths, missing fonts) is an error or
//! is skipped, never a panic.

mod fsutil;
pub mod metrics;
pub mod plot;
pub mod progress;

pub use metrics::{read_jsonl, truncate_after_step, write_csv, write_json_pretty, MetricsLog};
pub use plot::{heatmap, line_chart, Series};
pub use progress::Progress;

#[cfg(test)]
pub(crate) mod testutil;
