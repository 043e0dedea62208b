//! Passkey retrieval (spec §9, the Landmark Attention convention): filler, the key sentence at a
//! chosen depth, the question; correct iff greedy decoding yields exactly the key.
//!
//! Greedy decoding is computed in one forward pass over `prompt + answer`: the greedy
//! continuation equals the answer iff the argmax at every answer position is the next answer
//! token, and the argmax after the last digit is not another digit (else greedy decoding would
//! produce a longer, wrong number). What the model produced up to its first deviation is kept
//! for the report.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Result;
use burn::prelude::*;
use ramba_core::model::LanguageModel;
use ramba_core::ops::RambaBackend;
use ramba_data::{needle_prompt, passkey_prompt, score_answer, PasskeyPrompt, Tokenizer};
use ramba_report::{heatmap, write_csv, write_json_pretty};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

/// Which haystack.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Haystack {
    /// The repeated filler sentences.
    Filler,
    /// Random tokens (the random-token needle variant).
    RandomTokens,
}

/// What to evaluate.
#[derive(Clone, Debug)]
pub struct PasskeySettings {
    /// Context lengths in tokens (prompt + answer).
    pub lengths: Vec<usize>,
    /// Key depths in `[0, 1]`.
    pub depths: Vec<f64>,
    /// Trials per cell, each with its own key.
    pub trials: usize,
    /// Filler or random tokens.
    pub haystack: Haystack,
    /// Seed of the keys.
    pub seed: u64,
    /// Longest single forward pass; longer lengths are skipped with a note.
    pub max_context: usize,
    /// Tokens per forward batch (rows are batched up to this many tokens).
    pub batch_tokens: usize,
    /// Checked before every cell (set by Ctrl-C / SIGTERM): once set, the remaining cells are
    /// skipped as interrupted and the partial report is returned.
    pub stop: Option<Arc<AtomicBool>>,
}

/// Why a cell was skipped after an interrupt.
pub const INTERRUPTED: &str = "interrupted";

/// One trial.
#[derive(Clone, Debug, Serialize)]
pub struct Trial {
    /// The expected answer text.
    pub answer: String,
    /// What greedy decoding produced (up to its first deviation from the answer).
    pub generated: String,
    /// Exact match of the number.
    pub correct: bool,
}

/// One (length, depth) cell.
#[derive(Clone, Debug, Serialize)]
pub struct Cell {
    /// Context length in tokens.
    pub length: usize,
    /// Key depth.
    pub depth: f64,
    /// Trials run (0 when skipped).
    pub trials: Vec<Trial>,
    /// Why the cell was not run, if it was not.
    pub skipped: Option<String>,
}

impl Cell {
    /// Fraction correct, `None` when skipped.
    pub fn accuracy(&self) -> Option<f64> {
        (!self.trials.is_empty()).then(|| {
            self.trials.iter().filter(|t| t.correct).count() as f64 / self.trials.len() as f64
        })
    }
}

/// All cells.
#[derive(Clone, Debug, Serialize)]
pub struct PasskeyReport {
    /// Filler or random tokens.
    pub haystack: Haystack,
    /// Lengths, in order.
    pub lengths: Vec<usize>,
    /// Depths, in order.
    pub depths: Vec<f64>,
    /// Row-major cells: depth-major, then length.
    pub cells: Vec<Cell>,
}

impl PasskeyReport {
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

    /// Whether an interrupt cut the evaluation short (some cells are skipped as
    /// [`INTERRUPTED`]).
    pub fn interrupted(&self) -> bool {
        self.cells
            .iter()
            .any(|c| c.skipped.as_deref() == Some(INTERRUPTED))
    }

    /// A text table: rows = depth, columns = length.
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

