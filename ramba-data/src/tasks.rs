//! Synthetic long-context tasks (passkey retrieval and friends), shared by the training
//! pipeline and the evaluator so both build prompts the exact same way.
//!
//! Prompts are assembled from separately tokenized pieces (instruction, filler sentences,
//! needle, question, answer). Every piece starts with a space (except the instruction),
//! so with word-boundary pre-tokenizers (GPT-2/Llama BPE) piecewise tokenization equals
//! tokenizing the joined text, and lengths can be hit exactly at token level.

use std::sync::Arc;

use anyhow::{bail, ensure, Result};
use rand::Rng;

use crate::config::MAX_ASSOC_PAIRS;
use crate::tokenizer::Tokenizer;

/// Passkey task description (Landmark Attention, Mohtashami & Jaggi 2023).
pub const INSTRUCTION: &str = "There is an important info hidden inside a lot of irrelevant text. \
Find it and memorize them. I will quiz you about the important information there.";

/// One repetition of the passkey filler; the haystack is this repeated.
pub const FILLER: &str =
    "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again.";

/// Question closing a passkey prompt; the answer is [`answer_text`].
pub const QUESTION: &str = " What is the pass key? The pass key is";

/// Marker before the repeated string of the copy task.
pub const COPY_PROMPT: &str = " Copy:";

/// Smallest default pass key (five digits, as in the paper's setup).
pub const DEFAULT_MIN_KEY: u64 = 10_000;
/// Largest default pass key.
pub const DEFAULT_MAX_KEY: u64 = 99_999;

/// Names the needles of the multi-key task are filed under.
pub const MULTI_KEY_WORDS: [&str; 32] = [
    "apple", "river", "falcon", "marble", "candle", "forest", "copper", "violet", "harbor",
    "pepper", "meadow", "silver", "rocket", "garden", "lantern", "walnut", "canyon", "ember",
    "glacier", "island", "jasmine", "kettle", "lemon", "mirror", "nickel", "orchid", "pebble",
    "quartz", "saddle", "thunder", "velvet", "willow",
];

/// The needle sentence of the passkey task (leading space: it follows a sentence).
pub fn key_sentence(key: u64) -> String {
    format!(" The pass key is {key}. Remember it. {key} is the pass key.")
}

/// The expected continuation of [`QUESTION`].
pub fn answer_text(key: u64) -> String {
    format!(" {key}")
}

/// The sentences of [`FILLER`], each with a leading space so they concatenate into
/// `" The grass is green. The sky is blue. …"`.
pub fn filler_sentences() -> Vec<String> {
    FILLER
        .split_inclusive('.')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| format!(" {s}"))
        .collect()
}

/// A retrieval prompt and its expected answer, as token ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasskeyPrompt {
    /// Instruction, haystack with the needle, and question.
    pub prompt: Vec<u32>,
    /// Tokens the model should produce next.
    pub answer: Vec<u32>,
    /// Text of the answer (e.g. `" 12345"`), for [`score_answer`].
    pub answer_text: String,
    /// Index in `prompt` where the key sentence starts.
    pub key_token_start: usize,
}

impl PasskeyPrompt {
    /// `prompt.len() + answer.len()`.
    pub fn total_len(&self) -> usize {
        self.prompt.len() + self.answer.len()
    }

    /// Prompt followed by answer (a teacher-forced training/eval sequence).
    pub fn tokens(&self) -> Vec<u32> {
        let mut t = self.prompt.clone();
        t.extend_from_slice(&self.answer);
        t
    }
}

/// True when the first integer in `generated` equals the integer in `answer_text`.
/// `" 12345."` matches `"12345"`; `"1234"`, `"123456"` and `""` do not.
pub fn score_answer(generated: &str, answer_text: &str) -> bool {
    match (first_integer(generated.trim()), first_integer(answer_text)) {
        (Some(g), Some(a)) => g == a,
        _ => false,
    }
}

/// The first run of ASCII digits, leading zeros dropped (so it compares as a number
/// without overflow limits).
fn first_integer(s: &str) -> Option<&str> {
    let start = s.find(|c: char| c.is_ascii_digit())?;
    let rest = &s[start..];
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    let digits = rest[..end].trim_start_matches('0');
    Some(if digits.is_empty() { "0" } else { digits })
}

/// Filler sentences as token ids, for building exact-length haystacks.
#[derive(Debug, Clone)]
pub(crate) struct Filler {
    sentences: Vec<Vec<u32>>,
}

