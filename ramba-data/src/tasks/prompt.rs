//! The prompts the synthetic tasks and the evaluator share: the passkey instruction, filler,
//! key sentence and question, exact-length haystacks with needles, and answer scoring.
//!
//! Prompts are assembled from separately tokenized pieces (instruction, filler sentences,
//! needle, question, answer). Every piece starts with a space (except the instruction),
//! so with word-boundary pre-tokenizers (GPT-2/Llama BPE) piecewise tokenization equals
//! tokenizing the joined text, and lengths can be hit exactly at token level.

use std::collections::HashSet;

use anyhow::{bail, ensure, Result};
use rand::Rng;

use super::haystack::{haystack_words, HaystackText};
use crate::tokenizer::Tokenizer;

/// Passkey task description (Landmark Attention, Mohtashami & Jaggi 2023).
pub const INSTRUCTION: &str = "There is an important info hidden inside a lot of irrelevant text. \
Find it and memorize them. I will quiz you about the important information there.";

/// One repetition of the passkey filler; the haystack is this repeated.
pub const FILLER: &str =
    "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again.";

/// Question closing a passkey prompt; the answer is [`answer_text`].
pub const QUESTION: &str = " What is the pass key? The pass key is";

/// Smallest default pass key (five digits, as in the paper's setup).
pub const DEFAULT_MIN_KEY: u64 = 10_000;
/// Largest default pass key.
pub const DEFAULT_MAX_KEY: u64 = 99_999;

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

/// Haystack sentences as token ids, for building exact-length haystacks: the passkey
/// filler, or the sentences of a [`HaystackText`](super::HaystackText) loaded from files.
#[derive(Debug, Clone)]
pub(crate) struct Filler {
    sentences: Vec<Vec<u32>>,
    /// The haystack's words (see [`HaystackText::contains_word`](super::HaystackText::contains_word)),
    /// so generators can draw
    /// needles that never occur in it.
    words: HashSet<String>,
}

impl Filler {
    /// The passkey filler ([`FILLER`]).
    pub(crate) fn new(tok: &dyn Tokenizer) -> Result<Self> {
        Self::from_sentences(tok, &filler_sentences(), "the passkey filler")
    }

    /// `sentences` (each with its leading space) tokenized; `what` names the haystack in
    /// errors.
    pub(crate) fn from_sentences(
        tok: &dyn Tokenizer,
        sentences: &[String],
        what: &str,
    ) -> Result<Self> {
        let tokens: Vec<Vec<u32>> = sentences.iter().map(|s| tok.encode(s)).collect();
        // An empty sentence would make `take` loop forever.
        ensure!(
            !tokens.is_empty() && tokens.iter().all(|s| !s.is_empty()),
            "tokenizer {} encodes a sentence of {what} to no tokens",
            tok.name()
        );
        let mut words = HashSet::new();
        for s in sentences {
            words.extend(haystack_words(s));
        }
        Ok(Self {
            sentences: tokens,
            words,
        })
    }

    /// Number of sentences (a `first` argument is taken modulo this).
    pub(crate) fn n_sentences(&self) -> usize {
        self.sentences.len()
    }

