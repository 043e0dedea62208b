//! Training throughput of a model config: tokens/s, step time, first-step time, peak device
//! memory and model FLOP utilisation, per architecture, precision and batch.
//!
//! A step is what `ramba-train` runs for one batch without its data pipeline: forward, masked
//! cross-entropy over every position, backward, AdamW (f32 master weights, the trainer's
//! `FusedAdamW`) with norm clipping (per parameter here, global in the trainer: the same
//! work); random tokens, synced after every step. The first step
//! includes kernel compilation (and autotuning where built with it); the median is over the
//! steps after `warmup`.
//!
//! Model FLOPs per token (`6·N` plus the attention terms, forward + backward):
//! `6·N` for the parameters' matmuls (N every parameter; the tied embedding is the LM head),
//! `12·h·d_h·k` per attention layer with `k` the mean number of visible keys (`(L+1)/2` causal,
//! the window for sliding windows, the chunk for the chunk encoder), `12·h_q·d_h·K·S` per HSA
//! layer. The Mamba-2 scan's own FLOPs are not counted (as the usual `6·N` accounting does
//! not), so MFU understates the Mamba models slightly. MFU is against a square bf16 (or the
//! compute dtype's) matmul measured in the same run: what CubeCL reaches on this device.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Instant;

use burn::backend::Autodiff;
use burn::grad_clipping::GradientClippingConfig;
use burn::module::AutodiffModule;
use burn::optim::{GradientsParams, Optimizer};
use burn::prelude::*;
use burn::tensor::DType;
use ramba_core::backend::{is_out_of_memory, panic_message};
use ramba_core::config::{Arch, ModelConfig};
use ramba_core::model::LanguageModel;
use ramba_core::ops::RambaBackend;
use ramba_core::optim::{AdamWSettings, FusedAdamW};
use ramba_core::precision::dtype_name;
use rand::{Rng, SeedableRng};
use serde::Serialize;

/// One measurement: a model config in one precision at one batch size.
#[derive(Clone, Debug)]
pub struct TrainBenchCase {
    /// The model (its `arch` included).
    pub model: ModelConfig,
    /// Compute dtype (parameters stay f32).
    pub dtype: DType,
    /// Rows per step.
    pub batch: usize,
    /// Tokens per row.
    pub seq: usize,
    /// Steps timed after the warm-up.
    pub steps: usize,
    /// Steps run before timing (the first one compiles the kernels).
    pub warmup: usize,
}

/// What a case measured.
#[derive(Clone, Debug, Serialize)]
pub struct TrainBenchRow {
    /// `ramba`, `mamba2`, ...
    pub arch: String,
    /// `f32`, `bf16`, `f16`.
    pub precision: String,
    /// Rows per step.
    pub batch: usize,
    /// Tokens per row.
    pub seq: usize,
    /// Parameters.
    pub params: usize,
    /// Seconds until the first step had finished (compilation included).
    pub first_step_s: f64,
    /// Median step, ms.
    pub step_ms: f64,
    /// `batch · seq / step`.
    pub tokens_per_s: f64,
    /// The allocator's reserved bytes after a step, the largest over the steps, MiB (the pool
    /// keeps what a step reserved; freed pages are released before the case starts).
    pub peak_mib: f64,
    /// Model FLOPs per token (see the module docs).
    pub flops_per_token: f64,
    /// Achieved model TFLOP/s.
    pub model_tflops: f64,
    /// `model_tflops` / the measured matmul ceiling.
    pub mfu: f64,
    /// The matmul ceiling MFU is taken against, TFLOP/s.
    pub ceiling_tflops: f64,
    /// Last loss (a finite number says the steps computed something).
    pub loss: f64,
    /// Why the case did not finish (out of memory, ...).
    pub error: Option<String>,
}

/// Runs `case` on `device`; `ceiling_tflops` is the matmul ceiling MFU is taken against.
pub fn run<B: RambaBackend>(
    device: &B::Device,
    case: &TrainBenchCase,
    ceiling_tflops: f64,
) -> TrainBenchRow {
    let mut row = TrainBenchRow {
        arch: arch_name(case.model.arch).into(),
        precision: dtype_name(case.dtype).into(),
        batch: case.batch,
        seq: case.seq,
        params: 0,
        first_step_s: f64::NAN,
        step_ms: f64::NAN,
        tokens_per_s: f64::NAN,
        peak_mib: 0.0,
        flops_per_token: f64::NAN,
        model_tflops: f64::NAN,
        mfu: f64::NAN,
        ceiling_tflops,
        loss: f64::NAN,
        error: None,
    };
    let outcome = catch_unwind(AssertUnwindSafe(|| steps::<B>(device, case, &mut row)));
    let failure = match outcome {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e),
        Err(panic) => {
            Some(panic_message(&*panic).unwrap_or_else(|| "a panic without a message".into()))
        }
    };
    if let Some(message) = failure {
        let first = message.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        row.error = Some(if is_out_of_memory(&message) {
            "out of memory".into()
        } else {
            first.trim().to_string()
        });
    }
    row.model_tflops = row.flops_per_token * row.tokens_per_s / 1e12;
    row.mfu = row.model_tflops / ceiling_tflops;
    row
}

