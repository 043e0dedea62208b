//! The ops seam: the one place where models meet kernels.
//!
//! Models call the tensor functions of each op module ([`attention::attention`], [`hsa::hsa`],
//! [`selection::select_chunks`], [`scan::selective_scan`], [`conv::causal_conv1d`]); those call
//! [`RambaBackend`], whose methods take and return primitives. The trait's default methods are
//! the reference implementations (plain Burn tensor ops: exact, differentiable through
//! `Autodiff`, valid on every backend, and the oracle every kernel is tested against).
//!
//! A backend with kernels sets the op's capability flag and overrides its forward and backward
//! methods: Burn's CubeCL backends (CUDA, wgpu) do for HSA and selection. Under
//! `Autodiff<B>`, an op whose flag `B` sets becomes one graph node whose backward calls `B`'s
//! backward kernel; otherwise the reference is differentiated as before, so CPU training is
//! unchanged. Layout: `ops/<op>/{mod.rs, reference.rs, autodiff.rs, cube.rs}`, the `#[cube]`
//! kernels in the `cubecl-kernels` crate.

pub mod activation;
pub mod attention;
pub mod conv;
pub mod cross_entropy;
pub mod embedding;
pub mod hsa;
pub mod linear;
pub mod norm;
mod outputs;
pub mod scan;
pub mod selection;
mod vjp;

use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::ndarray::NdArray;
use burn::backend::Autodiff;
use burn::prelude::*;
use burn::tensor::ops::{FloatTensor, FloatTensorOps, IntTensor};
use burn::tensor::{TensorMetadata, TensorPrimitive};
use burn_cubecl::{BoolElement, CubeBackend, CubeRuntime, FloatElement, IntElement};

pub use activation::softplus;
pub use attention::{AttentionForward, AttentionGrads, AttentionOptions};
pub use conv::ConvGrads;
pub use hsa::{HsaForward, HsaGrads, HsaOptions};
pub use scan::{ScanGrads, ScanOptions};
pub use selection::{ChunkSelection, ChunkWeighting, SelectionMode, SelectionOptions};

/// Backend extension with the long-context ops of HSA and Mamba-2.
///
/// Shapes use the spec's sequence-first layouts (`docs/hsa-spec.md` in the shared docs); each
/// op module documents its own.
pub trait RambaBackend: Backend {
    /// Whether models run RMSNorm, the gated RMSNorm, SiLU and the loss through these seam
    /// methods (under `Autodiff`: single graph nodes, see [`norm`] and [`cross_entropy`], which
    /// keep a fraction of the activations op-by-op differentiation keeps) rather than the
    /// reference at their own rank. The model-facing functions check it. Off on the CPU
    /// backend, whose training stays the op-by-op reference (the quickstart recipes were tuned
    /// on its rounding).
    fn fused_norm_and_loss() -> bool {
        false
    }

    /// RMSNorm of `x [rows, d]` with scale `gamma [d]` (see [`norm::rms_norm`]).
    fn rms_norm(x: FloatTensor<Self>, gamma: FloatTensor<Self>, epsilon: f64) -> FloatTensor<Self> {
        into_float(norm::reference::rms_norm::<Self, 2>(
            from_float(x),
            from_float(gamma),
            epsilon,
        ))
    }

    /// Mamba-2's gated RMSNorm of `x, z [rows, d]` (see [`norm::gated_rms_norm`]).
    fn gated_rms_norm(
        x: FloatTensor<Self>,
        z: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        epsilon: f64,
    ) -> FloatTensor<Self> {
        into_float(norm::reference::gated_rms_norm::<Self, 2>(
            from_float(x),
            from_float(z),
            from_float(gamma),
            epsilon,
        ))
    }

    /// SiLU of `x [n]` (see [`norm::silu`]).
    fn silu(x: FloatTensor<Self>) -> FloatTensor<Self> {
        into_float(norm::reference::silu::<Self, 1>(from_float(x)))
    }

    /// The norm nodes' forward: `(y [rows, d] in x's dtype, rstd)` of RMSNorm of `x [rows, d]`,
    /// of `x · SiLU(z)` when `z` is given; `rstd` is f32, one value a row, in whatever layout
    /// this backend's [`rms_norm_backward`](Self::rms_norm_backward) reads.
    fn rms_norm_forward(
        x: FloatTensor<Self>,
        z: Option<FloatTensor<Self>>,
        gamma: FloatTensor<Self>,
        epsilon: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let (y, rstd) = match z {
            None => norm::math::rms_norm_forward::<Self>(from_float(x), from_float(gamma), epsilon),
            Some(z) => norm::math::gated_rms_norm_forward::<Self>(
                from_float(x),
                from_float(z),
                from_float(gamma),
                epsilon,
            ),
        };
        (into_float(y), into_float(rstd))
    }

