//! A JSONL source ready for training rows: its examples tokenized and fitted to the row
//! length, split into train and validation, and packed into rows.

use std::ops::Range;
use std::path::Path;

use anyhow::{bail, Result};
use rand::Rng;

use super::{fit_example, load_examples, FittedExample, JsonlFormat, TooLong};
use crate::split::Split;
use crate::tokenizer::Tokenizer;

/// The fitted examples of one source.
pub(crate) struct ExampleSet {
    examples: Vec<FittedExample>,
    train: Range<usize>,
    val: Range<usize>,
    /// Examples whose context was cut to fit.
    truncated: usize,
    /// Examples left out because they could not fit.
    skipped: usize,
}

impl ExampleSet {
    /// Loads `path` and fits every example into `window` tokens. The last
    /// `round(n × val_fraction)` examples validate (all of them train and validate when
    /// `val_fraction` is 0); each split must keep at least one example. `label` names the
    /// source in errors.
    pub(crate) fn build(
        path: &Path,
        format: JsonlFormat,
        too_long: TooLong,
        tok: &dyn Tokenizer,
        window: usize,
        val_fraction: f64,
        label: &str,
    ) -> Result<Self> {
        let raw = load_examples(path, format)?;
        let total = raw.len();
        let mut examples = Vec::with_capacity(total);
        for ex in &raw {
            if let Some(f) = fit_example(ex, tok, window, too_long) {
                examples.push(f);
            }
        }
        let skipped = total - examples.len();
        let truncated = examples.iter().filter(|e| e.cut > 0).count();
        let n = examples.len();
        let (train, val) = if val_fraction == 0.0 {
            (0..n, 0..n)
        } else {
            let held_out = ((n as f64) * val_fraction).round() as usize;
            let t = n - held_out.min(n);
            (0..t, t..n)
        };
        if train.is_empty() || val.is_empty() {
            bail!(
                "{label}: {n} of {total} examples fit in data.seq_len + 1 = {window} tokens \
                 ({skipped} skipped as too long, too_long = \"{}\"), leaving {} for training \
                 and {} for validation (data.val_fraction = {val_fraction}); each needs one",
                match too_long {
                    TooLong::Truncate => "truncate",
                    TooLong::Skip => "skip",
                },
                train.len(),
                val.len()
            );
        }
        Ok(Self {
            examples,
            train,
            val,
            truncated,
            skipped,
        })
    }

    /// A row of exactly `n` tokens: examples of `split` drawn at random, each followed by
    /// `eos`, packed while the next one fits (the first always does), the rest `eos`. Returns
    /// the tokens and the answers' token ranges (each answer with the `eos` after it); only
    /// those carry loss.
    pub(crate) fn row<R: Rng + ?Sized>(
        &self,
        split: Split,
        n: usize,
        rng: &mut R,
        eos: u32,
    ) -> (Vec<u32>, Vec<(usize, usize)>) {
        let range = match split {
            Split::Train => &self.train,
            Split::Val => &self.val,
        };
        let mut tokens = Vec::with_capacity(n);
        let mut answers = Vec::new();
        loop {
            let ex = &self.examples[rng.random_range(range.clone())];
            if tokens.len() + ex.tokens.len() > n {
                break;
            }
            let answer_start = tokens.len() + ex.prompt_len;
            tokens.extend_from_slice(&ex.tokens);
            if tokens.len() == n {
                answers.push((answer_start, n));
                break;
            }
            // EOS ends the example, so the next one does not read it as context. It carries
            // loss with the answer: a fine-tuned model learns to stop there, which free
            // generation's exact match needs (without it the answer ran on into noise).
            tokens.push(eos);
            answers.push((answer_start, tokens.len()));
        }
        tokens.resize(n, eos);
        (tokens, answers)
    }

    /// `"120 examples (train 114, val 6), 3 truncated, 1 skipped as too long"`.
    pub(crate) fn describe(&self) -> String {
        format!(
            "{} examples (train {}, val {}), {} truncated, {} skipped as too long",
            self.examples.len(),
            self.train.len(),
            self.val.len(),
            self.truncated,
            self.skipped
        )
    }
}