impl Filler {
    pub(crate) fn new(tok: &dyn Tokenizer) -> Result<Self> {
        let sentences: Vec<Vec<u32>> = filler_sentences().iter().map(|s| tok.encode(s)).collect();
        // An empty sentence would make `take` loop forever.
        ensure!(
            !sentences.is_empty() && sentences.iter().all(|s| !s.is_empty()),
            "tokenizer {} encodes a filler sentence to no tokens",
            tok.name()
        );
        Ok(Self { sentences })
    }

    /// Exactly `n` filler tokens starting at sentence `first` (cyclically): whole
    /// sentences, the last one cut at token level. Also returns the offsets where a
    /// needle may go: every sentence start, plus `n` (the very end).
    pub(crate) fn take(&self, n: usize, first: usize) -> (Vec<u32>, Vec<usize>) {
        let mut out = Vec::with_capacity(n);
        let mut bounds = vec![0];
        let mut i = first % self.sentences.len();
        while out.len() < n {
            let s = &self.sentences[i];
            let room = n - out.len();
            out.extend_from_slice(&s[..s.len().min(room)]);
            if out.len() < n || s.len() == room {
                bounds.push(out.len());
            }
            i = (i + 1) % self.sentences.len();
        }
        if bounds.last() != Some(&n) {
            bounds.push(n);
        }
        (out, bounds)
    }

    /// `n` filler tokens starting at a random sentence and token offset.
    pub(crate) fn window<R: Rng + ?Sized>(&self, n: usize, rng: &mut R) -> Vec<u32> {
        let first = rng.random_range(0..self.sentences.len());
        let skip = rng.random_range(0..self.sentences[first].len());
        let (mut t, _) = self.take(n + skip, first);
        t.drain(..skip);
        t
    }
}

/// Tokenized constant pieces of the retrieval prompts, built once per tokenizer.
#[derive(Debug, Clone)]
pub(crate) struct PromptParts {
    instruction: Vec<u32>,
    question: Vec<u32>,
    filler: Filler,
}

/// A piece inserted into the filler at a relative depth.
struct Needle {
    depth: f64,
    tokens: Vec<u32>,
}

impl PromptParts {
    pub(crate) fn new(tok: &dyn Tokenizer) -> Result<Self> {
        Ok(Self {
            instruction: tok.encode(INSTRUCTION),
            question: tok.encode(QUESTION),
            filler: Filler::new(tok)?,
        })
    }

    /// `head ++ filler-with-needles ++ tail` of exactly `total - answer_len` tokens.
    /// Needles go to the sentence boundary nearest `depth × filler length`. Returns the
    /// prompt and each needle's start index (in input order), or `None` when the fixed
    /// pieces alone exceed the budget.
    fn haystack(
        &self,
        total: usize,
        head: &[u32],
        needles: &[Needle],
        tail: &[u32],
        answer_len: usize,
    ) -> Option<(Vec<u32>, Vec<usize>)> {
        let fixed = head.len()
            + needles.iter().map(|n| n.tokens.len()).sum::<usize>()
            + tail.len()
            + answer_len;
        let budget = total.checked_sub(fixed)?;
        let (fill, bounds) = self.filler.take(budget, 0);
        let mut placed: Vec<(usize, usize)> = needles
            .iter()
            .enumerate()
            .map(|(i, n)| (nearest(&bounds, n.depth * budget as f64), i))
            .collect();
        placed.sort(); // stable order for needles sharing a boundary: by input index
        let mut prompt = Vec::with_capacity(total - answer_len);
        prompt.extend_from_slice(head);
        let mut starts = vec![0; needles.len()];
        let mut at = 0;
        for (b, i) in placed {
            prompt.extend_from_slice(&fill[at..b]);
            starts[i] = prompt.len();
            prompt.extend_from_slice(&needles[i].tokens);
            at = b;
        }
        prompt.extend_from_slice(&fill[at..]);
        prompt.extend_from_slice(tail);
        Some((prompt, starts))
    }

    pub(crate) fn passkey(
        &self,
        tok: &dyn Tokenizer,
        total: usize,
        depth: f64,
        key: u64,
    ) -> Result<PasskeyPrompt> {
        Ok(self.passkey_with(tok, total, depth, key, &[], true)?.0)
    }

