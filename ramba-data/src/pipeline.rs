//! Batches for training and validation: each row picks a source by weight and takes a
//! `seq_len + 1` window from it. A batch is a pure function of (seed, split, step).

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{bail, Result};
use rand::Rng;

use crate::config::DataConfig;
use crate::rng::row_rng;
use crate::source::Source;
use crate::split::Split;
use crate::tasks::{FillerTask, Task, TaskGenerator};
use crate::tokenizer::{load_tokenizer_in, Tokenizer};

/// A batch of `batch_size` rows of `seq_len` tokens (row-major `[B * L]` vectors).
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// Rows (B).
    pub batch_size: usize,
    /// Tokens per row (L).
    pub seq_len: usize,
    /// Input ids, `[B * L]`.
    pub inputs: Vec<u32>,
    /// Next-token targets, `[B * L]`: row `r` is its window shifted left by one.
    pub targets: Vec<u32>,
    /// Loss weight per target, `[B * L]`; 1.0 = counts, 0.0 = ignored. 1.0 everywhere
    /// except in rows of `jsonl` sources, where only the answer targets count (the prompt
    /// is given, and the EOS padding is not text).
    pub loss_mask: Vec<f32>,
    /// Per row, the target positions `[start, end)` holding a synthetic task's or downstream
    /// example's answers (for answer accuracy or extra weighting), in order; empty for
    /// text/shards/filler rows.
    pub answer_spans: Vec<Vec<(usize, usize)>>,
}

impl Batch {
    /// Inputs of row `r`.
    pub fn inputs_row(&self, r: usize) -> &[u32] {
        &self.inputs[r * self.seq_len..(r + 1) * self.seq_len]
    }

    /// Targets of row `r`.
    pub fn targets_row(&self, r: usize) -> &[u32] {
        &self.targets[r * self.seq_len..(r + 1) * self.seq_len]
    }

    /// Loss mask of row `r`.
    pub fn loss_mask_row(&self, r: usize) -> &[f32] {
        &self.loss_mask[r * self.seq_len..(r + 1) * self.seq_len]
    }

    /// The rows `rows` as a batch of their own (for splitting a batch between workers).
    pub fn rows(&self, rows: std::ops::Range<usize>) -> Batch {
        assert!(
            rows.end <= self.batch_size,
            "rows {rows:?} of {}",
            self.batch_size
        );
        let cut = |v: &[u32]| v[rows.start * self.seq_len..rows.end * self.seq_len].to_vec();
        Batch {
            batch_size: rows.len(),
            seq_len: self.seq_len,
            inputs: cut(&self.inputs),
            targets: cut(&self.targets),
            loss_mask: self.loss_mask[rows.start * self.seq_len..rows.end * self.seq_len].to_vec(),
            answer_spans: self.answer_spans[rows].to_vec(),
        }
    }

    /// The flat positions (`row · seq_len + i`) of every answer token: the only predictions
    /// [`score_answers`](Self::score_answers) reads.
    pub fn answer_positions(&self) -> Vec<usize> {
        self.answer_spans
            .iter()
            .enumerate()
            .flat_map(|(row, spans)| {
                spans
                    .iter()
                    .flat_map(move |&(lo, hi)| (lo..hi).map(move |i| row * self.seq_len + i))
            })
            .collect()
    }

    /// [`score_answers`](Self::score_answers) from the predictions at
    /// [`answer_positions`](Self::answer_positions) only, in that order.
    pub fn score_answers_at(&self, predicted: &[u32]) -> AnswerScore {
        let positions = self.answer_positions();
        assert_eq!(
            predicted.len(),
            positions.len(),
            "one prediction per answer position"
        );
        // Positions that are not answers are never read.
        let mut full = vec![u32::MAX; self.targets.len()];
        for (&p, &id) in positions.iter().zip(predicted) {
            full[p] = id;
        }
        self.score_answers(&full)
    }

    /// How many answers the teacher-forced predictions `predicted` (`[B * L]`, the argmax at
    /// each target position) get right. The synthetic tasks' loss hides their answers among
    /// hundreds of easy filler tokens; this is the number that shows whether retrieval is
    /// being learned.
    pub fn score_answers(&self, predicted: &[u32]) -> AnswerScore {
        assert_eq!(
            predicted.len(),
            self.targets.len(),
            "one prediction per target"
        );
        let mut score = AnswerScore::default();
        for (row, &(lo, hi)) in self
            .answer_spans
            .iter()
            .enumerate()
            .flat_map(|(row, spans)| spans.iter().map(move |s| (row, s)))
        {
            let at = row * self.seq_len;
            let right = (lo..hi)
                .filter(|&i| predicted[at + i] == self.targets[at + i])
                .count();
            score.answers += 1;
            score.exact += usize::from(right == hi - lo);
            score.tokens += hi - lo;
            score.right_tokens += right;
        }
        score
    }
}

