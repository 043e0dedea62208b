//! Passkey retrieval (spec §9, the Landmark Attention convention): filler, the key sentence at a
//! chosen depth, the question; correct iff greedy decoding yields exactly the key.
//!
//! Two ways to decode the answer ([`AnswerDecoding`]):
//!
//! - free generation (the default): the prompt is prefilled through the streaming path in
//!   segments, then the model generates greedily, one step at a time, the answer's length plus
//!   one token; correct iff the first number in what it wrote is the key. Any length runs this
//!   way: memory is bounded by the segment and the chunk store (offloaded: host memory).
//! - teacher-forced scoring: greedy decoding computed from one pass over `prompt + answer`: the
//!   greedy continuation equals the answer iff the argmax at every answer position is the next
//!   answer token, and the argmax after the last digit is not another digit (else greedy
//!   decoding would produce a longer, wrong number). What the model produced up to its first
//!   deviation is kept for the report. Lengths above `max_context` prefill the prompt in
//!   segments and score only the answer's positions.
//!
//! Streamed cells also record prefill throughput and peak host (and device) memory.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use ramba_core::model::LanguageModel;
use ramba_core::ops::RambaBackend;
use ramba_core::stream::ChunkStoreKind;
use ramba_data::{
    needle_prompt, score_answer, HaystackText, PasskeyPrompt, PasskeyPrompter, Tokenizer,
};
use ramba_report::{line_chart, write_csv, write_json_pretty, Series};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::decode::{greedy_prefix, teacher_forced};
use crate::generate::{decode, host_rows, id_tensor, prefill_rows, Sampler, Sampling};
pub use crate::grid::{short_len, Cell, Grid, GridLimits, Trial, INTERRUPTED};

/// Which haystack.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Haystack {
    /// The repeated filler sentences.
    Filler,
    /// Random tokens (the random-token needle variant).
    RandomTokens,
    /// The text of a file, or of every text file of a folder (natural text); keys never
    /// occur in it.
    File(PathBuf),
}

/// How the answer is decoded; see the module docs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AnswerDecoding {
    /// Greedy generation after a streamed prefill.
    #[default]
    Generate,
    /// Argmax predictions at the answer's positions of `prompt + answer`.
    TeacherForced,
}

/// What to evaluate.
#[derive(Clone, Debug)]
pub struct PasskeySettings {
    /// Context lengths in tokens (prompt + answer).
    pub lengths: Vec<usize>,
    /// Key depths in `[0, 1]`.
    pub depths: Vec<f64>,
    /// Trials per cell, each with its own key.
    pub trials: usize,
    /// Filler, random tokens or a file.
    pub haystack: Haystack,
    /// Seed of the keys.
    pub seed: u64,
    /// Longest single forward pass of teacher-forced scoring; longer lengths are streamed.
    pub max_context: usize,
    /// Free generation or teacher-forced scoring.
    pub decoding: AnswerDecoding,
    /// Where a streamed prompt's chunk memory is kept.
    pub store: ChunkStoreKind,
    /// Tokens per prefill call of a streamed prompt.
    pub segment: usize,
    /// Tokens per forward batch (rows are batched up to this many tokens).
    pub batch_tokens: usize,
    /// Checked before every cell (set by Ctrl-C / SIGTERM): once set, the remaining cells are
    /// skipped as interrupted and the partial report is returned.
    pub stop: Option<Arc<AtomicBool>>,
}

/// What a streamed cell cost.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Measure {
    /// Prompt tokens prefilled (all rows).
    pub prefill_tokens: usize,
    /// Seconds the prefills took.
    pub prefill_seconds: f64,
    /// Largest resident set of the process seen during the prefills (Linux; `None` elsewhere).
    pub peak_host_bytes: Option<u64>,
    /// Largest device memory in use seen during the prefills, where the backend exposes it.
    pub peak_device_bytes: Option<u64>,
    /// Bytes the chunk store held on the device at the end of the prompt.
    pub store_device_bytes: u64,
    /// Bytes the chunk store held in host memory at the end of the prompt.
    pub store_host_bytes: u64,
}

