//! `kind = "frequent_words"`: RULER's frequent words extraction. A text of made-up "coded"
//! words whose counts follow a Zipf law (rank r appears ∝ 1/r^alpha times); the answer lists
//! the `top` most frequent, most frequent first. Counts are set, not sampled, so the top words
//! are strictly more frequent than all others and the answer is unique.

use anyhow::{bail, Result};
use rand::seq::SliceRandom;
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::task_prompt::{join_items, EvalTask};
use super::word_lists::assemble;
use super::words::{draw_made_up, MADE_UP_LEN};
use super::{Sample, SyntheticTask, TaskContext, TaskPrompt};

/// Upper bound on `frequent_words.top`.
pub const MAX_TOP: usize = 16;
/// Upper bound on `frequent_words.vocabulary`.
pub const MAX_VOCABULARY: usize = 10_000;

/// Settings of the frequent-words task.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FrequentWordsTask {
    /// Words to find (the answer's length).
    pub top: usize,
    /// Distinct coded words in the text (more than `top`).
    pub vocabulary: usize,
    /// Zipf exponent of the word counts, in (0, 10]; larger makes the top words stand out
    /// more.
    pub alpha: f64,
}

impl Default for FrequentWordsTask {
    /// The three most frequent of 100 words at exponent 2 (RULER's alpha).
    fn default() -> Self {
        Self {
            top: 3,
            vocabulary: 100,
            alpha: 2.0,
        }
    }
}

impl SyntheticTask for FrequentWordsTask {
    fn name(&self) -> &'static str {
        "frequent_words"
    }

    fn validate(&self, key: &str) -> Result<()> {
        let Self {
            top,
            vocabulary,
            alpha,
        } = *self;
        if top == 0 || top > MAX_TOP {
            bail!("{key}.top must be in 1..={MAX_TOP} (got {top})");
        }
        if vocabulary <= top || vocabulary > MAX_VOCABULARY {
            bail!(
                "{key}.vocabulary must be in {key}.top + 1 = {}..={MAX_VOCABULARY} \
                 (got {vocabulary})",
                top + 1
            );
        }
        if !(alpha.is_finite() && alpha > 0.0 && alpha <= 10.0) {
            bail!("{key}.alpha must be in (0, 10] (got {alpha})");
        }
        Ok(())
    }

    fn check_fits(&self, ctx: &TaskContext, len: usize) -> Result<()> {
        // The fewest words the answer needs (counts top, top - 1, …, 1), longest form.
        let words = vec!["z".repeat(MADE_UP_LEN); self.vocabulary];
        let counts = self.counts(0);
        // The order does not change the length; any generator will do.
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        self.assemble_text(ctx, len, &words, &counts, &mut rng)
            .map(|_| ())
    }

    fn sample(&self, ctx: &TaskContext, len: usize, rng: &mut dyn RngCore) -> Result<Sample> {
        Ok(self.prompt(ctx, len, 0.0, rng)?.into_sample())
    }
}

impl FrequentWordsTask {
    fn head(&self) -> &'static str {
        "Read the coded text below and keep count of how often each coded word occurs."
    }

    fn tail(&self) -> String {
        let k = self.top;
        format!(" Question: What are the {k} most frequent coded words in the text above? Answer:")
    }

    /// Occurrences of each rank for a text of about `total` words: `⌊total · w_r / Σw⌋` with
    /// `w_r = (r + 1)^-alpha`, then each of the top ranks raised to one more than the rank
    /// below it, so ranks `0..=top` strictly decrease (the answer is unique and ordered).
    /// Nondecreasing in `total`, which the length search relies on.
    fn counts(&self, total: usize) -> Vec<usize> {
        let weights: Vec<f64> = (0..self.vocabulary)
            .map(|r| ((r + 1) as f64).powf(-self.alpha))
            .collect();
        let sum: f64 = weights.iter().sum();
        let mut c: Vec<usize> = weights
            .iter()
            .map(|w| (total as f64 * w / sum).floor() as usize)
            .collect();
        for r in (0..self.top).rev() {
            c[r] = c[r].max(c[r + 1] + 1);
        }
        c
    }

    /// The prompt with `counts[r]` occurrences of `words[r]`, shuffled by `rng`.
    fn assemble_text(
        &self,
        ctx: &TaskContext,
        len: usize,
        words: &[String],
        counts: &[usize],
        rng: &mut dyn RngCore,
    ) -> Result<TaskPrompt> {
        let tok = ctx.tok.as_ref();
        let word_tokens: Vec<Vec<u32>> =
            words.iter().map(|w| tok.encode(&format!(" {w}"))).collect();
        let mut order: Vec<usize> = counts
            .iter()
            .enumerate()
            .flat_map(|(r, &n)| std::iter::repeat_n(r, n))
            .collect();
        order.shuffle(rng);
        let list: Vec<u32> = order
            .iter()
            .flat_map(|&r| word_tokens[r].iter().copied())
            .collect();
        let gold = words[..self.top].to_vec();
        let head = tok.encode(self.head());
        let tail = tok.encode(&self.tail());
        assemble(ctx, len, &head, &list, &tail, gold, "frequent_words")
    }
}

