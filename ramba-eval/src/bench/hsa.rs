//! `ramba-bench hsa`: chunk selection, HSA forward and forward+backward at the paper's shape
//! (h_q = 16, h_kv = 1, d_h = 64, S = 64, K = 8) on any backend, beside the reference ops where
//! they fit and the card's ceilings measured in the same run.
//!
//! Timing follows the anchors' harness (`shared/anchors-bench`): two warm-ups and an estimate,
//! then `n = clamp(300 ms / estimate, 5, 100)` calls, each preceded by a 256 MiB write that
//! flushes L2 and a device sync, timed host-side between syncs; the median. Memory is the
//! allocator's reserved bytes after the call minus before it (the pool keeps what the call
//! reserved, so this is the call's peak), with freed pages released first.

use burn::prelude::*;
use burn::tensor::{DType, Distribution, TensorPrimitive};
use ramba_core::ops::{hsa, selection, ChunkWeighting, HsaOptions, RambaBackend, SelectionOptions};
use serde::Serialize;

pub use super::timing::{ceilings, Ceilings};
use super::timing::{format_len, peak_mib, time_ms};

/// What to measure.
#[derive(Clone, Debug)]
pub struct HsaBenchSettings {
    /// `(batch, seq)` pairs.
    pub shapes: Vec<(usize, usize)>,
    /// Query heads.
    pub heads_q: usize,
    /// KV heads.
    pub heads_kv: usize,
    /// Head dim.
    pub head_dim: usize,
    /// Chunk size `S`.
    pub chunk: usize,
    /// Top-k.
    pub top_k: usize,
    /// Retrieval query / landmark width per KV head (the selection's inner dimension).
    pub retrieval_dim: usize,
    /// Input dtype of q, k, v and the selection inputs (weights stay f32).
    pub dtype: DType,
    /// The reference ops run where `batch · seq` is at most this.
    pub reference_max_tokens: usize,
    /// Compare the last `check_tokens` tokens' output, dq and dweights with the reference.
    pub check_tokens: usize,
    /// Timing budget per measurement, ms.
    pub budget_ms: f64,
}

/// One row of the table.
#[derive(Clone, Debug, Default, Serialize)]
pub struct HsaBenchRow {
    pub backend: String,
    pub dtype: String,
    pub batch: usize,
    pub seq: usize,
    pub retrieval_dim: usize,
    pub selection_ms: f64,
    pub forward_ms: f64,
    pub forward_backward_ms: f64,
    /// Pool growth of forward+backward, MiB (outputs and gradients included).
    pub forward_backward_mib: f64,
    /// The same minus the outputs and gradients (what the op keeps beyond them).
    pub extra_mib: f64,
    pub forward_tflops: f64,
    pub forward_tbs: f64,
    pub forward_backward_tflops: f64,
    pub reference_forward_ms: Option<f64>,
    pub reference_forward_backward_ms: Option<f64>,
    pub reference_mib: Option<f64>,
    /// max relative error (out, dq, dweights) of the checked tail against the reference.
    pub check_rel_err: Option<f64>,
}

fn float<B: Backend, const D: usize>(x: Tensor<B, D>) -> burn::tensor::ops::FloatTensor<B> {
    x.into_primitive().tensor()
}

fn tensor<B: Backend, const D: usize>(x: burn::tensor::ops::FloatTensor<B>) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(x))
}

struct Problem<B: Backend> {
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    queries: Tensor<B, 4>,
    landmarks: Tensor<B, 4>,
    d_out: Tensor<B, 4>,
}

fn problem<B: RambaBackend>(
    s: &HsaBenchSettings,
    batch: usize,
    seq: usize,
    device: &B::Device,
) -> Problem<B> {
    let normal = Distribution::Normal(0.0, 1.0);
    let make = |shape: [usize; 4]| Tensor::<B, 4>::random(shape, normal, device).cast(s.dtype);
    let n_chunks = seq / s.chunk;
    Problem {
        q: make([batch, seq, s.heads_q, s.head_dim]),
        k: make([batch, seq, s.heads_kv, s.head_dim]),
        v: make([batch, seq, s.heads_kv, s.head_dim]),
        queries: make([batch, seq, s.heads_kv, s.retrieval_dim]),
        landmarks: make([batch, n_chunks, s.heads_kv, s.retrieval_dim]),
        d_out: make([batch, seq, s.heads_q, s.head_dim]),
    }
}

fn mib(elements: usize, bytes: usize) -> f64 {
    (elements * bytes) as f64 / (1 << 20) as f64
}