impl Measure {
    /// Prefill tokens per second.
    pub fn tokens_per_s(&self) -> f64 {
        self.prefill_tokens as f64 / self.prefill_seconds.max(1e-9)
    }

    /// The cost of both `self` and `other` (peaks: the larger).
    fn merge(self, other: Measure) -> Measure {
        Measure {
            prefill_tokens: self.prefill_tokens + other.prefill_tokens,
            prefill_seconds: self.prefill_seconds + other.prefill_seconds,
            peak_host_bytes: self.peak_host_bytes.max(other.peak_host_bytes),
            peak_device_bytes: self.peak_device_bytes.max(other.peak_device_bytes),
            store_device_bytes: self.store_device_bytes.max(other.store_device_bytes),
            store_host_bytes: self.store_host_bytes.max(other.store_host_bytes),
        }
    }
}

/// The resident set of this process (`VmRSS` of `/proc/self/status`), where readable.
pub fn host_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// All cells.
#[derive(Clone, Debug, Serialize)]
pub struct PasskeyReport {
    /// Filler, random tokens or a file.
    pub haystack: Haystack,
    /// The (length, depth) cells.
    #[serde(flatten)]
    pub grid: Grid,
    /// What each cell cost where it ran through the streaming path, in the grid's cell order
    /// (depth-major, then length); `None` for one-pass and skipped cells. Kept beside the grid
    /// because the grid is shared with RULER, which has no streamed cost.
    pub measures: Vec<Option<Measure>>,
}

impl PasskeyReport {
    /// Mean accuracy per length over depths (`None` if all skipped).
    pub fn accuracy_by_length(&self) -> Vec<Option<f64>> {
        self.grid.accuracy_by_length()
    }

    /// Whether an interrupt cut the evaluation short (some cells are skipped as
    /// [`INTERRUPTED`]).
    pub fn interrupted(&self) -> bool {
        self.grid.interrupted()
    }

    /// A text table: rows = depth, columns = length.
    pub fn table(&self) -> String {
        self.grid.table()
    }

    /// The streamed cost of the cell at (depth index, length index), if it was streamed.
    pub fn measure(&self, depth: usize, length: usize) -> Option<Measure> {
        self.measures
            .get(depth * self.grid.lengths.len() + length)
            .copied()
            .flatten()
    }

    /// Whether any cell ran through the streaming path.
    pub fn streamed(&self) -> bool {
        self.measures.iter().any(Option::is_some)
    }

    /// Streamed cost per length over its depths (`None` where no cell was streamed).
    pub fn measure_by_length(&self) -> Vec<Option<Measure>> {
        (0..self.grid.lengths.len())
            .map(|li| {
                (0..self.grid.depths.len())
                    .filter_map(|di| self.measure(di, li))
                    .reduce(Measure::merge)
            })
            .collect()
    }

    /// Per length: accuracy, prefill tokens/s, peak host and device memory (streamed lengths).
    pub fn cost_table(&self) -> String {
        let mib =
            |b: Option<u64>| b.map_or("-".to_string(), |b| format!("{:.1}", b as f64 / 1048576.0));
        let mut out = format!(
            "{:>8} {:>8} {:>12} {:>14} {:>16}\n",
            "length", "accuracy", "prefill t/s", "peak host MiB", "peak device MiB"
        );
        for ((l, a), m) in self
            .grid
            .lengths
            .iter()
            .zip(self.accuracy_by_length())
            .zip(self.measure_by_length())
        {
            let acc = a.map_or("-".to_string(), |a| format!("{:.0}%", a * 100.0));
            let (tps, host, dev) = match m {
                Some(m) => (
                    format!("{:.0}", m.tokens_per_s()),
                    mib(m.peak_host_bytes),
                    mib(m.peak_device_bytes),
                ),
                None => ("-".into(), "-".into(), "-".into()),
            };
            out += &format!(
                "{:>8} {:>8} {:>12} {:>14} {:>16}\n",
                short_len(*l),
                acc,
                tps,
                host,
                dev
            );
        }
        out
    }

