//! Mamba-2 block (Dao & Gu 2024, "Transformers are SSMs"), pre-RMSNorm residual, as in RAMba.
//!
//! `in_proj → (z, x, B, C, dt)`; causal depthwise conv on `x‖B‖C` then SiLU; the selective scan
//! with a scalar `A = −exp(A_log)` per head and `Δ = softplus(dt + dt_bias)`; gated RMSNorm with
//! `SiLU(z)`; `out_proj`. The conv and SSM states go in and out, for streaming inference and
//! the "memory reset" training option.

use burn::module::Param;
use burn::nn::{Initializer, Linear, RmsNorm};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::Distribution;

use super::norm::GatedRmsNorm;
use super::{linear, rms_norm, Autocast};
use crate::config::MambaConfig;
use crate::ops::{RambaBackend, ScanOptions};

/// Recurrent state of one Mamba-2 block.
#[derive(Clone, Debug)]
pub struct Mamba2State<B: Backend> {
    /// `[batch, conv_channels, conv_width − 1]`: the last inputs of the convolution.
    pub conv: Tensor<B, 3>,
    /// `[batch, heads, head_dim, d_state]`.
    pub ssm: Tensor<B, 4>,
}

impl<B: Backend> Mamba2State<B> {
    /// Cuts the state off the autodiff graph (truncated BPTT).
    pub fn detach(self) -> Self {
        Self {
            conv: self.conv.detach(),
            ssm: self.ssm.detach(),
        }
    }

    /// The state of batch rows `rows` only.
    pub fn rows(&self, rows: std::ops::Range<usize>) -> Self {
        Self {
            conv: self.conv.clone().slice(rows.clone()),
            ssm: self.ssm.clone().slice(rows),
        }
    }

    /// For a batch whose rows were each cut into `segments` rows (row `b` → rows
    /// `b·segments .. (b+1)·segments`): this state for every row's first segment, zeros for
    /// the others.
    fn for_first_segments(self, segments: usize) -> Self {
        let [batch, channels, width] = self.conv.dims();
        let [_, heads, head_dim, d_state] = self.ssm.dims();
        let device = self.conv.device();
        let rest = segments - 1;
        let (conv_dtype, ssm_dtype) = (self.conv.dtype(), self.ssm.dtype());
        let conv = Tensor::cat(
            vec![
                self.conv.unsqueeze_dim::<4>(1),
                Tensor::<B, 4>::zeros([batch, rest, channels, width], (&device, conv_dtype)),
            ],
            1,
        );
        let ssm = Tensor::cat(
            vec![
                self.ssm.unsqueeze_dim::<5>(1),
                Tensor::<B, 5>::zeros(
                    [batch, rest, heads, head_dim, d_state],
                    (&device, ssm_dtype),
                ),
            ],
            1,
        );
        Self {
            conv: conv.reshape([batch * segments, channels, width]),
            ssm: ssm.reshape([batch * segments, heads, head_dim, d_state]),
        }
    }

    /// The inverse view: of each row's `segments` states, the last one's.
    fn of_last_segments(self, segments: usize) -> Self {
        let [rows, channels, width] = self.conv.dims();
        let [_, heads, head_dim, d_state] = self.ssm.dims();
        let batch = rows / segments;
        let last = segments - 1..segments;
        Self {
            conv: self
                .conv
                .reshape([batch, segments, channels, width])
                .slice([0..batch, last.clone()])
                .reshape([batch, channels, width]),
            ssm: self
                .ssm
                .reshape([batch, segments, heads, head_dim, d_state])
                .slice([0..batch, last])
                .reshape([batch, heads, head_dim, d_state]),
        }
    }

    /// States of consecutive row ranges joined along the batch.
    pub fn cat(parts: Vec<Self>) -> Self {
        let (conv, ssm) = parts.into_iter().map(|s| (s.conv, s.ssm)).unzip();
        Self {
            conv: Tensor::cat(conv, 0),
            ssm: Tensor::cat(ssm, 0),
        }
    }
}

impl<B: AutodiffBackend> Mamba2State<B> {
    /// The state on the inner backend, off the autodiff graph.
    pub fn inner(self) -> Mamba2State<B::InnerBackend> {
        Mamba2State {
            conv: self.conv.inner(),
            ssm: self.ssm.inner(),
        }
    }

