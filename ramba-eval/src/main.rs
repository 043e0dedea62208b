//! `ramba-eval passkey --run runs/NAME ...` and `ramba-eval ppl --run runs/NAME --text FILE ...`

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use ramba_core::backend::{dispatch, BackendInfo, BackendKind, BackendTask};
use ramba_core::ops::RambaBackend;
use ramba_eval::passkey::{run_passkey, Haystack, PasskeySettings};
use ramba_eval::perplexity::{perplexity_by_length, write_ppl};
use ramba_eval::run::load_run;

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
    /// Perplexity by context length on a text file.
    Ppl(PplArgs),
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
}

#[derive(Args, Debug, Clone)]
struct PasskeyArgs {
    #[command(flatten)]
    common: Common,
    /// Context lengths: 1k,4k,16k,64k or plain numbers.
    #[arg(
        long,
        value_delimiter = ',',
        help = "context lengths, e.g. 1k,4k,16k (k = 1024, M = 1024k)"
    )]
    lengths: Option<Vec<String>>,
    /// Depths as start:end:step or a list.
    #[arg(
        long,
        default_value = "0:1:0.25",
        help = "key depths: start:end:step (e.g. 0:1:0.1) or a list 0,0.5,1"
    )]
    depths: String,
    /// Trials per (length, depth).
    #[arg(
        long,
        default_value_t = 5,
        value_parser = clap::value_parser!(u32).range(1..=MAX_TRIALS),
        help = "trials per cell, each with a different key (1 or more)"
    )]
    trials: u32,
    /// Random-token haystack instead of the filler sentences.
    #[arg(
        long,
        help = "use a random-token haystack (the needle variant) instead of filler"
    )]
    random_tokens: bool,
    /// Seed of the keys.
    #[arg(long, default_value_t = 1234, help = "seed of the keys")]
    seed: u64,
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

struct EvalTask(Command);

impl BackendTask for EvalTask {
    type Output = Result<()>;
    fn run<B: RambaBackend>(self, device: B::Device, info: &BackendInfo) -> Result<()> {
        eprintln!("{info}");
        match self.0 {
            Command::Passkey(a) => {
                let run = load_run::<B>(&a.common.run, &device)?;
                eprintln!(
                    "loaded {} ({:?}, trained at {} tokens)",
                    run.checkpoint.display(),
                    run.config.model.arch,
                    run.config.data.seq_len
                );
                let lengths = match &a.lengths {
                    Some(l) => l.iter().map(|s| parse_len(s)).collect::<Result<Vec<_>>>()?,
                    None => run
                        .config
                        .eval
                        .passkey_multiples
                        .iter()
                        .map(|m| m * run.config.data.seq_len)
                        .collect(),
                };
                let depths = parse_depths(&a.depths)?;
                let settings = PasskeySettings {
                    lengths,
                    depths,
                    trials: a.trials as usize,
                    haystack: if a.random_tokens {
                        Haystack::RandomTokens
                    } else {
                        Haystack::Filler
                    },
                    seed: a.seed,
                    max_context: run.config.eval.max_context,
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
                for c in report.cells.iter().filter(|c| c.skipped.is_some()).take(1) {
                    eprintln!("note: {}", c.skipped.as_deref().unwrap_or_default());
                }
                let out = a.common.out.unwrap_or_else(|| run.dir.join("eval"));
                let stem = if a.random_tokens {
                    "passkey_needle"
                } else {
                    "passkey"
                };
                report.write(&out, stem)?;
                eprintln!("wrote {}/{stem}.{{json,csv,png}}", out.display());
            }
            Command::Ppl(a) => {
                let run = load_run::<B>(&a.common.run, &device)?;
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
                if let Some(l) = lengths.iter().find(|&&l| l > run.config.eval.max_context) {
                    bail!("--lengths: {l} exceeds eval.max_context = {}; longer contexts need streaming inference", run.config.eval.max_context);
                }
                let rows = perplexity_by_length(
                    &run.model,
                    &tokens,
                    &lengths,
                    usize::try_from(a.max_windows).unwrap_or(usize::MAX),
                    &device,
                    |m| eprintln!("{m}"),
                );
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
        }
        Ok(())
    }
}

fn main() {
    let cli = Cli::parse();
    let backend = match &cli.command {
        Command::Passkey(a) => a.common.backend,
        Command::Ppl(a) => a.common.backend,
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
