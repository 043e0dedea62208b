//! `ramba-train --config configs/X.toml [--set key=value ...] [--backend ...] [--resume runs/NAME]`
//! and `ramba-train --config configs/X.toml --compare ramba,mamba2,...` (architecture comparison)

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use ramba_core::backend::{dispatch, BackendInfo, BackendKind, BackendTask};
use ramba_core::ops::RambaBackend;
use ramba_eval::ruler::Scoring;
use ramba_experiment::ExperimentConfig;
use ramba_train::compare::{compare, parse_archs, CompareSettings};
use ramba_train::trainer::{absolutize_paths, train, RunRequest, TrainOutcome};

/// Train a ramba model from a TOML experiment file.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    /// Experiment file (sections [model] [data] [train] [eval] [run]).
    #[arg(
        long,
        conflicts_with = "resume",
        help = "experiment TOML file (not with --resume: a resumed run uses its own config; \
                change it with --set)"
    )]
    config: Option<PathBuf>,
    /// Overrides, e.g. --set train.lr=1e-3 --set model.d_model=256.
    #[arg(
        long = "set",
        value_name = "KEY=VALUE",
        help = "override a config key (repeatable), e.g. train.lr=1e-3"
    )]
    overrides: Vec<String>,
    /// auto | cuda | wgpu | cpu (overrides run.backend).
    #[arg(
        long,
        help = "backend: auto (CUDA, else wgpu, else CPU), cuda, wgpu or cpu"
    )]
    backend: Option<BackendKind>,
    /// Continue the run in this folder from its newest checkpoint.
    #[arg(
        long,
        value_name = "RUN_DIR",
        help = "continue runs/NAME from its newest checkpoint"
    )]
    resume: Option<PathBuf>,
    /// Checkpoint and exit after this many steps (the LR schedule still spans train.steps).
    #[arg(
        long,
        value_name = "STEP",
        value_parser = clap::value_parser!(u64).range(1..),
        help = "checkpoint and exit once STEP steps are done; continue later with --resume"
    )]
    stop_at: Option<u64>,
    /// Train and evaluate the experiment once per architecture; one table.
    #[arg(
        long,
        value_name = "ARCHS",
        conflicts_with_all = ["resume", "stop_at"],
        help = "train the config once per arch (e.g. ramba,mamba2,transformer,swa_hsa,mamba_nsa), \
                evaluate each the same way and write one table to runs/NAME-compare"
    )]
    compare: Option<String>,
    /// Held-out text for the comparison's perplexity columns.
    #[arg(
        long,
        value_name = "FILE",
        requires = "compare",
        help = "held-out text: perplexity by length in the comparison"
    )]
    compare_text: Option<PathBuf>,
    /// RULER tasks of the comparison.
    #[arg(
        long,
        value_name = "TASKS",
        requires = "compare",
        value_delimiter = ',',
        default_value = "niah,niah_multi_query,variable_tracking",
        help = "RULER tasks in the comparison (comma list; \"\" for none)"
    )]
    compare_tasks: Vec<String>,
}

/// Interrupts closer together than this count as one.
const SECOND_CTRL_C: Duration = Duration::from_millis(250);

struct TrainTask(RunRequest);

struct CompareTask(CompareSettings);

impl BackendTask for CompareTask {
    type Output = Result<()>;
    fn run<B: RambaBackend>(self, device: B::Device, info: &BackendInfo) -> Self::Output {
        let s = &self.0;
        let report = compare::<B>(s, device, info, |m| eprintln!("{m}"))?;
        let out = s
            .config
            .run
            .dir
            .join(format!("{}-compare", s.config.run.name));
        report.write(&out)?;
        println!("{}", report.markdown());
        eprintln!(
            "wrote {}/compare.{{json,csv,md}} and compare_*.png",
            out.display()
        );
        Ok(())
    }
}

