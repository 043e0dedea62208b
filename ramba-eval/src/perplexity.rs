//! Perplexity by context length on held-out text: for each length `L`, non-overlapping windows
//! of `L + 1` tokens, mean next-token loss over all `L` positions, `ppl = exp(loss)`.

use std::path::Path;

use anyhow::Result;
use burn::prelude::*;
use ramba_core::model::{lm_loss, LanguageModel};
use ramba_core::ops::RambaBackend;
use ramba_report::{line_chart, write_csv, write_json_pretty, Series};
use serde::Serialize;

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

/// Evaluates `tokens` at each length, at most `max_windows` windows per length. Lengths longer
/// than the text are skipped (reported by `progress`).
pub fn perplexity_by_length<B: RambaBackend>(
    model: &LanguageModel<B>,
    tokens: &[u32],
    lengths: &[usize],
    max_windows: usize,
    device: &B::Device,
    mut progress: impl FnMut(&str),
) -> Vec<PplRow> {
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
        let mut total = 0.0;
        for w in 0..windows {
            let win = &tokens[w * (length + 1)..(w + 1) * (length + 1)];
            let ids = |s: &[u32]| {
                let v: Vec<i64> = s.iter().map(|&t| t as i64).collect();
                Tensor::<B, 2, Int>::from_data(
                    TensorData::new(v, [1, length]).convert::<B::IntElem>(),
                    device,
                )
            };
            let logits = model.forward(ids(&win[..length]));
            let loss = lm_loss(logits, ids(&win[1..]), Tensor::ones([1, length], device));
            total += loss.into_scalar().elem::<f64>();
        }
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
