//! `ramba-bench scan`: the Mamba-2 selective scan (forward, forward+backward) at the Mamba-2
//! 370M layer's shape (32 heads × 64, d_state 128, one group), beside the reference op where it
//! fits and the card's ceilings, plus a whole Mamba-2 block's training step.
//!
//! The work and traffic units are the anchors' (`shared/anchors-bench/bench_ssd.py`), so the
//! TFLOP/s and TB/s columns compare with mamba_ssm's: forward FLOPs
//! `T (256·N·G + 4·N·P·H + 256·P·H)`, forward+backward 3× that; minimal bytes per token
//! `e (2HP + 2GN + H)` forward and `e (3HP + 4GN + 2H)` more for the backward (`e` the element
//! size). The kernels take `Δ` after the softplus; mamba_ssm's take `dt` and apply
//! `softplus(dt + dt_bias)` inside (one elementwise pass over `B·L·H`, not timed here).

use burn::prelude::*;
use burn::tensor::activation::softplus;
use burn::tensor::{DType, Distribution, TensorPrimitive};
use ramba_core::config::MambaConfig;
use ramba_core::nn::mamba2::Mamba2Block;
use ramba_core::ops::{scan, RambaBackend, ScanOptions};
use serde::Serialize;

use super::timing::{format_len, peak_mib, time_ms, Ceilings};

/// What to measure.
#[derive(Clone, Debug)]
pub struct ScanBenchSettings {
    /// `(batch, seq)` pairs.
    pub shapes: Vec<(usize, usize)>,
    /// Heads `H`.
    pub heads: usize,
    /// Head dim `P`.
    pub head_dim: usize,
    /// Groups sharing B and C.
    pub groups: usize,
    /// State size `N`.
    pub d_state: usize,
    /// Chunk of the reference (the kernels use their own).
    pub chunk: usize,
    /// Input dtype.
    pub dtype: DType,
    /// The reference runs where `batch · seq` is at most this.
    pub reference_max_tokens: usize,
    /// Compare the last `check_tokens` tokens of batch row 0 (outputs, final state and the
    /// tail's gradients) with the reference run segment by segment, in f32.
    pub check_tokens: usize,
    /// Timing budget per measurement, ms.
    pub budget_ms: f64,
}

/// One row of the table.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ScanBenchRow {
    pub backend: String,
    pub dtype: String,
    pub batch: usize,
    pub seq: usize,
    pub forward_ms: f64,
    pub forward_backward_ms: f64,
    /// Pool growth of forward+backward, MiB (outputs and gradients included).
    pub forward_backward_mib: f64,
    pub forward_tflops: f64,
    pub forward_tbs: f64,
    pub forward_backward_tflops: f64,
    pub forward_backward_tbs: f64,
    pub reference_forward_ms: Option<f64>,
    pub reference_forward_backward_ms: Option<f64>,
    pub reference_mib: Option<f64>,
    /// Max relative error of the checked tail (y, final state, dx, dΔ, dB, dC).
    pub check_rel_err: Option<f64>,
}

fn float<B: Backend, const D: usize>(x: Tensor<B, D>) -> burn::tensor::ops::FloatTensor<B> {
    x.into_primitive().tensor()
}

fn tensor<B: Backend, const D: usize>(x: burn::tensor::ops::FloatTensor<B>) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(x))
}

struct Problem<B: Backend> {
    x: Tensor<B, 4>,
    delta: Tensor<B, 3>,
    a: Tensor<B, 1>,
    b: Tensor<B, 4>,
    c: Tensor<B, 4>,
    d: Tensor<B, 1>,
    dy: Tensor<B, 4>,
    d_final: Tensor<B, 4>,
}