/// Runs the benchmark; one row per shape.
pub fn run<B: RambaBackend>(
    device: &B::Device,
    backend: &str,
    s: &HsaBenchSettings,
) -> Vec<HsaBenchRow> {
    let options = HsaOptions {
        chunk_size: s.chunk,
        softmax_off_by_one: false,
    };
    let sel_options = SelectionOptions {
        chunk_size: s.chunk,
        top_k: s.top_k,
        weighting: ChunkWeighting::StickBreaking,
        query_start: 0,
    };
    let elem = s.dtype.size();
    let mut rows = vec![];
    for &(batch, seq) in &s.shapes {
        let p = problem::<B>(s, batch, seq, device);
        let selection_ms = time_ms::<B>(device, s.budget_ms, || {
            let _ = B::select_chunks(
                float(p.queries.clone()),
                float(p.landmarks.clone()),
                sel_options,
            );
        });
        let sel = selection::select_chunks(p.queries.clone(), p.landmarks.clone(), sel_options);
        let (indices, weights) = (sel.indices, sel.weights);

        let fwd = || {
            B::hsa_forward(
                float(p.q.clone()),
                float(p.k.clone()),
                float(p.v.clone()),
                indices.clone().into_primitive(),
                float(weights.clone()),
                options,
            )
        };
        let forward_ms = time_ms::<B>(device, s.budget_ms, || {
            let _ = fwd();
        });
        let fwd_bwd = || {
            let f = fwd();
            B::hsa_backward(
                float(p.q.clone()),
                float(p.k.clone()),
                float(p.v.clone()),
                indices.clone().into_primitive(),
                float(weights.clone()),
                f.lse,
                float(p.d_out.clone()),
                options,
            )
        };
        let forward_backward_ms = time_ms::<B>(device, s.budget_ms, || {
            let _ = fwd_bwd();
        });
        let (fb_mib, grads) = peak_mib::<B, _>(device, fwd_bwd);
        drop(grads);

        let tokens = batch * seq;
        let q_elems = tokens * s.heads_q * s.head_dim;
        let kv_elems = tokens * s.heads_kv * s.head_dim;
        let sel_elems = tokens * s.heads_kv * s.top_k;
        let lse_elems = tokens * s.heads_q * s.top_k;
        // out + dq + dk + dv + dweights (+ the forward's out inside fwd_bwd).
        let outputs_mib = mib(2 * q_elems + 2 * kv_elems, elem) + mib(sel_elems, 4);
        let unit = 2.0 * (tokens * s.heads_q * s.top_k * s.chunk * s.head_dim) as f64;
        let fwd_bytes = (2 * q_elems + 2 * kv_elems) * elem + (2 * sel_elems + lse_elems) * 4;

        let mut row = HsaBenchRow {
            backend: backend.to_string(),
            dtype: format!("{:?}", s.dtype).to_lowercase(),
            batch,
            seq,
            retrieval_dim: s.retrieval_dim,
            selection_ms,
            forward_ms,
            forward_backward_ms,
            forward_backward_mib: fb_mib,
            extra_mib: fb_mib - outputs_mib,
            forward_tflops: 2.0 * unit / (forward_ms * 1e-3) / 1e12,
            forward_tbs: fwd_bytes as f64 / (forward_ms * 1e-3) / 1e12,
            forward_backward_tflops: 7.0 * unit / (forward_backward_ms * 1e-3) / 1e12,
            ..Default::default()
        };

        if tokens <= s.reference_max_tokens {
            let ref_fwd = || {
                hsa::reference::forward(
                    p.q.clone(),
                    p.k.clone(),
                    p.v.clone(),
                    indices.clone(),
                    weights.clone(),
                    options,
                )
            };
            row.reference_forward_ms = Some(time_ms::<B>(device, s.budget_ms, || {
                let _ = ref_fwd();
            }));
            let ref_fb = || {
                hsa::reference::backward(
                    p.q.clone(),
                    p.k.clone(),
                    p.v.clone(),
                    indices.clone(),
                    weights.clone(),
                    p.d_out.clone(),
                    options,
                )
            };
            row.reference_forward_backward_ms = Some(time_ms::<B>(device, s.budget_ms, || {
                let _ = ref_fb();
            }));
            row.reference_mib = Some(peak_mib::<B, _>(device, ref_fb).0);
        }

        if s.check_tokens > 0 {
            row.check_rel_err = Some(check_tail::<B>(
                &p, &indices, &weights, options, s, batch, seq,
            ));
        }
        eprintln!("{}", serde_json::to_string(&row).unwrap_or_default());
        rows.push(row);
    }
    rows
}