/// Teacher-forced answer accuracy over some batches; see [`Batch::score_answers`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AnswerScore {
    /// Answers (a row may hold several).
    pub answers: usize,
    /// Answers whose every token was predicted.
    pub exact: usize,
    /// Answer tokens.
    pub tokens: usize,
    /// Answer tokens predicted.
    pub right_tokens: usize,
}

impl AnswerScore {
    /// Adds another batch's tally.
    pub fn add(&mut self, other: AnswerScore) {
        self.answers += other.answers;
        self.exact += other.exact;
        self.tokens += other.tokens;
        self.right_tokens += other.right_tokens;
    }

    /// Fraction of answers entirely right (`None` without answers).
    pub fn exact_rate(&self) -> Option<f64> {
        (self.answers > 0).then(|| self.exact as f64 / self.answers as f64)
    }

    /// Fraction of answer tokens right (`None` without answers).
    pub fn token_rate(&self) -> Option<f64> {
        (self.tokens > 0).then(|| self.right_tokens as f64 / self.tokens as f64)
    }
}

/// All sources of an experiment, ready to produce batches. `Send + Sync`, so batches can
/// be prepared on another thread.
pub struct DataPipeline {
    seq_len: usize,
    batch_size: usize,
    seed: u64,
    tokenizer: Arc<dyn Tokenizer>,
    sources: Vec<Source>,
    /// Running sums of the source weights, for weighted picking.
    cumulative: Vec<f64>,
    /// Used when a synthetic sample cannot be built.
    fallback: TaskGenerator,
    /// Whether a substitution warning was printed already (printed once, not per row).
    warned: AtomicBool,
}

impl std::fmt::Debug for DataPipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataPipeline")
            .field("seq_len", &self.seq_len)
            .field("batch_size", &self.batch_size)
            .field("seed", &self.seed)
            .field("tokenizer", &self.tokenizer.name())
            .field("sources", &self.describe())
            .finish()
    }
}

impl DataPipeline {
    /// Validates `cfg`, loads/maps every source (relative paths against `base_dir`, the
    /// config file's folder) and checks each can fill a `seq_len + 1` window in both
    /// splits. All data errors surface here, so `batch` itself cannot fail.
    pub fn new(cfg: &DataConfig, tokenizer: Arc<dyn Tokenizer>, base_dir: &Path) -> Result<Self> {
        cfg.validate()?;
        let mut sources = Vec::with_capacity(cfg.sources.len());
        for (i, s) in cfg.sources.iter().enumerate() {
            sources.push(Source::build(i, s, cfg, &tokenizer, base_dir)?);
        }
        let mut cumulative = Vec::with_capacity(sources.len());
        let mut sum = 0.0;
        for s in &sources {
            sum += s.weight;
            cumulative.push(sum);
        }
        let fallback = TaskGenerator::new(tokenizer.clone(), Task::Filler(FillerTask {}))?;
        Ok(Self {
            seq_len: cfg.seq_len,
            batch_size: cfg.batch_size,
            seed: cfg.seed,
            tokenizer,
            sources,
            cumulative,
            fallback,
            warned: AtomicBool::new(false),
        })
    }

    /// [`DataPipeline::new`] with the tokenizer named by `cfg.tokenizer` (relative paths
    /// against `base_dir`).
    pub fn from_config(cfg: &DataConfig, base_dir: &Path) -> Result<Self> {
        cfg.validate()?;
        let tok = load_tokenizer_in(&cfg.tokenizer, base_dir)?;
        Self::new(cfg, tok, base_dir)
    }

    /// The batch of `split` at `step`. Deterministic: row `r` uses an RNG seeded from
    /// (seed, split, step, r) only, so resuming at step N replays the same data.
    /// If a shard window holds an id outside the vocab (ids are only sampled at load),
    /// the id is replaced by EOS and a warning is printed once; use
    /// [`DataPipeline::try_batch`] to get an error instead.
    pub fn batch(&self, split: Split, step: u64) -> Batch {
        let (batch, problem) = self.build(split, step);
        if let Some(p) = problem {
            if !self.warned.swap(true, Ordering::Relaxed) {
                eprintln!("warning: {p} [further data warnings suppressed]");
            }
        }
        batch
    }