    /// The norm nodes' backward: `(dx, dz, dγ)` for `dy`, given the forward's `rstd` (`dz`
    /// only for the gated form; `dγ` in `gamma`'s dtype).
    fn rms_norm_backward(
        x: FloatTensor<Self>,
        z: Option<FloatTensor<Self>>,
        gamma: FloatTensor<Self>,
        rstd: FloatTensor<Self>,
        dy: FloatTensor<Self>,
    ) -> (
        FloatTensor<Self>,
        Option<FloatTensor<Self>>,
        FloatTensor<Self>,
    ) {
        match z {
            None => {
                let (dx, dg) = norm::math::rms_norm_backward::<Self>(
                    from_float(x),
                    from_float(gamma),
                    from_float(rstd),
                    from_float(dy),
                );
                (into_float(dx), None, into_float(dg))
            }
            Some(z) => {
                let (dx, dz, dg) = norm::math::gated_rms_norm_backward::<Self>(
                    from_float(x),
                    from_float(z),
                    from_float(gamma),
                    from_float(rstd),
                    from_float(dy),
                );
                (into_float(dx), Some(into_float(dz)), into_float(dg))
            }
        }
    }

    /// Mamba-2's step size `softplus(dt + bias)` of `dt [rows, n]`, `bias [n]`, in `out` (see
    /// [`activation::biased_softplus`]; one node under `Autodiff`).
    fn biased_softplus(
        dt: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        out: burn::tensor::DType,
    ) -> FloatTensor<Self> {
        into_float(activation::biased_softplus_forward::<Self>(
            from_float(dt),
            from_float(bias),
            out,
        ))
    }

    /// Whether [`adamw_step`](Self::adamw_step) is one kernel on this backend (the
    /// optimizer of [`crate::optim`] takes it then, and Burn's op-by-op `AdamW` otherwise).
    fn fused_adamw() -> bool {
        false
    }

    /// One AdamW step of the f32 vectors `param`, `grad`, `m`, `v` (`[n]` each):
    /// `(param, m, v)` after it (see [`crate::optim`] for the formula).
    fn adamw_step(
        param: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        m: FloatTensor<Self>,
        v: FloatTensor<Self>,
        s: crate::optim::AdamWScalars,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let (p, g, m, v) = (
            from_float::<Self, 1>(param),
            from_float::<Self, 1>(grad),
            from_float::<Self, 1>(m),
            from_float::<Self, 1>(v),
        );
        let m = m.mul_scalar(s.beta_1) + g.clone().mul_scalar(1.0 - s.beta_1);
        let v = v.mul_scalar(s.beta_2) + g.square().mul_scalar(1.0 - s.beta_2);
        let delta = m.clone().div_scalar(s.bias_correction_1)
            / (v.clone().div_scalar(s.bias_correction_2).sqrt() + s.epsilon);
        let p = p.mul_scalar(1.0 - s.decay) - delta.mul_scalar(s.lr);
        (into_float(p), into_float(m), into_float(v))
    }

    /// SiLU's backward `dy · σ(x) · (1 + x · (1 − σ(x)))`, in `x`'s dtype.
    fn silu_backward(x: FloatTensor<Self>, dy: FloatTensor<Self>) -> FloatTensor<Self> {
        into_float(norm::math::silu_backward::<Self>(
            from_float(x),
            from_float(dy),
        ))
    }

    /// Whether models run their linear layers through [`linear_rows`](Self::linear_rows) (under
    /// `Autodiff`: one graph node a layer, see [`linear`](mod@linear)) rather than Burn's
    /// batched matmul with casts around it. The model-facing [`linear::linear`] checks it.
    fn fused_linear() -> bool {
        false
    }

    /// `x [rows, d_in] · weight [d_in, d_out]` in `x`'s dtype, the weight cast at use.
    fn linear_rows(x: FloatTensor<Self>, weight: FloatTensor<Self>) -> FloatTensor<Self> {
        into_float(linear::reference::linear::<Self, 2>(
            from_float(x),
            from_float(weight),
            None,
        ))
    }

    /// `x [rows, d_in] · weight[:, part]` for consecutive column parts of `widths` (see
    /// [`linear::linear_parts`]): one [`linear_rows`](Self::linear_rows) product per part.
    fn linear_row_parts(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        widths: &[usize],
    ) -> Vec<FloatTensor<Self>> {
        linear::parts::forward::<Self>(x, weight, widths)
    }

    /// `lhs [batch.., m, k] · rhs [batch.., k, n]` written in `out_dtype` (f32 accumulation),
    /// as the linear layers' product `pass`; backends with their own matmul kernels run the
    /// one [`linear::linear_kernels`] names for it.
    fn matmul_into(
        lhs: FloatTensor<Self>,
        rhs: FloatTensor<Self>,
        out_dtype: burn::tensor::DType,
        _pass: linear::LinearPass,
    ) -> FloatTensor<Self> {
        let y = Self::float_matmul(lhs, rhs);
        if y.dtype() == out_dtype {
            y
        } else {
            Self::float_cast(y, out_dtype.into())
        }
    }

