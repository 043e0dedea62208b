//! `kind = "passkey"`: one pass key in the filler at a random depth, asked for at the end
//! (Landmark Attention's format, the same prompt the evaluator builds), optionally also asked
//! and answered inside the filler to pack more retrieval targets into a row.

use anyhow::{bail, Result};
use rand::{Rng, RngCore};
use serde::{Deserialize, Serialize};

use super::{Sample, SyntheticTask, TaskContext, DEFAULT_MAX_KEY, DEFAULT_MIN_KEY};

/// Upper bound on `passkey.questions` (each question and answer takes ~45 byte tokens).
pub const MAX_QUESTIONS: usize = 1_000;

/// Settings of the passkey task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PasskeyTask {
    /// Smallest pass key (inclusive).
    pub min_key: u64,
    /// Largest pass key (inclusive).
    pub max_key: u64,
    /// Times the question is asked and answered after the key sentence (the last time at
    /// the end of the row, as in evaluation). Every answer is a retrieval target, so more
    /// questions pack more of them into a row; evaluation always asks once.
    pub questions: usize,
    /// Start rows with the task instruction (the evaluation prompt has it). Without it a
    /// row has room for more filler and questions.
    pub instruction: bool,
}

impl Default for PasskeyTask {
    /// Five-digit keys, one question, with the instruction: the evaluation's prompt.
    fn default() -> Self {
        Self {
            min_key: DEFAULT_MIN_KEY,
            max_key: DEFAULT_MAX_KEY,
            questions: 1,
            instruction: true,
        }
    }
}

impl SyntheticTask for PasskeyTask {
    fn name(&self) -> &'static str {
        "passkey"
    }

    fn validate(&self, key: &str) -> Result<()> {
        let Self {
            min_key,
            max_key,
            questions,
            ..
        } = *self;
        if min_key > max_key {
            bail!("{key}.min_key ({min_key}) must be <= {key}.max_key ({max_key})");
        }
        if questions == 0 || questions > MAX_QUESTIONS {
            bail!("{key}.questions must be in 1..={MAX_QUESTIONS} (got {questions})");
        }
        Ok(())
    }

    fn check_fits(&self, ctx: &TaskContext, len: usize) -> Result<()> {
        let asked_at = vec![0.5; self.questions - 1];
        for key in [self.min_key, self.max_key] {
            ctx.parts
                .passkey_with(ctx.tok.as_ref(), len, 0.5, key, &asked_at, self.instruction)?;
        }
        Ok(())
    }

    fn sample(&self, ctx: &TaskContext, len: usize, rng: &mut dyn RngCore) -> Result<Sample> {
        let key = rng.random_range(self.min_key..=self.max_key);
        let depth = rng.random_range(0.0..=1.0);
        let mut asked_at: Vec<f64> = (1..self.questions)
            .map(|_| rng.random_range(depth..=1.0))
            .collect();
        asked_at.sort_by(f64::total_cmp);
        let (p, mut answers) = ctx.parts.passkey_with(
            ctx.tok.as_ref(),
            len,
            depth,
            key,
            &asked_at,
            self.instruction,
        )?;
        let start = p.prompt.len();
        answers.push((start, start + p.answer.len()));
        Ok(Sample {
            tokens: p.tokens(),
            answers,
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::super::tests::generator;
    use super::super::{key_sentence, Task, INSTRUCTION, QUESTION};
    use super::*;
    use crate::tokenizer::{ByteTokenizer, Tokenizer};
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    /// The evaluation's passkey task (one question, with the instruction) over a key range.
    pub(crate) fn passkey(min_key: u64, max_key: u64) -> Task {
        Task::Passkey(PasskeyTask {
            min_key,
            max_key,
            ..PasskeyTask::default()
        })
    }

    #[test]
    fn passkey_questions_repeat_the_key() {
        let tok = ByteTokenizer;
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        let task = Task::Passkey(PasskeyTask {
            min_key: 10_000,
            max_key: 99_999,
            questions: 4,
            instruction: false,
        });
        for _ in 0..20 {
            let s = generator(task.clone()).sample(600, &mut rng).unwrap();
            assert_eq!(s.tokens.len(), 600);
            assert_eq!(s.answers.len(), 4);
            assert_eq!(
                s.answers.last().unwrap().1,
                600,
                "the last answer ends the row"
            );
            let text = tok.decode(&s.tokens);
            assert!(!text.contains(INSTRUCTION));
            let key = tok.decode(s.answer_tokens());
            let key_at = text
                .find(&key_sentence(key.trim().parse().unwrap()))
                .unwrap();
            for &(a, b) in &s.answers {
                // Every answer is the key, right after the question, after the key sentence.
                assert_eq!(tok.decode(&s.tokens[a..b]), key);
                assert!(tok.decode(&s.tokens[..a]).ends_with(QUESTION));
                assert!(a > key_at);
            }
            assert!(
                s.answers.windows(2).all(|w| w[0].1 <= w[1].0),
                "in order, apart"
            );
        }
    }

    #[test]
    fn limits_are_named() {
        let bad = |t: PasskeyTask| format!("{:#}", t.validate("s").unwrap_err());
        let d = PasskeyTask::default();
        assert_eq!(
            bad(PasskeyTask {
                min_key: 10,
                max_key: 5,
                ..d
            }),
            "s.min_key (10) must be <= s.max_key (5)"
        );
        assert_eq!(
            bad(PasskeyTask { questions: 0, ..d }),
            "s.questions must be in 1..=1000 (got 0)"
        );
        assert!(bad(PasskeyTask {
            questions: MAX_QUESTIONS + 1,
            ..d
        })
        .contains("s.questions"));
    }
}