    /// The passkey prompt with the question also asked and answered inside the filler, at
    /// each depth of `asked_at` (after `depth`, where the key sentence goes), and with or
    /// without the instruction. Returns the prompt and the token ranges of those inner answers.
    pub(crate) fn passkey_with(
        &self,
        tok: &dyn Tokenizer,
        total: usize,
        depth: f64,
        key: u64,
        asked_at: &[f64],
        instruction: bool,
    ) -> Result<(PasskeyPrompt, Vec<(usize, usize)>)> {
        check_depth(depth)?;
        let answer_text = answer_text(key);
        let answer = tok.encode(&answer_text);
        let asked: Vec<u32> = [self.question.as_slice(), &answer].concat();
        let mut needles = vec![Needle {
            depth,
            tokens: tok.encode(&key_sentence(key)),
        }];
        for &d in asked_at {
            check_depth(d)?;
            needles.push(Needle {
                depth: d,
                tokens: asked.clone(),
            });
        }
        let head: &[u32] = if instruction { &self.instruction } else { &[] };
        let Some((prompt, starts)) =
            self.haystack(total, head, &needles, &self.question, answer.len())
        else {
            let need = head.len()
                + needles.iter().map(|n| n.tokens.len()).sum::<usize>()
                + self.question.len()
                + answer.len();
            bail!(
                "a passkey prompt of {total} tokens is too short: {}key sentence, {} question(s) \
                 and answer(s) alone take {need} tokens with tokenizer {}",
                if instruction { "instruction, " } else { "" },
                asked_at.len() + 1,
                tok.name()
            );
        };
        let inner = starts[1..]
            .iter()
            .map(|&s| (s + self.question.len(), s + asked.len()))
            .collect();
        let p = PasskeyPrompt {
            prompt,
            answer,
            answer_text,
            key_token_start: starts[0],
        };
        Ok((p, inner))
    }
}

fn check_depth(depth: f64) -> Result<()> {
    ensure!(
        depth.is_finite() && (0.0..=1.0).contains(&depth),
        "needle depth must be in [0, 1] (got {depth})"
    );
    Ok(())
}

/// The boundary closest to `target` (the first one on ties).
fn nearest(bounds: &[usize], target: f64) -> usize {
    let mut best = bounds[0];
    for &b in bounds {
        if (b as f64 - target).abs() < (best as f64 - target).abs() {
            best = b;
        }
    }
    best
}

/// The passkey prompt (Landmark Attention's convention): [`INSTRUCTION`], the
/// [`FILLER`] repeated with [`key_sentence`] at `depth` (0 = right after the instruction,
/// 1 = right before the question; placed at the nearest sentence boundary), then
/// [`QUESTION`]. `prompt + answer` is exactly `total_tokens` long: the filler is cut at
/// token level at its end. Errors if `total_tokens` cannot hold the fixed pieces.
pub fn passkey_prompt(
    tok: &dyn Tokenizer,
    total_tokens: usize,
    depth: f64,
    key: u64,
) -> Result<PasskeyPrompt> {
    PromptParts::new(tok)?.passkey(tok, total_tokens, depth, key)
}

/// Tokens the random haystack of [`needle_prompt`] is drawn from: the ids of `a`–`z` and
/// space, where each is a single token (for the byte tokenizer, exactly those bytes).
pub fn haystack_alphabet(tok: &dyn Tokenizer) -> Vec<u32> {
    let mut ids: Vec<u32> = ('a'..='z')
        .chain(std::iter::once(' '))
        .filter_map(|c| match tok.encode(&c.to_string())[..] {
            [id] => Some(id),
            _ => None,
        })
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// Passkey retrieval in a haystack of random tokens (from [`haystack_alphabet`]) instead
/// of the repeated filler: same instruction, key sentence, question and answer, key
/// drawn from `rng` in the default range, needle at token position `depth × haystack`.
/// `prompt + answer` is exactly `total_tokens` long.
pub fn needle_prompt<R: Rng + ?Sized>(
    tok: &dyn Tokenizer,
    total_tokens: usize,
    depth: f64,
    rng: &mut R,
) -> Result<PasskeyPrompt> {
    check_depth(depth)?;
    let alphabet = haystack_alphabet(tok);
    ensure!(
        !alphabet.is_empty(),
        "tokenizer {} has no single-token letters for a random haystack",
        tok.name()
    );
    let key = rng.random_range(DEFAULT_MIN_KEY..=DEFAULT_MAX_KEY);
    let instruction = tok.encode(INSTRUCTION);
    let needle = tok.encode(&key_sentence(key));
    let question = tok.encode(QUESTION);
    let answer_text = answer_text(key);
    let answer = tok.encode(&answer_text);
    let fixed = instruction.len() + needle.len() + question.len() + answer.len();
    let Some(budget) = total_tokens.checked_sub(fixed) else {
        bail!(
            "a needle prompt of {total_tokens} tokens is too short: instruction, key \
             sentence, question and answer alone take {fixed} tokens with tokenizer {}",
            tok.name()
        );
    };
    let at = (depth * budget as f64).round() as usize;
    let mut prompt = instruction;
    let hay: Vec<u32> = (0..budget)
        .map(|_| alphabet[rng.random_range(0..alphabet.len())])
        .collect();
    prompt.extend_from_slice(&hay[..at]);
    let key_token_start = prompt.len();
    prompt.extend_from_slice(&needle);
    prompt.extend_from_slice(&hay[at..]);
    prompt.extend_from_slice(&question);
    Ok(PasskeyPrompt {
        prompt,
        answer,
        answer_text,
        key_token_start,
    })
}

/// A synthetic training task (the generated kinds of `SourceConfig`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Task {
    /// Filler sentences only; no answer.
    Filler,
    /// One pass key in filler ([`passkey_prompt`] at a random depth).
    Passkey {
        /// Smallest key (inclusive).
        min_key: u64,
        /// Largest key (inclusive).
        max_key: u64,
        /// Times the question is asked and answered after the key (the last at the end).
        questions: usize,
        /// Start with [`INSTRUCTION`].
        instruction: bool,
    },
    /// `n_keys` named pass keys in filler; asks for one.
    MultiKey {
        /// Needles per sample.
        n_keys: usize,
    },
    /// `n_pairs` `key: value` pairs, filler, then one key to complete.
    AssocRecall {
        /// Pairs per sample.
        n_pairs: usize,
    },
    /// `span` random letters, filler, [`COPY_PROMPT`], the letters again.
    Copy {
        /// Letters to copy.
        span: usize,
    },
}