    /// `lhs · rhs` into `out_dtype` with exactly `kernel` (benchmarks compare kernels with it);
    /// `Err` where the backend has no such kernel or it cannot run this problem.
    fn matmul_with_kernel(
        _lhs: FloatTensor<Self>,
        _rhs: FloatTensor<Self>,
        _out_dtype: burn::tensor::DType,
        kernel: linear::MatmulKernel,
    ) -> Result<FloatTensor<Self>, String> {
        Err(format!("this backend has no matmul kernel `{kernel}`"))
    }

    /// The rows of `weight [vocab, d]` at `tokens [batch, seq]`: `[batch, seq, d]` (see
    /// [`embedding::embedding`]; one node under `Autodiff`).
    fn embedding_lookup(weight: FloatTensor<Self>, tokens: IntTensor<Self>) -> FloatTensor<Self> {
        Self::embedding(weight, tokens)
    }

    /// The lookup's weight gradient `[vocab, d]` for `dy [batch, seq, d]`: Burn's
    /// `embedding_backward` here.
    fn embedding_grad(
        weight: FloatTensor<Self>,
        dy: FloatTensor<Self>,
        tokens: IntTensor<Self>,
    ) -> FloatTensor<Self> {
        Self::embedding_backward(weight, dy, tokens)
    }

    /// The loss of the head's logits `x [N, d] · weight [d, V]` (see
    /// [`cross_entropy::linear_cross_entropy`]); the logits exist only a block of rows at a
    /// time on the backends that fuse the linear layers.
    fn linear_cross_entropy(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        targets: IntTensor<Self>,
        weights: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        Self::cross_entropy(Self::linear_rows(x, weight), targets, weights)
    }

    /// Each row's `log Σ_v exp z_v` of `logits [N, V]` (any float dtype), f32 `[N]`: the loss
    /// node's forward pass over the vocabulary.
    fn row_logsumexp(logits: FloatTensor<Self>) -> FloatTensor<Self> {
        let logits: Tensor<Self, 2> = from_float(logits);
        let block = cross_entropy::reference::block_rows(logits.dims()[1]);
        into_float(cross_entropy::reference::row_logsumexp_blockwise(
            logits, block,
        ))
    }

    /// The logits' gradient `(softmax(z) − onehot(t)) · coef` row by row, in the logits'
    /// dtype, for `coef [N]` and the forward's `lse [N]` (f32); it may take over the logits'
    /// buffer.
    fn cross_entropy_logits_grad(
        logits: FloatTensor<Self>,
        targets: IntTensor<Self>,
        coef: FloatTensor<Self>,
        lse: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let logits: Tensor<Self, 2> = from_float(logits);
        let block = cross_entropy::reference::block_rows(logits.dims()[1]);
        into_float(cross_entropy::reference::logits_grad_blockwise(
            logits,
            Tensor::from_primitive(targets),
            from_float(coef),
            from_float(lse),
            block,
        ))
    }

    /// `Σ_rows t[row, col]` of `t [rows, cols]` (any float dtype) as f32 `[cols]`: the
    /// parameter gradients that are sums over tokens.
    fn sum_rows(t: FloatTensor<Self>) -> FloatTensor<Self> {
        let t: Tensor<Self, 2> = from_float(t);
        into_float(norm::math::sum_rows(t.cast(burn::tensor::DType::F32)))
    }

    /// The training loss: weighted mean cross-entropy of `targets [N]` under `logits [N, V]`
    /// with `weights [N]`, an f32 `[1]` (see [`cross_entropy::cross_entropy`]).
    fn cross_entropy(
        logits: FloatTensor<Self>,
        targets: IntTensor<Self>,
        weights: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        cross_entropy::reference::cross_entropy_primitive::<Self>(logits, targets, weights)
    }

    /// Whether [`attention_forward`](Self::attention_forward) and
    /// [`attention_backward`](Self::attention_backward) run fused kernels on this backend.
    fn fused_attention() -> bool {
        false
    }

