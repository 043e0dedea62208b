//! Synthetic long-context tasks (passkey retrieval and friends), shared by the training
//! pipeline and the evaluator so both build prompts the exact same way.
//!
//! [`Task`] is the one definition of the tasks: each variant holds its task's settings (a type
//! of its own module, with the TOML fields, their defaults and limits), and the module's
//! [`SyntheticTask`] impl gives the task's `kind` name, its validation and its generator. The
//! `[data]` config parses and validates sources through [`Task`], the data sources build a
//! [`TaskGenerator`] from it, and the tests run every entry of [`Task::all`] through all of
//! that. Adding a task is a module here, a variant, and its line in [`Task::spec`] and
//! [`Task::all`], plus `Task::eval_spec` when it builds evaluation prompts and
//! [`Task::haystack_mut`] when it reads a haystack file.
//!
//! The RULER families (Hsieh et al. 2024) are `niah`, `niah_multi_key`, `niah_multi_value`,
//! `niah_multi_query`, `variable_tracking`, `common_words` and `frequent_words`: each trains
//! on the same prompt it evaluates on ([`TaskGenerator::eval_prompt`] at a given needle
//! depth, a random depth for training), and answers are item lists scored by exact match of
//! the whole list ([`TaskPrompt::score`]). Needle haystacks are the filler or text files
//! ([`HaystackText`]), and no key or value ever occurs in the haystack.

mod assoc_recall;
mod common_words;
mod copy;
mod filler;
mod frequent_words;
mod haystack;
mod multi_key;
mod needles;
mod niah;
mod niah_multi_key;
mod niah_multi_query;
mod niah_multi_value;
mod passkey;
mod prompt;
mod task_prompt;
mod variable_tracking;
mod word_lists;
mod words;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, ensure, Context, Result};
use rand::{Rng, RngCore};
use serde::{Deserialize, Serialize};

use crate::tokenizer::Tokenizer;
pub use assoc_recall::{AssocRecallTask, MAX_ASSOC_PAIRS};
pub use common_words::{CommonWordsTask, MAX_COMMON, MAX_COMMON_FREQ};
pub use copy::{CopyTask, COPY_PROMPT};
pub use filler::FillerTask;
pub use frequent_words::{FrequentWordsTask, MAX_TOP, MAX_VOCABULARY};
pub use haystack::{HaystackText, MAX_SENTENCE_WORDS};
pub use multi_key::{MultiKeyTask, MULTI_KEY_WORDS};
pub use needles::MAX_NIAH_NEEDLES;
pub use niah::NiahTask;
pub use niah_multi_key::NiahMultiKeyTask;
pub use niah_multi_query::NiahMultiQueryTask;
pub use niah_multi_value::NiahMultiValueTask;
pub use passkey::{PasskeyTask, MAX_QUESTIONS};
pub use prompt::{
    answer_text, filler_sentences, haystack_alphabet, key_sentence, needle_prompt, passkey_prompt,
    score_answer, PasskeyPrompt, PasskeyPrompter, DEFAULT_MAX_KEY, DEFAULT_MIN_KEY, FILLER,
    INSTRUCTION, QUESTION,
};
pub(crate) use prompt::{Filler, Needle, PromptParts};
use task_prompt::EvalTask;
pub use task_prompt::{answer_items, item_recall, score_items, TaskPrompt};
pub use variable_tracking::{VariableTrackingTask, MAX_CHAINS, MAX_HOPS};
pub use words::{NeedleValue, KEY_ADJECTIVES, KEY_NOUNS, VALUE_WORDS};

