//! `ramba-bench hsa|scan|attention|train`: kernel and training benchmarks that print a table (see
//! `ramba_eval::bench`).
//!
//! ```text
//! ramba-bench attention --backend cuda --batch 8 --lengths 4k,16k,64k --windows causal,512,4096
//! ramba-bench hsa --backend cuda --batch 8 --lengths 4k,16k,64k --dtype bf16
//! ramba-bench hsa --backend cuda --batch 1 --lengths 256k,1m,4m --check 2048
//! ramba-bench scan --backend cuda --batch 8 --lengths 4k,16k,64k --block 8x4k
//! ramba-bench scan --backend cuda --batch 1 --lengths 1m --check 4096
//! ramba-bench train --backend cuda --config configs/ramba-small.toml --precisions f32,bf16
//! ramba-bench matmul --backend cuda --rows 32768 --shapes 640x2836,1280x640,640x50280
//! ```

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use burn::tensor::DType;
use clap::{Args, Parser, Subcommand};
use ramba_core::backend::{dispatch, BackendInfo, BackendKind, BackendTask};
use ramba_core::config::{Arch, ModelConfig};
use ramba_core::ops::linear::MatmulKernel;
use ramba_core::ops::RambaBackend;
use ramba_core::precision::{dtype_name, Precision};
use ramba_eval::bench::attention::{self, AttentionBenchSettings};
use ramba_eval::bench::hsa::{self, HsaBenchSettings};
use ramba_eval::bench::matmul::{self, MatmulBenchSettings};
use ramba_eval::bench::scan::{self, ScanBenchSettings};
use ramba_eval::bench::timing;
use ramba_eval::bench::train::{self, TrainBenchCase};
use ramba_experiment::ExperimentConfig;

/// Kernel benchmarks.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Chunk selection, HSA forward and forward+backward.
    Hsa(HsaArgs),
    /// Mamba-2 selective scan forward and forward+backward; a Mamba-2 block training step.
    Scan(ScanArgs),
    /// Fused causal / sliding-window attention forward and forward+backward.
    Attention(AttentionArgs),
    /// Training throughput of an experiment's model: tokens/s, step ms, first step, peak
    /// memory and MFU per architecture, precision and batch.
    Train(TrainArgs),
    /// The linear layers' products (forward, input and weight gradients) under each matmul
    /// kernel the CubeCL backends can name.
    Matmul(MatmulArgs),
}

#[derive(Args, Debug)]
struct MatmulArgs {
    #[arg(long, default_value = "auto", help = "auto, cuda, wgpu or cpu")]
    backend: BackendKind,
    #[arg(long, default_value_t = 32768, help = "tokens a step (batch × seq)")]
    rows: usize,
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "640x2836,1280x640,640x50280",
        help = "layer shapes D_INxD_OUT (default: ramba-small's in_proj, out_proj, LM head)"
    )]
    shapes: Vec<String>,
    #[arg(long, default_value = "bf16", help = "operand dtype: bf16, f16 or f32")]
    dtype: String,
    #[arg(
        long,
        value_delimiter = ',',
        help = "kernels to compare (default: all), e.g. default,specialized_mma"
    )]
    kernels: Vec<String>,
    #[arg(
        long,
        default_value_t = 200.0,
        help = "timing budget per measurement, ms"
    )]
    budget_ms: f64,
    #[arg(long, help = "append the rows as JSON lines to this file")]
    json: Option<PathBuf>,
}

struct MatmulTask {
    settings: MatmulBenchSettings,
    json: Option<PathBuf>,
}

impl BackendTask for MatmulTask {
    type Output = Result<()>;

    fn run<B: RambaBackend>(self, device: B::Device, info: &BackendInfo) -> Result<()> {
        println!("{info}");
        let rows = matmul::run::<B>(&device, &self.settings);
        print!("{}", matmul::table(&rows));
        if let Some(path) = &self.json {
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("opening {}", path.display()))?;
            for r in &rows {
                writeln!(f, "{}", serde_json::to_string(r)?)?;
            }
        }
        Ok(())
    }
}

