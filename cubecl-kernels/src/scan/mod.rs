//! Mamba-2 selective scan kernels (the chunked "state space duality" algorithm, Dao & Gu 2024
//! §6), forward and backward, with memory linear in the sequence.
//!
//! The recurrence per head is `h_t = exp(Δ_t A) h_{t−1} + Δ_t x_t B_tᵀ` (`h` is `P × N`),
//! `y_t = h_t C_t + D x_t`. The sequence is cut into chunks of [`CHUNK`] tokens. Per chunk, with
//! `cum_t = A Σ_{r≤t} Δ_r` (inside the chunk) and `H` the state at the chunk's start:
//!
//! ```text
//! y_t   = Σ_{s≤t} (C_t·B_s) exp(cum_t − cum_s) Δ_s x_s  +  exp(cum_t) H C_t  +  D x_t
//! H_end = exp(cum_last) H  +  Σ_s exp(cum_last − cum_s) Δ_s x_s B_sᵀ
//! ```
//!
//! Forward, three launches: [`chunk_state`] (each chunk's own contribution to the state at its
//! end, all chunks in parallel), [`state_passing`] (the states at chunk starts, sequential over
//! chunks, parallel over state elements; also the final state), [`chunk_scan`] (the outputs,
//! all chunks in parallel). The backward recomputes the chunk-start states the same way, then
//! [`chunk_state`] again for each chunk's local state gradient `Σ_t exp(cum_t) dy_t C_tᵀ`,
//! [`state_passing::state_passing_backward`] for the gradient reaching each chunk's end state,
//! and [`chunk_scan_backward`] for everything else. Nothing of size `L × L` or
//! `n_chunks²` exists; the stored states are `[B, H, n_chunks, P, N]` f32.
//!
//! With f16/bf16 inputs on devices with tensor cores, [`chunk_state`], [`chunk_scan`] and
//! [`chunk_scan_backward`] run as `cmma` matrix products ([`chunk_state_cmma`],
//! [`chunk_scan_cmma`], [`chunk_scan_backward_cmma`]); `RAMBA_SCAN_KERNEL=scalar` keeps the
//! scalar kernels.
//!
//! Decoding uses [`step::scan_step`], one launch per token.
//!
//! Layouts (contiguous): `x`, `y`, `dy`: `[B, L, H, P]`; `delta`: `[B, L, H]` (Δ, already
//! positive); `a`, `d`: `[H]`; `b`, `c`: `[B, L, G, N]` (heads share B and C within a group of
//! `H/G`); states: `[B, H, P, N]`. Inputs may be f32, f16 or bf16; everything accumulates in
//! f32 and the states between kernels are f32.

pub mod chunk_scan;
pub mod chunk_scan_backward;
pub mod chunk_scan_backward_cmma;
pub mod chunk_scan_cmma;
pub mod chunk_state;
pub mod chunk_state_cmma;
pub mod state_passing;
pub mod step;

use burn::tensor::Shape;
use burn_cubecl::{kernel::into_contiguous, tensor::CubeTensor, CubeRuntime};
use cubecl::prelude::*;

pub(crate) use crate::launch::empty_like_shape;
use crate::launch::zeros_like_shape;

/// Tokens per chunk of the kernels. Independent of the model's `chunk_size` (which tunes the
/// reference only): the result does not depend on it, and 64 keeps a chunk's `CHUNK × CHUNK`
/// score matrix in 16 KiB of shared memory, within lavapipe's 32 KiB.
pub const CHUNK: usize = 64;
/// Threads per cube of every scan kernel.
pub const THREADS: u32 = 256;

/// The sizes of one scan call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScanShape {
    /// `B`.
    pub batch: usize,
    /// `L`.
    pub seq: usize,
    /// `H`.
    pub heads: usize,
    /// `P`, the head dimension.
    pub head_dim: usize,
    /// `G`, groups sharing B and C (divides `H`).
    pub groups: usize,
    /// `N`, the state size.
    pub d_state: usize,
}