/// A synthetic training task and its settings. Serialized as a `kind` tag (the variant in
/// snake case, which is [`Task::name`]) next to the settings' fields: a `[[data.sources]]`
/// entry without its `weight`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Task {
    /// The passkey filler sentences repeated (the haystack without a needle); no answer.
    Filler(FillerTask),
    /// Passkey retrieval samples (Landmark Attention's format) at a random depth.
    Passkey(PasskeyTask),
    /// Several named pass keys in the filler; the question asks for one of them.
    MultiKey(MultiKeyTask),
    /// `key: value` pairs, filler, then one key whose value must be recalled.
    AssocRecall(AssocRecallTask),
    /// A random letter string, filler, then [`COPY_PROMPT`] and the string again.
    Copy(CopyTask),
    /// RULER: one needle (number, UUID or word) in the filler or a file haystack.
    Niah(NiahTask),
    /// RULER: several keys' needles, one asked for (the others distract).
    NiahMultiKey(NiahMultiKeyTask),
    /// RULER: one key with several values, all to be answered.
    NiahMultiValue(NiahMultiValueTask),
    /// RULER: several keys' needles, all asked for in one question.
    NiahMultiQuery(NiahMultiQueryTask),
    /// RULER: chains of variable assignments; name every variable holding a value.
    VariableTracking(VariableTrackingTask),
    /// RULER: the most common words of a long numbered list.
    CommonWords(CommonWordsTask),
    /// RULER: the most frequent words of a Zipf-distributed coded text.
    FrequentWords(FrequentWordsTask),
}

impl Task {
    /// The task's own definition, which every other method here goes through.
    pub(crate) fn spec(&self) -> &dyn SyntheticTask {
        match self {
            Task::Filler(t) => t,
            Task::Passkey(t) => t,
            Task::MultiKey(t) => t,
            Task::AssocRecall(t) => t,
            Task::Copy(t) => t,
            Task::Niah(t) => t,
            Task::NiahMultiKey(t) => t,
            Task::NiahMultiValue(t) => t,
            Task::NiahMultiQuery(t) => t,
            Task::VariableTracking(t) => t,
            Task::CommonWords(t) => t,
            Task::FrequentWords(t) => t,
        }
    }

    /// The task's evaluation-prompt builder, for the tasks that have one (the RULER tasks;
    /// passkey has [`passkey_prompt`]).
    pub(crate) fn eval_spec(&self) -> Option<&dyn EvalTask> {
        match self {
            Task::Filler(_)
            | Task::Passkey(_)
            | Task::MultiKey(_)
            | Task::AssocRecall(_)
            | Task::Copy(_) => None,
            Task::Niah(t) => Some(t),
            Task::NiahMultiKey(t) => Some(t),
            Task::NiahMultiValue(t) => Some(t),
            Task::NiahMultiQuery(t) => Some(t),
            Task::VariableTracking(t) => Some(t),
            Task::CommonWords(t) => Some(t),
            Task::FrequentWords(t) => Some(t),
        }
    }

    /// Every task, with default settings.
    pub fn all() -> [Task; 12] {
        [
            Task::Filler(FillerTask::default()),
            Task::Passkey(PasskeyTask::default()),
            Task::MultiKey(MultiKeyTask::default()),
            Task::AssocRecall(AssocRecallTask::default()),
            Task::Copy(CopyTask::default()),
            Task::Niah(NiahTask::default()),
            Task::NiahMultiKey(NiahMultiKeyTask::default()),
            Task::NiahMultiValue(NiahMultiValueTask::default()),
            Task::NiahMultiQuery(NiahMultiQueryTask::default()),
            Task::VariableTracking(VariableTrackingTask::default()),
            Task::CommonWords(CommonWordsTask::default()),
            Task::FrequentWords(FrequentWordsTask::default()),
        ]
    }

    /// The task's haystack path, for tasks that read one, mutable (to make it absolute).
    pub fn haystack_mut(&mut self) -> Option<&mut PathBuf> {
        self.haystack_slot().and_then(Option::as_mut)
    }

    /// Makes `path` the haystack of a task that reads one (replacing the filler or another
    /// file); returns false, changing nothing, for tasks without a haystack.
    pub fn set_haystack(&mut self, path: PathBuf) -> bool {
        match self.haystack_slot() {
            Some(slot) => {
                *slot = Some(path);
                true
            }
            None => false,
        }
    }