    /// Writes `{stem}.json`, `{stem}.csv` and `{stem}.png` into `dir`, and when any cell was
    /// streamed `{stem}_cost.csv` and `{stem}_memory.png`.
    pub fn write(&self, dir: &Path, stem: &str) -> Result<()> {
        write_json_pretty(dir.join(format!("{stem}.json")), self)?;
        write_csv(
            dir.join(format!("{stem}.csv")),
            &Grid::CSV_HEADER,
            &self.grid.csv_rows(),
        )?;
        self.write_costs(dir, stem)?;
        let haystack = match &self.haystack {
            Haystack::Filler => "filler".to_string(),
            Haystack::RandomTokens => "random-token".to_string(),
            Haystack::File(p) => p
                .file_name()
                .map_or_else(|| p.display().to_string(), |f| f.to_string_lossy().into()),
        };
        self.grid.heatmap(
            &dir.join(format!("{stem}.png")),
            &format!("Passkey retrieval ({haystack} haystack)"),
        )
    }

    /// `{stem}_cost.csv` (per length: accuracy, prefill tokens/s, peak memory) and
    /// `{stem}_memory.png` (peak memory against the length), when any length was streamed.
    fn write_costs(&self, dir: &Path, stem: &str) -> Result<()> {
        let measures = self.measure_by_length();
        if measures.iter().all(Option::is_none) {
            return Ok(());
        }
        let lengths = &self.grid.lengths;
        let opt = |b: Option<u64>| b.map_or(String::new(), |b| b.to_string());
        let rows: Vec<Vec<String>> = lengths
            .iter()
            .zip(self.accuracy_by_length())
            .zip(&measures)
            .filter_map(|((l, a), m)| {
                m.map(|m| {
                    vec![
                        l.to_string(),
                        a.map_or(String::new(), |a| format!("{a:.4}")),
                        format!("{:.1}", m.tokens_per_s()),
                        opt(m.peak_host_bytes),
                        opt(m.peak_device_bytes),
                        m.store_host_bytes.to_string(),
                        m.store_device_bytes.to_string(),
                    ]
                })
            })
            .collect();
        write_csv(
            dir.join(format!("{stem}_cost.csv")),
            &[
                "length",
                "accuracy",
                "prefill_tokens_per_s",
                "peak_host_bytes",
                "peak_device_bytes",
                "store_host_bytes",
                "store_device_bytes",
            ],
            &rows,
        )?;
        let series = |name: &str, pick: &dyn Fn(&Measure) -> Option<u64>| {
            let points = lengths
                .iter()
                .zip(&measures)
                .filter_map(|(l, m)| {
                    let b = pick(m.as_ref()?)?;
                    Some(((*l as f64).log2(), b as f64 / 1048576.0))
                })
                .collect();
            Series::new(name, points)
        };
        let lines = [
            series("peak device memory in use", &|m| m.peak_device_bytes),
            series("chunk store on the device", &|m| Some(m.store_device_bytes)),
            series("peak host memory (RSS)", &|m| m.peak_host_bytes),
        ];
        let lines: Vec<Series> = lines.into_iter().filter(|s| !s.points.is_empty()).collect();
        line_chart(
            &dir.join(format!("{stem}_memory.png")),
            "Memory vs context length (streamed prompts)",
            "context length (log2 tokens)",
            "MiB",
            &lines,
            false,
        )
    }
}

