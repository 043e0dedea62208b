//! The training loop. Read it top to bottom: set-up, resume, then per step: batches → forward →
//! loss → backward → clip → AdamW; metrics, validation and checkpoints on their cadence; the
//! passkey report at the end.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use burn::backend::Autodiff;
use burn::module::AutodiffModule;
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::prelude::*;
use ramba_core::backend::BackendInfo;
use ramba_core::checkpoint::{latest_checkpoint, load_weights};
use ramba_core::experiment::ExperimentConfig;
use ramba_core::model::{lm_loss, LanguageModel, ModelState};
use ramba_core::nn::block::BlockState;
use ramba_core::nn::mamba2::Mamba2State;
use ramba_core::ops::RambaBackend;
use ramba_data::{Batch, DataPipeline, SourceConfig, Split};
use ramba_eval::passkey::{run_passkey, Haystack, PasskeyReport, PasskeySettings};
use ramba_report::{line_chart, read_jsonl, truncate_after_step, MetricsLog, Progress, Series};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::optim::{adamw, clip_and_split, decayed_params, AdamWPair};
use crate::schedule::learning_rate;
use crate::state::{load_optimizer, read_state, save_checkpoint, TrainState};

/// How a run ended.
#[derive(Debug)]
pub struct TrainOutcome {
    /// The run folder.
    pub run_dir: PathBuf,
    /// Optimizer steps completed.
    pub step: u64,
    /// Stopped early by Ctrl-C (a checkpoint was saved).
    pub interrupted: bool,
    /// Last training loss.
    pub final_loss: f64,
    /// Last validation loss.
    pub final_val_loss: Option<f64>,
    /// Passkey report, when `eval.passkey_after_training`.
    pub passkey: Option<PasskeyReport>,
    /// Wall time of the training loop (seconds).
    pub train_seconds: f64,
}

/// Where a run's files go, and whether it continues an existing run.
pub struct RunRequest {
    /// Resolved config (its data paths already absolute).
    pub config: ExperimentConfig,
    /// Continue from the run folder's newest checkpoint.
    pub resume: bool,
    /// Set by the Ctrl-C handler; the loop checkpoints and stops when it flips.
    pub stop: Arc<AtomicBool>,
    /// Checkpoint and stop once this many steps are done (the schedule still spans
    /// `train.steps`), e.g. for time-limited jobs; resume later with `--resume`.
    pub stop_at: Option<u64>,
}

#[derive(Serialize)]
struct TrainRecord {
    step: u64,
    loss: f64,
    lr: f64,
    grad_norm: f64,
    tokens_per_s: f64,
    tokens: u64,
    elapsed_s: f64,
}

#[derive(Serialize)]
struct ValRecord {
    step: u64,
    val_loss: f64,
}

/// Makes relative data and tokenizer paths absolute against `base` (the config file's folder),
/// so the config stored in the run folder works from anywhere.
pub fn absolutize_paths(cfg: &mut ExperimentConfig, base: &Path) {
    let abs = |p: &mut PathBuf| {
        if p.is_relative() {
            *p = base.join(&*p);
        }
    };
    for s in &mut cfg.data.sources {
        match s {
            SourceConfig::Text { path, .. } | SourceConfig::Shards { path, .. } => abs(path),
            _ => {}
        }
    }
    if cfg.data.tokenizer != "byte" && Path::new(&cfg.data.tokenizer).is_relative() {
        cfg.data.tokenizer = base
            .join(&cfg.data.tokenizer)
            .to_string_lossy()
            .into_owned();
    }
}