/// `640x2836` → `(640, 2836)`.
fn parse_shape(s: &str) -> Result<(usize, usize)> {
    let parse = |part: &str| -> Result<usize> {
        match part.trim().parse::<usize>() {
            Ok(n) if n > 0 => Ok(n),
            _ => bail!("--shapes: `{s}` is not D_INxD_OUT like 640x2836"),
        }
    };
    let (a, b) = s
        .split_once('x')
        .with_context(|| format!("--shapes: `{s}` is not D_INxD_OUT like 640x2836"))?;
    Ok((parse(a)?, parse(b)?))
}

#[derive(Args, Debug)]
struct TrainArgs {
    #[arg(
        long,
        help = "experiment file whose [model] and data.seq_len are benchmarked"
    )]
    config: PathBuf,
    #[arg(
        long = "set",
        help = "override a key of the experiment, KEY=VALUE (repeatable)"
    )]
    set: Vec<String>,
    #[arg(long, default_value = "auto", help = "auto, cuda, wgpu or cpu")]
    backend: BackendKind,
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "ramba,mamba2,transformer,swa_hsa",
        help = "architectures (model.arch values)"
    )]
    archs: Vec<String>,
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "bf16",
        help = "compute precisions: f32, bf16, f16 (auto: the backend's default)"
    )]
    precisions: Vec<Precision>,
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "2,8",
        help = "batch sizes (rows of data.seq_len tokens)"
    )]
    batches: Vec<usize>,
    #[arg(
        long,
        default_value_t = 8,
        help = "timed steps (the median is reported)"
    )]
    steps: usize,
    #[arg(
        long,
        default_value_t = 2,
        help = "steps before timing (the first compiles)"
    )]
    warmup: usize,
    #[arg(long, help = "append the rows as JSON lines to this file")]
    json: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct AttentionArgs {
    #[arg(long, default_value = "auto", help = "auto, cuda, wgpu or cpu")]
    backend: BackendKind,
    #[arg(long, default_value_t = 8, help = "batch size")]
    batch: usize,
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "4k,16k,64k",
        help = "sequence lengths (k = 1024, m = 1024k)"
    )]
    lengths: Vec<String>,
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "causal,512,4096",
        help = "masks: `causal` and/or sliding windows in tokens"
    )]
    windows: Vec<String>,
    #[arg(long, default_value = "bf16", help = "input dtype: bf16, f16 or f32")]
    dtype: String,
    #[arg(long, default_value_t = 16, help = "query heads")]
    heads_q: usize,
    #[arg(long, default_value_t = 1, help = "KV heads")]
    heads_kv: usize,
    #[arg(long, default_value_t = 64, help = "head dim")]
    head_dim: usize,
    #[arg(
        long,
        default_value_t = 16384,
        help = "run the dense reference where batch·seq is at most this"
    )]
    reference_max_tokens: usize,
    #[arg(
        long,
        default_value_t = 300.0,
        help = "timing budget per measurement, ms"
    )]
    budget_ms: f64,
    #[arg(long, help = "append the rows as JSON lines to this file")]
    json: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct ScanArgs {
    #[arg(long, default_value = "auto", help = "auto, cuda, wgpu or cpu")]
    backend: BackendKind,
    #[arg(long, default_value_t = 8, help = "batch size")]
    batch: usize,
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "4k,16k,64k",
        help = "sequence lengths (k = 1024, m = 1024k); empty for none"
    )]
    lengths: Vec<String>,
    #[arg(long, default_value = "bf16", help = "input dtype: bf16, f16 or f32")]
    dtype: String,
    #[arg(long, default_value_t = 32, help = "heads")]
    heads: usize,
    #[arg(long, default_value_t = 64, help = "head dim P")]
    head_dim: usize,
    #[arg(long, default_value_t = 1, help = "groups sharing B and C")]
    groups: usize,
    #[arg(long, default_value_t = 128, help = "state size N")]
    d_state: usize,
    #[arg(long, default_value_t = 256, help = "chunk of the reference")]
    chunk: usize,
    #[arg(
        long,
        default_value_t = 32768,
        help = "run the reference where batch·seq is at most this"
    )]
    reference_max_tokens: usize,
    #[arg(
        long,
        default_value_t = 0,
        help = "check the last N tokens of row 0 against the reference, in f32"
    )]
    check: usize,
    #[arg(
        long,
        help = "also time a Mamba-2 block (d_model 1024) training step at BxL, e.g. 8x4k"
    )]
    block: Option<String>,
    #[arg(
        long,
        default_value_t = 0,
        help = "instead of timing, run this many block steps (for counting launches under a profiler)"
    )]
    block_steps: usize,
    #[arg(
        long,
        default_value_t = 300.0,
        help = "timing budget per measurement, ms"
    )]
    budget_ms: f64,
    #[arg(long, help = "append the rows as JSON lines to this file")]
    json: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct HsaArgs {
    #[arg(long, default_value = "auto", help = "auto, cuda, wgpu or cpu")]
    backend: BackendKind,
    #[arg(long, default_value_t = 8, help = "batch size")]
    batch: usize,
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "4k,16k,64k",
        help = "sequence lengths (k = 1024, m = 1024k)"
    )]
    lengths: Vec<String>,
    #[arg(long, default_value = "bf16", help = "input dtype: bf16, f16 or f32")]
    dtype: String,
    #[arg(long, default_value_t = 16, help = "query heads")]
    heads_q: usize,
    #[arg(long, default_value_t = 1, help = "KV heads")]
    heads_kv: usize,
    #[arg(long, default_value_t = 64, help = "head dim")]
    head_dim: usize,
    #[arg(long, default_value_t = 64, help = "chunk size S")]
    chunk: usize,
    #[arg(long, default_value_t = 8, help = "top-k chunks")]
    top_k: usize,
    #[arg(
        long,
        default_value_t = 64,
        help = "retrieval query / landmark width per KV head"
    )]
    retrieval_dim: usize,
    #[arg(
        long,
        default_value_t = 131072,
        help = "run the reference ops where batch·seq is at most this"
    )]
    reference_max_tokens: usize,
    #[arg(
        long,
        default_value_t = 0,
        help = "check the last N tokens' output, dq and dweights against the reference"
    )]
    check: usize,
    #[arg(
        long,
        default_value_t = 300.0,
        help = "timing budget per measurement, ms"
    )]
    budget_ms: f64,
    #[arg(long, help = "append the rows as JSON lines to this file")]
    json: Option<PathBuf>,
}