/// Runs every (length, depth) cell on `model`.
pub fn run_passkey<B: RambaBackend>(
    model: &LanguageModel<B>,
    tok: &dyn Tokenizer,
    settings: &PasskeySettings,
    device: &B::Device,
    progress: impl FnMut(&str),
) -> Result<PasskeyReport> {
    anyhow::ensure!(settings.trials >= 1, "passkey: trials must be ≥ 1 (got 0)");
    anyhow::ensure!(
        settings.segment >= 1,
        "passkey: segment must be ≥ 1 token (got 0)"
    );
    // Built once: a file haystack is read and tokenized here, and its errors end the command.
    let prompter = match &settings.haystack {
        Haystack::RandomTokens => None,
        Haystack::Filler => Some(PasskeyPrompter::new(tok, None)?),
        Haystack::File(p) => {
            let text = HaystackText::load(p).context("--haystack")?;
            Some(PasskeyPrompter::new(tok, Some(&text))?)
        }
    };
    // No length is skipped for exceeding `max_context`: those prompts are streamed in
    // segments (`settings.max_context` only decides one pass vs streaming below).
    let limits = GridLimits {
        max_context: usize::MAX,
        stop: settings.stop.clone(),
    };
    let n_lengths = settings.lengths.len();
    let mut measures = vec![None; settings.depths.len() * n_lengths];
    let grid = Grid::run(
        &settings.lengths,
        &settings.depths,
        &limits,
        "passkey",
        progress,
        |di, li, length, depth| {
            let mut rng =
                ChaCha8Rng::seed_from_u64(settings.seed ^ ((di as u64) << 32) ^ li as u64);
            let prompts = (0..settings.trials)
                .map(|_| match &prompter {
                    Some(p) => p.prompt(tok, length, depth, &mut rng),
                    None => needle_prompt(tok, length, depth, &mut rng),
                })
                .collect::<Result<Vec<PasskeyPrompt>>>()?;
            let one_pass = settings.decoding == AnswerDecoding::TeacherForced
                && length <= settings.max_context;
            if one_pass {
                Ok(score_prompts(
                    model,
                    tok,
                    &prompts,
                    settings.batch_tokens,
                    device,
                ))
            } else {
                let (trials, m) = stream_prompts(model, tok, &prompts, settings, device)?;
                measures[di * n_lengths + li] = Some(m);
                Ok(trials)
            }
        },
    );
    Ok(PasskeyReport {
        haystack: settings.haystack.clone(),
        grid,
        measures,
    })
}

/// Consecutive prompts of equal length, at most `batch_tokens` tokens per batch (one prompt
/// at least).
fn batches(prompts: &[PasskeyPrompt], batch_tokens: usize) -> Vec<Vec<&PasskeyPrompt>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < prompts.len() {
        let shape = (prompts[i].prompt.len(), prompts[i].answer.len());
        let rows = (batch_tokens / prompts[i].total_len().max(1)).max(1);
        let group: Vec<&PasskeyPrompt> = prompts[i..]
            .iter()
            .take(rows)
            .take_while(|p| (p.prompt.len(), p.answer.len()) == shape)
            .collect();
        i += group.len();
        out.push(group);
    }
    out
}