/// One generated sequence and where its answers are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// The whole sequence (prompt then answer).
    pub tokens: Vec<u32>,
    /// Token ranges `[start, end)` of the answers in `tokens`, in order; the last one ends the
    /// sequence. Empty for tasks without an answer.
    pub answers: Vec<(usize, usize)>,
}

impl Sample {
    /// Tokens before the final answer (all of them when there is no answer).
    pub fn prompt(&self) -> &[u32] {
        &self.tokens[..self.answers.last().map_or(self.tokens.len(), |a| a.0)]
    }

    /// The final answer's tokens (empty when there is none).
    pub fn answer_tokens(&self) -> &[u32] {
        self.answers
            .last()
            .map_or(&[], |&(s, e)| &self.tokens[s..e])
    }
}

/// Generates exact-length samples of one [`Task`].
#[derive(Clone)]
pub struct TaskGenerator {
    task: Task,
    tok: Arc<dyn Tokenizer>,
    parts: PromptParts,
}

impl std::fmt::Debug for TaskGenerator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskGenerator")
            .field("task", &self.task)
            .field("tokenizer", &self.tok.name())
            .finish()
    }
}

impl TaskGenerator {
    /// Tokenizes the task's constant pieces once. Errors on parameters that could not
    /// generate a sample (the config's `validate` reports them with their keys first).
    pub fn new(tok: Arc<dyn Tokenizer>, task: Task) -> Result<Self> {
        match task {
            Task::Filler => {}
            Task::Passkey {
                min_key,
                max_key,
                questions,
                ..
            } => {
                ensure!(
                    min_key <= max_key,
                    "passkey min_key {min_key} > max_key {max_key}"
                );
                ensure!(questions >= 1, "passkey questions must be ≥ 1");
            }
            Task::MultiKey { n_keys } => ensure!(
                (1..=MULTI_KEY_WORDS.len()).contains(&n_keys),
                "multi_key n_keys must be in 1..={} (got {n_keys})",
                MULTI_KEY_WORDS.len()
            ),
            Task::AssocRecall { n_pairs } => ensure!(
                (1..=MAX_ASSOC_PAIRS).contains(&n_pairs),
                "assoc_recall n_pairs must be in 1..={MAX_ASSOC_PAIRS} (got {n_pairs})"
            ),
            Task::Copy { span } => ensure!(span > 0, "copy span must be > 0"),
        }
        let parts = PromptParts::new(tok.as_ref())?;
        Ok(Self { task, tok, parts })
    }

    /// The task generated.
    pub fn task(&self) -> Task {
        self.task
    }