/// The anchors' inputs: `A` uniform in [−16, −1], `Δ = softplus(dt + dt_bias)` with `dt`
/// standard normal and `dt_bias` the inverse softplus of a log-uniform `[1e-3, 0.1]` draw.
fn problem<B: RambaBackend>(
    s: &ScanBenchSettings,
    batch: usize,
    seq: usize,
    device: &B::Device,
) -> Problem<B> {
    let normal = Distribution::Normal(0.0, 1.0);
    let (h, p, g, n) = (s.heads, s.head_dim, s.groups, s.d_state);
    let make = |shape: [usize; 4]| Tensor::<B, 4>::random(shape, normal, device).cast(s.dtype);
    let dt0 = Tensor::<B, 1>::random(
        [h],
        Distribution::Uniform(1e-3f64.ln(), 0.1f64.ln()),
        device,
    )
    .exp();
    let dt_bias = dt0.clone() + (dt0.neg().exp().neg() + 1.0).log();
    let delta = softplus(
        Tensor::<B, 3>::random([batch, seq, h], normal, device) + dt_bias.reshape([1, 1, h]),
        1.0,
    )
    .cast(s.dtype);
    Problem {
        x: make([batch, seq, h, p]),
        delta,
        a: Tensor::<B, 1>::random([h], Distribution::Uniform(-16.0, -1.0), device).cast(s.dtype),
        b: make([batch, seq, g, n]),
        c: make([batch, seq, g, n]),
        d: Tensor::<B, 1>::random([h], normal, device).cast(s.dtype),
        dy: make([batch, seq, h, p]),
        d_final: Tensor::<B, 4>::zeros([batch, h, p, n], device).cast(s.dtype),
    }
}

/// Forward FLOPs, forward bytes and backward bytes of one call (the anchors' units).
fn work(s: &ScanBenchSettings, tokens: usize) -> (f64, f64, f64) {
    let (h, p, g, n) = (s.heads, s.head_dim, s.groups, s.d_state);
    let t = tokens as f64;
    let e = s.dtype.size() as f64;
    let flops = t * (256 * n * g + 4 * n * p * h + 256 * p * h) as f64;
    let fwd_bytes = t * e * (2 * h * p + 2 * g * n + h) as f64;
    let bwd_bytes = t * e * (3 * h * p + 4 * g * n + 2 * h) as f64;
    (flops, fwd_bytes, bwd_bytes)
}

/// Runs the benchmark; one row per shape.
pub fn run<B: RambaBackend>(
    device: &B::Device,
    backend: &str,
    s: &ScanBenchSettings,
) -> Vec<ScanBenchRow> {
    let options = ScanOptions {
        chunk_size: s.chunk,
    };
    let mut rows = vec![];
    for &(batch, seq) in &s.shapes {
        let pr = problem::<B>(s, batch, seq, device);
        let fwd = || {
            B::selective_scan(
                float(pr.x.clone()),
                float(pr.delta.clone()),
                float(pr.a.clone()),
                float(pr.b.clone()),
                float(pr.c.clone()),
                float(pr.d.clone()),
                None,
                options,
            )
        };
        let forward_ms = time_ms::<B>(device, s.budget_ms, || {
            let _ = fwd();
        });
        let zero_init = || pr.d_final.clone();
        let fwd_bwd = || {
            let (y, _) = fwd();
            let g = B::selective_scan_backward(
                float(pr.x.clone()),
                float(pr.delta.clone()),
                float(pr.a.clone()),
                float(pr.b.clone()),
                float(pr.c.clone()),
                float(pr.d.clone()),
                float(zero_init()),
                float(pr.dy.clone()),
                float(pr.d_final.clone()),
                options,
            );
            (y, g)
        };
        let forward_backward_ms = time_ms::<B>(device, s.budget_ms, || {
            let _ = fwd_bwd();
        });
        let (fb_mib, out) = peak_mib::<B, _>(device, fwd_bwd);
        drop(out);

        let (flops, fwd_bytes, bwd_bytes) = work(s, batch * seq);
        let mut row = ScanBenchRow {
            backend: backend.to_string(),
            dtype: format!("{:?}", s.dtype).to_lowercase(),
            batch,
            seq,
            forward_ms,
            forward_backward_ms,
            forward_backward_mib: fb_mib,
            forward_tflops: flops / (forward_ms * 1e-3) / 1e12,
            forward_tbs: fwd_bytes / (forward_ms * 1e-3) / 1e12,
            forward_backward_tflops: 3.0 * flops / (forward_backward_ms * 1e-3) / 1e12,
            forward_backward_tbs: (fwd_bytes + bwd_bytes) / (forward_backward_ms * 1e-3) / 1e12,
            ..Default::default()
        };

        if batch * seq <= s.reference_max_tokens {
            let ref_fwd = || {
                scan::reference::selective_scan(
                    pr.x.clone(),
                    pr.delta.clone(),
                    pr.a.clone(),
                    pr.b.clone(),
                    pr.c.clone(),
                    pr.d.clone(),
                    None,
                    options,
                )
            };
            row.reference_forward_ms = Some(time_ms::<B>(device, s.budget_ms, || {
                let _ = ref_fwd();
            }));
            let ref_fb = || {
                scan::reference::backward(
                    pr.x.clone(),
                    pr.delta.clone(),
                    pr.a.clone(),
                    pr.b.clone(),
                    pr.c.clone(),
                    pr.d.clone(),
                    zero_init(),
                    pr.dy.clone(),
                    pr.d_final.clone(),
                    options,
                )
            };
            row.reference_forward_backward_ms = Some(time_ms::<B>(device, s.budget_ms, || {
                let _ = ref_fb();
            }));
            row.reference_mib = Some(peak_mib::<B, _>(device, ref_fb).0);
        }
        if s.check_tokens > 0 {
            row.check_rel_err = Some(check_tail::<B>(&pr, options, s.check_tokens));
        }
        eprintln!("{}", serde_json::to_string(&row).unwrap_or_default());
        rows.push(row);
    }
    rows
}