impl BackendTask for TrainTask {
    type Output = Result<TrainOutcome>;
    fn run<B: RambaBackend>(self, device: B::Device, info: &BackendInfo) -> Self::Output {
        train::<B>(self.0, device, info)
    }
}

fn load(cli: &Cli) -> Result<(ExperimentConfig, bool)> {
    match (&cli.config, &cli.resume) {
        (Some(_), Some(_)) => bail!("give --config or --resume, not both"),
        (None, Some(run)) => {
            let path = run.join("config.toml");
            if !path.exists() {
                bail!(
                    "--resume {}: no config.toml there (is it a run folder?)",
                    run.display()
                );
            }
            let mut cfg = ExperimentConfig::load(&path, &cli.overrides)?;
            // The run folder is where it is now, whatever run.dir said when it started.
            cfg.run.dir = run.parent().map(Path::to_path_buf).unwrap_or_default();
            cfg.run.name = run
                .file_name()
                .context("--resume needs a run folder path")?
                .to_string_lossy()
                .into_owned();
            Ok((cfg, true))
        }
        (Some(path), None) => {
            let mut cfg = ExperimentConfig::load(path, &cli.overrides)?;
            let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
            let base = if base.as_os_str().is_empty() {
                PathBuf::from(".")
            } else {
                base
            };
            absolutize_paths(&mut cfg, &std::fs::canonicalize(&base).unwrap_or(base));
            Ok((cfg, false))
        }
        (None, None) => bail!("give --config configs/X.toml (or --resume runs/NAME)"),
    }
}

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let cli = Cli::parse();
    let (mut cfg, resume) = load(&cli)?;
    if let Some(b) = cli.backend {
        cfg.run.backend = b;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let mut first: Option<Instant> = None;
    // SIGINT, and with ctrlc's `termination` feature SIGTERM and SIGHUP (what `timeout`, job
    // schedulers and a closed terminal send): all save a checkpoint.
    ctrlc::set_handler(move || match first {
        // One interrupt can arrive twice at once (GNU `timeout` signals the child and its own
        // process group); only a later, deliberate second Ctrl-C skips the checkpoint.
        Some(t) if t.elapsed() >= SECOND_CTRL_C => {
            eprintln!("second interrupt: exiting without a checkpoint");
            std::process::exit(130);
        }
        Some(_) => {}
        None => {
            first = Some(Instant::now());
            flag.store(true, Ordering::SeqCst);
            eprintln!(
                "interrupted (Ctrl-C or SIGTERM): finishing this step and saving a checkpoint \
                 (interrupt again to quit now)"
            );
        }
    })
    .context("installing the Ctrl-C/SIGTERM handler")?;
    let backend = cfg.run.backend;
    if let Some(archs) = &cli.compare {
        let settings = CompareSettings {
            archs: parse_archs(archs)?,
            config: cfg,
            text: cli.compare_text.clone(),
            ruler_tasks: cli
                .compare_tasks
                .iter()
                .map(|t| t.trim().to_string())
                .filter(|t| !t.is_empty())
                .collect(),
            scoring: Scoring::FreeGeneration,
            ppl_windows: 8,
            stop,
        };
        return dispatch(backend, CompareTask(settings))?;
    }
    let outcome = dispatch(
        backend,
        TrainTask(RunRequest {
            config: cfg,
            resume,
            stop,
            stop_at: cli.stop_at,
        }),
    )??;
    eprintln!(
        "done: {} steps in {:.1}s{}{}; run folder {}",
        outcome.step,
        outcome.train_seconds,
        outcome
            .final_loss
            .map(|l| format!(", final loss {l:.4}"))
            .unwrap_or_default(),
        outcome
            .final_val_loss
            .map(|v| format!(", val loss {v:.4}"))
            .unwrap_or_default(),
        outcome.run_dir.display()
    );
    if outcome.interrupted {
        std::process::exit(130);
    }
    Ok(())
}
