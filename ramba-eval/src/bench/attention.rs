//! `ramba-bench attention`: fused attention forward and forward+backward (causal, or causal with
//! a sliding window) on any backend, beside the dense reference where it fits and the card's
//! ceilings measured in the same run. The paper's shape is the default (h_q = 16, h_kv = 1,
//! d_h = 64); `--heads-q 10 --heads-kv 10` is ramba-small's.
//!
//! Timing and memory as the other benchmarks (`super::timing`): median of timed calls between
//! device syncs, L2 flushed before each; memory is the pool's growth over a forward+backward.
//! FLOPs count the visible (query, key) pairs only: `4 · D` a pair forward (QKᵀ and PV),
//! `10 · D` forward+backward (the backward recomputes QKᵀ and adds dV, dP, dQ, dK), as
//! FlashAttention's accounting does.

use burn::prelude::*;
use burn::tensor::{DType, Distribution};
use ramba_core::ops::attention::{self, AttentionOptions};
use ramba_core::ops::RambaBackend;
use serde::Serialize;

use super::timing::{format_len, peak_mib, time_ms, Ceilings};

/// What to measure.
#[derive(Clone, Debug)]
pub struct AttentionBenchSettings {
    /// `(batch, seq)` pairs.
    pub shapes: Vec<(usize, usize)>,
    /// Query heads.
    pub heads_q: usize,
    /// KV heads.
    pub heads_kv: usize,
    /// Head dim.
    pub head_dim: usize,
    /// Sliding windows to measure besides full causal attention (`None`: full causal).
    pub windows: Vec<Option<usize>>,
    /// Input dtype of q, k, v.
    pub dtype: DType,
    /// The dense reference runs where `batch · seq` is at most this (it holds `B·h·L²` scores).
    pub reference_max_tokens: usize,
    /// Timing budget per measurement, ms.
    pub budget_ms: f64,
}

/// One row of the table.
#[derive(Clone, Debug, Default, Serialize)]
pub struct AttentionBenchRow {
    pub backend: String,
    pub dtype: String,
    pub batch: usize,
    pub seq: usize,
    /// 0: full causal.
    pub window: usize,
    pub forward_ms: f64,
    pub forward_backward_ms: f64,
    /// Pool growth of forward+backward, MiB (outputs and gradients included).
    pub forward_backward_mib: f64,
    pub forward_tflops: f64,
    pub forward_backward_tflops: f64,
    pub reference_forward_ms: Option<f64>,
    pub reference_forward_backward_ms: Option<f64>,
    pub reference_mib: Option<f64>,
}

fn float<B: Backend, const D: usize>(x: Tensor<B, D>) -> burn::tensor::ops::FloatTensor<B> {
    x.into_primitive().tensor()
}

/// Visible (query, key) pairs of a causal mask over `seq` tokens with an optional window.
pub fn visible_pairs(seq: usize, window: Option<usize>) -> f64 {
    let n = seq as f64;
    match window {
        Some(w) if w < seq => {
            let w = w as f64;
            // The first w rows see 1..=w keys, the rest w each.
            w * (w + 1.0) / 2.0 + (n - w) * w
        }
        _ => n * (n + 1.0) / 2.0,
    }
}