    /// Softmax attention, differentiable when `Self` is an autodiff backend (see
    /// [`attention::attention`]; not `attention`, the name of Burn's own `ModuleOps` method).
    fn softmax_attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        options: AttentionOptions,
    ) -> FloatTensor<Self> {
        if Self::fused_attention() {
            return Self::attention_forward(q, k, v, options).out;
        }
        attention::reference::attention_primitive::<Self>(q, k, v, options)
    }

    /// Attention forward, keeping the row log-sum-exp for
    /// [`attention_backward`](Self::attention_backward).
    fn attention_forward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        options: AttentionOptions,
    ) -> AttentionForward<Self> {
        let (out, lse) = attention::reference::forward::<Self>(
            from_float(q),
            from_float(k),
            from_float(v),
            options,
        );
        AttentionForward {
            out: into_float(out),
            lse: into_float(lse),
        }
    }

    /// Gradients of `q`, `k`, `v` for the output gradient `d_out`, given the forward's output
    /// and row log-sum-exp.
    #[allow(clippy::too_many_arguments)]
    fn attention_backward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        out: FloatTensor<Self>,
        lse: FloatTensor<Self>,
        d_out: FloatTensor<Self>,
        options: AttentionOptions,
    ) -> AttentionGrads<Self> {
        let _ = (out, lse); // the reference recomputes everything
        let [q, k, v] = attention::reference::backward::<Self>(
            from_float(q),
            from_float(k),
            from_float(v),
            from_float(d_out),
            options,
        )
        .map(into_float);
        AttentionGrads { q, k, v }
    }

    /// Whether [`hsa_forward`](Self::hsa_forward) and [`hsa_backward`](Self::hsa_backward) run
    /// fused kernels on this backend.
    fn fused_hsa() -> bool {
        false
    }

    /// HSA, differentiable when `Self` is an autodiff backend (see [`hsa::hsa`]).
    fn hsa(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        indices: IntTensor<Self>,
        weights: FloatTensor<Self>,
        options: HsaOptions,
    ) -> FloatTensor<Self> {
        if Self::fused_hsa() {
            return Self::hsa_forward(q, k, v, indices, weights, options).out;
        }
        hsa::reference::hsa_primitive::<Self>(q, k, v, indices, weights, options)
    }

    /// HSA forward, keeping the per-slot log-sum-exp for [`hsa_backward`](Self::hsa_backward).
    fn hsa_forward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        indices: IntTensor<Self>,
        weights: FloatTensor<Self>,
        options: HsaOptions,
    ) -> HsaForward<Self> {
        let (out, lse) = hsa::reference::forward::<Self>(
            from_float(q),
            from_float(k),
            from_float(v),
            Tensor::from_primitive(indices),
            from_float(weights),
            options,
        );
        HsaForward {
            out: into_float(out),
            lse: into_float(lse),
        }
    }

    /// Gradients of HSA's differentiable inputs given the output's gradient `d_out`.
    #[allow(clippy::too_many_arguments)]
    fn hsa_backward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        indices: IntTensor<Self>,
        weights: FloatTensor<Self>,
        lse: FloatTensor<Self>,
        d_out: FloatTensor<Self>,
        options: HsaOptions,
    ) -> HsaGrads<Self> {
        let _ = lse; // the reference recomputes everything
        let [q, k, v, weights] = hsa::reference::backward::<Self>(
            from_float(q),
            from_float(k),
            from_float(v),
            Tensor::from_primitive(indices),
            from_float(weights),
            from_float(d_out),
            options,
        )
        .map(into_float);
        HsaGrads { q, k, v, weights }
    }

    /// Whether [`select_chunks`](Self::select_chunks) is a fused kernel on this backend.
    fn fused_selection() -> bool {
        false
    }

    /// Causal top-k chunk indices, most recent first (see [`selection::select_chunks`]):
    /// `queries [B, L, h_kv, d_r]`, `landmarks [B, C, h_kv, d_r]` → `[B, L, h_kv, K]`.
    fn select_chunks(
        queries: FloatTensor<Self>,
        landmarks: FloatTensor<Self>,
        options: SelectionOptions,
    ) -> IntTensor<Self> {
        selection::reference::select_chunks::<Self>(
            from_float(queries),
            from_float(landmarks),
            options,
        )
        .into_primitive()
    }

    /// Whether the selective scan runs a fused kernel on this backend.
    fn fused_scan() -> bool {
        false
    }

    /// Mamba-2 selective scan (see [`scan::selective_scan`]); returns `(y, final state)`.
    #[allow(clippy::too_many_arguments)]
    fn selective_scan(
        x: FloatTensor<Self>,
        delta: FloatTensor<Self>,
        a: FloatTensor<Self>,
        b: FloatTensor<Self>,
        c: FloatTensor<Self>,
        d: FloatTensor<Self>,
        init_state: Option<FloatTensor<Self>>,
        options: ScanOptions,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        scan::reference::selective_scan_primitive::<Self>(x, delta, a, b, c, d, init_state, options)
    }

    /// Gradients of the scan's inputs given `dy` and the final state's gradient (`None`: the
    /// final state was not used). Called by the `Autodiff` node when
    /// [`fused_scan`](Self::fused_scan); the default differentiates the reference.
    #[allow(clippy::too_many_arguments)]
    fn selective_scan_backward(
        x: FloatTensor<Self>,
        delta: FloatTensor<Self>,
        a: FloatTensor<Self>,
        b: FloatTensor<Self>,
        c: FloatTensor<Self>,
        d: FloatTensor<Self>,
        init_state: FloatTensor<Self>,
        dy: FloatTensor<Self>,
        d_final_state: FloatTensor<Self>,
        options: ScanOptions,
    ) -> ScanGrads<Self> {
        scan::reference::backward::<Self>(
            from_float(x),
            from_float(delta),
            from_float(a),
            from_float(b),
            from_float(c),
            from_float(d),
            from_float(init_state),
            from_float(dy),
            from_float(d_final_state),
            options,
        )
    }

    /// One decoding step of the scan: `x [B, heads, P]`, `delta [B, heads]`, `b`, `c
    /// [B, groups, N]`, `state [B, heads, P, N]` → `(y [B, heads, P], state after)`. Backends
    /// with [`fused_scan`](Self::fused_scan) run it as one launch.
    #[allow(clippy::too_many_arguments)]
    fn selective_scan_step(
        x: FloatTensor<Self>,
        delta: FloatTensor<Self>,
        a: FloatTensor<Self>,
        b: FloatTensor<Self>,
        c: FloatTensor<Self>,
        d: FloatTensor<Self>,
        state: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let (y, state) = scan::reference::step::<Self>(
            from_float(x),
            from_float(delta),
            from_float(a),
            from_float(b),
            from_float(c),
            from_float(d),
            from_float(state),
        );
        (into_float(y), into_float(state))
    }

    /// Whether the causal conv1d runs a fused kernel on this backend.
    fn fused_conv() -> bool {
        false
    }

    /// Causal depthwise conv1d with state (see [`conv::causal_conv1d`]), its output through
    /// SiLU when `silu`; returns `(y, state after x)`.
    fn causal_conv1d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: Option<FloatTensor<Self>>,
        init_state: Option<FloatTensor<Self>>,
        silu: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        conv::reference::causal_conv1d_primitive::<Self>(x, weight, bias, init_state, silu)
    }

    /// Gradients of the convolution's inputs given `dy` and the final state's gradient.
    /// Called by the `Autodiff` node when [`fused_conv`](Self::fused_conv); the default
    /// differentiates the reference.
    #[allow(clippy::too_many_arguments)]
    fn causal_conv1d_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        init_state: FloatTensor<Self>,
        dy: FloatTensor<Self>,
        d_final_state: FloatTensor<Self>,
        silu: bool,
    ) -> ConvGrads<Self> {
        conv::reference::backward::<Self>(
            from_float(x),
            from_float(weight),
            from_float(bias),
            from_float(init_state),
            from_float(dy),
            from_float(d_final_state),
            silu,
        )
    }

    /// One decoding step of the convolution: `x [B, D]`, `state [B, D, W − 1]` →
    /// `(y [B, D], state after)`. Backends with [`fused_conv`](Self::fused_conv) run it as one
    /// launch.
    fn causal_conv1d_step(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: Option<FloatTensor<Self>>,
        state: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let (y, state) = conv::reference::step::<Self>(
            from_float(x),
            from_float(weight),
            bias.map(from_float),
            from_float(state),
        );
        (into_float(y), into_float(state))
    }

    /// The allocator's view of device memory, where the backend exposes it (benchmarks and
    /// throughput reports read it; `None` on the CPU).
    fn memory_usage(_device: &Self::Device) -> Option<DeviceMemory> {
        None
    }
}