/// Decodes the answers through the streaming path: the prompts are prefilled in segments of
/// `settings.segment` tokens into a chunk store of `settings.store`, then the answer is
/// generated (or, teacher-forced, scored at its positions only).
pub fn stream_prompts<B: RambaBackend>(
    model: &LanguageModel<B>,
    tok: &dyn Tokenizer,
    prompts: &[PasskeyPrompt],
    settings: &PasskeySettings,
    device: &B::Device,
) -> Result<(Vec<Trial>, Measure)> {
    let mut trials = Vec::with_capacity(prompts.len());
    let mut total = Measure::default();
    for group in batches(prompts, settings.batch_tokens) {
        let rows: Vec<Vec<u32>> = group.iter().map(|p| p.tokens()).collect();
        let refs: Vec<&[u32]> = rows.iter().map(Vec::as_slice).collect();
        let (plen, alen) = (group[0].prompt.len(), group[0].answer.len());
        // Teacher-forced scoring reads the logits from the prompt's last token on.
        let upto = match settings.decoding {
            AnswerDecoding::Generate => plen,
            AnswerDecoding::TeacherForced => plen - 1,
        };
        let mut state = model.stream_state(settings.store);
        let mut bar = PrefillProgress::new(upto, settings.segment, refs.len());
        let mut m = Measure {
            peak_host_bytes: host_rss_bytes(),
            peak_device_bytes: B::memory_usage(device).map(|u| u.in_use),
            ..Measure::default()
        };
        let started = Instant::now();
        let last = prefill_rows(
            model,
            &refs,
            upto,
            settings.segment,
            &mut state,
            device,
            |done| {
                bar.set(done);
                m.peak_host_bytes = m.peak_host_bytes.max(host_rss_bytes());
                m.peak_device_bytes = m
                    .peak_device_bytes
                    .max(B::memory_usage(device).map(|u| u.in_use));
            },
        )?;
        // Reading the logits waits for the device: the time is the prefill's, not its queue's.
        let first = host_rows(last.clone());
        m.prefill_seconds = started.elapsed().as_secs_f64();
        m.prefill_tokens = upto * refs.len();
        bar.finish();
        if let Some(profile) = state.profile() {
            eprint!("{}", profile.table());
        }
        if let Some(store) = state.chunk_store() {
            m.store_device_bytes = store.device_bytes() as u64;
            m.store_host_bytes = store.host_bytes() as u64;
        }
        match settings.decoding {
            AnswerDecoding::Generate => {
                debug_assert_eq!(first.len(), refs.len());
                let mut samplers = (0..refs.len())
                    .map(|_| Sampler::new(Sampling::greedy()))
                    .collect::<Result<Vec<_>>>()?;
                let out = decode(
                    model,
                    &mut state,
                    last,
                    alen + 1,
                    &mut samplers,
                    device,
                    |_| true,
                );
                for (p, generated) in group.iter().zip(&out) {
                    trials.push(judge_generated(tok, p, generated));
                }
            }
            AnswerDecoding::TeacherForced => {
                let input = id_tensor::<B>(&refs, plen - 1..plen + alen, device);
                let logits = model.prefill(input, &mut state);
                let n = logits.dims()[1];
                let pred: Vec<u32> = logits
                    .argmax(2)
                    .into_data()
                    .convert::<i64>()
                    .to_vec::<i64>()
                    .expect("argmax yields integer data")
                    .into_iter()
                    .map(|t| t as u32)
                    .collect();
                for (r, p) in group.iter().enumerate() {
                    trials.push(judge(tok, p, &pred[r * n..(r + 1) * n]));
                }
            }
        }
        total = total.merge(m);
    }
    Ok((trials, total))
}

/// Progress of a long prefill (many segments): on a terminal an indicatif bar with ETA; in a
/// log (stderr not a terminal) a plain line every [`PrefillProgress::LOG_EVERY`], so a
/// millions-of-tokens prefill on a GPU machine shows how far it got. Short prefills show
/// nothing.
struct PrefillProgress {
    bar: Option<indicatif::ProgressBar>,
    /// Plain-line mode: the prefill's total, start and the last line's time.
    log: Option<(usize, Instant, Instant)>,
    rows: usize,
}

impl PrefillProgress {
    const LOG_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