/// Batch row 0's last `n` tokens against the reference, in f32: the reference walks the whole
/// row segment by segment (16K tokens, the state carried, which is exact) to the tail's start
/// state, then gives the tail's outputs and final state, and the tail's gradients for the same
/// `dy` (the tail's `dx`, `dΔ`, `dB`, `dC` depend only on the tail's `dy`, the final state's
/// gradient and the state entering the tail). Exercises the kernels' 64-bit offsets.
fn check_tail<B: RambaBackend>(pr: &Problem<B>, options: ScanOptions, n: usize) -> f64 {
    let [_, seq, h, p] = pr.x.dims();
    let dn = pr.b.dims()[3];
    let n = n.min(seq);
    let start = seq - n;
    let f32s4 = |x: &Tensor<B, 4>, r: std::ops::Range<usize>| {
        let [_, _, a, b] = x.dims();
        x.clone().slice([0..1, r, 0..a, 0..b]).cast(DType::F32)
    };
    let f32s3 = |x: &Tensor<B, 3>, r: std::ops::Range<usize>| {
        let [_, _, a] = x.dims();
        x.clone().slice([0..1, r, 0..a]).cast(DType::F32)
    };
    let a = pr.a.clone().cast(DType::F32);
    let d = pr.d.clone().cast(DType::F32);
    let device = pr.x.device();
    let mut state = Tensor::<B, 4>::zeros([1, h, p, dn], &device);
    let segment = 1 << 14;
    let mut t = 0;
    while t < start {
        let end = (t + segment).min(start);
        let (_, next) = scan::reference::selective_scan(
            f32s4(&pr.x, t..end),
            f32s3(&pr.delta, t..end),
            a.clone(),
            f32s4(&pr.b, t..end),
            f32s4(&pr.c, t..end),
            d.clone(),
            Some(state),
            options,
        );
        state = next;
        t = end;
    }
    let tail = start..seq;
    let (y_ref, last_ref) = scan::reference::selective_scan(
        f32s4(&pr.x, tail.clone()),
        f32s3(&pr.delta, tail.clone()),
        a.clone(),
        f32s4(&pr.b, tail.clone()),
        f32s4(&pr.c, tail.clone()),
        d.clone(),
        Some(state.clone()),
        options,
    );
    let d_final = pr.d_final.clone().narrow(0, 0, 1).cast(DType::F32);
    let g_ref = scan::reference::backward(
        f32s4(&pr.x, tail.clone()),
        f32s3(&pr.delta, tail.clone()),
        a,
        f32s4(&pr.b, tail.clone()),
        f32s4(&pr.c, tail.clone()),
        d,
        state,
        f32s4(&pr.dy, tail.clone()),
        d_final,
        options,
    );

    // The kernels on the whole problem (all rows), then row 0's tail.
    let (y, last) = B::selective_scan(
        float(pr.x.clone()),
        float(pr.delta.clone()),
        float(pr.a.clone()),
        float(pr.b.clone()),
        float(pr.c.clone()),
        float(pr.d.clone()),
        None,
        options,
    );
    let gk = B::selective_scan_backward(
        float(pr.x.clone()),
        float(pr.delta.clone()),
        float(pr.a.clone()),
        float(pr.b.clone()),
        float(pr.c.clone()),
        float(pr.d.clone()),
        float(pr.d_final.clone()),
        float(pr.dy.clone()),
        float(pr.d_final.clone()),
        options,
    );
    fn err<B: Backend, const D: usize>(got: Tensor<B, D>, want: Tensor<B, D>) -> f64 {
        let diff = (got.cast(DType::F32) - want.clone()).powi_scalar(2).sum();
        let norm = want.powi_scalar(2).sum();
        (diff.into_scalar().elem::<f64>() / norm.into_scalar().elem::<f64>()).sqrt()
    }
    let last: Tensor<B, 4> = tensor(last);
    let errors = [
        err(f32s4(&tensor(y), tail.clone()), y_ref),
        err(last.narrow(0, 0, 1), last_ref),
        err(f32s4(&tensor(gk.x), tail.clone()), tensor(g_ref.x)),
        err(f32s3(&tensor(gk.delta), tail.clone()), tensor(g_ref.delta)),
        err(f32s4(&tensor(gk.b), tail.clone()), tensor(g_ref.b)),
        err(f32s4(&tensor(gk.c), tail), tensor(g_ref.c)),
    ];
    errors.into_iter().fold(0.0, f64::max)
}