fn parse_len(s: &str) -> Result<usize> {
    let t = s.trim().to_ascii_lowercase();
    let (num, mult) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 1usize << 10),
        Some('m') => (&t[..t.len() - 1], 1 << 20),
        _ => (&t[..], 1),
    };
    let n: usize = num
        .parse()
        .with_context(|| format!("--lengths: `{s}` is not a length like 4k, 1m or 4096"))?;
    n.checked_mul(mult)
        .filter(|&n| n > 0)
        .with_context(|| format!("--lengths: `{s}` is zero or too large"))
}

fn parse_dtype(s: &str) -> Result<DType> {
    Ok(match s {
        "bf16" => DType::BF16,
        "f16" => DType::F16,
        "f32" => DType::F32,
        other => bail!("--dtype: `{other}` is not one of bf16, f16, f32"),
    })
}

struct HsaTask {
    settings: HsaBenchSettings,
    json: Option<PathBuf>,
}

impl BackendTask for HsaTask {
    type Output = Result<()>;

    fn run<B: RambaBackend>(self, device: B::Device, info: &BackendInfo) -> Result<()> {
        println!("{info}");
        let s = &self.settings;
        let ceil = hsa::ceilings::<B>(&device, s.dtype, s.budget_ms);
        let rows = hsa::run::<B>(&device, &info.kind.to_string(), s);
        print!("{}", hsa::table(&rows, &ceil, s));
        if let Some(path) = &self.json {
            append_json(path, &ceil, &rows)?;
        }
        Ok(())
    }
}