    /// Errors when samples of `len` tokens cannot be built (fixed pieces too long).
    /// Checks the longest variants (largest keys, longest words), so with the byte
    /// tokenizer a pass here means every sample fits.
    pub fn check_fits(&self, len: usize) -> Result<()> {
        let tok = self.tok.as_ref();
        match self.task {
            Task::Filler => Ok(()),
            Task::Passkey {
                min_key,
                max_key,
                questions,
                instruction,
            } => {
                let asked_at = vec![0.5; questions - 1];
                for key in [min_key, max_key] {
                    self.parts
                        .passkey_with(tok, len, 0.5, key, &asked_at, instruction)?;
                }
                Ok(())
            }
            Task::MultiKey { n_keys } => {
                let mut words: Vec<&str> = MULTI_KEY_WORDS.to_vec();
                words.sort_by_key(|w| std::cmp::Reverse(w.len()));
                let keys = vec![DEFAULT_MAX_KEY; n_keys];
                self.multi_key_from(len, &words[..n_keys], &keys, &vec![0.5; n_keys], 0)
                    .map(|_| ())
            }
            Task::AssocRecall { n_pairs } => {
                let keys: Vec<String> = (0..n_pairs).map(|i| four_letters(i as u64)).collect();
                let values = vec![9999; n_pairs];
                self.assoc_from(len, &keys, &values, 0).map(|_| ())
            }
            Task::Copy { span } => self.copy_from(len, &"z".repeat(span)).map(|_| ()),
        }
    }

    /// A fresh sample of exactly `len` tokens drawn with `rng`.
    pub fn sample<R: Rng + ?Sized>(&self, len: usize, rng: &mut R) -> Result<Sample> {
        let tok = self.tok.as_ref();
        let sample = match self.task {
            Task::Filler => Sample {
                tokens: self.parts.filler.window(len, rng),
                answers: Vec::new(),
            },
            Task::Passkey {
                min_key,
                max_key,
                questions,
                instruction,
            } => {
                let key = rng.random_range(min_key..=max_key);
                let depth = rng.random_range(0.0..=1.0);
                let mut asked_at: Vec<f64> = (1..questions)
                    .map(|_| rng.random_range(depth..=1.0))
                    .collect();
                asked_at.sort_by(f64::total_cmp);
                let (p, mut answers) =
                    self.parts
                        .passkey_with(tok, len, depth, key, &asked_at, instruction)?;
                let start = p.prompt.len();
                answers.push((start, start + p.answer.len()));
                Sample {
                    tokens: p.tokens(),
                    answers,
                }
            }
            Task::MultiKey { n_keys } => {
                let words: Vec<&str> = rand::seq::index::sample(rng, MULTI_KEY_WORDS.len(), n_keys)
                    .into_iter()
                    .map(|i| MULTI_KEY_WORDS[i])
                    .collect();
                let keys: Vec<u64> = (0..n_keys)
                    .map(|_| rng.random_range(DEFAULT_MIN_KEY..=DEFAULT_MAX_KEY))
                    .collect();
                let depths: Vec<f64> = (0..n_keys).map(|_| rng.random_range(0.0..=1.0)).collect();
                let query = rng.random_range(0..n_keys);
                self.multi_key_from(len, &words, &keys, &depths, query)?
            }
            Task::AssocRecall { n_pairs } => {
                // Distinct keys: a duplicate would make the query ambiguous.
                let mut seen = std::collections::HashSet::with_capacity(n_pairs);
                let mut keys: Vec<String> = Vec::with_capacity(n_pairs);
                while keys.len() < n_pairs {
                    let k = four_letters(rng.random());
                    if seen.insert(k.clone()) {
                        keys.push(k);
                    }
                }
                let values: Vec<u32> = (0..n_pairs)
                    .map(|_| rng.random_range(1000..=9999))
                    .collect();
                let query = rng.random_range(0..n_pairs);
                self.assoc_from(len, &keys, &values, query)?
            }
            Task::Copy { span } => {
                let s: String = (0..span)
                    .map(|_| char::from(b'a' + rng.random_range(0..26u8)))
                    .collect();
                self.copy_from(len, &s)?
            }
        };
        // Guards the invariant the pipeline relies on (row = exactly seq_len + 1).
        ensure!(
            sample.tokens.len() == len,
            "{:?} sample has {} tokens, expected {len}",
            self.task,
            sample.tokens.len()
        );
        Ok(sample)
    }

    fn multi_key_from(
        &self,
        len: usize,
        words: &[&str],
        keys: &[u64],
        depths: &[f64],
        query: usize,
    ) -> Result<Sample> {
        let tok = self.tok.as_ref();
        let needles: Vec<Needle> = words
            .iter()
            .zip(keys)
            .zip(depths)
            .map(|((w, k), &depth)| Needle {
                depth,
                tokens: tok.encode(&format!(" The pass key for {w} is {k}.")),
            })
            .collect();
        let w = words[query];
        let question = tok.encode(&format!(
            " What is the pass key for {w}? The pass key for {w} is"
        ));
        let answer = tok.encode(&answer_text(keys[query]));
        let Some((prompt, _)) = self.parts.haystack(
            len,
            &self.parts.instruction,
            &needles,
            &question,
            answer.len(),
        ) else {
            bail!(
                "multi_key with {} keys does not fit in {len} tokens with tokenizer {}",
                words.len(),
                tok.name()
            );
        };
        Ok(with_answer(prompt, &answer))
    }