    /// The `haystack` setting of the tasks that have one.
    fn haystack_slot(&mut self) -> Option<&mut Option<PathBuf>> {
        match self {
            Task::Niah(t) => Some(&mut t.haystack),
            Task::NiahMultiKey(t) => Some(&mut t.haystack),
            Task::NiahMultiValue(t) => Some(&mut t.haystack),
            Task::NiahMultiQuery(t) => Some(&mut t.haystack),
            Task::VariableTracking(t) => Some(&mut t.haystack),
            Task::Filler(_)
            | Task::Passkey(_)
            | Task::MultiKey(_)
            | Task::AssocRecall(_)
            | Task::Copy(_)
            | Task::CommonWords(_)
            | Task::FrequentWords(_) => None,
        }
    }

    /// Whether [`TaskGenerator::eval_prompt`] builds evaluation prompts of this task (the
    /// RULER tasks).
    pub fn has_eval_prompt(&self) -> bool {
        self.eval_spec().is_some()
    }

    /// The `kind` of the task in TOML (`"passkey"`, `"multi_key"`, …).
    pub fn name(&self) -> &'static str {
        self.spec().name()
    }

    /// Checks the settings serde cannot (ranges); errors name the field as `{key}.field`,
    /// with `key` the config path of the source (e.g. `data.sources[2]`).
    pub fn validate(&self, key: &str) -> Result<()> {
        self.spec().validate(key)
    }
}

/// What each task defines; [`Task`] dispatches to it.
pub(crate) trait SyntheticTask {
    /// The `kind` in TOML: the snake-case name of the task's [`Task`] variant.
    fn name(&self) -> &'static str;

    /// Checks the settings; errors name the field as `{key}.field`.
    fn validate(&self, key: &str) -> Result<()>;

    /// The file or folder of the task's haystack text, for tasks that read one (relative to
    /// the config file); `None` means the passkey filler.
    fn haystack_path(&self) -> Option<&Path> {
        None
    }

    /// Errors when samples of `len` tokens cannot be built (fixed pieces too long). Checks
    /// the longest variants (largest keys, longest words), so with the byte tokenizer a pass
    /// here means every sample fits.
    fn check_fits(&self, ctx: &TaskContext, len: usize) -> Result<()>;

    /// A fresh sample of exactly `len` tokens drawn with `rng`.
    fn sample(&self, ctx: &TaskContext, len: usize, rng: &mut dyn RngCore) -> Result<Sample>;
}

/// `{key}.haystack` must not be an empty path (absent means the filler).
pub(crate) fn validate_haystack(haystack: &Option<PathBuf>, key: &str) -> Result<()> {
    if haystack.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
        bail!("{key}.haystack must not be empty (leave it out for the passkey filler)");
    }
    Ok(())
}

/// What the generators share: the tokenizer, the constant prompt pieces tokenized once, and
/// the task's haystack when it reads one from files.
#[derive(Clone)]
pub(crate) struct TaskContext {
    pub(crate) tok: Arc<dyn Tokenizer>,
    pub(crate) parts: PromptParts,
    /// The tokenized file haystack (shared: it may be large), if the task has one.
    pub(crate) haystack: Option<Arc<Filler>>,
}

impl TaskContext {
    /// The haystack needles go into: the task's file haystack, else the passkey filler.
    pub(crate) fn hay(&self) -> &Filler {
        self.haystack.as_deref().unwrap_or(&self.parts.filler)
    }

    /// `head ++ filler ++ tail ++ answer`, filler sized to make exactly `len` tokens; `what`
    /// names the task in the error when the fixed pieces alone are longer.
    pub(crate) fn padded(
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
        Ok(Sample::with_answer(prompt, answer))
    }
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
    /// `prompt` followed by its one `answer`.
    pub(crate) fn with_answer(mut prompt: Vec<u32>, answer: &[u32]) -> Self {
        let start = prompt.len();
        prompt.extend_from_slice(answer);
        Self {
            answers: vec![(start, prompt.len())],
            tokens: prompt,
        }
    }

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
    ctx: TaskContext,
}

impl std::fmt::Debug for TaskGenerator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskGenerator")
            .field("task", &self.task)
            .field("tokenizer", &self.ctx.tok.name())
            .finish()
    }
}

impl TaskGenerator {
    /// Validates the settings (the same check the config runs, with the task's name as the
    /// key) and tokenizes the task's constant pieces once. A relative haystack path is
    /// taken relative to the working directory; see [`TaskGenerator::new_in`].
    pub fn new(tok: Arc<dyn Tokenizer>, task: Task) -> Result<Self> {
        Self::new_in(tok, task, Path::new(""))
    }

