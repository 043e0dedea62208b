//! `ramba-eval passkey --run runs/NAME ...`, `ramba-eval ruler --run runs/NAME --tasks ...`,
//! `ramba-eval ppl --run runs/NAME --text FILE ...` and
//! `ramba-eval generate --run runs/NAME --prompt TEXT ...`

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use ramba_core::backend::{dispatch, BackendInfo, BackendKind, BackendTask};
use ramba_core::ops::RambaBackend;
use ramba_core::stream::ChunkStoreKind;
use ramba_data::{JsonlFormat, TooLong};
use ramba_eval::downstream::{run_task, TaskEvalSettings};
use ramba_eval::grid::GridLimits;
use ramba_eval::passkey::{run_passkey, AnswerDecoding, Haystack, PasskeySettings};
use ramba_eval::perplexity::{perplexity_by_length, write_ppl, PplSettings};
use ramba_eval::retrieval_map::retrieval_map;
use ramba_eval::ruler::{ruler_task, run_ruler, RulerSettings, Scoring};
use ramba_eval::run::{load_run_with, LoadedRun};

/// Evaluate a trained ramba run.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Passkey retrieval accuracy by context length and key depth.
    Passkey(PasskeyArgs),
    /// RULER tasks (needle retrieval, variable tracking, word extraction): exact-match
    /// accuracy by context length and needle depth.
    Ruler(RulerArgs),
    /// A downstream task from a JSONL export: exact match and F1 (qa), ROUGE-L
    /// (summarization) or accuracy (choice) of greedily generated answers.
    Task(TaskArgs),
    /// Which chunks each token of a prompt selected, with what weight (JSON and PNG).
    RetrievalMap(RetrievalMapArgs),
    /// Perplexity by context length on a text file.
    Ppl(PplArgs),
    /// Generate text from a prompt through the streaming path, printing tokens as they come.
    Generate(GenerateArgs),
}

#[derive(Args, Debug, Clone)]
struct RetrievalMapArgs {
    #[command(flatten)]
    common: Common,
    /// The prompt.
    #[arg(long, help = "UTF-8 text file holding the prompt")]
    prompt_file: PathBuf,
}

#[derive(Args, Debug, Clone)]
struct Common {
    /// The run folder (runs/NAME).
    #[arg(long, help = "run folder written by ramba-train (runs/NAME)")]
    run: PathBuf,
    /// Backend: auto | cuda | wgpu | cpu.
    #[arg(
        long,
        default_value = "auto",
        help = "auto (CUDA, else wgpu, else CPU), cuda, wgpu or cpu"
    )]
    backend: BackendKind,
    /// Output folder (default: RUN/eval).
    #[arg(long, help = "where to write JSON, CSV and PNG (default: RUN/eval)")]
    out: Option<PathBuf>,
    /// Overrides of the run's config for this evaluation.
    #[arg(
        long = "set",
        value_name = "KEY=VALUE",
        help = "override a key of the run's config for this evaluation, e.g. \
                model.mamba.segment_inference=true or model.hsa.top_k=16 (repeatable)"
    )]
    overrides: Vec<String>,
}

/// The length × depth grid of the retrieval evaluations (passkey, RULER).
#[derive(Args, Debug, Clone)]
struct GridArgs {
    /// Context lengths: 1k,4k,16k,64k or plain numbers.
    #[arg(
        long,
        value_delimiter = ',',
        help = "context lengths, e.g. 1k,4k,16k (k = 1024, M = 1024k; default: \
                eval.passkey_multiples × data.seq_len)"
    )]
    lengths: Option<Vec<String>>,
    /// Depths as start:end:step or a list.
    #[arg(
        long,
        default_value = "0:1:0.25",
        help = "needle depths: start:end:step (e.g. 0:1:0.1) or a list 0,0.5,1"
    )]
    depths: String,
    /// Trials per (length, depth).
    #[arg(
        long,
        default_value_t = 5,
        value_parser = clap::value_parser!(u32).range(1..=MAX_TRIALS),
        help = "trials per cell, each with different needles (1 or more)"
    )]
    trials: u32,
    /// Text haystack instead of the filler sentences.
    #[arg(
        long,
        help = "haystack text: a file, or a folder of *.txt / *.md files (instead of the filler)"
    )]
    haystack: Option<PathBuf>,
    /// Seed of the needles.
    #[arg(long, default_value_t = 1234, help = "seed of the needles")]
    seed: u64,
}

