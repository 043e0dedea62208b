//! Metrics files: the `metrics.jsonl` training log and result tables (CSV, pretty JSON).
//!
//! Typical resume flow: [`truncate_after_step`] to the checkpoint's step, then
//! [`MetricsLog::open`] with `append = true`, so records written after the checkpoint by the
//! crashed run are not duplicated.

mod jsonl;
mod table;

pub use jsonl::{read_jsonl, truncate_after_step, MetricsLog};
pub use table::{write_csv, write_json_pretty};
