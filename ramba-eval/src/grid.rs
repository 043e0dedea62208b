//! Accuracy over a grid of context length × needle depth, the shape every retrieval evaluation
//! here reports (passkey, each RULER task): the cell loop with its skips (too long for one
//! forward pass, prompts that do not fit, an interrupt), the text table, CSV rows and heatmap.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Result;
use ramba_report::heatmap;
use serde::Serialize;

/// Why a cell was skipped after an interrupt.
pub const INTERRUPTED: &str = "interrupted";

/// One trial.
#[derive(Clone, Debug, Serialize)]
pub struct Trial {
    /// The expected answer text.
    pub answer: String,
    /// What the model produced (greedy decoding; teacher-forced scoring keeps it up to its
    /// first deviation from the answer).
    pub generated: String,
    /// Exact match of the whole answer.
    pub correct: bool,
    /// Fraction of the answer's items the output names (list answers only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recall: Option<f64>,
}

/// One (length, depth) cell.
#[derive(Clone, Debug, Serialize)]
pub struct Cell {
    /// Context length in tokens.
    pub length: usize,
    /// Needle depth.
    pub depth: f64,
    /// Trials run (none when skipped).
    pub trials: Vec<Trial>,
    /// Why the cell was not run, if it was not.
    pub skipped: Option<String>,
}

impl Cell {
    /// Fraction correct, `None` when skipped.
    pub fn accuracy(&self) -> Option<f64> {
        self.mean(|t| if t.correct { 1.0 } else { 0.0 })
    }

    /// Mean item recall, `None` when skipped or when the trials have none.
    pub fn recall(&self) -> Option<f64> {
        if self.trials.iter().any(|t| t.recall.is_none()) {
            return None;
        }
        self.mean(|t| t.recall.unwrap_or_default())
    }

    fn mean(&self, f: impl Fn(&Trial) -> f64) -> Option<f64> {
        (!self.trials.is_empty())
            .then(|| self.trials.iter().map(f).sum::<f64>() / self.trials.len() as f64)
    }
}

/// What bounds a grid evaluation.
#[derive(Clone, Debug)]
pub struct GridLimits {
    /// Longest single forward pass; longer lengths are skipped with a note.
    pub max_context: usize,
    /// Checked before every cell (set by Ctrl-C / SIGTERM): once set, the remaining cells are
    /// skipped as [`INTERRUPTED`].
    pub stop: Option<Arc<AtomicBool>>,
}

/// All cells of one evaluation.
#[derive(Clone, Debug, Serialize)]
pub struct Grid {
    /// Lengths, in order.
    pub lengths: Vec<usize>,
    /// Depths, in order.
    pub depths: Vec<f64>,
    /// Row-major cells: depth-major, then length.
    pub cells: Vec<Cell>,
}

impl Grid {
    /// Evaluates every (depth, length) cell with `eval(depth index, length index, length,
    /// depth)`. An `Err` from it skips that cell with the error as the reason (a length too
    /// short for the prompt is worth a note, not a failed command: the other lengths are still
    /// worth reporting); `progress` gets one line per cell, prefixed with `what`.
    pub fn run(
        lengths: &[usize],
        depths: &[f64],
        limits: &GridLimits,
        what: &str,
        mut progress: impl FnMut(&str),
        mut eval: impl FnMut(usize, usize, usize, f64) -> Result<Vec<Trial>>,
    ) -> Grid {
        let stopped = || {
            limits
                .stop
                .as_ref()
                .is_some_and(|s| s.load(Ordering::SeqCst))
        };
        let mut cells = Vec::with_capacity(lengths.len() * depths.len());
        for (di, &depth) in depths.iter().enumerate() {
            for (li, &length) in lengths.iter().enumerate() {
                let skip = |why: String| Cell {
                    length,
                    depth,
                    trials: vec![],
                    skipped: Some(why),
                };
                if stopped() {
                    cells.push(skip(INTERRUPTED.into()));
                    continue;
                }
                if length > limits.max_context {
                    cells.push(skip(format!(
                        "{length} tokens exceed eval.max_context = {}; longer contexts need \
                         streaming inference",
                        limits.max_context
                    )));
                    continue;
                }
                match eval(di, li, length, depth) {
                    Ok(trials) => {
                        let correct = trials.iter().filter(|t| t.correct).count();
                        progress(&format!(
                            "{what} length {length:>7} depth {depth:.2}: {correct}/{}",
                            trials.len()
                        ));
                        cells.push(Cell {
                            length,
                            depth,
                            trials,
                            skipped: None,
                        });
                    }
                    Err(e) => {
                        let why = format!("{e:#}");
                        progress(&format!(
                            "{what} length {length:>7} depth {depth:.2}: skipped ({why})"
                        ));
                        cells.push(skip(why));
                    }
                }
            }
        }
        Grid {
            lengths: lengths.to_vec(),
            depths: depths.to_vec(),
            cells,
        }
    }

    /// The cell at (depth index, length index).
    pub fn cell(&self, depth: usize, length: usize) -> &Cell {
        &self.cells[depth * self.lengths.len() + length]
    }

    /// Mean accuracy per length over depths (`None` if all skipped).
    pub fn accuracy_by_length(&self) -> Vec<Option<f64>> {
        (0..self.lengths.len())
            .map(|li| {
                let accs: Vec<f64> = (0..self.depths.len())
                    .filter_map(|di| self.cell(di, li).accuracy())
                    .collect();
                (!accs.is_empty()).then(|| accs.iter().sum::<f64>() / accs.len() as f64)
            })
            .collect()
    }