#[derive(Args, Debug, Clone)]
struct PasskeyArgs {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    grid: GridArgs,
    /// Random-token haystack instead of the filler sentences.
    #[arg(
        long,
        conflicts_with = "haystack",
        help = "use a random-token haystack (the needle variant) instead of filler"
    )]
    random_tokens: bool,
    /// Teacher-forced scoring instead of free generation.
    #[arg(
        long,
        help = "score the answer teacher-forced (argmax at its positions) instead of generating it"
    )]
    teacher_forced: bool,
    #[command(flatten)]
    streaming: StreamingArgs,
}

/// How prompts go through the streaming path.
#[derive(Args, Debug, Clone)]
struct StreamingArgs {
    /// Keys and values of the chunk memory in host memory.
    #[arg(
        long,
        help = "keep the chunk memory's keys and values in host memory (landmarks stay on the device)"
    )]
    offload: bool,
    /// Tokens per prefill call.
    #[arg(
        long,
        value_parser = clap::value_parser!(u64).range(1..),
        help = "tokens per prefill call (default: the run's eval.max_context)"
    )]
    segment: Option<u64>,
}

impl StreamingArgs {
    fn store(&self) -> ChunkStoreKind {
        if self.offload {
            ChunkStoreKind::Offloaded
        } else {
            ChunkStoreKind::Device
        }
    }

    fn segment(&self, max_context: usize) -> usize {
        self.segment
            .map_or(max_context, |s| usize::try_from(s).unwrap_or(usize::MAX))
    }
}

#[derive(Args, Debug, Clone)]
struct GenerateArgs {
    /// The run folder (runs/NAME).
    #[arg(long, help = "run folder written by ramba-train (runs/NAME)")]
    run: PathBuf,
    /// Overrides of the run's config.
    #[arg(
        long = "set",
        value_name = "KEY=VALUE",
        help = "override a key of the run's config, e.g. model.mamba.segment_inference=true \
                (repeatable)"
    )]
    overrides: Vec<String>,
    /// Backend: auto | cuda | wgpu | cpu.
    #[arg(
        long,
        default_value = "auto",
        help = "auto (CUDA, else wgpu, else CPU), cuda, wgpu or cpu"
    )]
    backend: BackendKind,
    /// The prompt text.
    #[arg(
        long,
        conflicts_with = "prompt_file",
        required_unless_present = "prompt_file"
    )]
    prompt: Option<String>,
    /// A UTF-8 file holding the prompt.
    #[arg(long, help = "read the prompt from this UTF-8 file")]
    prompt_file: Option<PathBuf>,
    /// Most tokens to generate.
    #[arg(
        long,
        default_value_t = 256,
        help = "most tokens to generate (stops early at EOS)"
    )]
    max_tokens: usize,
    /// Sampling temperature (0 = greedy).
    #[arg(long, default_value_t = 0.0, help = "sampling temperature; 0 = greedy")]
    temperature: f64,
    /// Nucleus (top-p) sampling mass.
    #[arg(
        long,
        default_value_t = 1.0,
        help = "top-p: sample from the smallest set of tokens with this much probability"
    )]
    top_p: f64,
    /// Seed of the sampling.
    #[arg(long, default_value_t = 0, help = "seed of the sampling")]
    seed: u64,
    #[command(flatten)]
    streaming: StreamingArgs,
}

