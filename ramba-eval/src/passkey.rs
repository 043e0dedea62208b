//! Passkey retrieval (spec §9, the Landmark Attention convention): filler, the key sentence at a
//! chosen depth, the question; correct iff greedy decoding yields exactly the key.
//!
//! Greedy decoding is computed in one forward pass over `prompt + answer`: the greedy
//! continuation equals the answer iff the argmax at every answer position is the next answer
//! token, and the argmax after the last digit is not another digit (else greedy decoding would
//! produce a longer, wrong number). What the model produced up to its first deviation is kept
//! for the report.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::{Context, Result};
use ramba_core::model::LanguageModel;
use ramba_core::ops::RambaBackend;
use ramba_data::{
    needle_prompt, score_answer, HaystackText, PasskeyPrompt, PasskeyPrompter, Tokenizer,
};
use ramba_report::{write_csv, write_json_pretty};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::decode::{greedy_prefix, teacher_forced};
pub use crate::grid::{short_len, Cell, Grid, GridLimits, Trial, INTERRUPTED};

/// Which haystack.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Haystack {
    /// The repeated filler sentences.
    Filler,
    /// Random tokens (the random-token needle variant).
    RandomTokens,
    /// The text of a file, or of every text file of a folder (natural text); keys never
    /// occur in it.
    File(PathBuf),
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
    /// Filler, random tokens or a file.
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

/// All cells.
#[derive(Clone, Debug, Serialize)]
pub struct PasskeyReport {
    /// Filler, random tokens or a file.
    pub haystack: Haystack,
    /// The (length, depth) cells.
    #[serde(flatten)]
    pub grid: Grid,
}

impl PasskeyReport {
    /// Mean accuracy per length over depths (`None` if all skipped).
    pub fn accuracy_by_length(&self) -> Vec<Option<f64>> {
        self.grid.accuracy_by_length()
    }

    /// Whether an interrupt cut the evaluation short (some cells are skipped as
    /// [`INTERRUPTED`]).
    pub fn interrupted(&self) -> bool {
        self.grid.interrupted()
    }

    /// A text table: rows = depth, columns = length.
    pub fn table(&self) -> String {
        self.grid.table()
    }

    /// Writes `{stem}.json`, `{stem}.csv` and `{stem}.png` into `dir`.
    pub fn write(&self, dir: &Path, stem: &str) -> Result<()> {
        write_json_pretty(dir.join(format!("{stem}.json")), self)?;
        write_csv(
            dir.join(format!("{stem}.csv")),
            &Grid::CSV_HEADER,
            &self.grid.csv_rows(),
        )?;
        let haystack = match &self.haystack {
            Haystack::Filler => "filler".to_string(),
            Haystack::RandomTokens => "random-token".to_string(),
            Haystack::File(p) => p
                .file_name()
                .map_or_else(|| p.display().to_string(), |f| f.to_string_lossy().into()),
        };
        self.grid.heatmap(
            &dir.join(format!("{stem}.png")),
            &format!("Passkey retrieval ({haystack} haystack)"),
        )
    }
}

/// Runs every (length, depth) cell on `model`.
pub fn run_passkey<B: RambaBackend>(
    model: &LanguageModel<B>,
    tok: &dyn Tokenizer,
    settings: &PasskeySettings,
    device: &B::Device,
    progress: impl FnMut(&str),
) -> Result<PasskeyReport> {
    anyhow::ensure!(settings.trials >= 1, "passkey: trials must be ≥ 1 (got 0)");
    // Built once: a file haystack is read and tokenized here, and its errors end the command.
    let prompter = match &settings.haystack {
        Haystack::RandomTokens => None,
        Haystack::Filler => Some(PasskeyPrompter::new(tok, None)?),
        Haystack::File(p) => {
            let text = HaystackText::load(p).context("--haystack")?;
            Some(PasskeyPrompter::new(tok, Some(&text))?)
        }
    };
    let limits = GridLimits {
        max_context: settings.max_context,
        stop: settings.stop.clone(),
    };
    let grid = Grid::run(
        &settings.lengths,
        &settings.depths,
        &limits,
        "passkey",
        progress,
        |di, li, length, depth| {
            let mut rng =
                ChaCha8Rng::seed_from_u64(settings.seed ^ ((di as u64) << 32) ^ li as u64);
            let prompts = (0..settings.trials)
                .map(|_| match &prompter {
                    Some(p) => p.prompt(tok, length, depth, &mut rng),
                    None => needle_prompt(tok, length, depth, &mut rng),
                })
                .collect::<Result<Vec<PasskeyPrompt>>>()?;
            Ok(score_prompts(
                model,
                tok,
                &prompts,
                settings.batch_tokens,
                device,
            ))
        },
    );
    Ok(PasskeyReport {
        haystack: settings.haystack.clone(),
        grid,
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
    teacher_forced(model, prompts, batch_tokens, device)
        .iter()
        .zip(prompts)
        .map(|(pred, p)| judge(tok, p, pred))
        .collect()
}

/// Compares teacher-forced argmax predictions (`alen + 1` tokens) with the answer.
fn judge(tok: &dyn Tokenizer, p: &PasskeyPrompt, pred: &[u32]) -> Trial {
    let generated = greedy_prefix(&p.answer, pred);
    let whole = generated.len() == p.answer.len() + 1;
    let text = tok.decode(&generated);
    let continues_number = whole
        && tok
            .decode(&[pred[p.answer.len()]])
            .starts_with(|c: char| c.is_ascii_digit());
    let correct = whole && !continues_number && score_answer(&text, &p.answer_text);
    Trial {
        answer: p.answer_text.trim().to_string(),
        generated: text.trim().to_string(),
        correct,
        recall: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ramba_data::ByteTokenizer;

    fn prompt(tok: &ByteTokenizer) -> PasskeyPrompt {
        ramba_data::passkey_prompt(tok, 300, 0.5, 12345).unwrap()
    }

    fn ids(s: &str) -> Vec<u32> {
        s.bytes().map(u32::from).collect()
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
}
