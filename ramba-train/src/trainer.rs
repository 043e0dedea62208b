//! The training loop. Read it top to bottom: set-up, resume, then per step: batches → forward →
//! loss → backward → clip → AdamW; metrics, validation and checkpoints on their cadence; the
//! passkey report at the end.

use std::collections::HashSet;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use burn::backend::Autodiff;
use burn::module::{AutodiffModule, ParamId};
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::prelude::*;
use burn::tensor::DType;
use ramba_core::backend::{BackendInfo, BackendKind};
use ramba_core::checkpoint::{first_usable, has_checkpoints, load_weights};
use ramba_core::model::{LanguageModel, ModelState};
use ramba_core::nn::block::BlockState;
use ramba_core::nn::mamba2::Mamba2State;
use ramba_core::ops::RambaBackend;
use ramba_core::precision::dtype_name;
use ramba_core::stream::ChunkStoreKind;
use ramba_data::{AnswerScore, Batch, DataPipeline, SourceConfig, Split};
use ramba_eval::passkey::{run_passkey, AnswerDecoding, Haystack, PasskeyReport, PasskeySettings};
use ramba_experiment::{ExperimentConfig, TrainConfig};
use ramba_report::{line_chart, read_jsonl, truncate_after_step, MetricsLog, Progress, Series};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::device_failure;
use crate::optim::{adamw, clip_and_split, decayed_params, AdamWPair};
use crate::parallel::{self, topology, Peer, StepTotals};
use crate::schedule::Schedule;
use crate::state::{load_optimizer, read_state, save_checkpoint, AdamWOptim, TrainState};

/// How a run ended.
#[derive(Debug)]
pub struct TrainOutcome {
    /// The run folder.
    pub run_dir: PathBuf,
    /// Optimizer steps completed.
    pub step: u64,
    /// Stopped early by Ctrl-C (a checkpoint was saved).
    pub interrupted: bool,
    /// Last training loss (`None` when no step ran).
    pub final_loss: Option<f64>,
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
    /// Teacher-forced exact-match rate of the synthetic tasks' answers since the last record.
    #[serde(skip_serializing_if = "Option::is_none")]
    answer_acc: Option<f64>,
    /// The same per answer token.
    #[serde(skip_serializing_if = "Option::is_none")]
    answer_token_acc: Option<f64>,
}

#[derive(Serialize)]
struct ValRecord {
    step: u64,
    val_loss: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    val_answer_acc: Option<f64>,
}