struct AttentionTask {
    settings: AttentionBenchSettings,
    json: Option<PathBuf>,
}

impl BackendTask for AttentionTask {
    type Output = Result<()>;

    fn run<B: RambaBackend>(self, device: B::Device, info: &BackendInfo) -> Result<()> {
        println!("{info}");
        let s = &self.settings;
        let ceil = timing::ceilings::<B>(&device, s.dtype, s.budget_ms);
        let rows = attention::run::<B>(&device, &info.kind.to_string(), s);
        print!("{}", attention::table(&rows, &ceil, s));
        if let Some(path) = &self.json {
            append_json(path, &ceil, &rows)?;
        }
        Ok(())
    }
}

/// Appends the ceilings and the rows to `path` as JSON lines.
fn append_json<T: serde::Serialize>(
    path: &PathBuf,
    ceil: &timing::Ceilings,
    rows: &[T],
) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    writeln!(f, "{}", serde_json::json!({ "ceilings": ceil }))?;
    for r in rows {
        writeln!(f, "{}", serde_json::to_string(r)?)?;
    }
    Ok(())
}

/// `causal` → `None`, `512` → `Some(512)`.
fn parse_window(s: &str) -> Result<Option<usize>> {
    if s.trim() == "causal" {
        return Ok(None);
    }
    let w = parse_len(s)
        .with_context(|| format!("--windows: `{s}` is neither `causal` nor a length"))?;
    if w == 0 {
        bail!("--windows: a window of 0 tokens sees nothing");
    }
    Ok(Some(w))
}

struct ScanTask {
    settings: ScanBenchSettings,
    block: Option<(usize, usize)>,
    block_steps: usize,
    json: Option<PathBuf>,
}

impl BackendTask for ScanTask {
    type Output = Result<()>;

    fn run<B: RambaBackend>(self, device: B::Device, info: &BackendInfo) -> Result<()> {
        println!("{info}");
        let s = &self.settings;
        if let (Some((batch, seq)), true) = (self.block, self.block_steps > 0) {
            scan::block_steps::<B>(&device, batch, seq, self.block_steps);
            println!(
                "ran {} Mamba-2 block steps at {batch} x {seq}",
                self.block_steps
            );
            return Ok(());
        }
        let ceil = timing::ceilings::<B>(&device, s.dtype, s.budget_ms);
        let rows = scan::run::<B>(&device, &info.kind.to_string(), s);
        print!("{}", scan::table(&rows, &ceil, s));
        let decode_batch = s.shapes.first().map_or(1, |&(b, _)| b);
        let (scan_us, conv_us) = scan::decode_step_us::<B>(&device, s, decode_batch);
        println!(
            "decode step per layer, batch {decode_batch}: scan {scan_us:.1} µs, conv {conv_us:.1} µs (200 back-to-back steps)"
        );
        if let Some((batch, seq)) = self.block {
            let ms = scan::block_step_ms::<B>(&device, batch, seq, s.budget_ms);
            println!(
                "Mamba-2 block (d_model 1024) training step, f32, {batch} x {seq}: {ms:.2} ms"
            );
        }
        if let Some(path) = &self.json {
            append_json(path, &ceil, &rows)?;
        }
        Ok(())
    }
}

struct TrainTask {
    model: ModelConfig,
    seq: usize,
    archs: Vec<Arch>,
    precisions: Vec<Precision>,
    batches: Vec<usize>,
    steps: usize,
    warmup: usize,
    json: Option<PathBuf>,
}