#[derive(Args, Debug, Clone)]
struct RulerArgs {
    #[command(flatten)]
    common: Common,
    #[command(flatten)]
    grid: GridArgs,
    /// RULER tasks, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "niah,niah_multi_query,variable_tracking",
        help = "tasks: niah, niah_multi_key, niah_multi_value, niah_multi_query, \
                variable_tracking, common_words, frequent_words"
    )]
    tasks: Vec<String>,
    /// How answers are judged.
    #[arg(
        long,
        value_enum,
        default_value_t = Scoring::FreeGeneration,
        help = "free-generation (greedy decoding, scored as written) or teacher-forced"
    )]
    scoring: Scoring,
}

#[derive(Args, Debug, Clone)]
struct TaskArgs {
    #[command(flatten)]
    common: Common,
    /// JSONL file or folder.
    #[arg(long, help = "JSONL file, or a folder of *.jsonl files")]
    data: PathBuf,
    /// qa | summarization | choice.
    #[arg(
        long,
        value_parser = parse_format,
        help = "qa {context, question, answers}, summarization {document, summary} or choice \
                {context, question, choices, label}"
    )]
    format: JsonlFormat,
    /// Longest prompt + answer.
    #[arg(
        long,
        help = "longest prompt + generated answer in tokens (default: data.seq_len of the run)"
    )]
    max_len: Option<usize>,
    /// truncate | skip.
    #[arg(
        long,
        default_value = "truncate",
        value_parser = parse_too_long,
        help = "too-long examples: truncate (cut the context from the left) or skip"
    )]
    too_long: TooLong,
    /// Generation budget.
    #[arg(
        long,
        help = "most tokens generated per answer (default: 32 qa, 128 summarization, 8 choice)"
    )]
    max_new_tokens: Option<usize>,
    /// First N examples only.
    #[arg(long, help = "evaluate only the first N examples")]
    limit: Option<usize>,
}

fn parse_format(s: &str) -> Result<JsonlFormat> {
    match s {
        "qa" => Ok(JsonlFormat::Qa),
        "summarization" => Ok(JsonlFormat::Summarization),
        "choice" => Ok(JsonlFormat::Choice),
        _ => bail!("`{s}` is not a format: qa, summarization or choice"),
    }
}

fn parse_too_long(s: &str) -> Result<TooLong> {
    match s {
        "truncate" => Ok(TooLong::Truncate),
        "skip" => Ok(TooLong::Skip),
        _ => bail!("`{s}`: expected truncate or skip"),
    }
}

#[derive(Args, Debug, Clone)]
struct PplArgs {
    #[command(flatten)]
    common: Common,
    /// Held-out text file.
    #[arg(long, help = "UTF-8 text file to evaluate on")]
    text: PathBuf,
    /// Context lengths.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "256,1k,4k",
        help = "context lengths, e.g. 256,1k,4k"
    )]
    lengths: Vec<String>,
    /// Windows per length.
    #[arg(
        long,
        default_value_t = 8,
        value_parser = clap::value_parser!(u64).range(1..),
        help = "non-overlapping windows evaluated per length (1 or more)"
    )]
    max_windows: u64,
    /// Windows longer than the segment are streamed.
    #[command(flatten)]
    streaming: StreamingArgs,
}

/// Most depths a `--depths` grid may have (a 0.001 step over [0, 1]): more is a typo, and an
/// unbounded grid allocated terabytes or never ended.
const MAX_DEPTHS: usize = 1001;

/// Most trials per cell.
const MAX_TRIALS: i64 = 100_000;