/// Trains on backend `B` (wrapped in autodiff). See the module docs.
pub fn train<B: RambaBackend>(
    req: RunRequest,
    device: B::Device,
    info: &BackendInfo,
) -> Result<TrainOutcome> {
    type Ad<B> = Autodiff<B>;
    let cfg = &req.config;
    let t = &cfg.train;
    let run_dir = cfg.run_dir();
    std::fs::create_dir_all(&run_dir).with_context(|| format!("creating {}", run_dir.display()))?;
    let log = |msg: &str| eprintln!("{msg}");

    // ---- Data
    let data = DataPipeline::from_config(&cfg.data, &run_dir)?;
    if data.vocab_size() > cfg.model.vocab_size {
        bail!(
            "model.vocab_size = {} is smaller than the tokenizer's vocabulary ({}, tokenizer \"{}\")",
            cfg.model.vocab_size,
            data.vocab_size(),
            cfg.data.tokenizer
        );
    }
    for line in data.describe() {
        log(&format!("data: {line}"));
    }

    // ---- Model and optimizer, fresh or resumed
    <Ad<B> as Backend>::seed(&device, cfg.run.seed);
    let mut model: LanguageModel<Ad<B>> = cfg.model.init(&device);
    let decay = decayed_params(&model);
    let mut optim = AdamWPair {
        decay: adamw(t, t.weight_decay).init(),
        no_decay: adamw(t, 0.0).init(),
    };
    let mut start = 0;
    let mut tokens_seen = 0;
    let metrics_path = run_dir.join("metrics.jsonl");
    if req.resume {
        let ckpt = latest_checkpoint(&run_dir)?
            .with_context(|| format!("--resume: {} has no checkpoint", run_dir.display()))?;
        let state = read_state(&ckpt)?;
        model = load_weights(model, &ckpt.join("model.safetensors"))?;
        optim = load_optimizer(&ckpt, &model, optim, &state)?;
        start = state.step;
        tokens_seen = state.tokens;
        truncate_after_step(&metrics_path, start)?;
        log(&format!("resumed {} at step {start}", ckpt.display()));
    } else if latest_checkpoint(&run_dir)?.is_some() {
        bail!(
            "{} already holds a run; resume it with --resume {} or choose another run.name",
            run_dir.display(),
            run_dir.display()
        );
    }
    std::fs::write(run_dir.join("config.toml"), cfg.to_toml()?)
        .context("writing the resolved config")?;
    let mut metrics = MetricsLog::open(&metrics_path, req.resume)?;
    log(&format!(
        "{info}; model {:?}: {} parameters; {} steps of {} x {} tokens (x{} accumulation)",
        cfg.model.arch,
        model.num_params(),
        t.steps,
        cfg.data.batch_size,
        cfg.data.seq_len,
        t.grad_accum
    ));

    // ---- Loop
    let (batch, seq) = (cfg.data.batch_size, cfg.data.seq_len);
    let mut progress = Progress::new(t.steps, start, t.log_every);
    let mut carried: Option<ModelState<B>> = None;
    let started = Instant::now();
    let mut window = (Instant::now(), 0u64);
    let (mut last_loss, mut last_val) = (f64::NAN, None);
    let mut step = start;
    let mut interrupted = false;
    while step < t.steps {
        let lr = learning_rate(step, t.steps, t.lr, t.warmup_ratio, t.min_lr_ratio);
        let mut accum = GradientsAccumulator::new();
        let mut loss_sum = 0.0;
        for micro in 0..t.grad_accum {
            let b = data.batch(Split::Train, step * t.grad_accum as u64 + micro as u64);
            let init = if t.memory_reset {
                carried
                    .take()
                    .map(|s| reset_states(s, cfg, step, micro, &device))
            } else {
                None
            };
            let (inputs, targets, mask) = batch_tensors::<Ad<B>>(&b, t.answer_weight, &device);
            let (logits, state) = model.forward_with_state(inputs, init.map(lift_state));
            if t.memory_reset {
                carried = Some(lower_state(state.detach()));
            }
            let loss = lm_loss(logits, targets, mask).div_scalar(t.grad_accum as f64);
            loss_sum += loss.clone().into_scalar().elem::<f64>();
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            accum.accumulate(&model, grads);
        }
        if !loss_sum.is_finite() {
            bail!("the training loss became {loss_sum} at step {}; the last checkpoint and metrics in {} are kept", step + 1, run_dir.display());
        }
        let (grad_norm, with, without) = clip_and_split(&model, accum.grads(), t.grad_clip, &decay);
        model = optim.step(lr, model, with, without);
        step += 1;
        tokens_seen += (batch * seq * t.grad_accum) as u64;
        window.1 += (batch * seq * t.grad_accum) as u64;
        last_loss = loss_sum;

        let last = step == t.steps;
        if step % t.log_every == 0 || last {
            let tps = window.1 as f64 / window.0.elapsed().as_secs_f64().max(1e-9);
            window = (Instant::now(), 0);
            metrics.log(&TrainRecord {
                step,
                loss: loss_sum,
                lr,
                grad_norm,
                tokens_per_s: tps,
                tokens: tokens_seen,
                elapsed_s: started.elapsed().as_secs_f64(),
            })?;
            progress.update(step, loss_sum, tps, lr);
        }
        if (t.eval_every > 0 && step % t.eval_every == 0) || last {
            let v = validate(&model.valid(), &data, t.val_batches, &device);
            metrics.log(&ValRecord { step, val_loss: v })?;
            progress.println(&format!("step {step}: val loss {v:.4}"));
            last_val = Some(v);
            plot_or_warn(&run_dir, &progress);
        }
        let paused = req.stop_at.is_some_and(|s| step >= s) && !last;
        interrupted = req.stop.load(Ordering::SeqCst);
        if (t.checkpoint_every > 0 && step % t.checkpoint_every == 0)
            || last
            || interrupted
            || paused
        {
            let state = TrainState {
                step,
                seed: cfg.run.seed,
                tokens: tokens_seen,
                param_order: vec![],
            };
            let dir = save_checkpoint(&run_dir, &model, &optim, &state, t.keep_checkpoints)?;
            if interrupted {
                progress.println(&format!(
                    "interrupted: saved {}; continue with --resume {}",
                    dir.display(),
                    run_dir.display()
                ));
                break;
            }
            if paused {
                progress.println(&format!(
                    "stopped at step {step} (--stop-at); continue with --resume {}",
                    run_dir.display()
                ));
                break;
            }
        }
    }
    progress.finish();
    let train_seconds = started.elapsed().as_secs_f64();
    plot_or_warn(&run_dir, &progress);

    // ---- Passkey report
    let mut passkey = None;
    if cfg.eval.passkey_after_training && step == t.steps && step > start {
        let settings = PasskeySettings {
            lengths: cfg.eval.passkey_multiples.iter().map(|m| m * seq).collect(),
            depths: cfg.eval.passkey_depths.clone(),
            trials: cfg.eval.passkey_trials,
            haystack: Haystack::Filler,
            seed: cfg.run.seed ^ 0x9e37_79b9,
            max_context: cfg.eval.max_context,
            batch_tokens: 16_384,
        };
        let report = run_passkey(
            &model.valid(),
            data.tokenizer().as_ref(),
            &settings,
            &device,
            |m| log(m),
        )?;
        let dir = run_dir.join("eval");
        if let Err(e) = report.write(&dir, "passkey") {
            log(&format!("warning: passkey report incomplete: {e:#}"));
        }
        log(&format!(
            "passkey accuracy (rows: key depth, columns: context length; trained at {seq}):\n{}",
            report.table()
        ));
        log(&format!("wrote {}/passkey.{{json,csv,png}}", dir.display()));
        passkey = Some(report);
    }
    Ok(TrainOutcome {
        run_dir,
        step,
        interrupted,
        final_loss: last_loss,
        final_val_loss: last_val,
        passkey,
        train_seconds,
    })
}