impl ScanShape {
    /// From `x [B, L, H, P]` and `b [B, L, G, N]`.
    pub fn of(x: &Shape, b: &Shape) -> Self {
        Self {
            batch: x[0],
            seq: x[1],
            heads: x[2],
            head_dim: x[3],
            groups: b[2],
            d_state: b[3],
        }
    }
    /// Chunks of [`CHUNK`] tokens, the last one possibly partial.
    pub fn n_chunks(&self) -> usize {
        self.seq.div_ceil(CHUNK)
    }
    /// `[B, H, P, N]`.
    pub fn state_shape(&self) -> Shape {
        Shape::new([self.batch, self.heads, self.head_dim, self.d_state])
    }
    /// `[B, H, n_chunks, P, N]`.
    pub fn chunk_states_shape(&self) -> Shape {
        Shape::new([
            self.batch,
            self.heads,
            self.n_chunks(),
            self.head_dim,
            self.d_state,
        ])
    }
    /// `[B, H, n_chunks]`.
    pub fn per_chunk_shape(&self) -> Shape {
        Shape::new([self.batch, self.heads, self.n_chunks()])
    }
    /// Shared memory (bytes) of the largest kernel of the family at this shape without
    /// staging; the backend falls back to the reference when a device offers less.
    pub fn shared_bytes(&self) -> usize {
        let state = state_tile_tokens() * (self.head_dim + self.d_state) + 3 * CHUNK;
        self.forward_bytes(false)
            .max(self.backward_bytes(false))
            .max(4 * state)
    }
    /// Shared memory of [`chunk_scan`], with or without the chunk's `C` staged.
    pub fn forward_bytes(&self, stage: bool) -> usize {
        let tri = CHUNK * (CHUNK + 1) / 2;
        let staged = if stage { CHUNK * self.d_state } else { 1 };
        4 * (2 * tri + 2 * CHUNK + staged)
    }
    /// Shared memory of [`chunk_scan_backward`], with or without the chunk's `B` and `C`
    /// staged.
    pub fn backward_bytes(&self, stage: bool) -> usize {
        let tri = CHUNK * (CHUNK + 1) / 2;
        let staged = if stage { 2 * CHUNK * self.d_state } else { 2 };
        4 * (3 * tri + 8 * CHUNK + 2 * THREADS as usize + 3 + staged)
    }
}

/// Tokens staged per step by [`chunk_state`].
pub(crate) const fn state_tile_tokens() -> usize {
    16
}

/// Gradients of one scan call, each shaped like its input.
pub struct ScanGradients<R: CubeRuntime> {
    /// `[B, L, H, P]`.
    pub x: CubeTensor<R>,
    /// `[B, L, H]`.
    pub delta: CubeTensor<R>,
    /// f32 `[B, H, n_chunks]`: per-chunk terms of `dA`, to be summed to `[H]`.
    pub a_partials: CubeTensor<R>,
    /// `[B, L, G, N]`.
    pub b: CubeTensor<R>,
    /// `[B, L, G, N]`.
    pub c: CubeTensor<R>,
    /// f32 `[B, H, n_chunks]`: per-chunk terms of `dD`, to be summed to `[H]`.
    pub d_partials: CubeTensor<R>,
    /// `[B, H, P, N]`.
    pub init_state: CubeTensor<R>,
}

/// The chunk-start states (f32, `[B, H, n_chunks, P, N]`), each chunk's log decay
/// (`A Σ Δ`, `[B, H, n_chunks]`) and the final state (`[B, H, P, N]`, the input dtype).
fn chunk_start_states<R: CubeRuntime>(
    x: &CubeTensor<R>,
    delta: &CubeTensor<R>,
    a: &CubeTensor<R>,
    b: &CubeTensor<R>,
    init_state: &CubeTensor<R>,
    shape: ScanShape,
) -> (CubeTensor<R>, CubeTensor<R>, CubeTensor<R>) {
    let (states, log_decay) = chunk_state::chunk_state(
        b.clone(),
        x.clone(),
        delta.clone(),
        a.clone(),
        shape,
        chunk_state::Weighting::ToChunkEnd,
    );
    let final_state =
        state_passing::state_passing(states.clone(), log_decay.clone(), init_state.clone(), shape);
    (states, log_decay, final_state)
}

/// Forward: `(y [B, L, H, P], final state [B, H, P, N])`, both in `x`'s dtype. `init_state`
/// defaults to zeros.
#[allow(clippy::too_many_arguments)]
pub fn selective_scan_forward<R: CubeRuntime>(
    x: CubeTensor<R>,
    delta: CubeTensor<R>,
    a: CubeTensor<R>,
    b: CubeTensor<R>,
    c: CubeTensor<R>,
    d: CubeTensor<R>,
    init_state: Option<CubeTensor<R>>,
) -> (CubeTensor<R>, CubeTensor<R>) {
    let shape = ScanShape::of(x.meta.shape(), b.meta.shape());
    let [x, delta, a, b, c, d] = [x, delta, a, b, c, d].map(into_contiguous);
    let init_state = init_or_zeros(init_state, &x, shape);
    let (states, _, final_state) = chunk_start_states(&x, &delta, &a, &b, &init_state, shape);
    let y = if chunk_scan_cmma::supported(&x, &shape) && !scalar_forced() {
        chunk_scan_cmma::chunk_scan_cmma(x, delta, a, b, c, d, states, shape)
    } else {
        chunk_scan::chunk_scan(x, delta, a, b, c, d, states, shape)
    };
    (y, final_state)
}

