//! RULER evaluation (Hsieh et al. 2024): each task's prompts at every context length × needle
//! depth, scored by exact match of the whole answer (every item, nothing else, any order),
//! with the items' recall kept as partial credit.
//!
//! The prompts are the training tasks' own ([`TaskGenerator::eval_prompt`]), so a model
//! fine-tuned on a task mix is evaluated on exactly what it trained on, at other lengths.
//! Scoring is by free generation (greedy decoding until the answer ends; the default) or
//! teacher-forced (the reference answer must be the argmax at every position, and decoding
//! must stop after it); see [`crate::decode`].

use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use ramba_core::model::LanguageModel;
use ramba_core::ops::RambaBackend;
use ramba_data::{Task, TaskGenerator, TaskPrompt, Tokenizer};
use ramba_report::{write_csv, write_json_pretty};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::decode::{generate, greedy_prefix, teacher_forced};
use crate::grid::{Grid, GridLimits, Trial};

/// How an answer is judged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Default, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Scoring {
    /// Greedy decoding until the answer ends (a `.` or line break, end of text, or the token
    /// budget); the output is scored as written.
    #[default]
    FreeGeneration,
    /// One forward pass over prompt + reference answer: right iff the reference is the argmax
    /// at every position and decoding would stop after it.
    TeacherForced,
}

/// Tokens free generation may write beyond the reference answer's length: a right answer in
/// another item order can tokenize a little longer, and anything much longer is wrong.
pub const EXTRA_TOKENS: usize = 16;

/// Draws per prompt before a cell is skipped: with a subword tokenizer a draw can miss the
/// exact length (items that merge differently), and drawing again moves on.
const DRAWS: usize = 8;

/// What to evaluate.
#[derive(Clone, Debug)]
pub struct RulerSettings {
    /// The tasks, with their settings (haystack included).
    pub tasks: Vec<Task>,
    /// Context lengths in tokens (prompt + answer).
    pub lengths: Vec<usize>,
    /// Depths in `[0, 1]` of the first asked needle (ignored by the word-frequency tasks).
    pub depths: Vec<f64>,
    /// Trials per cell.
    pub trials: usize,
    /// Free generation or teacher-forced.
    pub scoring: Scoring,
    /// Seed of the prompts.
    pub seed: u64,
    /// Longest forward pass and the interrupt flag.
    pub limits: GridLimits,
    /// Tokens per forward batch of the teacher-forced pass.
    pub batch_tokens: usize,
}

/// One task's cells.
#[derive(Clone, Debug, Serialize)]
pub struct TaskReport {
    /// The task's `kind`.
    pub task: String,
    /// Its settings.
    pub settings: Task,
    /// The (length, depth) cells.
    #[serde(flatten)]
    pub grid: Grid,
}

/// Every task's cells.
#[derive(Clone, Debug, Serialize)]
pub struct RulerReport {
    /// How answers were judged.
    pub scoring: Scoring,
    /// One entry per task, in the order asked.
    pub tasks: Vec<TaskReport>,
}

/// The RULER tasks by `kind`, with their default settings.
pub fn ruler_tasks() -> Vec<Task> {
    Task::all()
        .into_iter()
        .filter(Task::has_eval_prompt)
        .collect()
}

/// The task named `name` with default settings, and `haystack` (relative to the working
/// directory) as its haystack when given. Errors name the unknown task and list the known
/// ones; a haystack for a task without one (the word-frequency tasks) is an error too, since
/// their prompts are word lists.
pub fn ruler_task(name: &str, haystack: Option<&Path>) -> Result<Task> {
    let tasks = ruler_tasks();
    let Some(mut task) = tasks.iter().find(|t| t.name() == name).cloned() else {
        let known: Vec<&str> = tasks.iter().map(Task::name).collect();
        bail!(
            "--tasks: unknown RULER task `{name}`; known: {}",
            known.join(", ")
        );
    };
    if let Some(h) = haystack {
        if !task.set_haystack(h.to_path_buf()) {
            bail!(
                "--haystack: task `{name}` has no haystack (its prompt is a word list); leave \
                 it out of --tasks or evaluate it without --haystack"
            );
        }
    }
    Ok(task)
}