/// A whole Mamba-2 block (d_model 1024, the 370M layer, f32 parameters and activations)
/// training step: forward and backward through `Autodiff<B>`, median ms.
pub fn block_step_ms<B: RambaBackend>(
    device: &B::Device,
    batch: usize,
    seq: usize,
    budget_ms: f64,
) -> f64 {
    use burn::backend::Autodiff;
    let cfg = MambaConfig::default();
    let d_model = 1024;
    let block = Mamba2Block::<Autodiff<B>>::new(d_model, &cfg, 0.02, 1e-5, device);
    let x = Tensor::<Autodiff<B>, 3>::random(
        [batch, seq, d_model],
        Distribution::Normal(0.0, 1.0),
        device,
    )
    .require_grad();
    time_ms::<B>(device, budget_ms, || {
        let (y, _) = block.forward(x.clone(), None);
        let _ = y.sum().backward();
    })
}

/// One decoding step of one layer's scan and convolution (the kernels a decoder launches per
/// token per layer), median µs each: `(scan, conv)`. The conv has the layer's `x‖B‖C` channels
/// (`H·P + 2·G·N`) and width 4.
pub fn decode_step_us<B: RambaBackend>(
    device: &B::Device,
    s: &ScanBenchSettings,
    batch: usize,
) -> (f64, f64) {
    let normal = Distribution::Normal(0.0, 1.0);
    let (h, p, g, n) = (s.heads, s.head_dim, s.groups, s.d_state);
    let make = |shape: Vec<usize>| {
        Tensor::<B, 1>::random([shape.iter().product::<usize>()], normal, device).cast(s.dtype)
    };
    let x = make(vec![batch, h, p]).reshape([batch, h, p]);
    let delta = make(vec![batch, h]).reshape([batch, h]).abs() * 0.05;
    let a = make(vec![h]).abs().neg();
    let b = make(vec![batch, g, n]).reshape([batch, g, n]);
    let c = make(vec![batch, g, n]).reshape([batch, g, n]);
    let d = make(vec![h]);
    let mut state = make(vec![batch, h, p, n]).reshape([batch, h, p, n]);
    // The state is threaded through the calls, as a decoder does (updated in place); the
    // time per step is that of 200 back-to-back steps between two syncs (launch cost included,
    // as a decoder pays it).
    let per_step_us = |f: &mut dyn FnMut()| {
        for _ in 0..10 {
            f();
        }
        B::sync(device).expect("device sync");
        let t0 = std::time::Instant::now();
        for _ in 0..200 {
            f();
        }
        B::sync(device).expect("device sync");
        t0.elapsed().as_secs_f64() * 1e6 / 200.0
    };
    let scan_us = per_step_us(&mut || {
        let (_, next) = scan::selective_scan_step(
            x.clone(),
            delta.clone(),
            a.clone(),
            b.clone(),
            c.clone(),
            d.clone(),
            state.clone(),
        );
        state = next;
    });
    let channels = h * p + 2 * g * n;
    let width = 4;
    let xc = make(vec![batch, channels]).reshape([batch, channels]);
    let weight = make(vec![channels, width]).reshape([channels, width]);
    let bias = make(vec![channels]);
    let mut conv_state =
        make(vec![batch, channels, width - 1]).reshape([batch, channels, width - 1]);
    let conv_us = per_step_us(&mut || {
        let (_, next) = ramba_core::ops::conv::causal_conv1d_step(
            xc.clone(),
            weight.clone(),
            Some(bias.clone()),
            conv_state.clone(),
        );
        conv_state = next;
    });
    (scan_us, conv_us)
}

