//! Evaluation prompts of the RULER-style tasks and exact-match scoring of their answers.
//!
//! Every such task builds its training samples and its evaluation prompts the same way: a
//! [`TaskPrompt`] at a chosen needle depth (random for training). Answers are lists of items
//! (values, variable names, words) written as `" a, b, c."`; the items never contain `,`, `.`
//! or a line break, which is what lets [`score_items`] find them in generated text. The period
//! is part of the answer: training rows end with it, so a model learns to stop its list there,
//! which free generation needs (without it, a fine-tuned model wrote the right value and went
//! on with `", "` and more values, as the multi-item answers had taught it).

use anyhow::Result;
use rand::RngCore;

use super::{Sample, SyntheticTask, TaskContext};

/// A task's evaluation prompt and its expected answer, as token ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskPrompt {
    /// Instruction, haystack with the needles (or the word list), and question.
    pub prompt: Vec<u32>,
    /// Tokens the model should produce next (the teacher-forced answer).
    pub answer: Vec<u32>,
    /// Text of the answer: the items joined by `", "`, with a leading space and a closing
    /// period.
    pub answer_text: String,
    /// The items the answer must hold, all of them and nothing else, in the order
    /// `answer_text` lists them (the order is not scored).
    pub gold: Vec<String>,
    /// Token ranges `[start, end)` in `prompt` of every needle, in prompt order (empty for
    /// tasks without needles).
    pub needles: Vec<(usize, usize)>,
    /// Index in `needles` of the one placed at the requested depth (the first asked for).
    pub target: Option<usize>,
    /// Token range of the haystack with its needles: what the depth is a fraction of, once
    /// the needles are taken out.
    pub haystack: (usize, usize),
}

impl TaskPrompt {
    /// `prompt.len() + answer.len()`.
    pub fn total_len(&self) -> usize {
        self.prompt.len() + self.answer.len()
    }

    /// Prompt followed by answer (a teacher-forced sequence).
    pub fn tokens(&self) -> Vec<u32> {
        let mut t = self.prompt.clone();
        t.extend_from_slice(&self.answer);
        t
    }

    /// Whether `generated` (the model's continuation of `prompt`) is exactly the answer: see
    /// [`score_items`].
    pub fn score(&self, generated: &str) -> bool {
        score_items(generated, &self.gold)
    }

    /// Fraction of the gold items `generated` names (RULER's partial credit).
    pub fn recall(&self, generated: &str) -> f64 {
        item_recall(generated, &self.gold)
    }

    /// The prompt and answer as a training sample (one answer, ending the sample).
    pub(crate) fn into_sample(self) -> Sample {
        Sample::with_answer(self.prompt, &self.answer)
    }
}

/// The items of a generated answer: the text up to its first `.` or line break, split at
/// commas, each trimmed, empty ones dropped. `" 12, 34."` → `["12", "34"]`.
pub fn answer_items(generated: &str) -> Vec<&str> {
    let end = generated.find(['.', '\n']).unwrap_or(generated.len());
    generated[..end]
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect()
}

/// Exact match of a whole list answer: the [`answer_items`] of `generated` are the `gold`
/// items, each once, in any order, nothing missing and nothing extra, and the list is well
/// formed (no empty item, so `"a, b,"`, an unfinished list, is wrong). Items compare exactly
/// (case included); `gold` is never empty for the tasks here, and an empty gold matches
/// nothing.
pub fn score_items(generated: &str, gold: &[String]) -> bool {
    if gold.is_empty() {
        return false;
    }
    let end = generated.find(['.', '\n']).unwrap_or(generated.len());
    if generated[..end]
        .split(',')
        .any(|item| item.trim().is_empty())
    {
        return false;
    }
    let mut got = answer_items(generated);
    let mut want: Vec<&str> = gold.iter().map(String::as_str).collect();
    got.sort_unstable();
    want.sort_unstable();
    got == want
}

/// Fraction of `gold` items among the [`answer_items`] of `generated` (0 for empty gold).
pub fn item_recall(generated: &str, gold: &[String]) -> f64 {
    if gold.is_empty() {
        return 0.0;
    }
    let got = answer_items(generated);
    let hit = gold.iter().filter(|g| got.contains(&g.as_str())).count();
    hit as f64 / gold.len() as f64
}

/// `" a, b, c."`: the answer as written, its period included (see the module docs).
pub(crate) fn join_items(items: &[String]) -> String {
    format!(" {}.", items.join(", "))
}

/// A task that builds evaluation prompts at a given needle depth.
pub(crate) trait EvalTask: SyntheticTask {
    /// A prompt of exactly `len` tokens (prompt + answer) with the first asked needle at
    /// `depth` (0 = start of the haystack, 1 = its end); tasks without needles ignore it.
    fn prompt(
        &self,
        ctx: &TaskContext,
        len: usize,
        depth: f64,
        rng: &mut dyn RngCore,
    ) -> Result<TaskPrompt>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gold(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn scoring_accepts_exactly_the_answer() {
        let g = gold(&["1234567", "7654321"]);
        for right in [
            " 1234567, 7654321",
            "1234567,7654321.",
            " 7654321, 1234567. And more text, 42.",
            "1234567, 7654321\nnext line",
        ] {
            assert!(score_items(right, &g), "{right}");
            assert_eq!(item_recall(right, &g), 1.0);
        }
        for near in [
            " 1234567",
            " 1234567, 765432",
            " 1234567, 76543210",
            " 1234567, 7654321, 1111111",
            " 1234567, 1234567",
            " 1234567 7654321",
            " 1234567, 7654321,",
            " 1234567,, 7654321",
            ", 1234567, 7654321",
            "",
            ". 1234567, 7654321",
        ] {
            assert!(!score_items(near, &g), "{near}");
        }
        assert_eq!(item_recall(" 1234567", &g), 0.5);
        assert_eq!(
            item_recall(" 1234567, 7654321,", &g),
            1.0,
            "recall is lenient"
        );
        assert!(!score_items(" Apple", &gold(&["apple"])), "case counts");
        assert!(!score_items(" x", &[]));
        assert_eq!(join_items(&g), " 1234567, 7654321.");
        assert_eq!(answer_items(&join_items(&g)), ["1234567", "7654321"]);
    }
}
