//! Downstream evaluation (`ramba-eval task`): every example of a JSONL export, its answer
//! written by greedy decoding after the prompt the fine-tuning rows use, scored by the
//! format's metric (SQuAD exact match and F1, ROUGE-L, or choice accuracy).

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use ramba_core::model::LanguageModel;
use ramba_core::ops::RambaBackend;
use ramba_data::{
    fit_example, load_examples, ExampleScore, JsonlFormat, ScoreTally, Tokenizer, TooLong,
};
use ramba_report::{write_csv, write_json_pretty};
use serde::Serialize;

use crate::decode::generate;

/// What to evaluate.
#[derive(Clone, Debug)]
pub struct TaskEvalSettings {
    /// The JSONL file or folder.
    pub data: PathBuf,
    /// How its lines read.
    pub format: JsonlFormat,
    /// Longest prompt + generated answer; longer examples are cut or skipped as `too_long`
    /// says.
    pub max_len: usize,
    /// Cut the context of too-long examples from the left, or skip them.
    pub too_long: TooLong,
    /// Most tokens generated per answer (answers end at a line break).
    pub max_new_tokens: usize,
    /// Evaluate only the first this many examples (`None`: all).
    pub limit: Option<usize>,
}

impl TaskEvalSettings {
    /// A generation budget that suits the format: short answers for QA and choices, a few
    /// sentences for summaries.
    pub fn default_max_new_tokens(format: JsonlFormat) -> usize {
        match format {
            JsonlFormat::Qa => 32,
            JsonlFormat::Summarization => 128,
            JsonlFormat::Choice => 8,
        }
    }
}

/// One example's outcome.
#[derive(Clone, Debug, Serialize)]
pub struct ExampleResult {
    /// Position in the file (0-based, blank lines not counted).
    pub index: usize,
    /// Prompt tokens (after any cut).
    pub prompt_tokens: usize,
    /// Context tokens cut from the left to fit.
    pub cut: usize,
    /// The reference answer (the first gold answer).
    pub reference: String,
    /// What greedy decoding wrote (its first line).
    pub generated: String,
    /// QA: exact match (0 or 1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exact_match: Option<f64>,
    /// QA: token F1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub f1: Option<f64>,
    /// Summarisation: ROUGE-L.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rouge_l: Option<f64>,
    /// Multiple choice: whether the named choice is the right one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub correct: Option<bool>,
}

/// The metric means over the set, and every example.
#[derive(Clone, Debug, Serialize)]
pub struct TaskEvalReport {
    /// The data evaluated.
    pub data: PathBuf,
    /// Its format.
    pub format: JsonlFormat,
    /// Examples scored.
    pub examples: usize,
    /// Examples skipped as too long.
    pub skipped: usize,
    /// Mean exact match (QA).
    pub exact_match: Option<f64>,
    /// Mean token F1 (QA).
    pub f1: Option<f64>,
    /// Mean ROUGE-L (summarisation).
    pub rouge_l: Option<f64>,
    /// Accuracy (multiple choice).
    pub accuracy: Option<f64>,
    /// Per example.
    pub results: Vec<ExampleResult>,
}