/// `steps` untimed Mamba-2 block training steps (see [`block_step_ms`]), for counting kernel
/// launches under a profiler.
pub fn block_steps<B: RambaBackend>(device: &B::Device, batch: usize, seq: usize, steps: usize) {
    use burn::backend::Autodiff;
    let cfg = MambaConfig::default();
    let d_model = 1024;
    let block = Mamba2Block::<Autodiff<B>>::new(d_model, &cfg, 0.02, 1e-5, device);
    let x = Tensor::<Autodiff<B>, 3>::random(
        [batch, seq, d_model],
        Distribution::Normal(0.0, 1.0),
        device,
    )
    .require_grad();
    B::sync(device).expect("device sync");
    for _ in 0..steps {
        let (y, _) = block.forward(x.clone(), None);
        let _ = y.sum().backward();
        B::sync(device).expect("device sync");
    }
}

/// The table, with the ceilings and each row's floor.
pub fn table(rows: &[ScanBenchRow], ceil: &Ceilings, s: &ScanBenchSettings) -> String {
    let mut t = format!(
        "ceilings: matmul {:.0} TFLOP/s ({:?}), copy {:.2} TB/s\n",
        ceil.matmul_tflops, s.dtype, ceil.copy_tbs
    );
    t += "backend  B x L        fwd ms  f+b ms  f+b MiB  fwd TF/s  fwd TB/s  f+b TF/s  f+b TB/s  floor f/fb ms   ref fwd/f+b ms     ref MiB  check\n";
    for r in rows {
        let (flops, fwd_bytes, bwd_bytes) = work(s, r.batch * r.seq);
        let floor = |f: f64, b: f64| {
            (f / (ceil.matmul_tflops * 1e12)).max(b / (ceil.copy_tbs * 1e12)) * 1e3
        };
        let reference = match (r.reference_forward_ms, r.reference_forward_backward_ms) {
            (Some(f), Some(fb)) => format!("{f:.2}/{fb:.2}"),
            _ => "-".into(),
        };
        t += &format!(
            "{:<8} {:>2} x {:<7} {:>7.2} {:>7.2} {:>8.0} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>6.2}/{:<7.2} {:>16} {:>9} {}\n",
            r.backend,
            r.batch,
            format_len(r.seq),
            r.forward_ms,
            r.forward_backward_ms,
            r.forward_backward_mib,
            r.forward_tflops,
            r.forward_tbs,
            r.forward_backward_tflops,
            r.forward_backward_tbs,
            floor(flops, fwd_bytes),
            floor(3.0 * flops, fwd_bytes + bwd_bytes),
            reference,
            r.reference_mib.map(|m| format!("{m:.0}")).unwrap_or("-".into()),
            r.check_rel_err.map(|e| format!("{e:.1e}")).unwrap_or("-".into()),
        );
    }
    t
}