impl EvalTask for FrequentWordsTask {
    /// No needle: `depth` is ignored. The text grows with `len`: the largest Zipf text that
    /// fits, the rest filler.
    fn prompt(
        &self,
        ctx: &TaskContext,
        len: usize,
        _depth: f64,
        rng: &mut dyn RngCore,
    ) -> Result<TaskPrompt> {
        let tok = ctx.tok.as_ref();
        let words = draw_made_up(self.vocabulary, &ctx.parts.filler, rng)?;
        let gold_text = join_items(&words[..self.top]);
        let fixed = tok.encode(self.head()).len()
            + tok.encode(&self.tail()).len()
            + tok.encode(&gold_text).len();
        let word_len: Vec<usize> = words
            .iter()
            .map(|w| tok.encode(&format!(" {w}")).len())
            .collect();
        let cost = |total: usize| -> usize {
            self.counts(total)
                .iter()
                .zip(&word_len)
                .map(|(c, l)| c * l)
                .sum()
        };
        let budget = len.saturating_sub(fixed);
        // The largest text that fits: cost is nondecreasing in the word total, and no total
        // above `budget` can fit (every word is at least one token).
        let (mut lo, mut hi) = (0usize, budget);
        while lo < hi {
            let mid = lo + (hi - lo).div_ceil(2);
            if cost(mid) <= budget {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        self.assemble_text(ctx, len, &words, &self.counts(lo), rng)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::generator;
    use super::super::Task;
    use super::*;
    use crate::tokenizer::{ByteTokenizer, Tokenizer};
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;
    use std::collections::HashMap;

    #[test]
    fn counts_are_zipf_with_a_strict_top() {
        let t = FrequentWordsTask {
            top: 3,
            vocabulary: 10,
            alpha: 1.0,
        };
        // Σ 1/r for r = 1..=10 = 2.928968…; 1000 words: 341, 170, 113, 85, 68, ….
        let c = t.counts(1000);
        assert_eq!(c[..5], [341, 170, 113, 85, 68]);
        // Nothing yet: the top three get 3, 2, 1 so the answer still exists and is unique.
        assert_eq!(t.counts(0), [3, 2, 1, 0, 0, 0, 0, 0, 0, 0]);
        for n in [0, 5, 17, 100, 5000] {
            let c = t.counts(n);
            assert!(c[0] > c[1] && c[1] > c[2] && c[2] > c[3], "{n}: {c:?}");
            assert!(c.windows(2).all(|w| w[0] >= w[1]));
        }
    }

    #[test]
    fn the_top_words_are_exactly_the_answer() {
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let g = generator(Task::FrequentWords(FrequentWordsTask::default()));
        for len in [600usize, 2000, 9000] {
            let p = g.eval_prompt(len, 0.0, &mut rng).unwrap();
            assert_eq!(p.total_len(), len);
            let text = ByteTokenizer.decode(&p.prompt);
            let body = text.split("occurs.").nth(1).unwrap();
            let mut counts: HashMap<&str, usize> = HashMap::new();
            for w in body.split_whitespace().take_while(|w| w.len() == 6) {
                *counts.entry(w).or_default() += 1;
            }
            let mut ranked: Vec<(&str, usize)> = counts.into_iter().collect();
            ranked.sort_by_key(|r| std::cmp::Reverse(r.1));
            let top: Vec<&str> = ranked[..3].iter().map(|r| r.0).collect();
            assert_eq!(p.gold, top, "most frequent first");
            assert!(ranked[2].1 > ranked.get(3).map_or(0, |r| r.1), "unique");
            assert!(p.score(&p.answer_text));
            assert!(!p.score(&top[..2].join(", ")));
            if let Some(fourth) = ranked.get(3) {
                assert!(!p.score(&format!("{}, {}, {}", top[0], top[1], fourth.0)));
            }
            // Almost all of the budget is the coded text.
            let (hs, he) = p.haystack;
            let words_len = 7 * ranked.iter().map(|r| r.1).sum::<usize>();
            assert!(
                he - hs - words_len < 7 * 6,
                "{} filler tokens",
                he - hs - words_len
            );
        }
    }

    #[test]
    fn limits_are_named() {
        let bad = |t: FrequentWordsTask| format!("{:#}", t.validate("s").unwrap_err());
        let d = FrequentWordsTask::default();
        assert_eq!(
            bad(FrequentWordsTask { top: 0, ..d }),
            "s.top must be in 1..=16 (got 0)"
        );
        assert_eq!(
            bad(FrequentWordsTask { vocabulary: 3, ..d }),
            "s.vocabulary must be in s.top + 1 = 4..=10000 (got 3)"
        );
        assert_eq!(
            bad(FrequentWordsTask { alpha: 0.0, ..d }),
            "s.alpha must be in (0, 10] (got 0)"
        );
        assert!(bad(FrequentWordsTask {
            alpha: f64::NAN,
            ..d
        })
        .contains("s.alpha"));
        let g = generator(Task::FrequentWords(d));
        assert!(g.check_fits(150).is_err());
        g.check_fits(300).unwrap();
    }
}