    /// Mean accuracy over every cell that ran (`None` if all skipped).
    pub fn mean_accuracy(&self) -> Option<f64> {
        let accs: Vec<f64> = self.cells.iter().filter_map(Cell::accuracy).collect();
        (!accs.is_empty()).then(|| accs.iter().sum::<f64>() / accs.len() as f64)
    }

    /// Whether an interrupt cut the evaluation short.
    pub fn interrupted(&self) -> bool {
        self.cells
            .iter()
            .any(|c| c.skipped.as_deref() == Some(INTERRUPTED))
    }

    /// A text table: rows = depth, columns = length, and the mean per length.
    pub fn table(&self) -> String {
        let mut out = format!("{:>7}", "depth");
        for l in &self.lengths {
            out += &format!(" {:>8}", short_len(*l));
        }
        out += "\n";
        for (di, d) in self.depths.iter().enumerate() {
            out += &format!("{:>7.2}", d);
            for li in 0..self.lengths.len() {
                out += &match self.cell(di, li).accuracy() {
                    Some(a) => format!(" {:>7.0}%", a * 100.0),
                    None => format!(" {:>8}", "skipped"),
                };
            }
            out += "\n";
        }
        out += &format!("{:>7}", "mean");
        for a in self.accuracy_by_length() {
            out += &match a {
                Some(a) => format!(" {:>7.0}%", a * 100.0),
                None => format!(" {:>8}", "-"),
            };
        }
        out + "\n"
    }

    /// Column names of [`Grid::csv_rows`].
    pub const CSV_HEADER: [&'static str; 6] = [
        "length", "depth", "correct", "trials", "accuracy", "skipped",
    ];

    /// One CSV row per cell, in the order of [`Grid::CSV_HEADER`].
    pub fn csv_rows(&self) -> Vec<Vec<String>> {
        self.cells
            .iter()
            .map(|c| {
                let correct = c.trials.iter().filter(|t| t.correct).count();
                vec![
                    c.length.to_string(),
                    format!("{}", c.depth),
                    correct.to_string(),
                    c.trials.len().to_string(),
                    c.accuracy().map_or(String::new(), |a| format!("{a:.4}")),
                    c.skipped.clone().unwrap_or_default(),
                ]
            })
            .collect()
    }

    /// The accuracy heatmap (rows = depth, columns = length) as a PNG at `path`.
    pub fn heatmap(&self, path: &Path, title: &str) -> Result<()> {
        let values: Vec<Vec<Option<f64>>> = (0..self.depths.len())
            .map(|di| {
                (0..self.lengths.len())
                    .map(|li| self.cell(di, li).accuracy())
                    .collect()
            })
            .collect();
        heatmap(
            path,
            title,
            "context length (tokens)",
            "needle depth",
            &self
                .lengths
                .iter()
                .map(|l| short_len(*l))
                .collect::<Vec<_>>(),
            &self
                .depths
                .iter()
                .map(|d| format!("{d:.2}"))
                .collect::<Vec<_>>(),
            &values,
        )
    }
}

/// `4096` → `4k`, `65536` → `64k`, `1000` → `1000`.
pub fn short_len(l: usize) -> String {
    match l {
        l if l >= 1 << 20 && l % (1 << 20) == 0 => format!("{}M", l >> 20),
        l if l >= 1024 && l % 1024 == 0 => format!("{}k", l >> 10),
        l => l.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trial(correct: bool, recall: Option<f64>) -> Trial {
        Trial {
            answer: " 1".into(),
            generated: " 1".into(),
            correct,
            recall,
        }
    }

    #[test]
    fn cells_skip_and_average() {
        let limits = GridLimits {
            max_context: 512,
            stop: None,
        };
        let mut lines = vec![];
        let grid = Grid::run(
            &[256, 1024],
            &[0.0, 1.0],
            &limits,
            "t",
            |l| lines.push(l.to_string()),
            |di, _, _, _| {
                if di == 0 {
                    Ok(vec![trial(true, Some(1.0)), trial(false, Some(0.5))])
                } else {
                    anyhow::bail!("too short")
                }
            },
        );
        assert_eq!(grid.cells.len(), 4);
        assert_eq!(grid.cell(0, 0).accuracy(), Some(0.5));
        assert_eq!(grid.cell(0, 0).recall(), Some(0.75));
        assert!(grid
            .cell(0, 1)
            .skipped
            .as_deref()
            .unwrap()
            .contains("max_context"));
        assert_eq!(grid.cell(1, 0).skipped.as_deref(), Some("too short"));
        assert_eq!(grid.accuracy_by_length(), vec![Some(0.5), None]);
        assert_eq!(grid.mean_accuracy(), Some(0.5));
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(grid.table().contains("50%") && grid.table().contains("skipped"));
        assert_eq!(grid.csv_rows()[0][..5], ["256", "0", "1", "2", "0.5000"]);
        assert!(!grid.interrupted());

        let stop = GridLimits {
            max_context: 512,
            stop: Some(Arc::new(AtomicBool::new(true))),
        };
        let grid = Grid::run(
            &[256],
            &[0.5],
            &stop,
            "t",
            |_| {},
            |_, _, _, _| unreachable!("an interrupted grid evaluates nothing"),
        );
        assert!(grid.interrupted());
        assert_eq!(grid.cell(0, 0).recall(), None);
    }

    #[test]
    fn short_lengths_print_compactly() {
        assert_eq!(short_len(4096), "4k");
        assert_eq!(short_len(1 << 26), "64M");
        assert_eq!(short_len(384), "384");
    }
}