/// An op's output and the state after it (the scan's and the conv's return value).
pub type OutputAndState<B> = (FloatTensor<B>, FloatTensor<B>);

/// Device memory as the backend's allocator sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceMemory {
    /// Bytes of live allocations.
    pub in_use: u64,
    /// Bytes the allocator holds from the device (live, padding and pooled free pages).
    pub reserved: u64,
}

/// The ops that run fused kernels on backend `B`, for the start-up line of the binaries
/// (`fused: hsa, selection; reference: scan, conv`).
pub fn fused_ops_summary<B: RambaBackend>() -> String {
    let ops = [
        ("attention", B::fused_attention()),
        ("hsa", B::fused_hsa()),
        ("selection", B::fused_selection()),
        ("scan", B::fused_scan()),
        ("conv", B::fused_conv()),
        ("norms and loss", B::fused_norm_and_loss()),
        ("linear", B::fused_linear()),
    ];
    let list = |fused: bool| {
        let names: Vec<&str> = ops
            .iter()
            .filter(|(_, f)| *f == fused)
            .map(|(n, _)| *n)
            .collect();
        if names.is_empty() {
            "none".to_string()
        } else {
            names.join(", ")
        }
    };
    format!("fused: {}; reference: {}", list(true), list(false))
}

/// A float primitive as a tensor.
pub(crate) fn from_float<B: Backend, const D: usize>(x: FloatTensor<B>) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(x))
}

/// A float tensor's primitive.
pub(crate) fn into_float<B: Backend, const D: usize>(x: Tensor<B, D>) -> FloatTensor<B> {
    x.into_primitive().tensor()
}

impl RambaBackend for NdArray<f32> {}
impl RambaBackend for NdArray<f64> {}