/// Token tensors of a batch: inputs, targets `[B, L]` (Int) and the loss weights `[B, L]`
/// (the batch's mask, with answer tokens weighted by `answer_weight`).
pub fn batch_tensors<B: Backend>(
    b: &Batch,
    answer_weight: f64,
    device: &B::Device,
) -> (Tensor<B, 2, Int>, Tensor<B, 2, Int>, Tensor<B, 2>) {
    let shape = [b.batch_size, b.seq_len];
    let mut weights = b.loss_mask.clone();
    for (row, span) in b.answer_spans.iter().enumerate() {
        if let Some((lo, hi)) = *span {
            for w in &mut weights[row * b.seq_len + lo..row * b.seq_len + hi] {
                *w *= answer_weight as f32;
            }
        }
    }
    let ints = |v: &[u32]| {
        let v: Vec<i64> = v.iter().map(|&x| x as i64).collect();
        Tensor::<B, 2, Int>::from_data(TensorData::new(v, shape).convert::<B::IntElem>(), device)
    };
    let mask = Tensor::<B, 2>::from_data(TensorData::new(weights, shape), device);
    (ints(&b.inputs), ints(&b.targets), mask)
}

/// Mean loss over `n` validation batches.
pub fn validate<B: RambaBackend>(
    model: &LanguageModel<B>,
    data: &DataPipeline,
    n: u64,
    device: &B::Device,
) -> f64 {
    let n = n.max(1);
    let total: f64 = (0..n)
        .map(|i| {
            let b = data.batch(Split::Val, i);
            let (inputs, targets, mask) = batch_tensors::<B>(&b, 1.0, device);
            model
                .loss(inputs, targets, mask)
                .into_scalar()
                .elem::<f64>()
        })
        .sum();
    total / n as f64
}