impl RulerReport {
    /// Per task, its table (rows = depth, columns = length).
    pub fn table(&self) -> String {
        self.tasks
            .iter()
            .map(|t| format!("{} ({:?}):\n{}", t.task, self.scoring, t.grid.table()))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Whether an interrupt cut the evaluation short.
    pub fn interrupted(&self) -> bool {
        self.tasks.iter().any(|t| t.grid.interrupted())
    }

    /// Writes `ruler.json`, `ruler.csv` (one row per task × cell) and `ruler_{task}.png`
    /// per task into `dir`.
    pub fn write(&self, dir: &Path) -> Result<()> {
        write_json_pretty(dir.join("ruler.json"), self)?;
        let mut header = vec!["task"];
        header.extend(Grid::CSV_HEADER);
        header.push("recall");
        let mut rows = vec![];
        for t in &self.tasks {
            for (cell, row) in t.grid.cells.iter().zip(t.grid.csv_rows()) {
                let mut r = vec![t.task.clone()];
                r.extend(row);
                r.push(cell.recall().map_or(String::new(), |x| format!("{x:.4}")));
                rows.push(r);
            }
        }
        write_csv(dir.join("ruler.csv"), &header, &rows)?;
        for t in &self.tasks {
            t.grid.heatmap(
                &dir.join(format!("ruler_{}.png", t.task)),
                &format!("RULER {} (exact match, {:?})", t.task, self.scoring),
            )?;
        }
        Ok(())
    }
}

/// Runs every task's (length, depth) cells on `model`. Errors only for settings that make
/// every cell fail (a task that does not validate, an unreadable haystack); a cell whose
/// prompts cannot be built is skipped with the reason.
pub fn run_ruler<B: RambaBackend>(
    model: &LanguageModel<B>,
    tok: Arc<dyn Tokenizer>,
    settings: &RulerSettings,
    device: &B::Device,
    mut progress: impl FnMut(&str),
) -> Result<RulerReport> {
    anyhow::ensure!(settings.trials >= 1, "ruler: trials must be ≥ 1 (got 0)");
    let mut tasks = vec![];
    for (ti, task) in settings.tasks.iter().enumerate() {
        let name = task.name();
        let generator = TaskGenerator::new(tok.clone(), task.clone())
            .with_context(|| format!("RULER task {name}"))?;
        let grid = Grid::run(
            &settings.lengths,
            &settings.depths,
            &settings.limits,
            name,
            &mut progress,
            |di, li, length, depth| {
                generator.check_fits(length)?;
                let mut rng = ChaCha8Rng::seed_from_u64(
                    settings.seed ^ ((ti as u64) << 48) ^ ((di as u64) << 32) ^ li as u64,
                );
                let prompts = (0..settings.trials)
                    .map(|_| draw(&generator, length, depth, &mut rng))
                    .collect::<Result<Vec<_>>>()?;
                Ok(score(model, tok.as_ref(), &prompts, settings, device))
            },
        );
        tasks.push(TaskReport {
            task: name.to_string(),
            settings: task.clone(),
            grid,
        });
    }
    Ok(RulerReport {
        scoring: settings.scoring,
        tasks,
    })
}

/// A prompt of exactly `length` tokens, drawn again (up to [`DRAWS`] times) when a subword
/// tokenizer misses the length.
fn draw(
    generator: &TaskGenerator,
    length: usize,
    depth: f64,
    rng: &mut ChaCha8Rng,
) -> Result<TaskPrompt> {
    let mut last = None;
    for _ in 0..DRAWS {
        match generator.eval_prompt(length, depth, rng) {
            Ok(p) => return Ok(p),
            Err(e) => last = Some(e),
        }
    }
    Err(last.expect("DRAWS > 0")).with_context(|| format!("{DRAWS} draws"))
}

/// Scores `prompts` (all of one length) the way `settings.scoring` says.
fn score<B: RambaBackend>(
    model: &LanguageModel<B>,
    tok: &dyn Tokenizer,
    prompts: &[TaskPrompt],
    settings: &RulerSettings,
    device: &B::Device,
) -> Vec<Trial> {
    let preds = teacher_forced(model, prompts, settings.batch_tokens, device);
    prompts
        .iter()
        .zip(preds)
        .map(|(p, pred)| {
            let prefix = greedy_prefix(&p.answer, &pred);
            match settings.scoring {
                Scoring::TeacherForced => judge_forced(tok, p, &prefix),
                Scoring::FreeGeneration => {
                    let eos = tok.eos_id();
                    let out = generate(
                        model,
                        &p.prompt,
                        prefix,
                        p.answer.len() + EXTRA_TOKENS,
                        |t| t.last() == Some(&eos) || answer_ended(&tok.decode(t)),
                        device,
                    );
                    judge_text(p, &tok.decode(&out))
                }
            }
        })
        .collect()
}

/// Whether generated text has ended its answer (what [`ramba_data::score_items`] reads up
/// to).
fn answer_ended(text: &str) -> bool {
    text.contains(['.', '\n'])
}

/// Free generation: the text as written.
fn judge_text(p: &TaskPrompt, text: &str) -> Trial {
    Trial {
        answer: p.answer_text.trim().to_string(),
        generated: text.trim().to_string(),
        correct: p.score(text),
        recall: Some(p.recall(text)),
    }
}

/// Teacher-forced: right iff greedy decoding reproduces the whole reference, its closing
/// period included, which is where free generation stops.
fn judge_forced(tok: &dyn Tokenizer, p: &TaskPrompt, prefix: &[u32]) -> Trial {
    let text = tok.decode(prefix);
    let correct = prefix.starts_with(&p.answer);
    Trial {
        answer: p.answer_text.trim().to_string(),
        generated: text.trim().to_string(),
        correct,
        recall: Some(p.recall(&text)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ramba_data::ByteTokenizer;
    use std::path::PathBuf;

    fn prompt(task: &str) -> TaskPrompt {
        let g =
            TaskGenerator::new(Arc::new(ByteTokenizer), ruler_task(task, None).unwrap()).unwrap();
        g.eval_prompt(1024, 0.5, &mut ChaCha8Rng::seed_from_u64(1))
            .unwrap()
    }

    #[test]
    fn tasks_by_name_with_a_haystack() {
        let names: Vec<&str> = ruler_tasks().iter().map(Task::name).collect();
        assert!(names.contains(&"niah") && names.contains(&"variable_tracking"));
        assert!(!names.contains(&"passkey"));
        let e = format!("{:#}", ruler_task("niha", None).unwrap_err());
        assert!(e.contains("niha") && e.contains("niah_multi_query"), "{e}");
        let mut t = ruler_task("niah", Some(Path::new("essays"))).unwrap();
        assert_eq!(t.haystack_mut().cloned(), Some(PathBuf::from("essays")));
        let e = format!(
            "{:#}",
            ruler_task("common_words", Some(Path::new("essays"))).unwrap_err()
        );
        assert!(
            e.contains("common_words") && e.contains("--haystack"),
            "{e}"
        );
    }

    #[test]
    fn teacher_forced_needs_the_whole_answer_and_its_period() {
        let tok = ByteTokenizer;
        let p = prompt("niah_multi_query");
        assert!(p.answer_text.ends_with('.'), "{}", p.answer_text);
        let bytes = |s: &str| -> Vec<u32> { s.bytes().map(u32::from).collect() };
        // `greedy_prefix` gives the whole answer and the token after it, or stops at the
        // first deviation (here: a list that runs on where the period should be).
        let right = bytes(&format!("{} The", p.answer_text));
        assert!(greedy_prefix(&p.answer, &right[..=p.answer.len()]).len() > p.answer.len());
        assert!(judge_forced(&tok, &p, &right[..=p.answer.len()]).correct);
        let runs_on = bytes(&p.answer_text.replace('.', ", 1"));
        let prefix = greedy_prefix(&p.answer, &runs_on);
        assert_eq!(prefix.len(), p.answer.len(), "deviates at the period");
        assert!(!judge_forced(&tok, &p, &prefix).correct);
        assert!(!judge_forced(&tok, &p, &right[..3]).correct);
    }

    #[test]
    fn free_generation_takes_any_item_order() {
        let p = prompt("niah_multi_query");
        assert!(p.gold.len() > 1);
        let mut rev = p.gold.clone();
        rev.reverse();
        let t = judge_text(&p, &format!(" {}. More.", rev.join(", ")));
        assert!(t.correct);
        assert_eq!(t.recall, Some(1.0));
        let t = judge_text(&p, &format!(" {}.", p.gold[0]));
        assert!(!t.correct);
        assert_eq!(t.recall, Some(1.0 / p.gold.len() as f64));
        assert!(answer_ended(" 1, 2.") && answer_ended("x\n") && !answer_ended(" 1, 2"));
    }
}
