//! `kind = "common_words"`: RULER's common words extraction. A numbered list of made-up words
//! in which `common` words appear `common_freq` times each and as many other words as fit
//! appear `rare_freq` times each; the answer lists the `common` words (in order of first
//! appearance). Aggregation over the whole context rather than retrieval of one spot.

use std::collections::HashSet;

use anyhow::{bail, Result};
use rand::seq::SliceRandom;
use rand::RngCore;
use serde::{Deserialize, Serialize};

use super::task_prompt::{join_items, EvalTask};
use super::word_lists::assemble;
use super::words::{draw_distinct, made_up_word, MADE_UP_LEN};
use super::{Sample, SyntheticTask, TaskContext, TaskPrompt};

/// Upper bound on `common_words.common`.
pub const MAX_COMMON: usize = 64;
/// Upper bound on `common_words.common_freq`.
pub const MAX_COMMON_FREQ: usize = 1_000;

/// Settings of the common-words task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CommonWordsTask {
    /// Words to find (the answer's length).
    pub common: usize,
    /// Times each common word appears.
    pub common_freq: usize,
    /// Times each other word appears; less than `common_freq`, so the answer is unique.
    pub rare_freq: usize,
}

impl Default for CommonWordsTask {
    /// Ten words appearing 30 times among words appearing 3 times (RULER's setting).
    fn default() -> Self {
        Self {
            common: 10,
            common_freq: 30,
            rare_freq: 3,
        }
    }
}

impl SyntheticTask for CommonWordsTask {
    fn name(&self) -> &'static str {
        "common_words"
    }

    fn validate(&self, key: &str) -> Result<()> {
        let Self {
            common,
            common_freq,
            rare_freq,
        } = *self;
        if common == 0 || common > MAX_COMMON {
            bail!("{key}.common must be in 1..={MAX_COMMON} (got {common})");
        }
        if common_freq > MAX_COMMON_FREQ {
            bail!("{key}.common_freq must be <= {MAX_COMMON_FREQ} (got {common_freq})");
        }
        if rare_freq == 0 || rare_freq >= common_freq {
            bail!(
                "{key}.rare_freq must be in 1..{key}.common_freq = {common_freq} \
                 (got {rare_freq})"
            );
        }
        Ok(())
    }

    fn check_fits(&self, ctx: &TaskContext, len: usize) -> Result<()> {
        let word = "z".repeat(MADE_UP_LEN);
        let words = vec![word; self.common];
        let order: Vec<usize> = (0..self.common * self.common_freq)
            .map(|i| i % self.common)
            .collect();
        let gold = words.clone();
        self.assemble_list(ctx, len, &words, &order, gold)
            .map(|_| ())
    }

    fn sample(&self, ctx: &TaskContext, len: usize, rng: &mut dyn RngCore) -> Result<Sample> {
        Ok(self.prompt(ctx, len, 0.0, rng)?.into_sample())
    }
}

impl CommonWordsTask {
    fn head(&self) -> String {
        "Below is a numbered list of words. Some of the words appear in it many more times \
         than the others; find them."
            .to_string()
    }

    fn tail(&self) -> String {
        let k = self.common;
        format!(" Question: What are the {k} most common words in the list above? Answer:")
    }

    /// The prompt with the list `order` (indices into `words`), numbered from 1.
    fn assemble_list(
        &self,
        ctx: &TaskContext,
        len: usize,
        words: &[String],
        order: &[usize],
        gold: Vec<String>,
    ) -> Result<TaskPrompt> {
        let tok = ctx.tok.as_ref();
        let word_tokens: Vec<Vec<u32>> =
            words.iter().map(|w| tok.encode(&format!(" {w}"))).collect();
        let mut list = Vec::new();
        for (i, &w) in order.iter().enumerate() {
            list.extend(tok.encode(&format!(" {}.", i + 1)));
            list.extend_from_slice(&word_tokens[w]);
        }
        let head = tok.encode(&self.head());
        let tail = tok.encode(&self.tail());
        assemble(ctx, len, &head, &list, &tail, gold, "common_words")
    }
}