/// Runs the benchmark; one row per shape and window.
pub fn run<B: RambaBackend>(
    device: &B::Device,
    backend: &str,
    s: &AttentionBenchSettings,
) -> Vec<AttentionBenchRow> {
    let normal = Distribution::Normal(0.0, 1.0);
    let mut rows = vec![];
    for &(batch, seq) in &s.shapes {
        let make = |h: usize| {
            Tensor::<B, 4>::random([batch, seq, h, s.head_dim], normal, device).cast(s.dtype)
        };
        let (q, k, v, d_out) = (
            make(s.heads_q),
            make(s.heads_kv),
            make(s.heads_kv),
            make(s.heads_q),
        );
        for &window in &s.windows {
            let options = match window {
                Some(w) => AttentionOptions::sliding_window(w),
                None => AttentionOptions::causal(),
            };
            let fwd = || {
                B::attention_forward(
                    float(q.clone()),
                    float(k.clone()),
                    float(v.clone()),
                    options,
                )
            };
            let forward_ms = time_ms::<B>(device, s.budget_ms, || {
                let _ = fwd();
            });
            let fwd_bwd = || {
                let f = fwd();
                B::attention_backward(
                    float(q.clone()),
                    float(k.clone()),
                    float(v.clone()),
                    f.out,
                    f.lse,
                    float(d_out.clone()),
                    options,
                )
            };
            let forward_backward_ms = time_ms::<B>(device, s.budget_ms, || {
                let _ = fwd_bwd();
            });
            let (fb_mib, grads) = peak_mib::<B, _>(device, fwd_bwd);
            drop(grads);

            let pairs = batch as f64 * s.heads_q as f64 * visible_pairs(seq, window);
            let unit = pairs * s.head_dim as f64;
            let mut row = AttentionBenchRow {
                backend: backend.to_string(),
                dtype: format!("{:?}", s.dtype).to_lowercase(),
                batch,
                seq,
                window: window.unwrap_or(0),
                forward_ms,
                forward_backward_ms,
                forward_backward_mib: fb_mib,
                forward_tflops: 4.0 * unit / (forward_ms * 1e-3) / 1e12,
                forward_backward_tflops: 10.0 * unit / (forward_backward_ms * 1e-3) / 1e12,
                ..Default::default()
            };
            if batch * seq <= s.reference_max_tokens {
                let ref_fb = || {
                    attention::reference::backward(
                        q.clone(),
                        k.clone(),
                        v.clone(),
                        d_out.clone(),
                        options,
                    )
                };
                row.reference_forward_ms = Some(time_ms::<B>(device, s.budget_ms, || {
                    let _ = attention::reference::forward(q.clone(), k.clone(), v.clone(), options);
                }));
                row.reference_forward_backward_ms = Some(time_ms::<B>(device, s.budget_ms, || {
                    let _ = ref_fb();
                }));
                row.reference_mib = Some(peak_mib::<B, _>(device, ref_fb).0);
            }
            eprintln!("{}", serde_json::to_string(&row).unwrap_or_default());
            rows.push(row);
        }
    }
    rows
}

/// The table, with the ceilings and each row's floor (its FLOPs at the matmul ceiling).
pub fn table(rows: &[AttentionBenchRow], ceil: &Ceilings, s: &AttentionBenchSettings) -> String {
    let mut t = format!(
        "ceilings: matmul {:.0} TFLOP/s ({:?}), copy {:.2} TB/s; h_q {} / h_kv {}, d {}\n",
        ceil.matmul_tflops, s.dtype, ceil.copy_tbs, s.heads_q, s.heads_kv, s.head_dim
    );
    t += "backend  B x L       window   fwd ms    f+b ms  f+b MiB  fwd TF/s  f+b TF/s  floor f/fb ms    ref fwd/f+b ms   ref MiB\n";
    for r in rows {
        let window = (r.window > 0).then_some(r.window);
        let unit =
            r.batch as f64 * s.heads_q as f64 * visible_pairs(r.seq, window) * s.head_dim as f64;
        let floor_f = 4.0 * unit / (ceil.matmul_tflops * 1e12) * 1e3;
        let floor_fb = 10.0 * unit / (ceil.matmul_tflops * 1e12) * 1e3;
        let reference = match (r.reference_forward_ms, r.reference_forward_backward_ms) {
            (Some(f), Some(fb)) => format!("{f:.2}/{fb:.2}"),
            _ => "-".into(),
        };
        t += &format!(
            "{:<8} {:>2} x {:<7} {:>6} {:>8.2} {:>9.2} {:>8.0} {:>9.1} {:>9.1} {:>7.2}/{:<7.2} {:>16} {:>9}\n",
            r.backend,
            r.batch,
            format_len(r.seq),
            if r.window > 0 { format_len(r.window) } else { "causal".into() },
            r.forward_ms,
            r.forward_backward_ms,
            r.forward_backward_mib,
            r.forward_tflops,
            r.forward_backward_tflops,
            floor_f,
            floor_fb,
            reference,
            r.reference_mib.map(|m| format!("{m:.0}")).unwrap_or("-".into()),
        );
    }
    t
}

#[cfg(test)]
mod tests {
    use super::visible_pairs;

    #[test]
    fn visible_pairs_count_the_mask() {
        // Causal over 4 tokens: 1 + 2 + 3 + 4.
        assert_eq!(visible_pairs(4, None), 10.0);
        // Window 2 over 5 tokens: 1 + 2 + 2 + 2 + 2.
        assert_eq!(visible_pairs(5, Some(2)), 9.0);
        // A window at least as long as the sequence is full causal.
        assert_eq!(visible_pairs(4, Some(4)), 10.0);
        assert_eq!(visible_pairs(4, Some(9)), 10.0);
    }
}
