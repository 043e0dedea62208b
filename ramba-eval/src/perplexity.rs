//! Perplexity by context length on held-out text: for each length `L`, non-overlapping windows
//! of `L + 1` tokens, mean next-token loss over all `L` positions, `ppl = exp(loss)`. Windows
//! longer than [`PplSettings::segment`] are streamed: prefilled segment by segment into a chunk
//! store, each segment's logits scored as they come, so the length is bounded by memory for the
//! chunk store (host memory when offloaded), not by one forward.

use std::ops::Range;
use std::path::Path;

use anyhow::Result;
use burn::prelude::*;
use ramba_core::model::{lm_loss, LanguageModel};
use ramba_core::ops::RambaBackend;
use ramba_core::stream::ChunkStoreKind;
use ramba_report::{line_chart, write_csv, write_json_pretty, Series};
use serde::Serialize;

use crate::generate::id_tensor;

/// One context length.
#[derive(Clone, Debug, Serialize)]
pub struct PplRow {
    /// Context length.
    pub length: usize,
    /// Windows evaluated.
    pub windows: usize,
    /// Mean next-token loss (nats).
    pub loss: f64,
    /// `exp(loss)`.
    pub ppl: f64,
}

/// How the windows are evaluated.
#[derive(Clone, Copy, Debug)]
pub struct PplSettings {
    /// Windows per length at most.
    pub max_windows: usize,
    /// Longest window scored in one forward; longer ones are streamed in segments of this
    /// many tokens (the run's `eval.max_context` by default).
    pub segment: usize,
    /// Where a streamed window keeps its chunk memory.
    pub store: ChunkStoreKind,
}

/// Evaluates `tokens` at each length, at most `settings.max_windows` windows per length.
/// Lengths longer than the text are skipped (reported by `progress`).
pub fn perplexity_by_length<B: RambaBackend>(
    model: &LanguageModel<B>,
    tokens: &[u32],
    lengths: &[usize],
    settings: PplSettings,
    device: &B::Device,
    mut progress: impl FnMut(&str),
) -> Vec<PplRow> {
    let max_windows = settings.max_windows;
    let mut rows = vec![];
    for &length in lengths {
        let fit = tokens.len() / (length + 1);
        let windows = fit.min(max_windows);
        if windows == 0 {
            progress(&if max_windows == 0 {
                format!("ppl length {length}: skipped, max_windows is 0")
            } else {
                format!(
                    "ppl length {length}: skipped, the text has only {} tokens (a window needs {})",
                    tokens.len(),
                    length + 1
                )
            });
            continue;
        }
        let total: f64 = (0..windows)
            .map(|w| {
                let window = &tokens[w * (length + 1)..(w + 1) * (length + 1)];
                window_loss(model, window, settings, device)
            })
            .sum();
        let loss = total / windows as f64;
        if !loss.is_finite() {
            progress(&format!(
                "WARNING: ppl length {length}: the loss is {loss}: the model produced non-finite \
                 logits (diverged or corrupt weights?)"
            ));
        }
        progress(&format!(
            "ppl length {length}: loss {loss:.4} ppl {:.3} over {windows} windows",
            loss.exp()
        ));
        rows.push(PplRow {
            length,
            windows,
            loss,
            ppl: loss.exp(),
        });
    }
    rows
}

/// Mean next-token loss over a window's `window.len() - 1` positions: one forward, or segment
/// by segment through the stream (each segment's mean weighted by its positions).
fn window_loss<B: RambaBackend>(
    model: &LanguageModel<B>,
    window: &[u32],
    settings: PplSettings,
    device: &B::Device,
) -> f64 {
    let length = window.len() - 1;
    let ids = |range: Range<usize>| id_tensor::<B>(&[window], range, device);
    // Mean loss of the logits of positions `range` against the tokens one ahead of them.
    let loss_at = |logits: Tensor<B, 3>, range: Range<usize>| {
        let mask = Tensor::ones([1, range.len()], device);
        lm_loss(logits, ids(range.start + 1..range.end + 1), mask)
            .into_scalar()
            .elem::<f64>()
    };
    let segment = settings.segment.max(1);
    if length <= segment {
        return loss_at(model.forward(ids(0..length)), 0..length);
    }
    let mut state = model.stream_state(settings.store);
    let mut sum = 0.0;
    for at in (0..length).step_by(segment) {
        let end = (at + segment).min(length);
        let logits = model.prefill(ids(at..end), &mut state);
        sum += loss_at(logits, at..end) * (end - at) as f64;
    }
    sum / length as f64
}

/// Writes `ppl.json`, `ppl.csv` and `ppl.png` into `dir`.
pub fn write_ppl(rows: &[PplRow], dir: &Path) -> Result<()> {
    write_json_pretty(dir.join("ppl.json"), rows)?;
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.length.to_string(),
                r.windows.to_string(),
                format!("{:.6}", r.loss),
                format!("{:.4}", r.ppl),
            ]
        })
        .collect();
    write_csv(
        dir.join("ppl.csv"),
        &["length", "windows", "loss", "ppl"],
        &table,
    )?;
    let series = Series::new(
        "perplexity",
        rows.iter().map(|r| (r.length as f64, r.ppl)).collect(),
    );
    line_chart(
        &dir.join("ppl.png"),
        "Perplexity by context length",
        "context length (tokens)",
        "perplexity",
        &[series],
        false,
    )
}