impl EvalTask for CommonWordsTask {
    /// No needle: `depth` is ignored. The list grows with `len`: rare words are added while
    /// they fit.
    fn prompt(
        &self,
        ctx: &TaskContext,
        len: usize,
        _depth: f64,
        rng: &mut dyn RngCore,
    ) -> Result<TaskPrompt> {
        let tok = ctx.tok.as_ref();
        let filler = &ctx.parts.filler;
        let mut taken = HashSet::new();
        let mut words = draw_distinct(
            self.common,
            filler,
            &mut taken,
            "made-up words",
            made_up_word,
            rng,
        )?;
        let number_len = |i: usize| tok.encode(&format!(" {i}.")).len();
        let word_len = |w: &str| tok.encode(&format!(" {w}")).len();
        // The answer lists the common words in the order the shuffle gives; its length is
        // that of any order with the byte tokenizer (subword tokenizers may differ by a token,
        // which `assemble` reports and the pipeline redraws).
        let fixed = tok.encode(&self.head()).len()
            + tok.encode(&self.tail()).len()
            + tok.encode(&join_items(&words)).len();
        let mut items = self.common * self.common_freq;
        let mut used = fixed
            + (1..=items).map(number_len).sum::<usize>()
            + self.common_freq * words.iter().map(|w| word_len(w)).sum::<usize>();
        // Rare words while one more (all its occurrences) fits.
        loop {
            let w =
                draw_distinct(1, filler, &mut taken, "made-up words", made_up_word, rng)?.remove(0);
            let extra = (items + 1..=items + self.rare_freq)
                .map(number_len)
                .sum::<usize>()
                + self.rare_freq * word_len(&w);
            if used + extra > len {
                break;
            }
            used += extra;
            items += self.rare_freq;
            words.push(w);
        }
        let mut order: Vec<usize> = (0..words.len())
            .flat_map(|w| {
                let n = if w < self.common {
                    self.common_freq
                } else {
                    self.rare_freq
                };
                std::iter::repeat_n(w, n)
            })
            .collect();
        order.shuffle(rng);
        let mut seen = HashSet::new();
        let gold: Vec<String> = order
            .iter()
            .filter(|&&w| w < self.common && seen.insert(w))
            .map(|&w| words[w].clone())
            .collect();
        self.assemble_list(ctx, len, &words, &order, gold)
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

    /// The numbered list of a prompt as words, checking the numbering runs 1, 2, 3, ….
    fn list_words(p: &TaskPrompt) -> Vec<String> {
        let text = ByteTokenizer.decode(&p.prompt);
        let list = text
            .split("find them.")
            .nth(1)
            .unwrap()
            .split(" Question:")
            .next()
            .unwrap();
        let parts: Vec<&str> = list.split_whitespace().collect();
        let mut words = Vec::new();
        for (i, pair) in parts.chunks(2).enumerate() {
            if pair[0] != format!("{}.", i + 1) {
                break; // the filler after the list
            }
            words.push(pair[1].to_string());
        }
        words
    }

    #[test]
    fn common_words_are_exactly_the_answer() {
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let task = CommonWordsTask {
            common: 5,
            common_freq: 12,
            rare_freq: 2,
        };
        let g = generator(Task::CommonWords(task));
        let mut items = 0;
        for len in [1200usize, 3000, 8000] {
            let p = g.eval_prompt(len, 0.0, &mut rng).unwrap();
            assert_eq!(p.total_len(), len);
            let words = list_words(&p);
            let mut counts: HashMap<&str, usize> = HashMap::new();
            for w in &words {
                *counts.entry(w).or_default() += 1;
            }
            for (w, &c) in &counts {
                let common = p.gold.iter().any(|g| g == w);
                assert_eq!(c, if common { 12 } else { 2 }, "{w}");
            }
            assert_eq!(p.gold.len(), 5);
            // In order of first appearance.
            let mut seen = Vec::new();
            for w in &words {
                if p.gold.contains(w) && !seen.contains(w) {
                    seen.push(w.clone());
                }
            }
            assert_eq!(seen, p.gold);
            // The list grows with the length, leaving less than one more rare word unused.
            assert!(words.len() > items, "{len}");
            items = words.len();
            let (hs, he) = p.haystack;
            let pad = ByteTokenizer.decode(&p.prompt[hs..he]);
            let filler = pad
                .rsplit(&format!(" {}", words.last().unwrap()))
                .next()
                .unwrap();
            assert!(
                filler.len() < 2 * (" 1234.".len() + " abcdef".len()),
                "{filler}"
            );
            // Exactly the five: a rare word in place of a common one is wrong.
            let rare = counts.iter().find(|(_, &c)| c == 2).unwrap().0;
            let mut near = p.gold.clone();
            near[4] = rare.to_string();
            assert!(p.score(&p.answer_text));
            assert!(!p.score(&near.join(", ")));
            assert!(!p.score(&p.gold[..4].join(", ")));
        }
    }

    #[test]
    fn limits_and_fit_errors_are_named() {
        let bad = |t: CommonWordsTask| format!("{:#}", t.validate("s").unwrap_err());
        let d = CommonWordsTask::default();
        assert_eq!(
            bad(CommonWordsTask { common: 0, ..d }),
            "s.common must be in 1..=64 (got 0)"
        );
        assert_eq!(
            bad(CommonWordsTask { rare_freq: 30, ..d }),
            "s.rare_freq must be in 1..s.common_freq = 30 (got 30)"
        );
        assert_eq!(
            bad(CommonWordsTask { rare_freq: 0, ..d }),
            "s.rare_freq must be in 1..s.common_freq = 30 (got 0)"
        );
        assert!(bad(CommonWordsTask {
            common_freq: 1001,
            ..d
        })
        .contains("s.common_freq"));
        let msg = format!(
            "{:#}",
            generator(Task::CommonWords(d))
                .check_fits(2000)
                .unwrap_err()
        );
        assert!(
            msg.contains("common_words needs") && msg.contains("2000"),
            "{msg}"
        );
    }
}