/// `4k` → 4096, `1M` → 1048576, `300` → 300.
fn parse_len(s: &str) -> Result<usize> {
    let s = s.trim();
    let (num, mult) = match s.chars().last() {
        Some('k' | 'K') => (&s[..s.len() - 1], 1024),
        Some('m' | 'M') => (&s[..s.len() - 1], 1 << 20),
        _ => (s, 1),
    };
    let n: usize = num
        .parse()
        .with_context(|| format!("`{s}` is not a length like 4096, 4k or 1M"))?;
    if n == 0 {
        bail!("length `{s}` must be > 0");
    }
    n.checked_mul(mult)
        .with_context(|| format!("length `{s}` is too large"))
}

/// `0:1:0.25` → [0, 0.25, 0.5, 0.75, 1]; `0,0.5,1` → as listed.
fn parse_depths(s: &str) -> Result<Vec<f64>> {
    let bad =
        || format!("--depths `{s}`: expected start:end:step or a comma list, all within [0, 1]");
    let depths: Vec<f64> = if s.contains(':') {
        let p: Vec<f64> = s
            .split(':')
            .map(|x| x.trim().parse::<f64>())
            .collect::<std::result::Result<_, _>>()
            .with_context(bad)?;
        let [a, b, step] = p[..] else { bail!(bad()) };
        if !(a.is_finite() && b.is_finite() && step.is_finite()) || step <= 0.0 || b < a {
            bail!(bad());
        }
        let n = ((b - a) / step + 1e-9).floor();
        if n + 1.0 > MAX_DEPTHS as f64 {
            bail!(
                "--depths `{s}`: {} depths; at most {MAX_DEPTHS} (use a larger step)",
                n + 1.0
            );
        }
        let n = n as usize;
        (0..=n)
            .map(|i| ((a + i as f64 * step) * 1e6).round() / 1e6)
            .collect()
    } else {
        s.split(',')
            .map(|x| x.trim().parse::<f64>())
            .collect::<std::result::Result<_, _>>()
            .with_context(bad)?
    };
    if depths.is_empty() || depths.iter().any(|d| !(0.0..=1.0).contains(d)) {
        bail!(bad());
    }
    if depths.len() > MAX_DEPTHS {
        bail!("--depths: {} depths; at most {MAX_DEPTHS}", depths.len());
    }
    Ok(depths)
}

/// `--lengths`, or the run's passkey lengths (`eval.passkey_multiples × data.seq_len`).
fn lengths_or_default<B: burn::prelude::Backend>(
    arg: &Option<Vec<String>>,
    run: &LoadedRun<B>,
) -> Result<Vec<usize>> {
    match arg {
        Some(l) => l.iter().map(|s| parse_len(s)).collect(),
        None => Ok(run
            .config
            .eval
            .passkey_multiples
            .iter()
            .map(|m| m * run.config.data.seq_len)
            .collect()),
    }
}

/// Loads the run and says which checkpoint.
fn open_run<B: burn::prelude::Backend>(
    common: &Common,
    device: &B::Device,
) -> Result<LoadedRun<B>> {
    let run = load_run_with::<B>(&common.run, &common.overrides, device)?;
    eprintln!(
        "loaded {} ({:?}, trained at {} tokens)",
        run.checkpoint.display(),
        run.config.model.arch,
        run.config.data.seq_len
    );
    Ok(run)
}

struct EvalTask(Command);