/// Memory reset (spec §6): each row's initial state is zero, or, with `stale_state_prob`, the
/// final state of a random row of the previous micro-batch. Draws are a function of
/// (seed, step, micro-batch), so a resumed run draws the same.
fn reset_states<B: Backend>(
    prev: ModelState<B>,
    cfg: &ExperimentConfig,
    step: u64,
    micro: usize,
    device: &B::Device,
) -> ModelState<B> {
    let rows = cfg.data.batch_size;
    let mut rng = ChaCha8Rng::seed_from_u64(
        cfg.run.seed ^ step.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ micro as u64,
    );
    let src: Vec<i64> = (0..rows)
        .map(|_| rng.random_range(0..rows) as i64)
        .collect();
    let keep: Vec<f32> = (0..rows)
        .map(|_| f32::from(rng.random_bool(cfg.train.stale_state_prob)))
        .collect();
    let src = Tensor::<B, 1, Int>::from_data(
        TensorData::new(src, [rows]).convert::<B::IntElem>(),
        device,
    );
    let keep = Tensor::<B, 1>::from_data(TensorData::new(keep, [rows]), device);
    let blocks = prev
        .blocks
        .into_iter()
        .map(|s| match s {
            BlockState::Mamba(m) => BlockState::Mamba(Mamba2State {
                conv: m.conv.select(0, src.clone()) * keep.clone().reshape([rows, 1, 1]),
                ssm: m.ssm.select(0, src.clone()) * keep.clone().reshape([rows, 1, 1, 1]),
            }),
            other => other,
        })
        .collect();
    ModelState { blocks }
}

/// Moves a (detached) state off the autodiff backend.
fn lower_state<B: RambaBackend>(s: ModelState<Autodiff<B>>) -> ModelState<B> {
    let blocks = s
        .blocks
        .into_iter()
        .map(|b| match b {
            BlockState::Mamba(m) => BlockState::Mamba(Mamba2State {
                conv: m.conv.inner(),
                ssm: m.ssm.inner(),
            }),
            BlockState::Stateless => BlockState::Stateless,
        })
        .collect();
    ModelState { blocks }
}

/// Puts a constant state onto the autodiff backend (no gradient flows into it).
fn lift_state<B: RambaBackend>(s: ModelState<B>) -> ModelState<Autodiff<B>> {
    let blocks = s
        .blocks
        .into_iter()
        .map(|b| match b {
            BlockState::Mamba(m) => BlockState::Mamba(Mamba2State {
                conv: Tensor::from_inner(m.conv),
                ssm: Tensor::from_inner(m.ssm),
            }),
            BlockState::Stateless => BlockState::Stateless,
        })
        .collect();
    ModelState { blocks }
}

/// A missing font or plotting library must not end a training run: plots are redrawn from
/// `metrics.jsonl` at the next evaluation anyway.
fn plot_or_warn(run_dir: &Path, progress: &Progress) {
    if let Err(e) = plot_losses(run_dir) {
        progress.println(&format!("warning: loss plot not written: {e:#}"));
    }
}

/// `plots/loss.png` from `metrics.jsonl`: training and validation loss by step.
pub fn plot_losses(run_dir: &Path) -> Result<()> {
    let records = read_jsonl(run_dir.join("metrics.jsonl"))?;
    let series = |key: &str| -> Vec<(f64, f64)> {
        records
            .iter()
            .filter_map(|r| Some((r.get("step")?.as_f64()?, r.get(key)?.as_f64()?)))
            .collect()
    };
    line_chart(
        &run_dir.join("plots").join("loss.png"),
        "Loss",
        "step",
        "cross-entropy (nats/token)",
        &[
            Series::new("train", series("loss")),
            Series::new("validation", series("val_loss")),
        ],
        true,
    )
}