    fn assoc_from(
        &self,
        len: usize,
        keys: &[String],
        values: &[u32],
        query: usize,
    ) -> Result<Sample> {
        let tok = self.tok.as_ref();
        let mut head = Vec::new();
        for (k, v) in keys.iter().zip(values) {
            head.extend(tok.encode(&format!(" {k}: {v}.")));
        }
        let tail = tok.encode(&format!(" {}:", keys[query]));
        let answer = tok.encode(&format!(" {}", values[query]));
        self.padded(len, &head, &tail, &answer, "assoc_recall")
    }

    fn copy_from(&self, len: usize, s: &str) -> Result<Sample> {
        let tok = self.tok.as_ref();
        let text = tok.encode(&format!(" {s}"));
        let tail = tok.encode(COPY_PROMPT);
        self.padded(len, &text, &tail, &text, "copy")
    }

    /// `head ++ filler ++ tail ++ answer`, filler sized to make exactly `len` tokens.
    fn padded(
        &self,
        len: usize,
        head: &[u32],
        tail: &[u32],
        answer: &[u32],
        what: &str,
    ) -> Result<Sample> {
        let fixed = head.len() + tail.len() + answer.len();
        let Some(pad) = len.checked_sub(fixed) else {
            bail!(
                "{what} needs {fixed} tokens but the sample is {len} tokens (tokenizer {})",
                self.tok.name()
            );
        };
        let mut prompt = head.to_vec();
        prompt.extend(self.parts.filler.take(pad, 0).0);
        prompt.extend_from_slice(tail);
        Ok(with_answer(prompt, answer))
    }
}

fn with_answer(mut tokens: Vec<u32>, answer: &[u32]) -> Sample {
    let start = tokens.len();
    tokens.extend_from_slice(answer);
    Sample {
        answers: vec![(start, tokens.len())],
        tokens,
    }
}