    /// A state of the inner backend as a constant of this one (no gradient flows into it).
    pub fn from_inner(s: Mamba2State<B::InnerBackend>) -> Self {
        Self {
            conv: Tensor::from_inner(s.conv),
            ssm: Tensor::from_inner(s.ssm),
        }
    }
}

/// See the module docs.
/// What a block computes from its normed input before the scan, each `[B, L, width]`: the
/// gate `z`, the scan's `x`, `B`, `C` (after the convolution and SiLU), the step-size input
/// `dt`, and the convolution's state after the sequence.
struct BlockInputs<B: Backend> {
    z: Tensor<B, 3>,
    x: Tensor<B, 3>,
    b: Tensor<B, 3>,
    c: Tensor<B, 3>,
    dt: Tensor<B, 3>,
    conv_state: Tensor<B, 3>,
}

#[derive(Module, Debug)]
pub struct Mamba2Block<B: Backend> {
    norm: RmsNorm<B>,
    in_proj: Linear<B>,
    conv_weight: Param<Tensor<B, 2>>,
    conv_bias: Param<Tensor<B, 1>>,
    dt_bias: Param<Tensor<B, 1>>,
    a_log: Param<Tensor<B, 1>>,
    d: Param<Tensor<B, 1>>,
    gate_norm: GatedRmsNorm<B>,
    out_proj: Linear<B>,
    d_inner: usize,
    n_heads: usize,
    head_dim: usize,
    n_groups: usize,
    d_state: usize,
    chunk_size: usize,
    train_segment: usize,
    segment_inference: bool,
}

impl<B: Backend> Mamba2Block<B> {
    /// Initialises as mamba_ssm does: Δ log-uniform in `[dt_min, dt_max]` (through the inverse
    /// softplus of `dt_bias`), `A` uniform in `[1, 16]`, `D = 1`, conv uniform `±1/√width`.
    pub fn new(
        d_model: usize,
        cfg: &MambaConfig,
        init_std: f64,
        norm_eps: f64,
        device: &B::Device,
    ) -> Self {
        let d_inner = cfg.d_inner(d_model);
        let n_heads = cfg.n_heads(d_model);
        let conv_dim = d_inner + 2 * cfg.n_groups * cfg.d_state;
        let proj = 2 * d_inner + 2 * cfg.n_groups * cfg.d_state + n_heads;

        let (lo, hi) = (cfg.dt_min.ln(), cfg.dt_max.ln());
        let dt = Tensor::<B, 1>::random([n_heads], Distribution::Uniform(lo, hi), device)
            .exp()
            .clamp_min(1e-4);
        // softplus⁻¹(dt) = dt + log(1 − exp(−dt))
        let dt_bias = dt.clone() + (Tensor::ones([n_heads], device) - dt.neg().exp()).log();
        let a = Tensor::<B, 1>::random([n_heads], Distribution::Uniform(1.0, 16.0), device);
        let bound = (cfg.conv_width as f64).sqrt().recip();
        let conv = Initializer::Uniform {
            min: -bound,
            max: bound,
        };
        Self {
            norm: rms_norm(d_model, norm_eps, device),
            in_proj: linear(d_model, proj, false, init_std, device),
            conv_weight: conv.init([conv_dim, cfg.conv_width], device),
            conv_bias: conv.init([conv_dim], device),
            dt_bias: Param::from_tensor(dt_bias),
            a_log: Param::from_tensor(a.log()),
            d: Param::from_tensor(Tensor::ones([n_heads], device)),
            gate_norm: GatedRmsNorm::new(d_inner, norm_eps, device),
            out_proj: linear(d_inner, d_model, false, init_std, device),
            d_inner,
            n_heads,
            head_dim: cfg.head_dim,
            n_groups: cfg.n_groups,
            d_state: cfg.d_state,
            chunk_size: cfg.chunk_size,
            train_segment: cfg.train_segment,
            segment_inference: cfg.segment_inference,
        }
    }