impl BackendTask for TrainTask {
    type Output = Result<()>;

    fn run<B: RambaBackend>(self, device: B::Device, info: &BackendInfo) -> Result<()> {
        println!("{info}");
        // One table per precision: its matmul ceiling and its rows.
        let mut tables = vec![];
        for precision in &self.precisions {
            let dtype = precision.compute_dtype(info.kind, |d| B::supports_dtype(&device, d))?;
            // The ceiling in the compute dtype, before any model takes memory: an 8192³ matmul
            // on CUDA, 1024³ elsewhere (a CPU or lavapipe would take minutes).
            let cuda = info.kind == BackendKind::Cuda;
            let n = if cuda { 8192 } else { 1024 };
            let ceiling = timing::matmul_tflops::<B>(&device, dtype, n, cuda, 300.0);
            println!(
                "{} matmul ceiling ({n}³): {ceiling:.2} TFLOP/s",
                dtype_name(dtype)
            );
            let mut rows = vec![];
            for &arch in &self.archs {
                for &batch in &self.batches {
                    let mut model = self.model.clone();
                    model.arch = arch;
                    model.validate().context("the benchmarked [model]")?;
                    let case = TrainBenchCase {
                        model,
                        dtype,
                        batch,
                        seq: self.seq,
                        steps: self.steps,
                        warmup: self.warmup,
                    };
                    let row = train::run::<B>(&device, &case, ceiling);
                    print!("{}", train::table(std::slice::from_ref(&row), ceiling));
                    rows.push(row);
                }
            }
            tables.push((ceiling, rows));
        }
        println!();
        for (ceiling, rows) in &tables {
            print!("{}", train::table(rows, *ceiling));
        }
        let rows = tables.iter().flat_map(|(_, rows)| rows);
        if let Some(path) = &self.json {
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("opening {}", path.display()))?;
            for r in rows {
                writeln!(f, "{}", serde_json::to_string(r)?)?;
            }
        }
        Ok(())
    }
}