    /// Like [`DataPipeline::batch`], but any substitution (out-of-vocab shard id,
    /// synthetic sample that could not be built) is an error naming its source.
    pub fn try_batch(&self, split: Split, step: u64) -> Result<Batch> {
        match self.build(split, step) {
            (batch, None) => Ok(batch),
            (_, Some(p)) => bail!("{split} batch at step {step}: {p}"),
        }
    }

    fn build(&self, split: Split, step: u64) -> (Batch, Option<String>) {
        let (b, l) = (self.batch_size, self.seq_len);
        let mut inputs = Vec::with_capacity(b * l);
        let mut targets = Vec::with_capacity(b * l);
        let mut answer_spans = Vec::with_capacity(b);
        let mut loss_mask = Vec::with_capacity(b * l);
        let mut problem = None;
        for row in 0..b {
            let mut rng = row_rng(self.seed, split, step, row as u64);
            let source = &self.sources[self.pick(&mut rng)];
            let r = source.row(
                split,
                l + 1,
                &mut rng,
                self.tokenizer.as_ref(),
                &self.fallback,
            );
            inputs.extend_from_slice(&r.tokens[..l]);
            targets.extend_from_slice(&r.tokens[1..]);
            // Token i of the window is predicted at target position i - 1.
            let spans: Vec<(usize, usize)> = r
                .answers
                .iter()
                .map(|&(s, e)| (s.saturating_sub(1), e.saturating_sub(1)))
                .collect();
            let row_mask = loss_mask.len();
            if r.answers_only {
                loss_mask.resize(row_mask + l, 0.0);
                for &(s, e) in &spans {
                    loss_mask[row_mask + s..row_mask + e].fill(1.0);
                }
            } else {
                loss_mask.resize(row_mask + l, 1.0);
            }
            answer_spans.push(spans);
            if problem.is_none() {
                problem = r.problem;
            }
        }
        let batch = Batch {
            batch_size: b,
            seq_len: l,
            inputs,
            targets,
            loss_mask,
            answer_spans,
        };
        (batch, problem)
    }

    /// Index of a source drawn with probability ∝ weight.
    fn pick<R: Rng + ?Sized>(&self, rng: &mut R) -> usize {
        let total = self.cumulative.last().copied().unwrap_or(0.0);
        let u = rng.random::<f64>() * total;
        self.cumulative
            .partition_point(|&c| c <= u)
            .min(self.sources.len() - 1)
    }

    /// Model vocabulary size (the tokenizer's).
    pub fn vocab_size(&self) -> usize {
        self.tokenizer.vocab_size()
    }

    /// The tokenizer in use.
    pub fn tokenizer(&self) -> &Arc<dyn Tokenizer> {
        &self.tokenizer
    }

    /// Tokens per row.
    pub fn seq_len(&self) -> usize {
        self.seq_len
    }