impl BackendTask for EvalTask {
    type Output = Result<()>;
    fn run<B: RambaBackend>(self, device: B::Device, info: &BackendInfo) -> Result<()> {
        eprintln!("{info}");
        match self.0 {
            Command::Passkey(a) => {
                let run = open_run::<B>(&a.common, &device)?;
                let lengths = lengths_or_default(&a.grid.lengths, &run)?;
                let depths = parse_depths(&a.grid.depths)?;
                let settings = PasskeySettings {
                    lengths,
                    depths,
                    trials: a.grid.trials as usize,
                    haystack: match (&a.grid.haystack, a.random_tokens) {
                        (Some(p), _) => Haystack::File(p.clone()),
                        (None, true) => Haystack::RandomTokens,
                        (None, false) => Haystack::Filler,
                    },
                    seed: a.grid.seed,
                    max_context: run.config.eval.max_context,
                    decoding: if a.teacher_forced {
                        AnswerDecoding::TeacherForced
                    } else {
                        AnswerDecoding::Generate
                    },
                    store: a.streaming.store(),
                    segment: a.streaming.segment(run.config.eval.max_context),
                    batch_tokens: 16_384,
                    stop: None,
                };
                let report = run_passkey(
                    &run.model,
                    run.tokenizer.as_ref(),
                    &settings,
                    &device,
                    |m| eprintln!("{m}"),
                )?;
                println!("{}", report.table());
                if report.streamed() {
                    println!("{}", report.cost_table());
                }
                for c in report
                    .grid
                    .cells
                    .iter()
                    .filter(|c| c.skipped.is_some())
                    .take(1)
                {
                    eprintln!("note: {}", c.skipped.as_deref().unwrap_or_default());
                }
                let out = a.common.out.unwrap_or_else(|| run.dir.join("eval"));
                let stem = match (&a.grid.haystack, a.random_tokens) {
                    (Some(_), _) => "passkey_haystack",
                    (None, true) => "passkey_needle",
                    (None, false) => "passkey",
                };
                report.write(&out, stem)?;
                eprintln!("wrote {}/{stem}.{{json,csv,png}}", out.display());
            }
            Command::Ruler(a) => {
                let run = open_run::<B>(&a.common, &device)?;
                let tasks = a
                    .tasks
                    .iter()
                    .map(|t| ruler_task(t.trim(), a.grid.haystack.as_deref()))
                    .collect::<Result<Vec<_>>>()?;
                let settings = RulerSettings {
                    tasks,
                    lengths: lengths_or_default(&a.grid.lengths, &run)?,
                    depths: parse_depths(&a.grid.depths)?,
                    trials: a.grid.trials as usize,
                    scoring: a.scoring,
                    seed: a.grid.seed,
                    limits: GridLimits {
                        max_context: run.config.eval.max_context,
                        stop: None,
                    },
                    batch_tokens: 16_384,
                };
                let report =
                    run_ruler(&run.model, run.tokenizer.clone(), &settings, &device, |m| {
                        eprintln!("{m}")
                    })?;
                println!("{}", report.table());
                let out = a.common.out.unwrap_or_else(|| run.dir.join("eval"));
                report.write(&out)?;
                eprintln!(
                    "wrote {}/ruler.{{json,csv}} and ruler_{{task}}.png",
                    out.display()
                );
            }
            Command::Task(a) => {
                let run = open_run::<B>(&a.common, &device)?;
                let max_len = a.max_len.unwrap_or(run.config.data.seq_len);
                if max_len > run.config.eval.max_context {
                    bail!(
                        "--max-len {max_len} exceeds eval.max_context = {}",
                        run.config.eval.max_context
                    );
                }
                let settings = TaskEvalSettings {
                    data: a.data.clone(),
                    format: a.format,
                    max_len,
                    too_long: a.too_long,
                    max_new_tokens: a
                        .max_new_tokens
                        .unwrap_or(TaskEvalSettings::default_max_new_tokens(a.format)),
                    limit: a.limit,
                };
                let report = run_task(
                    &run.model,
                    run.tokenizer.as_ref(),
                    &settings,
                    &device,
                    |m| eprintln!("{m}"),
                )?;
                println!("{}", report.summary());
                let out = a.common.out.unwrap_or_else(|| run.dir.join("eval"));
                let stem = format!(
                    "task_{}",
                    a.data
                        .file_stem()
                        .map_or("data".into(), |s| s.to_string_lossy())
                );
                report.write(&out, &stem)?;
                eprintln!("wrote {}/{stem}.{{json,csv}}", out.display());
            }
            Command::RetrievalMap(a) => {
                let run = open_run::<B>(&a.common, &device)?;
                let text = std::fs::read_to_string(&a.prompt_file).with_context(|| {
                    format!(
                        "reading --prompt-file {} (UTF-8 text)",
                        a.prompt_file.display()
                    )
                })?;
                let tokens = run.tokenizer.encode(&text);
                let max = run.config.eval.max_context;
                if tokens.is_empty() || tokens.len() > max {
                    bail!(
                        "--prompt-file {}: {} tokens; a retrieval map needs 1 to eval.max_context \
                         = {max}",
                        a.prompt_file.display(),
                        tokens.len()
                    );
                }
                let map = retrieval_map(
                    &run.model,
                    &tokens,
                    run.config.model.hsa.chunk_size,
                    &device,
                )?;
                print!(
                    "{}",
                    map.last_token_summary(run.tokenizer.as_ref(), &tokens)
                );
                let out = a.common.out.unwrap_or_else(|| run.dir.join("eval"));
                map.write(&out, "retrieval_map")?;
                eprintln!(
                    "wrote {}/retrieval_map.json and retrieval_map_g{{group}}_h{{head}}.png",
                    out.display()
                );
            }
            Command::Ppl(a) => {
                let run = load_run_with::<B>(&a.common.run, &a.common.overrides, &device)?;
                let text = std::fs::read_to_string(&a.text)
                    .with_context(|| format!("reading --text {}", a.text.display()))?;
                let tokens = run.tokenizer.encode(&text);
                if tokens.len() < 2 {
                    bail!(
                        "--text {}: {} tokens; perplexity needs at least 2",
                        a.text.display(),
                        tokens.len()
                    );
                }
                let lengths = a
                    .lengths
                    .iter()
                    .map(|s| parse_len(s))
                    .collect::<Result<Vec<_>>>()?;
                let settings = PplSettings {
                    max_windows: usize::try_from(a.max_windows).unwrap_or(usize::MAX),
                    segment: a.streaming.segment(run.config.eval.max_context),
                    store: a.streaming.store(),
                };
                let rows =
                    perplexity_by_length(&run.model, &tokens, &lengths, settings, &device, |m| {
                        eprintln!("{m}")
                    });
                if rows.is_empty() {
                    bail!(
                        "--text {} has {} tokens: too few for any of --lengths {:?} (a window \
                         needs length + 1 tokens); nothing written",
                        a.text.display(),
                        tokens.len(),
                        lengths
                    );
                }
                println!(
                    "{:>8} {:>8} {:>10} {:>10}",
                    "length", "windows", "loss", "ppl"
                );
                for r in &rows {
                    println!(
                        "{:>8} {:>8} {:>10.4} {:>10.3}",
                        r.length, r.windows, r.loss, r.ppl
                    );
                }
                let out = a.common.out.unwrap_or_else(|| run.dir.join("eval"));
                write_ppl(&rows, &out)?;
                eprintln!("wrote {}/ppl.{{json,csv,png}}", out.display());
            }
            Command::Generate(a) => generate::<B>(a, &device)?,
        }
        Ok(())
    }
}