/// `8x4k` → `(8, 4096)`.
fn parse_batch_len(s: &str) -> Result<(usize, usize)> {
    let (b, l) = s
        .split_once('x')
        .with_context(|| format!("--block: `{s}` is not BxL like 8x4k"))?;
    let b: usize = b
        .trim()
        .parse()
        .with_context(|| format!("--block: `{b}` is not a batch size"))?;
    if b == 0 {
        bail!("--block: the batch size must be at least 1");
    }
    Ok((b, parse_len(l)?))
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Hsa(a) => {
            let lengths = a
                .lengths
                .iter()
                .map(|s| parse_len(s))
                .collect::<Result<Vec<_>>>()?;
            if a.heads_kv == 0 || a.heads_q % a.heads_kv != 0 {
                bail!("--heads-q must be a positive multiple of --heads-kv");
            }
            let settings = HsaBenchSettings {
                shapes: lengths.iter().map(|&l| (a.batch, l)).collect(),
                heads_q: a.heads_q,
                heads_kv: a.heads_kv,
                head_dim: a.head_dim,
                chunk: a.chunk,
                top_k: a.top_k,
                retrieval_dim: a.retrieval_dim,
                dtype: parse_dtype(&a.dtype)?,
                reference_max_tokens: a.reference_max_tokens,
                check_tokens: a.check,
                budget_ms: a.budget_ms,
            };
            dispatch(
                a.backend,
                HsaTask {
                    settings,
                    json: a.json,
                },
            )?
        }
        Command::Attention(a) => {
            let lengths = a
                .lengths
                .iter()
                .map(|s| parse_len(s))
                .collect::<Result<Vec<_>>>()?;
            if a.heads_kv == 0 || a.heads_q % a.heads_kv != 0 {
                bail!("--heads-q must be a positive multiple of --heads-kv");
            }
            let settings = AttentionBenchSettings {
                shapes: lengths.iter().map(|&l| (a.batch, l)).collect(),
                heads_q: a.heads_q,
                heads_kv: a.heads_kv,
                head_dim: a.head_dim,
                windows: a
                    .windows
                    .iter()
                    .map(|w| parse_window(w))
                    .collect::<Result<Vec<_>>>()?,
                dtype: parse_dtype(&a.dtype)?,
                reference_max_tokens: a.reference_max_tokens,
                budget_ms: a.budget_ms,
            };
            dispatch(
                a.backend,
                AttentionTask {
                    settings,
                    json: a.json,
                },
            )?
        }
        Command::Train(a) => {
            let experiment = ExperimentConfig::load(&a.config, &a.set)
                .with_context(|| format!("--config {}", a.config.display()))?;
            let archs = a
                .archs
                .iter()
                .map(|s| {
                    toml::Value::String(s.trim().to_string())
                        .try_into::<Arch>()
                        .map_err(|_| {
                            anyhow::anyhow!(
                                "--archs: `{s}` is not one of ramba, mamba2, transformer, \
                                 swa_hsa, mamba_nsa"
                            )
                        })
                })
                .collect::<Result<Vec<_>>>()?;
            if a.batches.contains(&0) || a.steps == 0 {
                bail!("--batches and --steps must be at least 1");
            }
            dispatch(
                a.backend,
                TrainTask {
                    model: experiment.model,
                    seq: experiment.data.seq_len,
                    archs,
                    precisions: a.precisions,
                    batches: a.batches,
                    steps: a.steps,
                    warmup: a.warmup,
                    json: a.json,
                },
            )?
        }
        Command::Matmul(a) => {
            let shapes = a
                .shapes
                .iter()
                .map(|s| parse_shape(s))
                .collect::<Result<Vec<_>>>()?;
            let kernels = if a.kernels.is_empty() {
                MatmulKernel::all()
            } else {
                a.kernels
                    .iter()
                    .map(|k| {
                        k.trim()
                            .parse::<MatmulKernel>()
                            .map_err(|e| anyhow::anyhow!("--kernels: {e}"))
                    })
                    .collect::<Result<Vec<_>>>()?
            };
            if a.rows == 0 {
                bail!("--rows must be at least 1");
            }
            let settings = MatmulBenchSettings {
                rows: a.rows,
                shapes,
                dtype: parse_dtype(&a.dtype)?,
                kernels,
                flush_l2: a.backend == BackendKind::Cuda,
                budget_ms: a.budget_ms,
            };
            dispatch(
                a.backend,
                MatmulTask {
                    settings,
                    json: a.json,
                },
            )?
        }
        Command::Scan(a) => {
            let lengths = a
                .lengths
                .iter()
                .filter(|s| !s.trim().is_empty())
                .map(|s| parse_len(s))
                .collect::<Result<Vec<_>>>()?;
            if a.groups == 0 || a.heads % a.groups != 0 {
                bail!("--heads must be a positive multiple of --groups");
            }
            let block = a.block.as_deref().map(parse_batch_len).transpose()?;
            if a.block_steps > 0 && block.is_none() {
                bail!("--block-steps needs --block BxL");
            }
            let settings = ScanBenchSettings {
                shapes: lengths.iter().map(|&l| (a.batch, l)).collect(),
                heads: a.heads,
                head_dim: a.head_dim,
                groups: a.groups,
                d_state: a.d_state,
                chunk: a.chunk,
                dtype: parse_dtype(&a.dtype)?,
                reference_max_tokens: a.reference_max_tokens,
                check_tokens: a.check,
                budget_ms: a.budget_ms,
            };
            dispatch(
                a.backend,
                ScanTask {
                    settings,
                    block,
                    block_steps: a.block_steps,
                    json: a.json,
                },
            )?
        }
    }
}