/// Burn's CubeCL backends (CUDA, wgpu): every op runs the kernels of `cubecl-kernels`.
impl<R: CubeRuntime, F: FloatElement, I: IntElement, BT: BoolElement> RambaBackend
    for CubeBackend<R, F, I, BT>
{
    fn fused_norm_and_loss() -> bool {
        true
    }

    fn rms_norm(x: FloatTensor<Self>, gamma: FloatTensor<Self>, epsilon: f64) -> FloatTensor<Self> {
        cubecl_kernels::norm::rms_norm_forward(x, None, gamma, epsilon).0
    }

    fn gated_rms_norm(
        x: FloatTensor<Self>,
        z: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        epsilon: f64,
    ) -> FloatTensor<Self> {
        cubecl_kernels::norm::rms_norm_forward(x, Some(z), gamma, epsilon).0
    }

    fn silu(x: FloatTensor<Self>) -> FloatTensor<Self> {
        cubecl_kernels::norm::silu_forward(x)
    }

    fn rms_norm_forward(
        x: FloatTensor<Self>,
        z: Option<FloatTensor<Self>>,
        gamma: FloatTensor<Self>,
        epsilon: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        cubecl_kernels::norm::rms_norm_forward(x, z, gamma, epsilon)
    }

    fn rms_norm_backward(
        x: FloatTensor<Self>,
        z: Option<FloatTensor<Self>>,
        gamma: FloatTensor<Self>,
        rstd: FloatTensor<Self>,
        dy: FloatTensor<Self>,
    ) -> (
        FloatTensor<Self>,
        Option<FloatTensor<Self>>,
        FloatTensor<Self>,
    ) {
        let gamma_dtype = gamma.dtype();
        let d = gamma.shape().num_elements();
        let grads = cubecl_kernels::norm::rms_norm_backward(x, z, gamma, rstd, dy);
        // The per-cube partial sums of dγ (`rows / 32` rows of `d`).
        let d_gamma = Self::sum_rows(grads.gamma_partials);
        debug_assert_eq!(d_gamma.shape().num_elements(), d);
        let d_gamma = if gamma_dtype == burn::tensor::DType::F32 {
            d_gamma
        } else {
            Self::float_cast(d_gamma, gamma_dtype.into())
        };
        (grads.x, grads.z, d_gamma)
    }

    fn silu_backward(x: FloatTensor<Self>, dy: FloatTensor<Self>) -> FloatTensor<Self> {
        cubecl_kernels::norm::silu_backward(x, dy)
    }

    fn fused_adamw() -> bool {
        true
    }

    fn adamw_step(
        param: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        m: FloatTensor<Self>,
        v: FloatTensor<Self>,
        s: crate::optim::AdamWScalars,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        cubecl_kernels::adamw::adamw_step(param, grad, m, v, s)
    }

    fn cross_entropy(
        logits: FloatTensor<Self>,
        targets: IntTensor<Self>,
        weights: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let lse = from_float(Self::row_logsumexp(logits.clone()));
        let fwd = cross_entropy::reference::loss_from_lse::<Self>(
            from_float(logits),
            Tensor::from_primitive(targets),
            from_float(weights),
            lse,
        );
        into_float(fwd.loss)
    }

    fn linear_cross_entropy(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        targets: IntTensor<Self>,
        weights: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        cross_entropy::head::forward::<Self>(x, weight, targets, weights)
    }

    fn embedding_grad(
        weight: FloatTensor<Self>,
        dy: FloatTensor<Self>,
        tokens: IntTensor<Self>,
    ) -> FloatTensor<Self> {
        let vocab = weight.shape().dims::<2>()[0];
        let grad = cubecl_kernels::embedding::embedding_backward(tokens, dy, vocab);
        linear::cast_to::<Self>(grad, weight.dtype())
    }

    fn row_logsumexp(logits: FloatTensor<Self>) -> FloatTensor<Self> {
        cubecl_kernels::cross_entropy::row_logsumexp(logits)
    }

    fn cross_entropy_logits_grad(
        logits: FloatTensor<Self>,
        targets: IntTensor<Self>,
        coef: FloatTensor<Self>,
        lse: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        cubecl_kernels::cross_entropy::logits_grad(logits, targets, coef, lse)
    }

    fn sum_rows(t: FloatTensor<Self>) -> FloatTensor<Self> {
        cubecl_kernels::reduce::sum_rows(t)
    }

    fn fused_linear() -> bool {
        true
    }

    fn linear_rows(x: FloatTensor<Self>, weight: FloatTensor<Self>) -> FloatTensor<Self> {
        let dtype = x.dtype();
        let weight = linear::cast_to::<Self>(weight, dtype);
        Self::matmul_into(x, weight, dtype, linear::LinearPass::Forward)
    }

    fn matmul_into(
        lhs: FloatTensor<Self>,
        rhs: FloatTensor<Self>,
        out_dtype: burn::tensor::DType,
        pass: linear::LinearPass,
    ) -> FloatTensor<Self> {
        let kernel = linear::linear_kernel(pass, lhs.dtype());
        cubecl_kernels::matmul::matmul(lhs, rhs, out_dtype, kernel)
    }

    fn matmul_with_kernel(
        lhs: FloatTensor<Self>,
        rhs: FloatTensor<Self>,
        out_dtype: burn::tensor::DType,
        kernel: linear::MatmulKernel,
    ) -> Result<FloatTensor<Self>, String> {
        cubecl_kernels::matmul::try_matmul(lhs, rhs, out_dtype, kernel)
    }

    fn fused_attention() -> bool {
        true
    }

    fn attention_forward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        options: AttentionOptions,
    ) -> AttentionForward<Self> {
        attention::cube::forward(q, k, v, options)
    }

    fn attention_backward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        out: FloatTensor<Self>,
        lse: FloatTensor<Self>,
        d_out: FloatTensor<Self>,
        options: AttentionOptions,
    ) -> AttentionGrads<Self> {
        attention::cube::backward(q, k, v, out, lse, d_out, options)
    }

    fn fused_hsa() -> bool {
        true
    }

    fn hsa_forward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        indices: IntTensor<Self>,
        weights: FloatTensor<Self>,
        options: HsaOptions,
    ) -> HsaForward<Self> {
        hsa::cube::forward(q, k, v, indices, weights, options)
    }

    fn hsa_backward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        indices: IntTensor<Self>,
        weights: FloatTensor<Self>,
        lse: FloatTensor<Self>,
        d_out: FloatTensor<Self>,
        options: HsaOptions,
    ) -> HsaGrads<Self> {
        hsa::cube::backward(q, k, v, indices, weights, lse, d_out, options)
    }

    fn fused_selection() -> bool {
        true
    }

    fn select_chunks(
        queries: FloatTensor<Self>,
        landmarks: FloatTensor<Self>,
        options: SelectionOptions,
    ) -> IntTensor<Self> {
        selection::cube::select_chunks::<R, F, I, BT>(queries, landmarks, options)
    }

    fn fused_scan() -> bool {
        true
    }

    fn selective_scan(
        x: FloatTensor<Self>,
        delta: FloatTensor<Self>,
        a: FloatTensor<Self>,
        b: FloatTensor<Self>,
        c: FloatTensor<Self>,
        d: FloatTensor<Self>,
        init_state: Option<FloatTensor<Self>>,
        options: ScanOptions,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        scan::cube::forward::<R, F, I, BT>(x, delta, a, b, c, d, init_state, options)
    }

    fn selective_scan_backward(
        x: FloatTensor<Self>,
        delta: FloatTensor<Self>,
        a: FloatTensor<Self>,
        b: FloatTensor<Self>,
        c: FloatTensor<Self>,
        d: FloatTensor<Self>,
        init_state: FloatTensor<Self>,
        dy: FloatTensor<Self>,
        d_final_state: FloatTensor<Self>,
        options: ScanOptions,
    ) -> ScanGrads<Self> {
        scan::cube::backward::<R, F, I, BT>(
            x,
            delta,
            a,
            b,
            c,
            d,
            init_state,
            dy,
            d_final_state,
            options,
        )
    }

    fn selective_scan_step(
        x: FloatTensor<Self>,
        delta: FloatTensor<Self>,
        a: FloatTensor<Self>,
        b: FloatTensor<Self>,
        c: FloatTensor<Self>,
        d: FloatTensor<Self>,
        state: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        cubecl_kernels::scan::step::scan_step(x, delta, a, b, c, d, state)
    }

    fn fused_conv() -> bool {
        true
    }

    fn causal_conv1d_step(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: Option<FloatTensor<Self>>,
        state: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        if weight.shape()[1] < 2 {
            let (y, state) = conv::reference::step::<Self>(
                from_float(x),
                from_float(weight),
                bias.map(from_float),
                from_float(state),
            );
            return (into_float(y), into_float(state));
        }
        cubecl_kernels::conv::causal_conv1d_step(x, weight, bias, state)
    }

    fn causal_conv1d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: Option<FloatTensor<Self>>,
        init_state: Option<FloatTensor<Self>>,
        silu: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        conv::cube::forward::<R, F, I, BT>(x, weight, bias, init_state, silu)
    }

    fn causal_conv1d_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        init_state: FloatTensor<Self>,
        dy: FloatTensor<Self>,
        d_final_state: FloatTensor<Self>,
        silu: bool,
    ) -> ConvGrads<Self> {
        conv::cube::backward::<R, F, I, BT>(x, weight, bias, init_state, dy, d_final_state, silu)
    }

    fn memory_usage(device: &Self::Device) -> Option<DeviceMemory> {
        let usage = R::client(device).memory_usage().ok()?;
        Some(DeviceMemory {
            in_use: usage.bytes_in_use,
            reserved: usage.bytes_reserved,
        })
    }
}