    /// A zero state for `batch` sequences.
    pub fn zero_state(&self, batch: usize, device: &B::Device) -> Mamba2State<B> {
        let [conv_dim, width] = self.conv_weight.dims();
        Mamba2State {
            conv: Tensor::zeros([batch, conv_dim, width - 1], device),
            ssm: Tensor::zeros([batch, self.n_heads, self.head_dim, self.d_state], device),
        }
    }
}

impl<B: RambaBackend> Mamba2Block<B> {
    /// `x`: `[batch, seq, d_model]`, optional state from the previous segment →
    /// (`[batch, seq, d_model]`, the state after `x`).
    ///
    /// In training (an autodiff backend) with `train_segment` set, each full `train_segment`
    /// slice of a row runs as its own sequence; `state` seeds only a row's first slice, and the
    /// returned state is that of the row's last slice (a shorter tail runs as one more).
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        state: Option<Mamba2State<B>>,
    ) -> (Tensor<B, 3>, Mamba2State<B>) {
        let [batch, seq, d_model] = x.dims();
        let segment = self.train_segment;
        if segment == 0 || seq <= segment || !B::ad_enabled(&x.device()) {
            return self.forward_sequence(x, state);
        }
        let segments = seq / segment;
        let body = segments * segment;
        let rows =
            x.clone()
                .slice([0..batch, 0..body])
                .reshape([batch * segments, segment, d_model]);
        let (y, last) = self.forward_sequence(rows, state.map(|s| s.for_first_segments(segments)));
        let (y, last) = (
            y.reshape([batch, body, d_model]),
            last.of_last_segments(segments),
        );
        if body == seq {
            return (y, last);
        }
        let (tail, last) = self.forward_sequence(x.slice([0..batch, body..seq]), None);
        (Tensor::cat(vec![y, tail], 1), last)
    }

    /// Whether, outside training, the recurrence restarts at every multiple of
    /// `train_segment` positions (`model.mamba.segment_inference`).
    fn restarts_at_inference(&self, device: &B::Device) -> bool {
        self.segment_inference && self.train_segment > 0 && !B::ad_enabled(device)
    }

    /// Whether the recurrence restarts from zeros at stream position `pos`.
    pub fn restarts_at(&self, pos: usize, device: &B::Device) -> bool {
        self.restarts_at_inference(device) && pos.is_multiple_of(self.train_segment)
    }

    /// [`Self::forward`] for `x` at positions `start..` of a stream. With
    /// `segment_inference`, outside training the recurrence restarts from zeros at every
    /// multiple of `train_segment`: `state` continues only the slice `start` falls inside, the
    /// full slices after it run side by side as a batch, and a shorter tail runs as one more;
    /// the returned state is that of the last slice.
    pub fn forward_at(
        &self,
        x: Tensor<B, 3>,
        state: Option<Mamba2State<B>>,
        start: usize,
    ) -> (Tensor<B, 3>, Mamba2State<B>) {
        if !self.restarts_at_inference(&x.device()) {
            return self.forward(x, state);
        }
        let segment = self.train_segment;
        let [batch, seq, d_model] = x.dims();
        let into = start % segment;
        let head = if into == 0 {
            0
        } else {
            (segment - into).min(seq)
        };
        let segments = (seq - head) / segment;
        let body = segments * segment;
        let mut parts = Vec::with_capacity(3);
        let mut last = None;
        if head > 0 {
            let (y, s) = self.forward_sequence(x.clone().slice([0..batch, 0..head]), state);
            parts.push(y);
            last = Some(s);
        }
        if segments > 0 {
            let rows = x.clone().slice([0..batch, head..head + body]).reshape([
                batch * segments,
                segment,
                d_model,
            ]);
            let (y, s) = self.forward_sequence(rows, None);
            parts.push(y.reshape([batch, body, d_model]));
            last = Some(s.of_last_segments(segments));
        }
        if head + body < seq {
            let (y, s) = self.forward_sequence(x.slice([0..batch, head + body..seq]), None);
            parts.push(y);
            last = Some(s);
        }
        let last = last.expect("forward_at: an empty sequence");
        (Tensor::cat(parts, 1), last)
    }

    /// One decoding step: `x [batch, 1, d_model]` and the state before it → the output and the
    /// state after it, through the one-token ops of the seam (single launches on backends with
    /// kernels) instead of a scan over a sequence of one.
    pub fn step(&self, x: Tensor<B, 3>, state: Mamba2State<B>) -> (Tensor<B, 3>, Mamba2State<B>) {
        let [batch, _, d_model] = x.dims();
        let (di, gn) = (self.d_inner, self.n_groups * self.d_state);
        let conv_dim = di + 2 * gn;
        let proj = self
            .in_proj
            .forward_autocast(self.norm.forward_autocast(x.clone()))
            .reshape([batch, di + conv_dim + self.n_heads]);
        let dtype = proj.dtype();
        let z = proj.clone().slice([0..batch, 0..di]);
        let xbc = proj.clone().slice([0..batch, di..di + conv_dim]);
        let dt = proj.slice([0..batch, di + conv_dim..di + conv_dim + self.n_heads]);

        let (xbc, conv) = crate::ops::conv::causal_conv1d_step(
            xbc,
            self.conv_weight.val().cast(dtype),
            Some(self.conv_bias.val().cast(dtype)),
            state.conv.cast(dtype),
        );
        let xbc = crate::ops::norm::silu(xbc);
        let xs = xbc
            .clone()
            .slice([0..batch, 0..di])
            .reshape([batch, self.n_heads, self.head_dim]);
        let b = xbc.clone().slice([0..batch, di..di + gn]).reshape([
            batch,
            self.n_groups,
            self.d_state,
        ]);
        let c =
            xbc.slice([0..batch, di + gn..conv_dim])
                .reshape([batch, self.n_groups, self.d_state]);
        let (delta, a, d) = self.decay_params(dt, dtype);
        let (y, ssm) =
            crate::ops::scan::selective_scan_step(xs, delta, a, b, c, d, state.ssm.cast(dtype));
        let y = self
            .gate_norm
            .forward(y.reshape([batch, 1, di]), z.reshape([batch, 1, di]));
        let out = x + self.out_proj.forward_autocast(y);
        debug_assert_eq!(out.dims(), [batch, 1, d_model]);
        (out, Mamba2State { conv, ssm })
    }

    /// The block's inputs from the normed `h [B, L, d_model]` ([`BlockInputs`]). One
    /// `in_proj` product sliced into its parts, and one convolution over `x‖B‖C` sliced again
    /// (the CPU's path).
    fn inputs_by_slicing(
        &self,
        h: Tensor<B, 3>,
        conv_state: Option<Tensor<B, 3>>,
    ) -> BlockInputs<B> {
        let [batch, seq, _] = h.dims();
        let (di, gn) = (self.d_inner, self.n_groups * self.d_state);
        let conv_dim = di + 2 * gn;
        let proj = self.in_proj.forward_autocast(h);
        let dtype = proj.dtype();
        let z = proj.clone().slice([0..batch, 0..seq, 0..di]);
        let xbc = proj.clone().slice([0..batch, 0..seq, di..di + conv_dim]);
        let dt = proj.slice([
            0..batch,
            0..seq,
            di + conv_dim..di + conv_dim + self.n_heads,
        ]);
        let (xbc, conv_state) = crate::ops::conv::causal_conv1d(
            xbc,
            self.conv_weight.val().cast(dtype),
            Some(self.conv_bias.val().cast(dtype)),
            conv_state,
        );
        let xbc = crate::ops::norm::silu(xbc);
        let xs = xbc.clone().slice([0..batch, 0..seq, 0..di]);
        let b = xbc.clone().slice([0..batch, 0..seq, di..di + gn]);
        let c = xbc.slice([0..batch, 0..seq, di + gn..conv_dim]);
        BlockInputs {
            z,
            x: xs,
            b,
            c,
            dt,
            conv_state,
        }
    }

    /// [`Self::inputs_by_slicing`] with every part its own product of `in_proj`'s columns (the
    /// five one graph node, [`crate::ops::linear::linear_parts`]) and `x`, `B`, `C` their own
    /// convolutions (the conv is depthwise: the parts are independent), so no activation is
    /// ever sliced: on the GPU, slicing costs a copy forward and, backward, a zero-filled tensor
    /// of the whole width per slice and the adds that merge them.
    fn inputs_by_part(&self, h: Tensor<B, 3>, conv_state: Option<Tensor<B, 3>>) -> BlockInputs<B> {
        let (di, gn) = (self.d_inner, self.n_groups * self.d_state);
        let dtype = h.dtype();
        // One node for the five products (one input- and one weight-gradient product backward).
        let [z, x, b, c, dt]: [Tensor<B, 3>; 5] = crate::ops::linear::linear_parts(
            h,
            self.in_proj.weight.val(),
            &[di, di, gn, gn, self.n_heads],
        )
        .try_into()
        .unwrap_or_else(|_| unreachable!("linear_parts returns one tensor per width"));
        let conv_weight = self.conv_weight.val().cast(dtype);
        let conv_bias = self.conv_bias.val().cast(dtype);
        let width = conv_weight.dims()[1];
        let conv = |x: Tensor<B, 3>, channels: std::ops::Range<usize>| {
            let state = conv_state.clone().map(|s| {
                let batch = s.dims()[0];
                s.slice([0..batch, channels.clone()])
            });
            // SiLU inside the conv's own pass: the pre-activation is never stored.
            crate::ops::conv::causal_conv1d_silu(
                x,
                conv_weight.clone().slice([channels.clone(), 0..width]),
                Some(conv_bias.clone().slice([channels])),
                state,
            )
        };
        let (xs, state_x) = conv(x, 0..di);
        let (b, state_b) = conv(b, di..di + gn);
        let (c, state_c) = conv(c, di + gn..di + 2 * gn);
        BlockInputs {
            z,
            x: xs,
            b,
            c,
            dt,
            conv_state: Tensor::cat(vec![state_x, state_b, state_c], 1),
        }
    }

    /// `Δ = softplus(dt + dt_bias)` for `dt [.., heads]`, `A = −exp(A_log)` and `D`, in
    /// `dtype` for the kernels. `Δ` is computed in f32: it is a step size that the scan
    /// exponentiates and sums, and `dt_bias` holds values as small as `softplus⁻¹(1e-3)`.
    fn decay_params<const D: usize>(
        &self,
        dt: Tensor<B, D>,
        dtype: burn::tensor::DType,
    ) -> (Tensor<B, D>, Tensor<B, 1>, Tensor<B, 1>) {
        let delta = crate::ops::activation::biased_softplus(dt, self.dt_bias.val(), dtype);
        (
            delta,
            self.a_log.val().exp().neg().cast(dtype),
            self.d.val().cast(dtype),
        )
    }

    /// [`Self::forward`] as one recurrence over the whole sequence.
    fn forward_sequence(
        &self,
        x: Tensor<B, 3>,
        state: Option<Mamba2State<B>>,
    ) -> (Tensor<B, 3>, Mamba2State<B>) {
        let [batch, seq, _] = x.dims();
        let h = self.norm.forward_autocast(x.clone());
        // Mixed precision: the conv and scan kernels take every operand in the activations'
        // dtype (their sums and the scan's chunk states are f32 inside).
        let dtype = h.dtype();
        let (conv_state, ssm_state) = match state {
            Some(s) => (Some(s.conv.cast(dtype)), Some(s.ssm.cast(dtype))),
            None => (None, None),
        };
        let BlockInputs {
            z,
            x: xs,
            b,
            c,
            dt,
            conv_state,
        } = if B::fused_linear() {
            self.inputs_by_part(h, conv_state)
        } else {
            self.inputs_by_slicing(h, conv_state)
        };
        let xs = xs.reshape([batch, seq, self.n_heads, self.head_dim]);
        let b = b.reshape([batch, seq, self.n_groups, self.d_state]);
        let c = c.reshape([batch, seq, self.n_groups, self.d_state]);

        let (delta, a, d) = self.decay_params(dt, dtype);
        let (y, ssm_state) = crate::ops::scan::selective_scan(
            xs,
            delta,
            a,
            b,
            c,
            d,
            ssm_state,
            ScanOptions {
                chunk_size: self.chunk_size,
            },
        );
        let y = self
            .gate_norm
            .forward(y.reshape([batch, seq, self.d_inner]), z);
        (
            x + self.out_proj.forward_autocast(y),
            Mamba2State {
                conv: conv_state,
                ssm: ssm_state,
            },
        )
    }
}