    /// Rows per batch.
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// One line per source (kind, path, token counts, share of rows), for run logs.
    pub fn describe(&self) -> Vec<String> {
        let total = self.cumulative.last().copied().unwrap_or(1.0);
        self.sources.iter().map(|s| s.describe(total)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ShardDtype, SourceConfig};
    use crate::shards::tests::{llmc, raw_u16, raw_u32};
    use crate::shards::{LLMC_MAGIC_U16, LLMC_MAGIC_U32};
    use crate::tasks::{key_sentence, score_answer, CopyTask, PasskeyTask};
    use crate::test_util::{TempDir, WideTokenizer};
    use crate::tokenizer::ByteTokenizer;

    fn byte() -> Arc<dyn Tokenizer> {
        Arc::new(ByteTokenizer)
    }

    fn cfg(seq_len: usize, batch_size: usize, sources: Vec<SourceConfig>) -> DataConfig {
        DataConfig {
            seq_len,
            batch_size,
            sources,
            ..DataConfig::default()
        }
    }

    fn text(path: &str, weight: f64) -> SourceConfig {
        SourceConfig::Text {
            weight,
            path: path.into(),
        }
    }

    /// Some prose long enough for windows in both splits.
    fn corpus(dir: &TempDir) {
        let para = "It was the best of times, it was the worst of times. ";
        dir.write("corpus/a.txt", para.repeat(200).as_bytes());
        dir.write(
            "corpus/b.md",
            "# Notes\nLong contexts need long data. "
                .repeat(100)
                .as_bytes(),
        );
    }

    fn mixed(dir: &TempDir) -> DataPipeline {
        corpus(dir);
        let c = cfg(
            300,
            6,
            vec![
                text("corpus", 2.0),
                SourceConfig::task(Task::Passkey(PasskeyTask::default())),
                SourceConfig::task(Task::Filler(FillerTask {})),
                SourceConfig::task(Task::Copy(CopyTask { span: 20 })),
            ],
        );
        DataPipeline::new(&c, byte(), dir.path()).unwrap()
    }

    #[test]
    fn batches_are_a_pure_function_of_split_and_step() {
        let d = TempDir::new("det");
        let p = mixed(&d);
        let a = p.batch(Split::Train, 5);
        assert_eq!(a, p.batch(Split::Train, 5), "same step, same batch");
        // A fresh pipeline (a resumed run) reproduces it exactly.
        let p2 = mixed(&TempDir::new("det2"));
        assert_eq!(a, p2.batch(Split::Train, 5));
        // Out-of-order access changes nothing (no hidden state).
        let (b6, v0) = (p.batch(Split::Train, 6), p.batch(Split::Val, 0));
        assert_eq!(a, p.batch(Split::Train, 5));
        assert_eq!(b6, p.batch(Split::Train, 6));
        assert_eq!(v0, p.batch(Split::Val, 0));
        assert_ne!(a.inputs, p.batch(Split::Train, 6).inputs);
        assert_ne!(a.inputs, p.batch(Split::Val, 5).inputs);
        // A different seed gives different data.
        let mut c = cfg(300, 6, vec![text("corpus", 1.0)]);
        let s0 = DataPipeline::new(&c, byte(), d.path())
            .unwrap()
            .batch(Split::Train, 0);
        c.seed = 1;
        let s1 = DataPipeline::new(&c, byte(), d.path())
            .unwrap()
            .batch(Split::Train, 0);
        assert_ne!(s0.inputs, s1.inputs);
    }

    #[test]
    fn batch_shapes_and_shift() {
        let d = TempDir::new("shape");
        let p = mixed(&d);
        for step in 0..20 {
            let b = p.batch(Split::Train, step);
            assert_eq!((b.batch_size, b.seq_len), (6, 300));
            assert_eq!(b.inputs.len(), 6 * 300);
            assert_eq!(b.targets.len(), 6 * 300);
            assert_eq!(b.loss_mask, vec![1.0; 6 * 300]);
            assert_eq!(b.answer_spans.len(), 6);
            for r in 0..6 {
                assert_eq!(b.inputs_row(r)[1..], b.targets_row(r)[..299]);
                assert!(b
                    .inputs_row(r)
                    .iter()
                    .all(|&t| (t as usize) < p.vocab_size()));
            }
        }
    }

    #[test]
    fn targets_are_the_window_shifted_by_one() {
        // Shard tokens 0, 1, 2, … make the underlying window visible in the batch.
        let d = TempDir::new("shift");
        let toks: Vec<u32> = (0..5000).collect();
        d.write("seq.bin", &raw_u16(&toks));
        let c = cfg(
            64,
            8,
            vec![SourceConfig::Shards {
                weight: 1.0,
                path: "seq.bin".into(),
                dtype: ShardDtype::U16,
            }],
        );
        let p = DataPipeline::new(&c, Arc::new(WideTokenizer(10_000)), d.path()).unwrap();
        for split in [Split::Train, Split::Val] {
            let b = p.try_batch(split, 3).unwrap();
            for r in 0..8 {
                let start = b.inputs_row(r)[0];
                let window: Vec<u32> = (start..start + 65).collect();
                assert_eq!(b.inputs_row(r), &window[..64]);
                assert_eq!(b.targets_row(r), &window[1..]);
                // Held-out tail: train windows end before token 4750, val ones start at it.
                match split {
                    Split::Train => assert!(start + 65 <= 4750, "{start}"),
                    Split::Val => assert!(start >= 4750, "{start}"),
                }
            }
        }
    }

    #[test]
    fn source_weights_are_respected() {
        let d = TempDir::new("weights");
        let c = cfg(
            100,
            50,
            vec![
                SourceConfig::Task {
                    weight: 3.0,
                    task: Task::Filler(FillerTask {}),
                },
                SourceConfig::task(Task::Copy(CopyTask { span: 8 })),
            ],
        );
        let p = DataPipeline::new(&c, byte(), d.path()).unwrap();
        let (mut filler, mut copy) = (0, 0);
        for step in 0..80 {
            for spans in p.batch(Split::Train, step).answer_spans {
                match spans.len() {
                    1 => copy += 1,
                    _ => filler += 1,
                }
            }
        }
        // 4000 rows, expected 3000 : 1000; 5 sigma ≈ ±137.
        assert_eq!(filler + copy, 4000);
        assert!(
            (2850..=3150).contains(&filler),
            "filler {filler}, copy {copy}"
        );
    }

    #[test]
    fn val_split_reads_only_the_held_out_tail() {
        let d = TempDir::new("val");
        // 1900 'a' then 99 'b' + EOS = 2000 tokens; val_fraction 0.05 → train [0,1900).
        let mut body = "a".repeat(1900);
        body.push_str(&"b".repeat(99));
        d.write("ab.txt", body.as_bytes());
        let c = cfg(32, 16, vec![text("ab.txt", 1.0)]);
        let p = DataPipeline::new(&c, byte(), d.path()).unwrap();
        let (a, b, eos) = (u32::from(b'a'), u32::from(b'b'), ByteTokenizer::EOS);
        for step in 0..10 {
            let t = p.batch(Split::Train, step);
            assert!(t.inputs.iter().chain(&t.targets).all(|&x| x == a));
            let v = p.batch(Split::Val, step);
            assert!(v
                .inputs
                .iter()
                .chain(&v.targets)
                .all(|&x| x == b || x == eos));
        }
    }

    #[test]
    fn passkey_rows_expose_their_answer() {
        let d = TempDir::new("pk");
        let c = DataConfig::default(); // one passkey source, seq_len 256
        let p = DataPipeline::new(&c, byte(), d.path()).unwrap();
        let tok = ByteTokenizer;
        for step in 0..5 {
            let b = p.try_batch(Split::Val, step).unwrap();
            for r in 0..b.batch_size {
                let [(s, e)] = b.answer_spans[r][..] else {
                    panic!("one answer per row: {:?}", b.answer_spans[r]);
                };
                assert_eq!(e, b.seq_len, "the answer ends the row");
                let answer = tok.decode(&b.targets_row(r)[s..e]);
                let key: u64 = answer.trim().parse().unwrap();
                assert!((10_000..=99_999).contains(&key));
                assert!(tok.decode(b.inputs_row(r)).contains(&key_sentence(key)));
                assert!(score_answer(&answer, &format!(" {key}")));
            }
        }
    }

    #[test]
    fn shards_u16_u32_and_llmc_windows_read_back() {
        let d = TempDir::new("pshards");
        let seq16: Vec<u32> = (0..3000).map(|i| 40_000 + i).collect();
        d.write("s16/a.bin", &raw_u16(&seq16[..1000]));
        d.write("s16/b.bin", &llmc(LLMC_MAGIC_U16, &seq16[1000..]));
        let seq32: Vec<u32> = (0..3000).map(|i| 200_000 + i).collect();
        d.write("s32/a.bin", &raw_u32(&seq32[..1500]));
        d.write("s32/b.bin", &llmc(LLMC_MAGIC_U32, &seq32[1500..]));
        for (dir, dtype, base) in [
            ("s16", ShardDtype::U16, 40_000),
            ("s32", ShardDtype::U32, 200_000),
        ] {
            let c = cfg(
                100,
                16,
                vec![SourceConfig::Shards {
                    weight: 1.0,
                    path: dir.into(),
                    dtype,
                }],
            );
            let p = DataPipeline::new(&c, Arc::new(WideTokenizer(300_000)), d.path()).unwrap();
            let b = p.try_batch(Split::Train, 0).unwrap();
            for r in 0..16 {
                let first = b.inputs_row(r)[0];
                assert!(first >= base);
                let want: Vec<u32> = (first..first + 101).collect();
                assert_eq!(b.inputs_row(r), &want[..100], "{dir}");
                assert_eq!(b.targets_row(r), &want[1..], "{dir}");
            }
        }
    }

    #[test]
    fn shard_ids_outside_the_vocab_are_errors_naming_the_file() {
        let d = TempDir::new("pshards-vocab");
        d.write("big.bin", &raw_u16(&[1000; 4000]));
        let c = cfg(
            64,
            2,
            vec![SourceConfig::Shards {
                weight: 1.0,
                path: "big.bin".into(),
                dtype: ShardDtype::U16,
            }],
        );
        let msg = format!("{:#}", DataPipeline::new(&c, byte(), d.path()).unwrap_err());
        assert!(
            msg.contains("data.sources[0]") && msg.contains("big.bin") && msg.contains("1000"),
            "{msg}"
        );
    }

    #[test]
    fn unsampled_bad_ids_are_caught_per_window() {
        // The load-time scan samples the head, tail and 16 chunks at multiples of
        // len/17 (= 17647 here); 75_000..88_000 lies between two chunks, so only the
        // per-window check can see it.
        let d = TempDir::new("lazy-vocab");
        let mut toks = vec![5u32; 300_000];
        toks[75_000..88_000].fill(2000);
        d.write("lazy.bin", &raw_u16(&toks));
        let c = cfg(
            64,
            64,
            vec![SourceConfig::Shards {
                weight: 1.0,
                path: "lazy.bin".into(),
                dtype: ShardDtype::U16,
            }],
        );
        let tok = Arc::new(WideTokenizer(1000));
        let p = DataPipeline::new(&c, tok.clone(), d.path()).unwrap();
        let step = (0..50)
            .find(|&s| p.try_batch(Split::Train, s).is_err())
            .expect("some window overlaps the bad region");
        let msg = format!("{:#}", p.try_batch(Split::Train, step).unwrap_err());
        assert!(msg.contains("lazy.bin") && msg.contains("2000"), "{msg}");
        // The lenient batch keeps going with EOS in place of the bad ids.
        let b = p.batch(Split::Train, step);
        assert!(b.inputs.contains(&tok.eos_id()));
        assert!(b.inputs.iter().all(|&t| t == 5 || t == tok.eos_id()));
    }

    #[test]
    fn bad_sources_fail_at_construction_with_names() {
        let d = TempDir::new("bad");
        let c = cfg(64, 2, vec![text("missing/corpus", 1.0)]);
        let msg = format!("{:#}", DataPipeline::new(&c, byte(), d.path()).unwrap_err());
        assert!(
            msg.contains("missing/corpus") && msg.contains("does not exist"),
            "{msg}"
        );

        d.write("tiny.txt", b"too short for a window");
        let c = cfg(64, 2, vec![text("tiny.txt", 1.0)]);
        let msg = format!("{:#}", DataPipeline::new(&c, byte(), d.path()).unwrap_err());
        assert!(
            msg.contains("tiny.txt") && msg.contains("train split has") && msg.contains("65"),
            "{msg}"
        );

        // Train is long enough but the 5% tail is not.
        d.write("mid.txt", "x".repeat(1000).as_bytes());
        let c = cfg(64, 2, vec![text("mid.txt", 1.0)]);
        let msg = format!("{:#}", DataPipeline::new(&c, byte(), d.path()).unwrap_err());
        assert!(
            msg.contains("mid.txt") && msg.contains("val split has 50 tokens"),
            "{msg}"
        );

        // Passkey cannot fit 64 tokens.
        let c = cfg(64, 2, DataConfig::default().sources);
        let msg = format!("{:#}", DataPipeline::new(&c, byte(), d.path()).unwrap_err());
        assert!(
            msg.contains("data.sources[0] (passkey)") && msg.contains("65"),
            "{msg}"
        );

        // Invalid config values are reported before any loading.
        let mut c = cfg(64, 2, vec![text("mid.txt", -1.0)]);
        let msg = format!("{:#}", DataPipeline::new(&c, byte(), d.path()).unwrap_err());
        assert_eq!(msg, "data.sources[0].weight must be > 0 (got -1)");
        c.sources = vec![];
        assert!(DataPipeline::new(&c, byte(), d.path()).is_err());
    }

    #[test]
    fn from_config_loads_the_tokenizer_and_describes_sources() {
        let d = TempDir::new("fromcfg");
        corpus(&d);
        let doc = r#"
            [data]
            seq_len = 128
            batch_size = 2
            val_fraction = 0.1
            [[data.sources]]
            kind = "text"
            path = "corpus"
            weight = 3
            [[data.sources]]
            kind = "assoc_recall"
            n_pairs = 4
        "#;
        let c = DataConfig::from_toml_str(doc).unwrap();
        let p = DataPipeline::from_config(&c, d.path()).unwrap();
        assert_eq!(p.vocab_size(), 257);
        assert_eq!((p.seq_len(), p.batch_size()), (128, 2));
        let lines = p.describe();
        assert_eq!(lines.len(), 2);
        assert!(
            lines[0].contains("corpus") && lines[0].contains("2 documents"),
            "{}",
            lines[0]
        );
        assert!(lines[0].contains("75.0%"), "{}", lines[0]);
        assert!(
            lines[1].contains("assoc_recall") && lines[1].contains("25.0%"),
            "{}",
            lines[1]
        );
        p.try_batch(Split::Train, 0).unwrap();
    }

    #[test]
    fn rows_split_a_batch_exactly() {
        let d = TempDir::new("rows");
        let p = mixed(&d);
        let b = p.batch(Split::Train, 3);
        let (top, bottom) = (b.rows(0..2), b.rows(2..6));
        assert_eq!((top.batch_size, bottom.batch_size), (2, 4));
        assert_eq!(bottom.inputs_row(0), b.inputs_row(2));
        assert_eq!(
            [top.inputs.clone(), bottom.inputs.clone()].concat(),
            b.inputs
        );
        assert_eq!([top.targets, bottom.targets].concat(), b.targets);
        assert_eq!([top.loss_mask, bottom.loss_mask].concat(), b.loss_mask);
        assert_eq!(
            [top.answer_spans, bottom.answer_spans].concat(),
            b.answer_spans
        );
    }

    #[test]
    fn answers_are_scored_exactly() {
        // Two rows of 4 targets; row 0 answers at targets 2..4, row 1 has no answer.
        let b = Batch {
            batch_size: 2,
            seq_len: 4,
            inputs: vec![0; 8],
            targets: vec![1, 2, 3, 4, 5, 6, 7, 8],
            loss_mask: vec![1.0; 8],
            answer_spans: vec![vec![(2, 4)], vec![]],
        };
        // Filler predictions do not count; row 1 has no answer at all.
        let right = b.score_answers(&[0, 0, 3, 4, 0, 0, 0, 0]);
        assert_eq!(
            right,
            AnswerScore {
                answers: 1,
                exact: 1,
                tokens: 2,
                right_tokens: 2
            }
        );
        let half = b.score_answers(&[1, 2, 3, 9, 5, 6, 7, 8]);
        assert_eq!((half.exact, half.right_tokens), (0, 1));
        let mut total = right;
        total.add(half);
        assert_eq!(total.exact_rate(), Some(0.5));
        assert_eq!(total.token_rate(), Some(0.75));
        assert_eq!(AnswerScore::default().exact_rate(), None);
    }

    /// Every task of the registry, named in TOML, parses, validates, builds a source (its
    /// label names the task) and generates rows: the single definition reaches every stage.
    #[test]
    fn every_task_kind_runs_from_toml_to_batches() {
        let d = TempDir::new("kinds");
        for task in Task::all() {
            let name = task.name();
            // Long enough for every task's defaults (common_words needs ~4k byte tokens).
            let doc = format!(
                "[data]\nseq_len = 4096\nbatch_size = 4\n[[data.sources]]\nkind = \"{name}\"\n"
            );
            let c = DataConfig::from_toml_str(&doc).unwrap_or_else(|e| panic!("{name}: {e:#}"));
            assert_eq!(c.sources, vec![SourceConfig::task(task.clone())]);
            let p =
                DataPipeline::new(&c, byte(), d.path()).unwrap_or_else(|e| panic!("{name}: {e:#}"));
            assert_eq!(
                p.describe(),
                vec![format!(
                    "data.sources[0] ({name}): synthetic, 100.0% of rows"
                )]
            );
            let b = p
                .try_batch(Split::Train, 0)
                .unwrap_or_else(|e| panic!("{name}: {e:#}"));
            let with_answers = b.answer_spans.iter().filter(|s| !s.is_empty()).count();
            let expect = if name == "filler" { 0 } else { b.batch_size };
            assert_eq!(with_answers, expect, "{name}");
        }
    }

    /// A task's haystack path resolves against the config's folder; a bad haystack fails
    /// at construction naming the source and the file.
    #[test]
    fn file_haystacks_load_relative_to_the_config() {
        let d = TempDir::new("hay-cfg");
        d.write(
            "essays/a.txt",
            "Long ago the hills were forests. Then came the farms.".as_bytes(),
        );
        let doc = "[data]\nseq_len = 600\nbatch_size = 3\n[[data.sources]]\nkind = \"niah\"\n\
                   haystack = \"essays\"\n";
        let c = DataConfig::from_toml_str(doc).unwrap();
        let p = DataPipeline::new(&c, byte(), d.path()).unwrap();
        let b = p.try_batch(Split::Train, 0).unwrap();
        let tok = ByteTokenizer;
        for r in 0..3 {
            let row = tok.decode(b.inputs_row(r));
            assert!(row.contains("the hills were forests."), "{row}");
            assert!(!row.contains("The grass is green"), "{row}");
            assert_eq!(b.answer_spans[r].len(), 1);
        }
        d.write("essays/b.txt", &[b'x', 0, 1, 2]);
        let msg = format!("{:#}", DataPipeline::new(&c, byte(), d.path()).unwrap_err());
        assert!(
            msg.contains("data.sources[0] (niah)")
                && msg.contains("b.txt")
                && msg.contains("binary"),
            "{msg}"
        );
    }

    /// JSONL examples pack into rows whose loss falls on the answers only.
    #[test]
    fn jsonl_rows_train_on_answers_only() {
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        let tok = ByteTokenizer;
        for (file, format) in [
            ("squad.jsonl", "qa"),
            ("xsum.jsonl", "summarization"),
            ("longbench.jsonl", "choice"),
        ] {
            let doc = format!(
                "[data]\nseq_len = 400\nbatch_size = 4\nval_fraction = 0.0\n[[data.sources]]\n\
                 kind = \"jsonl\"\npath = \"{file}\"\nformat = \"{format}\"\n"
            );
            let c = DataConfig::from_toml_str(&doc).unwrap();
            let p = DataPipeline::new(&c, byte(), &fixtures).unwrap();
            let SourceConfig::Jsonl { format, .. } = c.sources[0] else {
                panic!("a jsonl source: {:?}", c.sources[0]);
            };
            let examples = crate::downstream::load_examples(&fixtures.join(file), format).unwrap();
            let targets: Vec<String> = examples.iter().map(|e| e.target()).collect();
            for step in 0..5 {
                let b = p.try_batch(Split::Train, step).unwrap();
                for r in 0..4 {
                    let spans = &b.answer_spans[r];
                    assert!(!spans.is_empty(), "{file}: every row holds an example");
                    let mask = b.loss_mask_row(r);
                    for (i, &m) in mask.iter().enumerate() {
                        let in_answer = spans.iter().any(|&(s, e)| (s..e).contains(&i));
                        assert_eq!(m, if in_answer { 1.0 } else { 0.0 }, "{file} row {r} @{i}");
                    }
                    for &(s, e) in spans {
                        // Each answer carries the EOS after it (a model learns to stop),
                        // unless the answer ends the row.
                        let span = &b.targets_row(r)[s..e];
                        let text = match span.split_last() {
                            Some((&last, rest)) if last == ByteTokenizer::EOS => rest,
                            _ => {
                                assert_eq!(e, b.seq_len, "{file}: an answer without its EOS");
                                span
                            }
                        };
                        let answer = tok.decode(text);
                        assert!(targets.contains(&answer), "{file}: {answer:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn jsonl_too_long_examples_are_truncated_or_skipped_and_counted() {
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        let src = |too_long: &str| {
            format!(
                "[data]\nseq_len = 99\nbatch_size = 2\nval_fraction = 0.0\n[[data.sources]]\n\
                 kind = \"jsonl\"\npath = \"squad.jsonl\"\nformat = \"qa\"\ntoo_long = \"{too_long}\"\n"
            )
        };
        // 100-token rows: the Pharos (164 byte tokens) and tea (118) examples are too long,
        // the owls (73) fit; the long ones' question and answer (71 each) fit alone.
        let c = DataConfig::from_toml_str(&src("truncate")).unwrap();
        let p = DataPipeline::new(&c, byte(), &fixtures).unwrap();
        assert_eq!(
            p.describe(),
            [
                "data.sources[0] (jsonl squad.jsonl): 3 examples (train 3, val 3), 2 truncated, \
              0 skipped as too long, 100.0% of rows"
            ]
        );
        let c = DataConfig::from_toml_str(&src("skip")).unwrap();
        let p = DataPipeline::new(&c, byte(), &fixtures).unwrap();
        assert_eq!(
            p.describe(),
            [
                "data.sources[0] (jsonl squad.jsonl): 1 examples (train 1, val 1), 0 truncated, \
              2 skipped as too long, 100.0% of rows"
            ]
        );
        let b = p.try_batch(Split::Val, 0).unwrap();
        let row = ByteTokenizer.decode(b.inputs_row(0));
        assert!(row.starts_with("Owls hunt mostly at night."), "{row}");
        // With validation held out, one example is not enough for both splits.
        let doc = src("skip").replace("val_fraction = 0.0", "val_fraction = 0.5");
        let c = DataConfig::from_toml_str(&doc).unwrap();
        let msg = format!(
            "{:#}",
            DataPipeline::new(&c, byte(), &fixtures).unwrap_err()
        );
        assert!(
            msg.contains("data.sources[0] (jsonl squad.jsonl)")
                && msg.contains("1 of 3 examples fit")
                && msg.contains("2 skipped"),
            "{msg}"
        );
        // A malformed file fails at construction, naming the source, file and line.
        let doc = src("skip").replace("squad.jsonl", "malformed.jsonl");
        let c = DataConfig::from_toml_str(&doc).unwrap();
        let msg = format!(
            "{:#}",
            DataPipeline::new(&c, byte(), &fixtures).unwrap_err()
        );
        assert!(
            msg.contains("data.sources[0]") && msg.contains("malformed.jsonl:3"),
            "{msg}"
        );
    }

    #[test]
    fn pipeline_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<DataPipeline>();
        check::<Batch>();
    }
}