    /// [`TaskGenerator::new`] with a relative haystack path resolved against `base_dir`
    /// (the config file's folder). The haystack is read and tokenized here, once; errors
    /// name the file.
    pub fn new_in(tok: Arc<dyn Tokenizer>, task: Task, base_dir: &Path) -> Result<Self> {
        task.validate(task.name())?;
        let parts = PromptParts::new(tok.as_ref())?;
        let haystack = match task.spec().haystack_path() {
            None => None,
            Some(p) => {
                let text = HaystackText::load(&base_dir.join(p))
                    .with_context(|| format!("{}.haystack", task.name()))?;
                Some(Arc::new(text.filler(tok.as_ref())?))
            }
        };
        Ok(Self {
            task,
            ctx: TaskContext {
                tok,
                parts,
                haystack,
            },
        })
    }

    /// The task generated.
    pub fn task(&self) -> &Task {
        &self.task
    }

    /// Errors when samples of `len` tokens cannot be built (fixed pieces too long).
    /// Checks the longest variants (largest keys, longest words), so with the byte
    /// tokenizer a pass here means every sample fits.
    pub fn check_fits(&self, len: usize) -> Result<()> {
        self.task.spec().check_fits(&self.ctx, len)
    }

    /// A fresh sample of exactly `len` tokens drawn with `rng`.
    pub fn sample<R: Rng + ?Sized>(&self, len: usize, mut rng: &mut R) -> Result<Sample> {
        // `&mut R` is a sized `RngCore`, so it passes as `dyn RngCore` even when `R` is not;
        // the draws are the same as from `rng` itself.
        let sample = self.task.spec().sample(&self.ctx, len, &mut rng)?;
        // Guards the invariant the pipeline relies on (row = exactly seq_len + 1).
        ensure!(
            sample.tokens.len() == len,
            "{:?} sample has {} tokens, expected {len}",
            self.task,
            sample.tokens.len()
        );
        Ok(sample)
    }