/// `ramba-eval generate`: the prompt is prefilled in segments, then tokens are decoded and
/// printed as they come (stdout holds the continuation only).
fn generate<B: RambaBackend>(a: GenerateArgs, device: &B::Device) -> Result<()> {
    use ramba_eval::generate::{decode, prefill_rows, Sampler, Sampling};
    use std::io::Write;
    let mut sampler = Sampler::new(Sampling {
        temperature: a.temperature,
        top_p: a.top_p,
        seed: a.seed,
    })?;
    let run = load_run_with::<B>(&a.run, &a.overrides, device)?;
    let text = match (&a.prompt, &a.prompt_file) {
        (Some(p), _) => p.clone(),
        (None, Some(f)) => std::fs::read_to_string(f)
            .with_context(|| format!("reading --prompt-file {}", f.display()))?,
        (None, None) => bail!("give --prompt TEXT or --prompt-file FILE"),
    };
    let prompt = run.tokenizer.encode(&text);
    if prompt.is_empty() {
        bail!("the prompt is empty: nothing to continue");
    }
    let segment = a.streaming.segment(run.config.eval.max_context);
    let mut state = run.model.stream_state(a.streaming.store());
    let started = std::time::Instant::now();
    let last = prefill_rows(
        &run.model,
        &[&prompt],
        prompt.len(),
        segment,
        &mut state,
        device,
        |_| {},
    )?;
    eprintln!(
        "prefilled {} tokens in {:.2}s",
        prompt.len(),
        started.elapsed().as_secs_f64()
    );
    let eos = run.tokenizer.eos_id();
    let tok = run.tokenizer.clone();
    let mut ids: Vec<u32> = Vec::new();
    let mut printed = 0;
    let mut stdout = std::io::stdout();
    let decoding = std::time::Instant::now();
    let out = decode(
        &run.model,
        &mut state,
        last,
        a.max_tokens,
        std::slice::from_mut(&mut sampler),
        device,
        |t| {
            if t[0] == eos {
                return false;
            }
            ids.push(t[0]);
            // Print what decodes to whole characters; a token ending inside a multi-byte character
            // (the byte tokenizer) waits for the next one.
            let text = tok.decode(&ids);
            let whole = text.trim_end_matches('\u{FFFD}');
            if whole.len() > printed {
                let _ = write!(stdout, "{}", &whole[printed..]);
                let _ = stdout.flush();
                printed = whole.len();
            }
            true
        },
    );
    let text = tok.decode(&ids);
    if text.len() > printed {
        print!("{}", &text[printed..]);
    }
    println!();
    let n = out[0].len();
    eprintln!(
        "generated {n} tokens in {:.2}s",
        decoding.elapsed().as_secs_f64()
    );
    Ok(())
}