fn steps<B: RambaBackend>(
    device: &B::Device,
    case: &TrainBenchCase,
    row: &mut TrainBenchRow,
) -> Result<(), String> {
    let sync = || B::sync(device).map_err(|e| e.to_string());
    sync()?;
    B::memory_cleanup(device);
    let started = Instant::now();
    <Autodiff<B> as Backend>::seed(device, 0);
    let mut model: LanguageModel<Autodiff<B>> =
        case.model.init(device).with_compute_dtype(case.dtype);
    row.params = model.num_params();
    row.flops_per_token = model_flops_per_token(&case.model, row.params, case.seq);
    // The trainer's optimizer: one AdamW kernel a parameter on the GPU backends.
    let mut optim = FusedAdamW::new(AdamWSettings {
        beta_2: 0.95,
        weight_decay: 0.001,
        ..Default::default()
    })
    .init::<Autodiff<B>, LanguageModel<Autodiff<B>>>()
    .with_grad_clipping(GradientClippingConfig::Norm(1.0).init());
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let (batch, seq) = (case.batch, case.seq);
    let mut times = Vec::with_capacity(case.steps);
    for step in 0..case.warmup + case.steps {
        let toks: Vec<i64> = (0..batch * (seq + 1))
            .map(|_| rng.random_range(0..case.model.vocab_size as i64))
            .collect();
        let all = Tensor::<Autodiff<B>, 2, Int>::from_data(
            TensorData::new(toks, [batch, seq + 1]).convert::<B::IntElem>(),
            device,
        );
        let t0 = Instant::now();
        let inputs = all.clone().slice([0..batch, 0..seq]);
        let targets = all.slice([0..batch, 1..seq + 1]);
        let loss = model.loss(inputs, targets, Tensor::ones([batch, seq], device));
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(1e-4, model, grads);
        sync()?;
        row.loss = loss.into_scalar().elem::<f64>();
        row.peak_mib = row.peak_mib.max(reserved_mib::<B>(device));
        if step == 0 {
            row.first_step_s = started.elapsed().as_secs_f64();
        }
        if step >= case.warmup {
            times.push(t0.elapsed().as_secs_f64() * 1e3);
        }
    }
    // Keep the trained model alive until here, so the pool's high-water mark is the steps'.
    let _ = model.valid();
    times.sort_by(|a, b| a.total_cmp(b));
    if let Some(&median) = times.get(times.len() / 2) {
        row.step_ms = median;
        row.tokens_per_s = (batch * seq) as f64 / (median * 1e-3);
    }
    Ok(())
}

fn reserved_mib<B: RambaBackend>(device: &B::Device) -> f64 {
    B::memory_usage(device)
        .map(|m| m.reserved as f64 / (1u64 << 20) as f64)
        .unwrap_or(f64::NAN)
}

/// Model FLOPs per trained token (forward + backward) of `cfg`, with `params` parameters, at
/// `seq` tokens a row.
pub fn model_flops_per_token(cfg: &ModelConfig, params: usize, seq: usize) -> f64 {
    let params = params as f64;
    let attention =
        |heads: usize, head_dim: usize, keys: f64| 12.0 * (heads * head_dim) as f64 * keys;
    let causal_keys = (seq as f64 + 1.0) / 2.0;
    let mut flops = 6.0 * params;
    let a = &cfg.attention;
    let attn_head_dim = cfg.d_model / a.n_heads.max(1);
    match cfg.arch {
        Arch::Transformer => {
            flops += cfg.n_blocks() as f64 * attention(a.n_heads, attn_head_dim, causal_keys);
        }
        Arch::SwaHsa => {
            let keys = (a.window as f64).min(causal_keys);
            flops += cfg.n_blocks() as f64 * attention(a.n_heads, attn_head_dim, keys);
        }
        _ => {}
    }
    if cfg.arch.has_hsa() {
        let h = &cfg.hsa;
        let layers = (cfg.n_groups * cfg.hsa_per_group) as f64;
        flops += layers * 12.0 * (h.n_heads * h.head_dim * h.top_k * h.chunk_size) as f64;
        // The chunk encoder attends inside each chunk (and its CLS), bidirectionally.
        let encoder_head_dim = cfg.d_model / h.encoder_heads.max(1);
        flops += h.encoder_layers as f64
            * attention(h.encoder_heads, encoder_head_dim, (h.chunk_size + 1) as f64);
    }
    flops
}

fn arch_name(arch: Arch) -> &'static str {
    match arch {
        Arch::Ramba => "ramba",
        Arch::Mamba2 => "mamba2",
        Arch::Transformer => "transformer",
        Arch::SwaHsa => "swa_hsa",
        Arch::MambaNsa => "mamba_nsa",
    }
}

/// The rows as a Markdown table.
pub fn table(rows: &[TrainBenchRow], ceiling_tflops: f64) -> String {
    let mut out = format!(
        "| arch | precision | batch x seq | params | first step s | step ms | tokens/s | peak MiB | model TFLOP/s | MFU (ceiling {ceiling_tflops:.0} TFLOP/s) | loss |\n|---|---|---|---|---|---|---|---|---|---|---|\n"
    );
    for r in rows {
        if let Some(e) = &r.error {
            out += &format!(
                "| {} | {} | {} x {} | {} | {:.1} | – | – | {:.0} | – | – | {e} |\n",
                r.arch, r.precision, r.batch, r.seq, r.params, r.first_step_s, r.peak_mib
            );
            continue;
        }
        out += &format!(
            "| {} | {} | {} x {} | {} | {:.1} | {:.1} | {:.0} | {:.0} | {:.1} | {:.1}% | {:.3} |\n",
            r.arch,
            r.precision,
            r.batch,
            r.seq,
            r.params,
            r.first_step_s,
            r.step_ms,
            r.tokens_per_s,
            r.peak_mib,
            r.model_tflops,
            r.mfu * 100.0,
            r.loss
        );
    }
    out
}