    /// An evaluation prompt of exactly `len` tokens (prompt + answer) with the first asked
    /// needle at `depth` in `[0, 1]` (ignored by the word-frequency tasks, which have no
    /// needle), drawn with `rng`; score the model's continuation with
    /// [`TaskPrompt::score`]. Errors for tasks without one (see [`Task::has_eval_prompt`])
    /// and when `len` cannot hold the task's fixed pieces. With a subword tokenizer an
    /// unlucky draw can also fail the exact-length check (an answer whose items merge into
    /// a different token count once ordered); drawing again with the same `rng` moves on.
    pub fn eval_prompt<R: Rng + ?Sized>(
        &self,
        len: usize,
        depth: f64,
        mut rng: &mut R,
    ) -> Result<TaskPrompt> {
        let Some(spec) = self.task.eval_spec() else {
            bail!(
                "task {} has no evaluation prompt (passkey prompts come from passkey_prompt)",
                self.task.name()
            );
        };
        let p = spec.prompt(&self.ctx, len, depth, &mut rng)?;
        ensure!(
            p.total_len() == len,
            "{} prompt has {} tokens, expected {len}",
            self.task.name(),
            p.total_len()
        );
        Ok(p)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::tokenizer::ByteTokenizer;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    /// A generator of `task` with the byte tokenizer.
    pub(crate) fn generator(task: Task) -> TaskGenerator {
        TaskGenerator::new(Arc::new(ByteTokenizer), task).unwrap()
    }

    /// The registry is the single definition: each task's name is the serde tag, parses back
    /// to the same task, validates with its defaults, and generates exact-length samples.
    #[test]
    fn every_task_round_trips_through_its_single_definition() {
        let mut names: Vec<&str> = Task::all().iter().map(Task::name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Task::all().len(), "names are distinct");
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        for task in Task::all() {
            let name = task.name();
            // Serde's tag is the name, and `kind` alone gives the defaults.
            let table = toml::Table::try_from(&task).unwrap();
            assert_eq!(table["kind"].as_str(), Some(name));
            let parsed: Task = toml::from_str(&format!("kind = \"{name}\"")).unwrap();
            assert_eq!(parsed, task);
            assert_eq!(toml::Value::Table(table).try_into::<Task>().unwrap(), task);
            task.validate("k")
                .unwrap_or_else(|e| panic!("{name}: {e:#}"));
            let g = generator(task.clone());
            // 4096: the RULER tasks' defaults are RULER's, which need about 4k byte tokens
            // (common_words: 300 list items).
            g.check_fits(4096)
                .unwrap_or_else(|e| panic!("{name}: {e:#}"));
            let s = g.sample(4096, &mut rng).unwrap();
            assert_eq!(s.tokens.len(), 4096, "{name}");
            // The RULER tasks also build evaluation prompts whose own answer scores right;
            // the others say they have none.
            match g.eval_prompt(4096, 0.5, &mut rng) {
                Ok(p) => {
                    assert!(task.has_eval_prompt(), "{name}");
                    assert_eq!(p.total_len(), 4096, "{name}");
                    assert!(p.score(&p.answer_text), "{name}");
                    assert!(!p.score(""), "{name}");
                    assert_eq!(s.answers.len(), 1, "{name}: one answer, ending the row");
                    assert_eq!(s.answers[0].1, 4096, "{name}");
                }
                Err(e) => {
                    assert!(!task.has_eval_prompt(), "{name}: {e:#}");
                    assert!(format!("{e:#}").contains("no evaluation prompt"), "{name}");
                }
            }
        }
    }

    /// With a subword tokenizer (merges make piece lengths differ from byte counts) the
    /// RULER prompts still have exact lengths, and their answers decode to the answer text.
    #[test]
    fn ruler_prompts_are_exact_with_a_bpe_tokenizer() {
        use crate::test_util::{byte_level_bpe_json, TempDir};
        use crate::tokenizer::HfTokenizer;
        let dir = TempDir::new("ruler-bpe");
        let path = dir.write("tokenizer.json", byte_level_bpe_json().as_bytes());
        let tok: Arc<dyn Tokenizer> = Arc::new(HfTokenizer::from_file(&path).unwrap());
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        for task in Task::all().into_iter().filter(Task::has_eval_prompt) {
            let name = task.name();
            let g = TaskGenerator::new(tok.clone(), task).unwrap();
            for len in [4096usize, 5000] {
                let p = g
                    .eval_prompt(len, 0.5, &mut rng)
                    .unwrap_or_else(|e| panic!("{name}: {e:#}"));
                assert_eq!(p.total_len(), len, "{name}");
                assert_eq!(tok.decode(&p.answer), p.answer_text, "{name}");
                assert!(p.score(&tok.decode(&p.answer)), "{name}");
                assert!(tok.decode(&p.prompt).ends_with("? Answer:"), "{name}");
            }
        }
    }

    /// Every setting of the RULER tasks survives TOML both ways, file haystack included.
    #[test]
    fn ruler_settings_round_trip_through_toml() {
        let docs = [
            "kind = \"niah\"\nvalue = \"uuid\"\nhaystack = \"essays\"",
            "kind = \"niah_multi_key\"\nn_keys = 6\nvalue = \"word\"",
            "kind = \"niah_multi_value\"\nn_values = 3\nvalue = \"number\"\nhaystack = \"a.txt\"",
            "kind = \"niah_multi_query\"\nn_queries = 2\nvalue = \"uuid\"",
            "kind = \"variable_tracking\"\nchains = 2\nhops = 7\nhaystack = \"pg\"",
            "kind = \"common_words\"\ncommon = 4\ncommon_freq = 9\nrare_freq = 2",
            "kind = \"frequent_words\"\ntop = 5\nvocabulary = 50\nalpha = 1.5",
        ];
        for doc in docs {
            let task: Task = toml::from_str(doc).unwrap_or_else(|e| panic!("{doc}: {e}"));
            assert_ne!(
                Task::all().iter().find(|t| t.name() == task.name()),
                Some(&task),
                "{doc}: not the defaults"
            );
            let text = toml::to_string(&task).unwrap();
            let mut want: Vec<&str> = doc.lines().collect();
            let mut got: Vec<&str> = text.lines().collect();
            want.sort_unstable();
            got.sort_unstable();
            assert_eq!(got, want, "{doc}");
            assert_eq!(toml::from_str::<Task>(&text).unwrap(), task);
        }
        let e = toml::from_str::<Task>("kind = \"niah\"\nvalue = \"emoji\"").unwrap_err();
        assert!(
            e.message().contains("emoji") && e.message().contains("uuid"),
            "{e}"
        );
    }

    #[test]
    fn set_haystack_reaches_the_needle_tasks_only() {
        for mut task in Task::all() {
            let reads = task.has_eval_prompt()
                && !matches!(task, Task::CommonWords(_) | Task::FrequentWords(_));
            assert_eq!(
                task.set_haystack(PathBuf::from("h.txt")),
                reads,
                "{}",
                task.name()
            );
            assert_eq!(
                task.haystack_mut().map(|p| p.clone()),
                reads.then(|| PathBuf::from("h.txt")),
                "{}",
                task.name()
            );
        }
    }

    #[test]
    fn generator_validates_like_the_config() {
        let bad = Task::MultiKey(MultiKeyTask { n_keys: 0 });
        let from_config = format!("{:#}", bad.validate("data.sources[0]").unwrap_err());
        assert_eq!(
            from_config,
            "data.sources[0].n_keys must be in 1..=32 (got 0)"
        );
        let msg = format!(
            "{:#}",
            TaskGenerator::new(Arc::new(ByteTokenizer), bad).unwrap_err()
        );
        assert_eq!(msg, "multi_key.n_keys must be in 1..=32 (got 0)");
    }

    #[test]
    fn task_samples_have_exact_length_and_correct_answers() {
        let tok = ByteTokenizer;
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let len = 513;
        for _ in 0..10 {
            // Passkey: the answer span holds the key that appears in the key sentence.
            let s = generator(passkey::tests::passkey(10, 99))
                .sample(len, &mut rng)
                .unwrap();
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
            let s = generator(Task::MultiKey(MultiKeyTask { n_keys: 4 }))
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
            let s = generator(Task::AssocRecall(AssocRecallTask { n_pairs: 8 }))
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
            let s = generator(Task::Copy(CopyTask { span: 16 }))
                .sample(len, &mut rng)
                .unwrap();
            assert_eq!(s.tokens.len(), len);
            let ans = tok.decode(s.answer_tokens());
            assert_eq!(ans.len(), 17);
            assert!(tok.decode(s.prompt()).starts_with(&ans));
            assert!(tok.decode(s.prompt()).ends_with(COPY_PROMPT));

            let s = generator(Task::Filler(FillerTask {}))
                .sample(len, &mut rng)
                .unwrap();
            assert_eq!((s.tokens.len(), s.answers), (len, vec![]));
        }
    }

    #[test]
    fn check_fits_reports_too_short_samples() {
        let passkey = passkey::tests::passkey;
        generator(passkey(1, 99_999)).check_fits(257).unwrap();
        assert!(generator(passkey(1, 99_999)).check_fits(200).is_err());
        // Three questions without the instruction: key sentence 59 + 3 × (38 + 6) = 191 bytes.
        let drill = Task::Passkey(PasskeyTask {
            min_key: 10_000,
            max_key: 99_999,
            questions: 3,
            instruction: false,
        });
        generator(drill.clone()).check_fits(191).unwrap();
        assert!(generator(drill).check_fits(190).is_err());
        let assoc = |n_pairs| generator(Task::AssocRecall(AssocRecallTask { n_pairs }));
        assoc(16).check_fits(257).unwrap();
        assert!(assoc(64).check_fits(257).is_err());
        let multi = generator(Task::MultiKey(MultiKeyTask { n_keys: 4 }));
        multi.check_fits(500).unwrap();
        assert!(multi.check_fits(257).is_err());
        // " " + 32 letters, " Copy:", " " + 32 letters.
        let copy = generator(Task::Copy(CopyTask { span: 32 }));
        copy.check_fits(72).unwrap();
        assert!(copy.check_fits(71).is_err());
        generator(Task::Filler(FillerTask {}))
            .check_fits(1)
            .unwrap();
    }
}