    /// Whether `word` occurs in the haystack as a word (case-insensitive; see
    /// [`haystack_words`]). Generators redraw needle values and keys that do.
    pub(crate) fn contains_word(&self, word: &str) -> bool {
        self.words.contains(&word.to_lowercase())
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

    /// `head ++ haystack-with-needles ++ tail` of exactly `total - answer_len` tokens, the
    /// haystack read from sentence `first` on (cyclically, cut at token level at its end).
    /// Needles go to the sentence boundary nearest `depth × haystack length`. Returns the
    /// prompt and each needle's start index (in input order), or `None` when the fixed
    /// pieces alone exceed the budget.
    pub(crate) fn with_needles(
        &self,
        total: usize,
        head: &[u32],
        needles: &[Needle],
        tail: &[u32],
        answer_len: usize,
        first: usize,
    ) -> Option<(Vec<u32>, Vec<usize>)> {
        let fixed = head.len()
            + needles.iter().map(|n| n.tokens.len()).sum::<usize>()
            + tail.len()
            + answer_len;
        let budget = total.checked_sub(fixed)?;
        let (fill, bounds) = self.take(budget, first);
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
    pub(crate) instruction: Vec<u32>,
    pub(crate) question: Vec<u32>,
    pub(crate) filler: Filler,
}

/// A piece inserted into the filler at a relative depth.
pub(crate) struct Needle {
    /// Where, as a fraction of the filler: 0 = its start, 1 = its end.
    pub(crate) depth: f64,
    /// The piece itself.
    pub(crate) tokens: Vec<u32>,
}

impl PromptParts {
    pub(crate) fn new(tok: &dyn Tokenizer) -> Result<Self> {
        Ok(Self {
            instruction: tok.encode(INSTRUCTION),
            question: tok.encode(QUESTION),
            filler: Filler::new(tok)?,
        })
    }

    /// `head ++ filler-with-needles ++ tail` of exactly `total - answer_len` tokens; see
    /// [`Filler::with_needles`].
    pub(crate) fn haystack(
        &self,
        total: usize,
        head: &[u32],
        needles: &[Needle],
        tail: &[u32],
        answer_len: usize,
    ) -> Option<(Vec<u32>, Vec<usize>)> {
        self.filler
            .with_needles(total, head, needles, tail, answer_len, 0)
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

pub(crate) fn check_depth(depth: f64) -> Result<()> {
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

/// Most key draws [`PasskeyPrompter::prompt`] makes before giving up on a haystack that
/// holds nearly every key (no real text does: it would need most five-digit numbers).
const MAX_KEY_DRAWS: usize = 1000;

/// Passkey prompts in the [`FILLER`] or in a file haystack, with the haystack tokenized
/// once. Keys are drawn so that they never occur in the haystack as a number of their own,
/// so the first integer after the question can only come from the key sentence.
#[derive(Debug, Clone)]
pub struct PasskeyPrompter {
    parts: PromptParts,
    label: String,
}

impl PasskeyPrompter {
    /// Prompts in the passkey filler (`None`) or in `haystack`'s sentences.
    pub fn new(tok: &dyn Tokenizer, haystack: Option<&HaystackText>) -> Result<Self> {
        let mut parts = PromptParts::new(tok)?;
        let label = match haystack {
            None => "the passkey filler".to_string(),
            Some(h) => {
                parts.filler = h.filler(tok)?;
                format!("haystack {}", h.label())
            }
        };
        Ok(Self { parts, label })
    }

    /// A prompt of exactly `total` tokens (prompt + answer) with the key sentence at
    /// `depth` (see [`passkey_prompt`]); the key is drawn from `rng` in
    /// [`DEFAULT_MIN_KEY`]`..=`[`DEFAULT_MAX_KEY`], again while the haystack contains it.
    pub fn prompt<R: Rng + ?Sized>(
        &self,
        tok: &dyn Tokenizer,
        total: usize,
        depth: f64,
        rng: &mut R,
    ) -> Result<PasskeyPrompt> {
        for _ in 0..MAX_KEY_DRAWS {
            let key = rng.random_range(DEFAULT_MIN_KEY..=DEFAULT_MAX_KEY);
            if !self.parts.filler.contains_word(&key.to_string()) {
                return self.parts.passkey(tok, total, depth, key);
            }
        }
        bail!(
            "{} contains every one of {MAX_KEY_DRAWS} pass keys drawn; a needle would not be \
             unique in it",
            self.label
        )
    }
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

    /// In a file haystack the prompt is the haystack's text with the key sentence, of exact
    /// length, and a key the haystack holds is drawn again; the filler prompter builds the
    /// same prompts as [`passkey_prompt`].
    #[test]
    fn passkey_prompter_avoids_the_haystacks_numbers() {
        let tok = ByteTokenizer;
        let rng = ChaCha8Rng::seed_from_u64(3);
        let first = rng.clone().random_range(DEFAULT_MIN_KEY..=DEFAULT_MAX_KEY);
        let text = format!("In {first} the river rose. Nobody came back that year.");
        let hay = HaystackText::from_text(&text, "river.txt").unwrap();
        let p = PasskeyPrompter::new(&tok, Some(&hay)).unwrap();
        let got = p.prompt(&tok, 600, 0.5, &mut rng.clone()).unwrap();
        assert_eq!(got.total_len(), 600);
        let key: u64 = got.answer_text.trim().parse().unwrap();
        assert_ne!(key, first, "a key the haystack holds is redrawn");
        let prompt = tok.decode(&got.prompt);
        assert!(prompt.contains(&key_sentence(key)), "{prompt}");
        assert!(prompt.contains(" Nobody came back that year."), "{prompt}");
        assert!(!prompt.contains(" The grass is green."), "{prompt}");

        let filler = PasskeyPrompter::new(&tok, None).unwrap();
        let got = filler.prompt(&tok, 600, 0.25, &mut rng.clone()).unwrap();
        assert_eq!(got, passkey_prompt(&tok, 600, 0.25, first).unwrap());

        // Every key in the haystack: no unique needle can be drawn.
        let all: String = (DEFAULT_MIN_KEY..=DEFAULT_MAX_KEY)
            .map(|k| format!("{k} "))
            .collect();
        let full = HaystackText::from_text(&all, "numbers.txt").unwrap();
        let e = PasskeyPrompter::new(&tok, Some(&full))
            .unwrap()
            .prompt(&tok, 600, 0.5, &mut rng.clone())
            .unwrap_err();
        assert!(format!("{e:#}").contains("haystack numbers.txt"), "{e:#}");
    }
}