/// Autodiff: fused ops become one graph node each (backward = the inner backend's backward
/// kernels); ops without kernels differentiate the reference.
impl<B: RambaBackend, C: CheckpointStrategy> RambaBackend for Autodiff<B, C> {
    fn fused_norm_and_loss() -> bool {
        B::fused_norm_and_loss()
    }

    /// One node on every `B` (plain tensor ops of `B`, f32 inside). Whether models take this
    /// path is [`RambaBackend::fused_norm_and_loss`], decided once by the model-facing
    /// functions ([`norm::rms_norm`], [`crate::model::lm_loss`], ...).
    fn rms_norm(x: FloatTensor<Self>, gamma: FloatTensor<Self>, epsilon: f64) -> FloatTensor<Self> {
        norm::autodiff::rms_norm::<B, C>(x, gamma, epsilon)
    }

    fn gated_rms_norm(
        x: FloatTensor<Self>,
        z: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        epsilon: f64,
    ) -> FloatTensor<Self> {
        norm::autodiff::gated_rms_norm::<B, C>(x, z, gamma, epsilon)
    }

    fn silu(x: FloatTensor<Self>) -> FloatTensor<Self> {
        norm::autodiff::silu::<B, C>(x)
    }

    /// One node on every `B` (blockwise in f32); see [`Self::rms_norm`] for who takes it.
    fn cross_entropy(
        logits: FloatTensor<Self>,
        targets: IntTensor<Self>,
        weights: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        cross_entropy::autodiff::cross_entropy::<B, C>(logits, targets, weights)
    }