/// A 4-letter lowercase word from the low bits of `x`.
fn four_letters(x: u64) -> String {
    (0..4)
        .map(|i| char::from(b'a' + ((x >> (8 * i)) % 26) as u8))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{byte_level_bpe_json, TempDir};
    use crate::tokenizer::{ByteTokenizer, HfTokenizer};
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn filler_sentences_rebuild_filler() {
        let s = filler_sentences();
        assert_eq!(s.len(), 5);
        assert_eq!(s.concat(), format!(" {FILLER}"));
        assert_eq!(s[4], " There and back again.");
    }

    #[test]
    fn passkey_prompt_has_exact_length() {
        let tok = ByteTokenizer;
        for total in [128usize, 300, 1000, 4096] {
            // 128 bytes cannot hold the instruction: that must be a clear error.
            let r = passkey_prompt(&tok, total, 0.5, 12345);
            if total == 128 {
                let msg = format!("{:#}", r.unwrap_err());
                assert!(msg.contains("too short") && msg.contains("128"), "{msg}");
                continue;
            }
            let p = r.unwrap();
            assert_eq!(p.total_len(), total, "total {total}");
            assert_eq!(p.answer_text, " 12345");
            assert_eq!(tok.decode(&p.answer), " 12345");
        }
    }

    #[test]
    fn passkey_prompt_is_well_formed() {
        let tok = ByteTokenizer;
        let p = passkey_prompt(&tok, 1000, 0.3, 54321).unwrap();
        let text = tok.decode(&p.tokens());
        assert!(text.starts_with(INSTRUCTION), "{text}");
        assert!(text.contains(&key_sentence(54321)));
        assert!(text.ends_with(&format!("{QUESTION} 54321")), "{text}");
        assert!(text.contains(" The grass is green. The sky is blue."));
        // The key sentence starts exactly at key_token_start.
        let from_key = tok.decode(&p.prompt[p.key_token_start..]);
        assert!(from_key.starts_with(&key_sentence(54321)), "{from_key}");
        // Inserted at a sentence boundary: preceded by a sentence end (or the instruction).
        let before = tok.decode(&p.prompt[..p.key_token_start]);
        assert!(before.ends_with('.'), "{before}");
    }

    #[test]
    fn passkey_depth_is_respected() {
        let tok = ByteTokenizer;
        let sentence = filler_sentences().iter().map(String::len).max().unwrap();
        let instr = tok.encode(INSTRUCTION).len();
        for total in [300usize, 1000, 4096] {
            for depth in [0.0, 0.25, 0.5, 0.75, 1.0] {
                let key = 77777;
                let p = passkey_prompt(&tok, total, depth, key).unwrap();
                let fixed =
                    instr + key_sentence(key).len() + QUESTION.len() + answer_text(key).len();
                let filler_len = total - fixed;
                let offset = p.key_token_start - instr;
                let want = depth * filler_len as f64;
                assert!(
                    (offset as f64 - want).abs() <= sentence as f64,
                    "total {total} depth {depth}: key at filler offset {offset}, want ≈{want}"
                );
                if depth == 0.0 {
                    assert_eq!(p.key_token_start, instr, "right after the instruction");
                }
                if depth == 1.0 {
                    let after = p.key_token_start + key_sentence(key).len();
                    assert_eq!(
                        tok.decode(&p.prompt[after..]),
                        QUESTION,
                        "right before the question"
                    );
                }
            }
        }
    }

    #[test]
    fn passkey_rejects_bad_depth() {
        let tok = ByteTokenizer;
        assert!(passkey_prompt(&tok, 1000, 1.5, 1).is_err());
        assert!(passkey_prompt(&tok, 1000, f64::NAN, 1).is_err());
    }

    #[test]
    fn passkey_with_hf_bpe_is_exact_and_decodes() {
        let dir = TempDir::new("bpe");
        let path = dir.write("tokenizer.json", byte_level_bpe_json().as_bytes());
        let tok = HfTokenizer::from_file(&path).unwrap();
        // Merges make " The" a single token, so piece lengths differ from byte counts.
        assert_eq!(tok.encode(" The").len(), 1);
        assert_eq!(tok.eos_id(), 256);
        for total in [300usize, 777] {
            let p = passkey_prompt(&tok, total, 0.5, 31337).unwrap();
            assert_eq!(p.total_len(), total);
            let text = tok.decode(&p.tokens());
            assert!(text.contains(&key_sentence(31337)), "{text}");
            assert!(text.ends_with(&format!("{QUESTION} 31337")), "{text}");
            // Piecewise tokenization equals whole-text tokenization for these pieces.
            assert_eq!(tok.encode(&tok.decode(&p.tokens())), p.tokens());
        }
    }

    #[test]
    fn needle_prompt_random_haystack() {
        let tok = ByteTokenizer;
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let alphabet = haystack_alphabet(&tok);
        assert_eq!(alphabet.len(), 27);
        for (total, depth) in [(400usize, 0.0), (1000, 0.5), (2048, 1.0)] {
            let p = needle_prompt(&tok, total, depth, &mut rng).unwrap();
            assert_eq!(p.total_len(), total);
            let key: u64 = p.answer_text.trim().parse().unwrap();
            let instr = tok.encode(INSTRUCTION).len();
            let ks = key_sentence(key);
            let hay_len = total - instr - ks.len() - QUESTION.len() - p.answer.len();
            assert_eq!(
                p.key_token_start - instr,
                (depth * hay_len as f64).round() as usize
            );
            let hay = &p.prompt[instr..p.key_token_start];
            assert!(hay.iter().all(|t| alphabet.contains(t)));
            let text = tok.decode(&p.tokens());
            assert!(text.contains(&ks) && text.ends_with(&format!("{QUESTION}{}", p.answer_text)));
        }
        assert!(needle_prompt(&tok, 50, 0.5, &mut rng).is_err());
    }

    #[test]
    fn score_answer_cases() {
        assert!(score_answer("12345", " 12345."));
        assert!(score_answer(" 12345.", " 12345"));
        assert!(score_answer("12345 is the pass key", " 12345"));
        assert!(!score_answer("1234", " 12345"));
        assert!(!score_answer("123456", " 12345"));
        assert!(!score_answer("", " 12345"));
        assert!(!score_answer("no digits", " 12345"));
        assert!(!score_answer("12345", "no number"));
        assert!(score_answer("007", "7"));
    }

    #[test]
    fn filler_take_and_window() {
        let tok = ByteTokenizer;
        let f = Filler::new(&tok).unwrap();
        let (t, b) = f.take(50, 0);
        assert_eq!(t.len(), 50);
        assert_eq!(
            tok.decode(&t),
            " The grass is green. The sky is blue. The sun is y"
        );
        assert_eq!(b, vec![0, 20, 37, 50]);
        let (t, b) = f.take(37, 0);
        assert_eq!((t.len(), b), (37, vec![0, 20, 37]));
        assert_eq!(f.take(0, 3), (vec![], vec![0]));
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let cycle = filler_sentences().concat().repeat(3);
        for _ in 0..20 {
            let w = tok.decode(&f.window(64, &mut rng));
            assert_eq!(w.len(), 64);
            assert!(cycle.contains(&w), "{w}");
        }
    }

    fn generator(task: Task) -> TaskGenerator {
        TaskGenerator::new(Arc::new(ByteTokenizer), task).unwrap()
    }

    /// The evaluation's passkey task: one question, with the instruction.
    fn passkey(min_key: u64, max_key: u64) -> Task {
        Task::Passkey {
            min_key,
            max_key,
            questions: 1,
            instruction: true,
        }
    }

    #[test]
    fn passkey_questions_repeat_the_key() {
        let tok = ByteTokenizer;
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        let task = Task::Passkey {
            min_key: 10_000,
            max_key: 99_999,
            questions: 4,
            instruction: false,
        };
        for _ in 0..20 {
            let s = generator(task).sample(600, &mut rng).unwrap();
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
    fn task_samples_have_exact_length_and_correct_answers() {
        let tok = ByteTokenizer;
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let len = 513;
        for _ in 0..10 {
            // Passkey: the answer span holds the key that appears in the key sentence.
            let s = generator(passkey(10, 99)).sample(len, &mut rng).unwrap();
            assert_eq!(s.tokens.len(), len);
            let ans = tok.decode(s.answer_tokens());
            let key: u64 = ans.trim().parse().unwrap();
            assert!((10..=99).contains(&key));
            assert!(tok.decode(s.prompt()).contains(&key_sentence(key)));
            assert_eq!(
                s.answers,
                vec![(len - ans.len(), len)],
                "one answer, ending the sample"
            );

            // Multi-key: the asked word's needle holds the answer.
            let s = generator(Task::MultiKey { n_keys: 4 })
                .sample(len, &mut rng)
                .unwrap();
            assert_eq!(s.tokens.len(), len);
            let prompt = tok.decode(s.prompt());
            let ans = tok.decode(s.answer_tokens());
            let word = prompt
                .rsplit("The pass key for ")
                .next()
                .unwrap()
                .trim_end_matches(" is");
            assert!(
                prompt.contains(&format!(" The pass key for {word} is{ans}.")),
                "{prompt}"
            );
            assert_eq!(prompt.matches(" The pass key for ").count(), 4 + 1);

            // Assoc recall: the queried key's value is the answer.
            let s = generator(Task::AssocRecall { n_pairs: 8 })
                .sample(len, &mut rng)
                .unwrap();
            assert_eq!(s.tokens.len(), len);
            let prompt = tok.decode(s.prompt());
            let ans = tok.decode(s.answer_tokens());
            let key = prompt.rsplit(' ').next().unwrap();
            assert!(key.ends_with(':') && key.len() == 5, "{key}");
            assert!(prompt.starts_with(' '));
            assert_eq!(
                prompt.matches(&format!(" {key}{ans}.")).count(),
                1,
                "{prompt}"
            );

            // Copy: the answer repeats the leading string.
            let s = generator(Task::Copy { span: 16 })
                .sample(len, &mut rng)
                .unwrap();
            assert_eq!(s.tokens.len(), len);
            let ans = tok.decode(s.answer_tokens());
            assert_eq!(ans.len(), 17);
            assert!(tok.decode(s.prompt()).starts_with(&ans));
            assert!(tok.decode(s.prompt()).ends_with(COPY_PROMPT));

            let s = generator(Task::Filler).sample(len, &mut rng).unwrap();
            assert_eq!((s.tokens.len(), s.answers), (len, vec![]));
        }
    }

    #[test]
    fn check_fits_reports_too_short_samples() {
        generator(passkey(1, 99_999)).check_fits(257).unwrap();
        assert!(generator(passkey(1, 99_999)).check_fits(200).is_err());
        // Three questions without the instruction: key sentence 59 + 3 × (38 + 6) = 191 bytes.
        let drill = Task::Passkey {
            min_key: 10_000,
            max_key: 99_999,
            questions: 3,
            instruction: false,
        };
        generator(drill).check_fits(191).unwrap();
        assert!(generator(drill).check_fits(190).is_err());
        generator(Task::AssocRecall { n_pairs: 16 })
            .check_fits(257)
            .unwrap();
        assert!(generator(Task::AssocRecall { n_pairs: 64 })
            .check_fits(257)
            .is_err());
        generator(Task::MultiKey { n_keys: 4 })
            .check_fits(500)
            .unwrap();
        assert!(generator(Task::MultiKey { n_keys: 4 })
            .check_fits(257)
            .is_err());
        // " " + 32 letters, " Copy:", " " + 32 letters.
        generator(Task::Copy { span: 32 }).check_fits(72).unwrap();
        assert!(generator(Task::Copy { span: 32 }).check_fits(71).is_err());
        generator(Task::Filler).check_fits(1).unwrap();
    }
}