    fn new(tokens: usize, segment: usize, rows: usize) -> Self {
        let mut progress = Self {
            bar: None,
            log: None,
            rows,
        };
        if tokens <= 8 * segment {
            return progress;
        }
        if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            let bar = indicatif::ProgressBar::new(tokens as u64);
            let style = indicatif::ProgressStyle::with_template(
                "prefill {msg} [{bar:30}] {pos}/{len} tokens ({per_sec}, ETA {eta})",
            )
            .expect("a valid template")
            .progress_chars("=> ");
            bar.set_style(style);
            bar.set_message(format!("{rows} row(s)"));
            progress.bar = Some(bar);
        } else {
            let now = Instant::now();
            progress.log = Some((tokens, now, now));
        }
        progress
    }

    /// `done` tokens per row prefilled so far.
    fn set(&mut self, done: usize) {
        if let Some(bar) = &self.bar {
            bar.set_position(done as u64);
        }
        if let Some((total, started, last)) = &mut self.log {
            if last.elapsed() >= Self::LOG_EVERY && done < *total {
                *last = Instant::now();
                let elapsed = started.elapsed();
                let eta = ramba_report::progress::eta(0, done as u64, *total as u64, elapsed)
                    .map_or("?".into(), ramba_report::progress::format_duration);
                eprintln!(
                    "prefill {} row(s): {done}/{total} tokens ({:.0} tokens/s, ETA {eta})",
                    self.rows,
                    (done * self.rows) as f64 / elapsed.as_secs_f64(),
                );
            }
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// Judges a freely generated answer: correct iff its first number is the key.
fn judge_generated(tok: &dyn Tokenizer, p: &PasskeyPrompt, generated: &[u32]) -> Trial {
    let text = tok.decode(generated);
    Trial {
        answer: p.answer_text.trim().to_string(),
        correct: score_answer(&text, &p.answer_text),
        generated: text.trim().to_string(),
        recall: None,
    }
}

/// Greedy-decodes the answer of each prompt teacher-forced in one pass (see the module docs),
/// batching prompts of equal length.
pub fn score_prompts<B: RambaBackend>(
    model: &LanguageModel<B>,
    tok: &dyn Tokenizer,
    prompts: &[PasskeyPrompt],
    batch_tokens: usize,
    device: &B::Device,
) -> Vec<Trial> {
    teacher_forced(model, prompts, batch_tokens, device)
        .iter()
        .zip(prompts)
        .map(|(pred, p)| judge(tok, p, pred))
        .collect()
}

/// Compares teacher-forced argmax predictions (`alen + 1` tokens) with the answer.
fn judge(tok: &dyn Tokenizer, p: &PasskeyPrompt, pred: &[u32]) -> Trial {
    let generated = greedy_prefix(&p.answer, pred);
    let whole = generated.len() == p.answer.len() + 1;
    let text = tok.decode(&generated);
    let continues_number = whole
        && tok
            .decode(&[pred[p.answer.len()]])
            .starts_with(|c: char| c.is_ascii_digit());
    let correct = whole && !continues_number && score_answer(&text, &p.answer_text);
    Trial {
        answer: p.answer_text.trim().to_string(),
        generated: text.trim().to_string(),
        correct,
        recall: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ramba_data::ByteTokenizer;

    fn prompt(tok: &ByteTokenizer) -> PasskeyPrompt {
        ramba_data::passkey_prompt(tok, 300, 0.5, 12345).unwrap()
    }

    fn ids(s: &str) -> Vec<u32> {
        s.bytes().map(u32::from).collect()
    }

    #[test]
    fn judge_accepts_only_the_exact_number() {
        let tok = ByteTokenizer;
        let p = prompt(&tok);
        assert_eq!(p.answer_text.trim(), "12345");
        // " 12345" then a full stop: correct.
        assert!(judge(&tok, &p, &ids(" 12345.")).correct);
        // A sixth digit would make greedy decoding produce 123456: wrong.
        assert!(!judge(&tok, &p, &ids(" 123456")).correct);
        // A wrong digit: wrong, and the report shows the deviation.
        let t = judge(&tok, &p, &ids(" 12945."));
        assert!(!t.correct);
        assert_eq!(t.generated, "129");
    }

    #[test]
    fn generated_answers_are_judged_by_their_first_number() {
        let tok = ByteTokenizer;
        let p = prompt(&tok);
        assert!(judge_generated(&tok, &p, &ids(" 12345.")).correct);
        assert!(!judge_generated(&tok, &p, &ids(" 12346.")).correct);
    }
}