impl TaskEvalReport {
    /// The format's metrics as `name value` pairs, in a fixed order.
    pub fn metrics(&self) -> Vec<(&'static str, f64)> {
        [
            ("exact_match", self.exact_match),
            ("f1", self.f1),
            ("rouge_l", self.rouge_l),
            ("accuracy", self.accuracy),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
        .collect()
    }

    /// One line: examples, skipped and the metrics.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "{} ({}): {} examples, {} skipped as too long",
            self.data.display(),
            self.format.name(),
            self.examples,
            self.skipped
        );
        for (k, v) in self.metrics() {
            s += &format!(", {k} {:.2}", v * 100.0);
        }
        s
    }

    /// Writes `{stem}.json` (means and every example) and `{stem}.csv` (one row per
    /// example) into `dir`.
    pub fn write(&self, dir: &Path, stem: &str) -> Result<()> {
        write_json_pretty(dir.join(format!("{stem}.json")), self)?;
        let opt = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v:.4}"));
        let rows: Vec<Vec<String>> = self
            .results
            .iter()
            .map(|r| {
                vec![
                    r.index.to_string(),
                    r.prompt_tokens.to_string(),
                    r.cut.to_string(),
                    opt(r.exact_match),
                    opt(r.f1),
                    opt(r.rouge_l),
                    r.correct.map_or(String::new(), |c| u8::from(c).to_string()),
                    r.reference.clone(),
                    r.generated.clone(),
                ]
            })
            .collect();
        write_csv(
            dir.join(format!("{stem}.csv")),
            &[
                "index",
                "prompt_tokens",
                "cut",
                "exact_match",
                "f1",
                "rouge_l",
                "correct",
                "reference",
                "generated",
            ],
            &rows,
        )
    }
}

/// Generates and scores every example of `settings.data` on `model`.
pub fn run_task<B: RambaBackend>(
    model: &LanguageModel<B>,
    tok: &dyn Tokenizer,
    settings: &TaskEvalSettings,
    device: &B::Device,
    mut progress: impl FnMut(&str),
) -> Result<TaskEvalReport> {
    if settings.max_new_tokens == 0 {
        bail!("--max-new-tokens must be ≥ 1");
    }
    let Some(room) = settings.max_len.checked_sub(settings.max_new_tokens) else {
        bail!(
            "--max-new-tokens = {} leaves no room for a prompt within {} tokens",
            settings.max_new_tokens,
            settings.max_len
        );
    };
    let examples = load_examples(&settings.data, settings.format)?;
    let take = settings.limit.unwrap_or(examples.len()).min(examples.len());
    let mut tally = ScoreTally::default();
    let mut results = vec![];
    let mut skipped = 0;
    let eos = tok.eos_id();
    for (index, ex) in examples.iter().enumerate().take(take) {
        // Fitted with no answer room: the prompt must leave the generation budget free.
        let Some(fit) = fit_example(
            ex,
            tok,
            room + tok.encode(&ex.target()).len(),
            settings.too_long,
        ) else {
            skipped += 1;
            continue;
        };
        let out = generate(
            model,
            fit.prompt(),
            vec![],
            settings.max_new_tokens,
            |t| t.last() == Some(&eos) || tok.decode(t).contains('\n'),
            device,
        );
        let text = tok.decode(&out);
        let score = ex.score(&text);
        tally.add(score);
        let mut r = ExampleResult {
            index,
            prompt_tokens: fit.prompt_len,
            cut: fit.cut,
            reference: ex.answers[0].clone(),
            generated: text.split('\n').next().unwrap_or("").trim().to_string(),
            exact_match: None,
            f1: None,
            rouge_l: None,
            correct: None,
        };
        match score {
            ExampleScore::Qa { exact_match, f1 } => {
                r.exact_match = Some(exact_match);
                r.f1 = Some(f1);
            }
            ExampleScore::Summary { rouge_l } => r.rouge_l = Some(rouge_l),
            ExampleScore::Choice { predicted, label } => r.correct = Some(predicted == Some(label)),
        }
        if (index + 1).is_multiple_of(50) {
            progress(&format!("task: {} of {take} examples", index + 1));
        }
        results.push(r);
    }
    if results.is_empty() {
        bail!(
            "{}: none of its {take} examples fits {} tokens (with --max-new-tokens {}); raise \
             --max-len or use --too-long truncate",
            settings.data.display(),
            settings.max_len,
            settings.max_new_tokens
        );
    }
    Ok(TaskEvalReport {
        data: settings.data.clone(),
        format: settings.format,
        examples: tally.examples,
        skipped,
        exact_match: tally.exact_match(),
        f1: tally.f1(),
        rouge_l: tally.rouge_l(),
        accuracy: tally.accuracy(),
        results,
    })
}