    /// Writes `passkey.json`, `passkey.csv` and `passkey.png` into `dir`.
    pub fn write(&self, dir: &Path, stem: &str) -> Result<()> {
        write_json_pretty(dir.join(format!("{stem}.json")), self)?;
        let rows: Vec<Vec<String>> = self
            .cells
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
            .collect();
        write_csv(
            dir.join(format!("{stem}.csv")),
            &[
                "length", "depth", "correct", "trials", "accuracy", "skipped",
            ],
            &rows,
        )?;
        let values: Vec<Vec<Option<f64>>> = (0..self.depths.len())
            .map(|di| {
                (0..self.lengths.len())
                    .map(|li| self.cell(di, li).accuracy())
                    .collect()
            })
            .collect();
        heatmap(
            &dir.join(format!("{stem}.png")),
            &format!("Passkey retrieval ({:?} haystack)", self.haystack),
            "context length (tokens)",
            "key depth",
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

/// Runs every (length, depth) cell on `model`.
pub fn run_passkey<B: RambaBackend>(
    model: &LanguageModel<B>,
    tok: &dyn Tokenizer,
    settings: &PasskeySettings,
    device: &B::Device,
    mut progress: impl FnMut(&str),
) -> Result<PasskeyReport> {
    anyhow::ensure!(settings.trials >= 1, "passkey: trials must be ≥ 1 (got 0)");
    let stopped = || {
        settings
            .stop
            .as_ref()
            .is_some_and(|s| s.load(Ordering::SeqCst))
    };
    let mut cells = Vec::new();
    for (di, &depth) in settings.depths.iter().enumerate() {
        for (li, &length) in settings.lengths.iter().enumerate() {
            if stopped() {
                cells.push(Cell {
                    length,
                    depth,
                    trials: vec![],
                    skipped: Some(INTERRUPTED.into()),
                });
                continue;
            }
            if length > settings.max_context {
                cells.push(Cell {
                    length,
                    depth,
                    trials: vec![],
                    skipped: Some(format!("{length} tokens exceed eval.max_context = {}; longer contexts need streaming inference", settings.max_context)),
                });
                continue;
            }
            let mut rng =
                ChaCha8Rng::seed_from_u64(settings.seed ^ ((di as u64) << 32) ^ li as u64);
            let prompts: Result<Vec<PasskeyPrompt>> = (0..settings.trials)
                .map(|_| match settings.haystack {
                    Haystack::Filler => {
                        passkey_prompt(tok, length, depth, rng.random_range(10_000..100_000))
                    }
                    Haystack::RandomTokens => needle_prompt(tok, length, depth, &mut rng),
                })
                .collect();
            // A length too short for the prompt is one skipped cell, not a failed command:
            // the other lengths are still worth reporting.
            let prompts = match prompts {
                Ok(p) => p,
                Err(e) => {
                    let why = format!("{e:#}");
                    progress(&format!(
                        "passkey length {length:>7} depth {depth:.2}: skipped ({why})"
                    ));
                    cells.push(Cell {
                        length,
                        depth,
                        trials: vec![],
                        skipped: Some(why),
                    });
                    continue;
                }
            };
            let trials = score_prompts(model, tok, &prompts, settings.batch_tokens, device);
            let correct = trials.iter().filter(|t| t.correct).count();
            progress(&format!(
                "passkey length {length:>7} depth {depth:.2}: {correct}/{}",
                trials.len()
            ));
            cells.push(Cell {
                length,
                depth,
                trials,
                skipped: None,
            });
        }
    }
    Ok(PasskeyReport {
        haystack: settings.haystack,
        lengths: settings.lengths.clone(),
        depths: settings.depths.clone(),
        cells,
    })
}

/// Greedy-decodes the answer of each prompt (see the module docs), batching prompts of equal
/// length.
pub fn score_prompts<B: RambaBackend>(
    model: &LanguageModel<B>,
    tok: &dyn Tokenizer,
    prompts: &[PasskeyPrompt],
    batch_tokens: usize,
    device: &B::Device,
) -> Vec<Trial> {
    let mut trials = Vec::with_capacity(prompts.len());
    let mut i = 0;
    while i < prompts.len() {
        let len = prompts[i].total_len();
        let rows = (batch_tokens / len.max(1)).max(1);
        let group: Vec<&PasskeyPrompt> = prompts[i..]
            .iter()
            .take(rows)
            .take_while(|p| p.total_len() == len)
            .collect();
        i += group.len();
        let ids: Vec<i64> = group
            .iter()
            .flat_map(|p| p.tokens())
            .map(|t| t as i64)
            .collect();
        let input = Tensor::<B, 2, Int>::from_data(
            TensorData::new(ids, [group.len(), len]).convert::<B::IntElem>(),
            device,
        );
        let logits = model.forward(input);
        let plen = group[0].prompt.len();
        let alen = group[0].answer.len();
        // Predictions for answer tokens and the one after: positions plen-1 .. plen+alen-1.
        let pred = logits
            .slice([0..group.len(), plen - 1..plen + alen])
            .argmax(2);
        let pred: Vec<i64> = pred
            .into_data()
            .convert::<i64>()
            .to_vec()
            .expect("int data");
        for (r, p) in group.iter().enumerate() {
            let row = &pred[r * (alen + 1)..(r + 1) * (alen + 1)];
            trials.push(judge(tok, p, row));
        }
    }
    trials
}

/// Compares teacher-forced argmax predictions (`alen + 1` tokens) with the answer.
fn judge(tok: &dyn Tokenizer, p: &PasskeyPrompt, pred: &[i64]) -> Trial {
    let alen = p.answer.len();
    let first_miss = (0..alen).find(|&j| pred[j] != p.answer[j] as i64);
    let generated: Vec<u32> = match first_miss {
        Some(m) => p.answer[..m]
            .iter()
            .copied()
            .chain([pred[m] as u32])
            .collect(),
        None => p
            .answer
            .iter()
            .copied()
            .chain([pred[alen] as u32])
            .collect(),
    };
    let text = tok.decode(&generated);
    let continues_number = first_miss.is_none()
        && tok
            .decode(&[pred[alen] as u32])
            .starts_with(|c: char| c.is_ascii_digit());
    let correct = first_miss.is_none() && !continues_number && score_answer(&text, &p.answer_text);
    Trial {
        answer: p.answer_text.trim().to_string(),
        generated: text.trim().to_string(),
        correct,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ramba_data::ByteTokenizer;

    fn prompt(tok: &ByteTokenizer) -> PasskeyPrompt {
        passkey_prompt(tok, 300, 0.5, 12345).unwrap()
    }

    fn ids(s: &str) -> Vec<i64> {
        s.bytes().map(|b| b as i64).collect()
    }

    #[test]
    fn judge_accepts_only_the_exact_number() {
        let tok = ByteTokenizer;
        let p = prompt(&tok);
        assert_eq!(p.answer_text.trim(), "12345");
        // " 12345" then a full stop: correct.
        assert!(judge(&tok, &p, &ids(" 12345.")).correct);
        // A sixth digit would make greedy decoding produce 123456: wrong.
        assert!(!judge(&tok, &p, &ids(" 123456")).correct);
        // A wrong digit: wrong, and the report shows the deviation.
        let t = judge(&tok, &p, &ids(" 12945."));
        assert!(!t.correct);
        assert_eq!(t.generated, "129");
    }

    #[test]
    fn short_lengths_print_compactly() {
        assert_eq!(short_len(4096), "4k");
        assert_eq!(short_len(1 << 26), "64M");
        assert_eq!(short_len(384), "384");
    }
}