fn main() {
    let cli = Cli::parse();
    let backend = match &cli.command {
        Command::Passkey(a) => a.common.backend,
        Command::Ruler(a) => a.common.backend,
        Command::Task(a) => a.common.backend,
        Command::RetrievalMap(a) => a.common.backend,
        Command::Ppl(a) => a.common.backend,
        Command::Generate(a) => a.backend,
    };
    if let Err(e) = dispatch(backend, EvalTask(cli.command)).and_then(|r| r) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_and_depths_parse() {
        assert_eq!(parse_len("4k").unwrap(), 4096);
        assert_eq!(parse_len("1M").unwrap(), 1 << 20);
        assert_eq!(parse_len("300").unwrap(), 300);
        assert!(parse_len("4q").is_err());
        assert!(parse_len("0").is_err());
        assert_eq!(
            parse_depths("0:1:0.25").unwrap(),
            vec![0.0, 0.25, 0.5, 0.75, 1.0]
        );
        assert_eq!(parse_depths("0:1:0.1").unwrap().len(), 11);
        assert_eq!(parse_depths("0,0.5,1").unwrap(), vec![0.0, 0.5, 1.0]);
        assert!(parse_depths("0:2:0.5").is_err());
        // Grids that panicked, allocated terabytes or never ended are bounded errors.
        for bad in [
            "0:inf:1",
            "0:1:1e-12",
            "0:1:1e-7",
            "0:1:nan",
            "nan:1:0.1",
            "0:1:0",
        ] {
            let e = format!("{:#}", parse_depths(bad).unwrap_err());
            assert!(e.contains("--depths"), "{bad}: {e}");
        }
        assert_eq!(parse_depths("0:1:0.001").unwrap().len(), 1001);
        // Lengths that overflow are errors, not a wrap to 0.
        assert!(parse_len("18446744073709551615k").is_err());
        assert!(parse_len("99999999999999999M").is_err());
        assert!(parse_depths("a").is_err());
    }
}