/// Backward: the gradient of every input, given `dy` and the final state's gradient
/// `d_final_state` (zeros when the caller did not use the final state).
#[allow(clippy::too_many_arguments)]
pub fn selective_scan_backward<R: CubeRuntime>(
    x: CubeTensor<R>,
    delta: CubeTensor<R>,
    a: CubeTensor<R>,
    b: CubeTensor<R>,
    c: CubeTensor<R>,
    d: CubeTensor<R>,
    init_state: Option<CubeTensor<R>>,
    dy: CubeTensor<R>,
    d_final_state: Option<CubeTensor<R>>,
) -> ScanGradients<R> {
    let shape = ScanShape::of(x.meta.shape(), b.meta.shape());
    let [x, delta, a, b, c, d, dy] = [x, delta, a, b, c, d, dy].map(into_contiguous);
    let init_state = init_or_zeros(init_state, &x, shape);
    let d_final_state = init_or_zeros(d_final_state, &x, shape);
    // The chunk-start states are recomputed rather than kept from the forward: they are the
    // largest intermediate, and recomputing them costs two of the cheapest launches.
    let (starts, log_decay, _) = chunk_start_states(&x, &delta, &a, &b, &init_state, shape);
    let (local, _) = chunk_state::chunk_state(
        c.clone(),
        dy.clone(),
        delta.clone(),
        a.clone(),
        shape,
        chunk_state::Weighting::FromChunkStart,
    );
    // In place: `local` becomes the gradient reaching each chunk's end state.
    let d_init = state_passing::state_passing_backward(
        local.clone(),
        log_decay,
        d_final_state,
        x.dtype,
        shape,
    );
    let g = if chunk_scan_backward_cmma::supported(&x, &shape) && !scalar_forced() {
        chunk_scan_backward_cmma::chunk_scan_backward_cmma(
            x, delta, a, b, c, d, dy, starts, local, shape,
        )
    } else {
        chunk_scan_backward::chunk_scan_backward(x, delta, a, b, c, d, dy, starts, local, shape)
    };
    ScanGradients {
        x: g.x,
        delta: g.delta,
        a_partials: g.a_partials,
        b: g.b,
        c: g.c,
        d_partials: g.d_partials,
        init_state: d_init,
    }
}

/// `RAMBA_SCAN_KERNEL=scalar` keeps the scalar kernels where the tensor-core ones apply (to
/// compare the two).
pub fn scalar_forced() -> bool {
    std::env::var("RAMBA_SCAN_KERNEL").is_ok_and(|v| v == "scalar")
}

fn init_or_zeros<R: CubeRuntime>(
    state: Option<CubeTensor<R>>,
    like: &CubeTensor<R>,
    shape: ScanShape,
) -> CubeTensor<R> {
    match state {
        Some(s) => into_contiguous(s),
        None => zeros_like_shape(like, shape.state_shape(), like.dtype),
    }
}

/// Copies the chunk's rows of `src` (`[B, L, G, N]`, group `g`) into `dst` as f32,
/// `dst[t·N + n]`, zeros past the sequence. No barrier: the caller's next one publishes it.
#[cube]
#[allow(clippy::too_many_arguments)]
pub(crate) fn stage_rows<F: Float>(
    src: &Tensor<F>,
    dst: &mut SharedMemory<f32>,
    batch: usize,
    g: usize,
    t0: usize,
    seq: usize,
    #[comptime] groups: usize,
    #[comptime] d_state: usize,
) {
    let mut i = UNIT_POS as usize;
    while i < comptime!(CHUNK * d_state) {
        let t = i / d_state;
        let mut v = f32::new(0.0);
        if t0 + t < seq {
            v = f32::cast_from(src[((batch * seq + t0 + t) * groups + g) * d_state + i % d_state]);
        }
        dst[i] = v;
        i += comptime!(THREADS as usize);
    }
}

/// Loads the chunk's `Δ` (zero past the sequence) into `dt` and the inclusive prefix sums of
/// `A Δ` into `cum`; ends with a barrier. All threads of the cube must call it.
#[cube]
#[allow(clippy::too_many_arguments)]
pub(crate) fn load_chunk_decay<F: Float>(
    delta: &Tensor<F>,
    a: &Tensor<F>,
    dt: &mut SharedMemory<f32>,
    cum: &mut SharedMemory<f32>,
    b: usize,
    h: usize,
    t0: usize,
    seq: usize,
    #[comptime] heads: usize,
) {
    let tid = UNIT_POS as usize;
    if tid < CHUNK {
        let t = t0 + tid;
        let mut v = f32::new(0.0);
        if t < seq {
            v = f32::cast_from(delta[(b * seq + t) * heads + h]);
        }
        dt[tid] = v;
    }
    sync_cube();
    // A 64-term prefix sum: one thread is cheaper than a tree's barriers at this size.
    if tid == 0 {
        let a_h = f32::cast_from(a[h]);
        let mut run = f32::new(0.0);
        for i in 0..CHUNK {
            run += a_h * dt[i];
            cum[i] = run;
        }
    }
    sync_cube();
}