    /// One node on every `B`, whose backward is `B`'s [`embedding_grad`](RambaBackend::embedding_grad).
    fn embedding_lookup(weight: FloatTensor<Self>, tokens: IntTensor<Self>) -> FloatTensor<Self> {
        embedding::autodiff::embedding::<B, C>(weight, tokens)
    }

    /// One node (the blockwise head and loss of [`cross_entropy::head`]) where `B` fuses the
    /// linear layers; the product and the loss node elsewhere.
    fn linear_cross_entropy(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        targets: IntTensor<Self>,
        weights: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        if B::fused_linear() {
            cross_entropy::head::linear_cross_entropy::<B, C>(x, weight, targets, weights)
        } else {
            Self::cross_entropy(Self::linear_rows(x, weight), targets, weights)
        }
    }

    /// One node on every `B`; see [`Self::rms_norm`] for who takes it.
    fn biased_softplus(
        dt: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        out: burn::tensor::DType,
    ) -> FloatTensor<Self> {
        activation::autodiff::biased_softplus::<B, C>(dt, bias, out)
    }

    fn fused_linear() -> bool {
        B::fused_linear()
    }

    /// One node on every `B` (`B`'s [`matmul_into`](RambaBackend::matmul_into) inside); see
    /// [`Self::rms_norm`] for who takes it.
    fn linear_rows(x: FloatTensor<Self>, weight: FloatTensor<Self>) -> FloatTensor<Self> {
        linear::autodiff::linear::<B, C>(x, weight)
    }

    /// One node for all the parts where `B` fuses the linear layers; a node per part (and the
    /// weight's slices differentiated) elsewhere.
    fn linear_row_parts(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        widths: &[usize],
    ) -> Vec<FloatTensor<Self>> {
        if B::fused_linear() {
            linear::parts::linear_parts::<B, C>(x, weight, widths)
        } else {
            linear::parts::forward::<Self>(x, weight, widths)
        }
    }

    fn fused_attention() -> bool {
        B::fused_attention()
    }

    fn softmax_attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        options: AttentionOptions,
    ) -> FloatTensor<Self> {
        if B::fused_attention() {
            return attention::autodiff::attention::<B, C>(q, k, v, options);
        }
        attention::reference::attention_primitive::<Self>(q, k, v, options)
    }

    fn fused_hsa() -> bool {
        B::fused_hsa()
    }

    fn hsa(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        indices: IntTensor<Self>,
        weights: FloatTensor<Self>,
        options: HsaOptions,
    ) -> FloatTensor<Self> {
        if B::fused_hsa() {
            return hsa::autodiff::hsa::<B, C>(q, k, v, indices, weights, options);
        }
        hsa::reference::hsa_primitive::<Self>(q, k, v, indices, weights, options)
    }

    fn fused_selection() -> bool {
        B::fused_selection()
    }

    /// Not differentiable: runs on the inner backend, outside the graph.
    fn select_chunks(
        queries: FloatTensor<Self>,
        landmarks: FloatTensor<Self>,
        options: SelectionOptions,
    ) -> IntTensor<Self> {
        B::select_chunks(queries.primitive, landmarks.primitive, options)
    }

    fn fused_scan() -> bool {
        B::fused_scan()
    }

    fn selective_scan(
        x: FloatTensor<Self>,
        delta: FloatTensor<Self>,
        a: FloatTensor<Self>,
        b: FloatTensor<Self>,
        c: FloatTensor<Self>,
        d: FloatTensor<Self>,
        init_state: Option<FloatTensor<Self>>,
        options: ScanOptions,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        if B::fused_scan() {
            return scan::autodiff::selective_scan::<B, C>(
                x, delta, a, b, c, d, init_state, options,
            );
        }
        scan::reference::selective_scan_primitive::<Self>(x, delta, a, b, c, d, init_state, options)
    }

    fn fused_conv() -> bool {
        B::fused_conv()
    }

    fn causal_conv1d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: Option<FloatTensor<Self>>,
        init_state: Option<FloatTensor<Self>>,
        silu: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        if B::fused_conv() {
            return conv::autodiff::causal_conv1d::<B, C>(x, weight, bias, init_state, silu);
        }
        conv::reference::causal_conv1d_primitive::<Self>(x, weight, bias, init_state, silu)
    }

    fn memory_usage(device: &Self::Device) -> Option<DeviceMemory> {
        B::memory_usage(device)
    }
}