/// Makes relative data and tokenizer paths absolute against `base` (the config file's folder),
/// so the config stored in the run folder works from anywhere.
pub fn absolutize_paths(cfg: &mut ExperimentConfig, base: &Path) {
    let abs = |p: &mut PathBuf| {
        if p.is_relative() {
            *p = base.join(&*p);
        }
    };
    for p in cfg
        .data
        .sources
        .iter_mut()
        .flat_map(SourceConfig::paths_mut)
    {
        abs(p);
    }
    if let Some(p) = cfg.train.init_from.as_mut() {
        abs(p);
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
    let log = |msg: &str| eprintln!("{msg}");
    // Refuse before anything is written: a new run into a folder with checkpoints would
    // truncate its metrics and overwrite the config its checkpoints need.
    if !req.resume && has_checkpoints(&run_dir)? {
        bail!(
            "{} already holds a run (checkpoints/ has checkpoints); resume it with --resume {} \
             or choose another run.name",
            run_dir.display(),
            run_dir.display()
        );
    }

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

    // ---- Devices
    let topo = topology::<B>(info.kind, &device, &t.devices, &t.cluster)?;
    let lead = topo.devices[0].clone();
    let writer = topo.is_writer_node();

    // ---- Model and optimizer, fresh or resumed (on the lead device; the other local peers
    // get copies below)
    <Ad<B> as Backend>::seed(&lead, cfg.run.seed);
    let mut model: LanguageModel<Ad<B>> = cfg.model.init(&lead);
    let decay = decayed_params(&model);
    let fresh_optim = || AdamWPair {
        decay: adamw(t, t.weight_decay).init(),
        no_decay: adamw(t, 0.0).init(),
    };
    let mut optim = fresh_optim();
    let mut start = 0;
    let mut tokens_seen = 0;
    let mut anneal_from = None;
    let mut resumed_from: Option<(PathBuf, TrainState)> = None;
    let metrics_path = run_dir.join("metrics.jsonl");
    if req.resume {
        // The newest checkpoint that loads completely; a corrupt one is reported and skipped.
        let (ckpt, (state, m, o)) = first_usable(
            &run_dir,
            |dir| {
                let state = read_state(dir)?;
                let m = load_weights(model.clone(), &dir.join("model.safetensors"))?;
                let o = load_optimizer(dir, &m, fresh_optim(), &state, &lead)?;
                Ok((state, m, o))
            },
            log,
        )
        .with_context(|| format!("--resume {}", run_dir.display()))?;
        (model, optim) = (m, o);
        start = state.step;
        tokens_seen = state.tokens;
        anneal_from = state.anneal_from;
        if t.steps < start {
            bail!(
                "train.steps = {} is below the checkpoint's step {start} ({}); raise it, e.g. \
                 --set train.steps={}",
                t.steps,
                ckpt.display(),
                start + 1000
            );
        }
        if start >= run_end(t, anneal_from) || req.stop_at.is_some_and(|s| start >= s) {
            let how = match anneal_from {
                // More steps would not continue a finished anneal.
                Some(a) if start >= run_end(t, anneal_from) => format!(
                    "the run ended with its anneal (from step {a}, train.anneal_steps = {}); \
                     train further from it with train.init_from",
                    t.anneal_steps
                ),
                _ => format!(
                    "train.steps = {}{}; raise train.steps or --stop-at to continue",
                    t.steps,
                    req.stop_at
                        .map(|s| format!(", --stop-at {s}"))
                        .unwrap_or_default()
                ),
            };
            log(&format!(
                "nothing to do: {} is at step {start} ({how})",
                ckpt.display()
            ));
            return Ok(TrainOutcome {
                run_dir,
                step: start,
                interrupted: false,
                final_loss: None,
                final_val_loss: None,
                passkey: None,
                train_seconds: 0.0,
            });
        }
        if writer {
            truncate_after_step(&metrics_path, start)?;
        }
        log(&format!("resumed {} at step {start}", ckpt.display()));
        resumed_from = Some((ckpt, state));
    } else if let Some(from) = &t.init_from {
        let (ckpt, m) = crate::init_from::init_from(from, &cfg.model, model, log)?;
        model = m;
        log(&format!(
            "initialised from {} (train.init_from); fresh optimizer and schedule",
            ckpt.display()
        ));
    }
    // Mixed precision: the compute dtype is a setting of the model value, not of its weights,
    // so it is set after any load (checkpoints hold f32 whatever a run computed in).
    let compute = t
        .precision
        .compute_dtype(info.kind, |d| B::supports_dtype(&lead, d))?;
    model = model.with_compute_dtype(compute);
    std::fs::create_dir_all(&run_dir).with_context(|| format!("creating {}", run_dir.display()))?;
    let mut metrics = None;
    if writer {
        std::fs::write(run_dir.join("config.toml"), cfg.to_toml()?)
            .context("writing the resolved config")?;
        metrics = Some(MetricsLog::open(&metrics_path, req.resume)?);
    }
    let settings = MicroSettings {
        answer_weight: t.answer_weight,
        scale: 1.0 / t.grad_accum as f64,
        keep_state: t.memory_reset,
        workers: worker_threads(t.threads, info, cfg.data.batch_size / topo.world()),
    };
    log(&format!(
        "{info}; model {:?}: {} parameters, computing in {}; {} steps of {} x {} tokens (x{} \
         accumulation{}){}",
        cfg.model.arch,
        model.num_params(),
        dtype_name(compute),
        t.steps,
        cfg.data.batch_size,
        cfg.data.seq_len,
        t.grad_accum,
        match settings.workers {
            1 => String::new(),
            n => format!(", rows split over {n} threads"),
        },
        match topo.world() {
            1 => String::new(),
            _ => format!("; {}", topo.describe(info.kind)),
        }
    ));

    // ---- Loop, on every local device
    let run = PeerRun {
        cfg,
        data: &data,
        settings: &settings,
        decay: &decay,
        stop: &req.stop,
        start,
        tokens_seen,
        anneal_from,
        end: req.stop_at.map_or(t.steps, |s| s.min(t.steps)),
    };
    let started = Instant::now();
    let (model, progress, ended) = if topo.world() == 1 {
        let mut progress = Progress::new(run_end(t, anneal_from), start, t.log_every);
        let ended = run.run(
            Peer::solo(),
            &mut model,
            &mut optim,
            &lead,
            metrics.as_mut().map(|m| (m, &mut progress)),
        )?;
        (model, progress, ended)
    } else {
        // Every fallible set-up step happens here, before any peer registers: a peer that
        // failed after registering would leave the others waiting for it.
        let mut replicas = vec![(model, optim)];
        for dev in &topo.devices[1..] {
            let m = replicas[0].0.clone().fork(dev);
            let o = match &resumed_from {
                Some((dir, state)) => load_optimizer(dir, &m, fresh_optim(), state, dev)?,
                None => fresh_optim(),
            };
            replicas.push((m, o));
        }
        let fingerprint = run_fingerprint(cfg)?;
        let _exclusive = parallel::exclusive();
        let mut progress = Progress::new(run_end(t, anneal_from), start, t.log_every);
        let topo = &topo;
        let run = &run;
        let results: Vec<Result<(LanguageModel<Ad<B>>, Ended)>> = std::thread::scope(|scope| {
            let mut lead_progress = Some(&mut progress);
            let mut lead_metrics = metrics.as_mut();
            let handles: Vec<_> = replicas
                .into_iter()
                .enumerate()
                .map(|(local, (m, mut o))| {
                    let sink = match local {
                        0 => lead_metrics.take().zip(lead_progress.take()),
                        _ => None,
                    };
                    scope.spawn(move || {
                        let dev = &topo.devices[local];
                        let outcome =
                            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                                let peer = Peer::<B>::join(topo, local, &t.cluster, fingerprint)?;
                                let mut m = peer.broadcast_params(m)?;
                                let ended = run.run(peer, &mut m, &mut o, dev, sink)?;
                                Ok((m, ended))
                            }));
                        match outcome {
                            Ok(Ok(v)) => Ok(v),
                            Ok(Err(e)) => {
                                parallel::abort::<B>();
                                Err(e)
                            }
                            Err(panic) => {
                                parallel::abort::<B>();
                                std::panic::resume_unwind(panic)
                            }
                        }
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
                .collect()
        });
        // When one peer fails, the others fail in the collective because it left: report the
        // peer that failed first.
        let (mut ok, mut errors) = (vec![], vec![]);
        for r in results {
            match r {
                Ok(v) => ok.push(v),
                Err(e) => errors.push(e),
            }
        }
        if !errors.is_empty() {
            let cause = errors
                .iter()
                .position(|e| !format!("{e:#}").contains(parallel::PEER_LEFT))
                .unwrap_or(0);
            return Err(errors.swap_remove(cause));
        }
        let (model, ended) = ok.swap_remove(0);
        (model, progress, ended)
    };
    let Ended {
        step,
        finished,
        mut interrupted,
        last_loss,
        last_val,
    } = ended;
    progress.finish();
    let train_seconds = started.elapsed().as_secs_f64();
    if writer {
        plot_or_warn(&run_dir, &progress);
    }

    // ---- Passkey report (by the writer)
    let seq = cfg.data.seq_len;
    let mut passkey = None;
    if writer && cfg.eval.passkey_after_training && finished && step > start && !interrupted {
        let settings = PasskeySettings {
            lengths: cfg.eval.passkey_multiples.iter().map(|m| m * seq).collect(),
            depths: cfg.eval.passkey_depths.clone(),
            trials: cfg.eval.passkey_trials,
            haystack: Haystack::Filler,
            seed: cfg.run.seed ^ 0x9e37_79b9,
            max_context: cfg.eval.max_context,
            decoding: AnswerDecoding::Generate,
            store: ChunkStoreKind::Device,
            segment: cfg.eval.max_context,
            batch_tokens: 16_384,
            stop: Some(req.stop.clone()),
        };
        // In f32, as `ramba-eval` runs a checkpoint: the report measures the weights.
        let report = run_passkey(
            &model.valid().with_compute_dtype(DType::F32),
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
        if report.interrupted() {
            log("interrupted: the passkey report above is partial");
            interrupted = true;
        }
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

/// What the nodes of a multi-node run must agree on: the model, the batch and the schedule.
fn run_fingerprint(cfg: &ExperimentConfig) -> Result<u64> {
    use std::hash::{Hash, Hasher};
    let t = &cfg.train;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    toml::to_string(&cfg.model)
        .context("describing the model")?
        .hash(&mut h);
    (
        cfg.data.batch_size,
        cfg.data.seq_len,
        t.steps,
        t.grad_accum,
        cfg.run.seed,
    )
        .hash(&mut h);
    t.lr.to_bits().hash(&mut h);
    Ok(h.finish())
}

/// A run's schedule, with the anneal it has started (at `anneal_from`), if any.
fn schedule_of(t: &TrainConfig, anneal_from: Option<u64>) -> Schedule {
    let schedule = Schedule::new(t);
    match anneal_from {
        Some(from) => schedule.annealed(from, t.anneal_steps, t.anneal_lr_ratio),
        None => schedule,
    }
}

/// The step a run ends at: `train.steps`, or the end of the anneal it has started.
fn run_end(t: &TrainConfig, anneal_from: Option<u64>) -> u64 {
    schedule_of(t, anneal_from).end()
}

/// What every peer's training loop shares.
struct PeerRun<'a> {
    cfg: &'a ExperimentConfig,
    data: &'a DataPipeline,
    settings: &'a MicroSettings,
    decay: &'a HashSet<ParamId>,
    stop: &'a AtomicBool,
    /// The step the run starts (or resumes) at.
    start: u64,
    tokens_seen: u64,
    /// Where the resumed run's anneal started, if it had.
    anneal_from: Option<u64>,
    /// The last step this invocation runs: train.steps, or --stop-at when it comes first.
    end: u64,
}

/// How a peer's loop ended.
struct Ended {
    step: u64,
    /// The run is complete: at `train.steps`, or at the end of an anneal.
    finished: bool,
    interrupted: bool,
    last_loss: Option<f64>,
    last_val: Option<f64>,
}

/// The writer's outputs: metrics file and progress bar. Other peers have none.
type WriterSink<'a> = Option<(&'a mut MetricsLog, &'a mut Progress)>;

impl PeerRun<'_> {
    /// The training loop of one peer: its rows of every batch, the all-reduce, the same AdamW
    /// step as every other peer; metrics, validation and checkpoints by the writer.
    fn run<B: RambaBackend>(
        &self,
        peer: Peer<B>,
        model: &mut LanguageModel<Autodiff<B>>,
        optim: &mut AdamWPair<AdamWOptim<LanguageModel<Autodiff<B>>, Autodiff<B>>>,
        device: &B::Device,
        mut writer: WriterSink<'_>,
    ) -> Result<Ended> {
        let cfg = self.cfg;
        let t = &cfg.train;
        let run_dir = cfg.run_dir();
        let (batch, seq) = (cfg.data.batch_size, cfg.data.seq_len);
        let rows = peer.rows(batch);
        let mut carried: Option<ModelState<B>> = None;
        let started = Instant::now();
        let mut window = (Instant::now(), 0u64);
        let mut answers = AnswerScore::default();
        let (mut last_loss, mut last_val) = (None, None);
        let mut step = self.start;
        let mut last_saved = self.start;
        let mut tokens_seen = self.tokens_seen;
        let mut interrupted = false;
        let mut schedule = schedule_of(t, self.anneal_from);
        let checkpoint =
            |model: &LanguageModel<Autodiff<B>>, optim: &_, step, tokens, schedule: &Schedule| {
                let state = TrainState {
                    step,
                    seed: cfg.run.seed,
                    tokens,
                    param_order: vec![],
                    anneal_from: schedule.anneal_from(),
                };
                save_checkpoint(&run_dir, model, optim, &state, t.keep_checkpoints)
            };
        while step < self.end.min(schedule.end()) {
            let lr = schedule.at(step);
            let mut accum = GradientsAccumulator::new();
            let mut totals = StepTotals::default();
            // A panic of the device runtime (an allocation that failed) is an error that says
            // so, not a crash that loses the run's end.
            device_failure::guard(cfg, step + 1, || {
                for micro in 0..t.grad_accum {
                    let full = self
                        .data
                        .batch(Split::Train, step * t.grad_accum as u64 + micro as u64);
                    let init = match carried.take() {
                        Some(s) if t.memory_reset => {
                            let whole = peer.gather_state(s, batch)?;
                            Some(reset_states(whole, cfg, step, micro, device).rows(rows.clone()))
                        }
                        _ => None,
                    };
                    // This peer's rows, and their share of the batch's loss weight.
                    let (b, share) = if peer.world() == 1 {
                        (full, 1.0)
                    } else {
                        let weights = loss_weights(&full, t.answer_weight);
                        let sum = |r: Range<usize>| -> f64 {
                            weights[r.start * seq..r.end * seq]
                                .iter()
                                .map(|&w| f64::from(w))
                                .sum()
                        };
                        let share = sum(rows.clone()) / sum(0..batch).max(1e-9);
                        (full.rows(rows.clone()), share)
                    };
                    let out = micro_step(
                        model,
                        &b,
                        init,
                        self.settings.scale * share,
                        self.settings,
                        device,
                    );
                    totals.loss += out.loss;
                    totals.answers.add(out.answers);
                    carried = out.state;
                    for grads in out.grads {
                        accum.accumulate(model, grads);
                    }
                }
                Ok(())
            })?;
            totals.stop = self.stop.load(Ordering::SeqCst);
            let (grads, totals) = match peer.sum_step(model, accum.grads(), totals, device) {
                Ok(v) => v,
                Err(e) => {
                    // A peer (or node) is gone. The writer keeps the last completed step.
                    if writer.is_some() && step > last_saved {
                        let dir = checkpoint(model, optim, step, tokens_seen, &schedule)?;
                        bail!("{e:#}; saved {} (resume from it)", dir.display());
                    }
                    return Err(e);
                }
            };
            let loss_sum = totals.loss;
            answers.add(totals.answers);
            // Before the loss is judged: a failed allocation shows as an `inf` or `NaN` loss.
            device_failure::check::<B>(cfg, step + 1, device)?;
            if !loss_sum.is_finite() {
                bail!(
                    "the training loss became {loss_sum} at step {}; the last checkpoint and \
                     metrics in {} are kept",
                    step + 1,
                    run_dir.display()
                );
            }
            let (grad_norm, with, without) = clip_and_split(model, grads, t.grad_clip, self.decay);
            *model = optim.step(lr, model.clone(), with, without);
            step += 1;
            let tokens = (batch * seq * t.grad_accum) as u64;
            tokens_seen += tokens;
            window.1 += tokens;
            last_loss = Some(loss_sum);
            interrupted = totals.stop;

            let mut last = step == schedule.end();
            // The answers of a log window, on every peer alike (they are summed across peers
            // with the loss), so that all of them start an anneal at the same step.
            let window_answers =
                (step.is_multiple_of(t.log_every) || last).then(|| std::mem::take(&mut answers));
            let anneal_now = match (t.anneal_at_answer_acc, &window_answers) {
                (Some(at), Some(a)) if schedule.anneal_from().is_none() && !last => {
                    a.exact_rate().filter(|&rate| rate >= at)
                }
                _ => None,
            };
            if anneal_now.is_some() {
                schedule = schedule.annealed(step, t.anneal_steps, t.anneal_lr_ratio);
                last = step == schedule.end();
            }
            let paused = step == self.end && !last;
            let Some((metrics, progress)) = writer.as_mut() else {
                if interrupted || paused {
                    break;
                }
                continue;
            };
            if let Some(window_answers) = window_answers {
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
                    answer_acc: window_answers.exact_rate(),
                    answer_token_acc: window_answers.token_rate(),
                })?;
                progress.update(step, loss_sum, tps, lr);
            }
            if let Some(rate) = anneal_now {
                progress.set_total(schedule.end());
                progress.println(&format!(
                    "step {step}: answers exact {:.0}% ≥ train.anneal_at_answer_acc: annealing \
                     from lr {:.2e} to {:.2e}; the run ends at step {}",
                    rate * 100.0,
                    schedule.at(step),
                    schedule.at(schedule.end() - 1),
                    schedule.end()
                ));
            }
            if (t.eval_every > 0 && step.is_multiple_of(t.eval_every)) || last {
                let (v, val_answers) = validate(&model.valid(), self.data, t.val_batches, device);
                metrics.log(&ValRecord {
                    step,
                    val_loss: v,
                    val_answer_acc: val_answers.exact_rate(),
                })?;
                progress.println(&match val_answers.exact_rate() {
                    Some(a) => format!(
                        "step {step}: val loss {v:.4}, answers exact {:.0}% ({} of {})",
                        a * 100.0,
                        val_answers.exact,
                        val_answers.answers
                    ),
                    None => format!("step {step}: val loss {v:.4}"),
                });
                last_val = Some(v);
                plot_or_warn(&run_dir, progress);
            }
            if (t.checkpoint_every > 0 && step.is_multiple_of(t.checkpoint_every))
                || last
                || interrupted
                || paused
            {
                let dir = checkpoint(model, optim, step, tokens_seen, &schedule)?;
                last_saved = step;
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
        peer.finish();
        Ok(Ended {
            step,
            finished: step == schedule.end(),
            interrupted,
            last_loss,
            last_val,
        })
    }
}

/// Token tensors of a batch: inputs, targets `[B, L]` (Int) and the loss weights `[B, L]`
/// (see [`loss_weights`]).
pub fn batch_tensors<B: Backend>(
    b: &Batch,
    answer_weight: f64,
    device: &B::Device,
) -> (Tensor<B, 2, Int>, Tensor<B, 2, Int>, Tensor<B, 2>) {
    let shape = [b.batch_size, b.seq_len];
    let ints = |v: &[u32]| {
        let v: Vec<i64> = v.iter().map(|&x| x as i64).collect();
        Tensor::<B, 2, Int>::from_data(TensorData::new(v, shape).convert::<B::IntElem>(), device)
    };
    let mask = Tensor::<B, 2>::from_data(
        TensorData::new(loss_weights(b, answer_weight), shape),
        device,
    );
    (ints(&b.inputs), ints(&b.targets), mask)
}

/// The loss weight of every target `[B * L]`: the batch's mask, with answer tokens weighted by
/// `answer_weight`.
pub fn loss_weights(b: &Batch, answer_weight: f64) -> Vec<f32> {
    let mut weights = b.loss_mask.clone();
    for (row, spans) in b.answer_spans.iter().enumerate() {
        for &(lo, hi) in spans {
            for w in &mut weights[row * b.seq_len + lo..row * b.seq_len + hi] {
                *w *= answer_weight as f32;
            }
        }
    }
    weights
}

/// How a micro-batch is computed; see [`micro_step`].
struct MicroSettings {
    answer_weight: f64,
    /// Factor on the loss (1 / gradient-accumulation steps); a data-parallel peer multiplies
    /// it by its rows' share of the batch.
    scale: f64,
    /// Return the final recurrent state (memory reset).
    keep_state: bool,
    /// Threads the rows are split over.
    workers: usize,
}

/// What one micro-batch contributes to an optimizer step.
struct MicroStep<B: Backend> {
    /// Its share of the step's loss.
    loss: f64,
    /// Gradients, one set per worker; their sum is the micro-batch's gradient.
    grads: Vec<GradientsParams>,
    /// The blocks' final state (detached, rows in order) when asked for.
    state: Option<ModelState<B>>,
    answers: AnswerScore,
}

/// `train.threads` resolved: worker threads per micro-batch. Only the CPU backend gains from
/// them: Burn's ndarray backend runs each op of a small model on one core, so splitting the
/// rows between threads, each with its own autodiff graph, uses the others. GPU backends keep
/// one.
fn worker_threads(threads: usize, info: &BackendInfo, batch: usize) -> usize {
    if info.kind != BackendKind::Cpu {
        return 1;
    }
    let threads = match threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    threads.clamp(1, batch.max(1))
}

/// Forward and backward of micro-batch `b`. With several workers its rows are split into
/// contiguous shards, each run on its own thread by a fork of the model (fresh autodiff leaves,
/// so the graphs stay apart), and each shard's loss is weighted by its share of the batch's
/// loss weight: the shards' gradients sum to the whole batch's.
fn micro_step<B: RambaBackend>(
    model: &LanguageModel<Autodiff<B>>,
    b: &Batch,
    init: Option<ModelState<B>>,
    scale: f64,
    settings: &MicroSettings,
    device: &B::Device,
) -> MicroStep<B> {
    let workers = settings.workers.min(b.batch_size).max(1);
    if workers == 1 {
        return shard_step(model, b, init, scale, settings, device);
    }
    let weights = loss_weights(b, settings.answer_weight);
    let weight = |rows: &std::ops::Range<usize>| -> f64 {
        weights[rows.start * b.seq_len..rows.end * b.seq_len]
            .iter()
            .map(|&w| f64::from(w))
            .sum()
    };
    let total = weight(&(0..b.batch_size)).max(1e-9);
    let per = b.batch_size.div_ceil(workers);
    let shards: Vec<std::ops::Range<usize>> = (0..b.batch_size)
        .step_by(per)
        .map(|lo| lo..(lo + per).min(b.batch_size))
        .collect();
    let parts: Vec<MicroStep<B>> = std::thread::scope(|scope| {
        let handles: Vec<_> = shards
            .iter()
            .map(|rows| {
                let part = b.rows(rows.clone());
                let init = init.as_ref().map(|s| s.rows(rows.clone()));
                let share = scale * weight(rows) / total;
                let fork = model.clone().fork(device);
                scope.spawn(move || shard_step(&fork, &part, init, share, settings, device))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    });
    let mut out = MicroStep {
        loss: 0.0,
        grads: Vec::with_capacity(parts.len()),
        state: None,
        answers: AnswerScore::default(),
    };
    let mut states = Vec::new();
    for part in parts {
        out.loss += part.loss;
        out.grads.extend(part.grads);
        out.answers.add(part.answers);
        states.extend(part.state);
    }
    out.state = settings.keep_state.then(|| ModelState::cat(states));
    out
}

/// [`micro_step`] on one thread, its loss (the weighted mean over `b`) multiplied by `share`.
fn shard_step<B: RambaBackend>(
    model: &LanguageModel<Autodiff<B>>,
    b: &Batch,
    init: Option<ModelState<B>>,
    share: f64,
    settings: &MicroSettings,
    device: &B::Device,
) -> MicroStep<B> {
    let (inputs, targets, mask) = batch_tensors::<Autodiff<B>>(b, settings.answer_weight, device);
    let (h, state) = model.hidden_with_state(inputs, init.map(ModelState::from_inner));
    // The head runs only at the answers' positions for the score; the loss forms the logits a
    // block at a time where the backend fuses the head and the loss.
    let answers =
        b.score_answers_at(&model.predictions_at(h.clone().detach(), &b.answer_positions()));
    let loss = model.head_loss(h, targets, mask).mul_scalar(share);
    let value = loss.clone().into_scalar().elem::<f64>();
    let grads = GradientsParams::from_grads(loss.backward(), model);
    MicroStep {
        loss: value,
        grads: vec![grads],
        state: settings.keep_state.then(|| state.detach().inner()),
        answers,
    }
}

/// Mean loss over `n` validation batches, and how many of their synthetic answers the model
/// gets right (teacher-forced).
pub fn validate<B: RambaBackend>(
    model: &LanguageModel<B>,
    data: &DataPipeline,
    n: u64,
    device: &B::Device,
) -> (f64, AnswerScore) {
    let n = n.max(1);
    let mut answers = AnswerScore::default();
    let mut total = 0.0;
    for i in 0..n {
        let b = data.batch(Split::Val, i);
        let (inputs, targets, mask) = batch_tensors::<B>(&b, 1.0, device);
        let (h, _) = model.hidden_with_state(inputs, None);
        answers.add(b.score_answers_at(&model.predictions_at(h.clone(), &b.answer_positions())));
        total += model
            .head_loss(h, targets, mask)
            .into_scalar()
            .elem::<f64>();
    }
    (total / n as f64, answers)
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