/// The last `check_tokens` tokens of batch row 0: output, dq and dweights from the kernels
/// against the reference run on that tail alone (it reads the full K and V), in f32. Exercises
/// the 64-bit offsets of q, out and dq at long contexts.
fn check_tail<B: RambaBackend>(
    p: &Problem<B>,
    indices: &Tensor<B, 4, Int>,
    weights: &Tensor<B, 4>,
    options: HsaOptions,
    s: &HsaBenchSettings,
    batch: usize,
    seq: usize,
) -> f64 {
    let n = s.check_tokens.min(seq);
    let tail = |x: Tensor<B, 4>| {
        let [_, _, h, d] = x.dims();
        x.slice([0..1, seq - n..seq, 0..h, 0..d])
    };
    let f = B::hsa_forward(
        float(p.q.clone()),
        float(p.k.clone()),
        float(p.v.clone()),
        indices.clone().into_primitive(),
        float(weights.clone()),
        options,
    );
    let g = B::hsa_backward(
        float(p.q.clone()),
        float(p.k.clone()),
        float(p.v.clone()),
        indices.clone().into_primitive(),
        float(weights.clone()),
        f.lse,
        float(p.d_out.clone()),
        options,
    );
    let _ = batch;
    let f32s = |x: Tensor<B, 4>| x.cast(DType::F32);
    let k = f32s(p.k.clone().narrow(0, 0, 1));
    let v = f32s(p.v.clone().narrow(0, 0, 1));
    let idx = {
        let [_, _, h, kk] = indices.dims();
        indices.clone().slice([0..1, seq - n..seq, 0..h, 0..kk])
    };
    // The tail's queries sit at positions seq-n.. of the full K/V: the reference indexes
    // chunks of `k` directly, so running it on the tail's q with the full k, v is exact.
    let (out_ref, _) = hsa::reference::forward(
        f32s(tail(p.q.clone())),
        k.clone(),
        v.clone(),
        idx.clone(),
        f32s(tail(weights.clone())),
        options,
    );
    let [dq_ref, _, _, dw_ref] = hsa::reference::backward(
        f32s(tail(p.q.clone())),
        k,
        v,
        idx,
        f32s(tail(weights.clone())),
        f32s(tail(p.d_out.clone())),
        options,
    );
    let err = |got: Tensor<B, 4>, want: Tensor<B, 4>| {
        let diff = (got.cast(DType::F32) - want.clone()).powi_scalar(2).sum();
        let norm = want.powi_scalar(2).sum();
        (diff.into_scalar().elem::<f64>() / norm.into_scalar().elem::<f64>()).sqrt()
    };
    let e_out = err(tail(tensor(f.out)), out_ref);
    let e_dq = err(tail(tensor(g.q)), dq_ref);
    let e_dw = err(tail(tensor(g.weights)), dw_ref);
    e_out.max(e_dq).max(e_dw)
}

/// The table, with the ceilings and each row's ratio to its floor.
pub fn table(rows: &[HsaBenchRow], ceil: &Ceilings, s: &HsaBenchSettings) -> String {
    let mut t = format!(
        "ceilings: matmul {:.0} TFLOP/s ({:?}), copy {:.2} TB/s\n",
        ceil.matmul_tflops, s.dtype, ceil.copy_tbs
    );
    t += "backend  B x L        sel ms  fwd ms  f+b ms  f+b MiB  extra MiB  fwd TF/s  fwd TB/s  f+b TF/s  floor f/fb ms   ref fwd/f+b ms     ref MiB  check\n";
    for r in rows {
        let unit = 2.0 * (r.batch * r.seq * s.heads_q * s.top_k * s.chunk * s.head_dim) as f64;
        let floor_f = 2.0 * unit / (ceil.matmul_tflops * 1e12) * 1e3;
        let floor_fb = 7.0 * unit / (ceil.matmul_tflops * 1e12) * 1e3;
        let reference = match (r.reference_forward_ms, r.reference_forward_backward_ms) {
            (Some(f), Some(fb)) => format!("{f:.2}/{fb:.2}"),
            _ => "-".into(),
        };
        t += &format!(
            "{:<8} {:>2} x {:<7} {:>6.2} {:>7.2} {:>7.2} {:>8.0} {:>10.0} {:>9.1} {:>9.2} {:>9.1} {:>6.2}/{:<7.2} {:>16} {:>9} {}\n",
            r.backend,
            r.batch,
            format_len(r.seq),
            r.selection_ms,
            r.forward_ms,
            r.forward_backward_ms,
            r.forward_backward_mib,
            r.extra_mib,
            r.forward_tflops,
            r.forward_tbs,
            r.forward_backward_tflops,
            floor_f,
            floor_fb,
            reference,
            r.reference_mib.map(|m| format!("{m:.0}")).unwrap_or("-".into()),
            r.check_rel_err.map(|e| format!("{e:.1e}")).unwrap_or("-".into()),
        );
    }
    t
}
