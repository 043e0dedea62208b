//! Causal depthwise 1-D convolution with carried state (Mamba-2's short convolution), forward
//! and backward.
//!
//! With `x̃` the input preceded by the `W − 1` carried inputs (`x̃_j = state_j` for `j < W − 1`,
//! `x_{j−W+1}` after): `y_t = bias + Σ_{i<W} w_i x̃_{t+i}` per channel, and the state after is
//! `x̃_{L..L+W−1}`. Backward: `dx̃_j = Σ_i w_i dy_{j−i} + d_state_{j−L}` (terms in range), split
//! into `dx` and the initial state's gradient; `dw_i = Σ_{b,t} dy_t x̃_{t+i}` and
//! `dbias = Σ_{b,t} dy_t` as per-tile partial sums the caller reduces.
//!
//! With `silu`, the output is `SiLU(y)` (Mamba-2 applies it right after the conv): the forward
//! writes it in the same pass and the backward recomputes the conv output `y` from `x` (four
//! taps) to turn `d SiLU(y)` into `dy` in one more launch, so the pre-activation is neither
//! written nor kept between the passes.
//!
//! Shapes: `x`, `y`, `dy`, `dx`: `[B, L, D]`; `weight [D, W]`; `bias [D]`; states
//! `[B, D, W − 1]`; partials f32 `[B · n_tiles, D, W + 1]` (the `W` weight sums, then the bias
//! sum), `n_tiles = ⌈L / TILE⌉`.
//!
//! Grid: one thread per output element, channels fastest so loads are coalesced; the
//! reductions one thread per `(batch, tile, channel)`.

use burn::tensor::{DType, Shape};
use burn_cubecl::{kernel::into_contiguous, tensor::CubeTensor, CubeRuntime};
use cubecl::prelude::*;

use crate::launch::{
    address_type_of, cube_count_for, empty_like_shape, into_owned_contiguous, zeros_like_shape,
};
use crate::norm::{sigmoid, silu_grad};

/// Threads per cube.
const THREADS: u32 = 256;
/// Tokens per partial sum of the weight and bias gradients.
pub const TILE: usize = 256;

/// `x̃_j` of one `(batch, channel)`: the carried state before `x`.
#[cube]
#[allow(clippy::too_many_arguments)]
fn padded_input<F: Float>(
    x: &Tensor<F>,
    state: &Tensor<F>,
    b: usize,
    d: usize,
    j: usize,
    seq: usize,
    channels: usize,
    #[comptime] width: usize,
) -> f32 {
    let carried = comptime!(width - 1);
    if j < carried {
        f32::cast_from(state[(b * channels + d) * carried + j])
    } else {
        f32::cast_from(x[(b * seq + j - carried) * channels + d])
    }
}

/// The conv output `y` at flat output index `i` of `[B, L, D]`, before any activation.
#[cube]
#[allow(clippy::too_many_arguments)]
fn conv_output<F: Float>(
    x: &Tensor<F>,
    weight: &Tensor<F>,
    bias: &Tensor<F>,
    state: &Tensor<F>,
    i: usize,
    seq: usize,
    channels: usize,
    #[comptime] width: usize,
) -> f32 {
    let d = i % channels;
    let bt = i / channels;
    let t = bt % seq;
    let b = bt / seq;
    let mut acc = f32::cast_from(bias[d]);
    #[unroll]
    for k in 0..width {
        let xv = padded_input::<F>(x, state, b, d, t + k, seq, channels, width);
        acc += f32::cast_from(weight[d * width + k]) * xv;
    }
    acc
}

#[cube(launch_unchecked, address_type = "dynamic")]
#[allow(clippy::too_many_arguments)]
fn conv_forward_kernel<F: Float>(
    x: &Tensor<F>,
    weight: &Tensor<F>,
    bias: &Tensor<F>,
    state: &Tensor<F>,
    y: &mut Tensor<F>,
    last: &mut Tensor<F>,
    seq: usize,
    channels: usize,
    n_y: usize,
    n_state: usize,
    #[comptime] width: usize,
    #[comptime] silu: bool,
    #[define(F)] _dtype: StorageType,
) {
    let i = CUBE_POS * comptime!(THREADS as usize) + UNIT_POS as usize;
    let carried = comptime!(width - 1);
    if i < n_y {
        let mut acc = conv_output::<F>(x, weight, bias, state, i, seq, channels, width);
        if silu {
            acc *= sigmoid(acc);
        }
        y[i] = F::cast_from(acc);
    } else if i < n_y + n_state {
        let s = i - n_y;
        let k = s % carried;
        let bd = s / carried;
        let d = bd % channels;
        let b = bd / channels;
        last[s] = F::cast_from(padded_input::<F>(
            x,
            state,
            b,
            d,
            seq + k,
            seq,
            channels,
            width,
        ));
    }
}

/// `dy = d SiLU(y) · σ(y) · (1 + y · (1 − σ(y)))` with the conv output `y` recomputed from `x`.
#[cube(launch_unchecked, address_type = "dynamic")]
#[allow(clippy::too_many_arguments)]
fn conv_silu_grad_kernel<F: Float>(
    x: &Tensor<F>,
    weight: &Tensor<F>,
    bias: &Tensor<F>,
    state: &Tensor<F>,
    d_act: &Tensor<F>,
    dy: &mut Tensor<F>,
    seq: usize,
    channels: usize,
    n_y: usize,
    #[comptime] width: usize,
    #[define(F)] _dtype: StorageType,
) {
    let i = CUBE_POS * comptime!(THREADS as usize) + UNIT_POS as usize;
    if i >= n_y {
        terminate!();
    }
    let acc = conv_output::<F>(x, weight, bias, state, i, seq, channels, width);
    dy[i] = F::cast_from(f32::cast_from(d_act[i]) * silu_grad(acc));
}

#[cube(launch_unchecked, address_type = "dynamic")]
#[allow(clippy::too_many_arguments)]
fn conv_backward_input_kernel<F: Float>(
    weight: &Tensor<F>,
    dy: &Tensor<F>,
    d_last: &Tensor<F>,
    dx: &mut Tensor<F>,
    d_state: &mut Tensor<F>,
    seq: usize,
    channels: usize,
    n_items: usize,
    #[comptime] width: usize,
    #[define(F)] _dtype: StorageType,
) {
    let i = CUBE_POS * comptime!(THREADS as usize) + UNIT_POS as usize;
    if i >= n_items {
        terminate!();
    }
    let carried = comptime!(width - 1);
    // Items walk x̃: `(batch, j, channel)` with `j < L + W − 1`.
    let d = i % channels;
    let bj = i / channels;
    let padded = seq + carried;
    let j = bj % padded;
    let b = bj / padded;
    let mut acc = f32::new(0.0);
    #[unroll]
    for k in 0..width {
        // dy_{j−k} for 0 ≤ j − k < L.
        if j >= k && j - k < seq {
            acc += f32::cast_from(weight[d * width + k])
                * f32::cast_from(dy[(b * seq + j - k) * channels + d]);
        }
    }
    if j >= seq {
        acc += f32::cast_from(d_last[(b * channels + d) * carried + j - seq]);
    }
    if j < carried {
        d_state[(b * channels + d) * carried + j] = F::cast_from(acc);
    } else {
        dx[(b * seq + j - carried) * channels + d] = F::cast_from(acc);
    }
}

#[cube(launch_unchecked, address_type = "dynamic")]
#[allow(clippy::too_many_arguments)]
fn conv_backward_params_kernel<F: Float>(
    x: &Tensor<F>,
    state: &Tensor<F>,
    dy: &Tensor<F>,
    partials: &mut Tensor<f32>,
    seq: usize,
    channels: usize,
    n_tiles: usize,
    n_items: usize,
    #[comptime] width: usize,
    #[define(F)] _dtype: StorageType,
) {
    let i = CUBE_POS * comptime!(THREADS as usize) + UNIT_POS as usize;
    if i >= n_items {
        terminate!();
    }
    let d = i % channels;
    let bt = i / channels;
    let tile = bt % n_tiles;
    let b = bt / n_tiles;
    let mut sums = Array::<f32>::new(comptime!(width + 1));
    #[unroll]
    for k in 0..comptime!(width + 1) {
        sums[k] = 0.0;
    }
    let start = tile * TILE;
    let mut end = start + TILE;
    if seq < end {
        end = seq;
    }
    for t in start..end {
        let g = f32::cast_from(dy[(b * seq + t) * channels + d]);
        #[unroll]
        for k in 0..width {
            sums[k] += g * padded_input::<F>(x, state, b, d, t + k, seq, channels, width);
        }
        sums[width] += g;
    }
    let base = i * comptime!(width + 1);
    #[unroll]
    for k in 0..comptime!(width + 1) {
        partials[base + k] = sums[k];
    }
}

/// Forward: `(y [B, L, D], state after x [B, D, W − 1])` in `x`'s dtype, `y` through SiLU
/// when `silu`. A missing bias or state is zeros.
pub fn causal_conv1d_forward<R: CubeRuntime>(
    x: CubeTensor<R>,
    weight: CubeTensor<R>,
    bias: Option<CubeTensor<R>>,
    state: Option<CubeTensor<R>>,
    silu: bool,
) -> (CubeTensor<R>, CubeTensor<R>) {
    let [batch, seq, channels] = dims3(x.meta.shape());
    let width = weight.meta.shape()[1];
    let x = into_contiguous(x);
    let weight = into_contiguous(weight);
    let bias = bias
        .map(into_contiguous)
        .unwrap_or_else(|| zeros_like_shape(&x, Shape::new([channels]), x.dtype));
    let state_shape = Shape::new([batch, channels, width - 1]);
    let state = state
        .map(into_contiguous)
        .unwrap_or_else(|| zeros_like_shape(&x, state_shape.clone(), x.dtype));
    let y = empty_like_shape(&x, x.meta.shape().clone(), x.dtype);
    let last = empty_like_shape(&x, state_shape, x.dtype);
    let (n_y, n_state) = (batch * seq * channels, batch * channels * (width - 1));
    if n_y + n_state == 0 {
        return (y, last);
    }
    let client = x.client.clone();
    let dtype = x.dtype.into();
    let address = address_type_of(&[&x, &y]);
    unsafe {
        conv_forward_kernel::launch_unchecked::<R>(
            &client,
            cube_count_for(&client, (n_y + n_state).div_ceil(THREADS as usize)),
            CubeDim::new_1d(THREADS),
            address,
            x.into_tensor_arg(),
            weight.into_tensor_arg(),
            bias.into_tensor_arg(),
            state.into_tensor_arg(),
            y.clone().into_tensor_arg(),
            last.clone().into_tensor_arg(),
            seq,
            channels,
            n_y,
            n_state,
            width,
            silu,
            dtype,
        )
    };
    (y, last)
}

/// Gradients of one convolution call.
pub struct ConvGradients<R: CubeRuntime> {
    /// `[B, L, D]`.
    pub x: CubeTensor<R>,
    /// `[B, D, W − 1]`.
    pub state: CubeTensor<R>,
    /// f32 `[B · n_tiles, D, W + 1]`: per-tile sums of the weight (`..W`) and bias (`W`)
    /// gradients, reduced over the first axis by the caller.
    pub param_partials: CubeTensor<R>,
}

/// Backward: the input and initial state gradients, and the parameter gradients' partial sums,
/// for `dy` the gradient of the output (of `SiLU(y)` when `silu`; the bias is then needed to
/// recompute `y`). A missing bias, state or `d_last` (final state unused) is zeros.
#[allow(clippy::too_many_arguments)]
pub fn causal_conv1d_backward<R: CubeRuntime>(
    x: CubeTensor<R>,
    weight: CubeTensor<R>,
    bias: Option<CubeTensor<R>>,
    state: Option<CubeTensor<R>>,
    dy: CubeTensor<R>,
    d_last: Option<CubeTensor<R>>,
    silu: bool,
) -> ConvGradients<R> {
    let [batch, seq, channels] = dims3(x.meta.shape());
    let width = weight.meta.shape()[1];
    let [x, weight, dy] = [x, weight, dy].map(into_contiguous);
    let state_shape = Shape::new([batch, channels, width - 1]);
    let zeros = |x: &CubeTensor<R>| zeros_like_shape(x, state_shape.clone(), x.dtype);
    let state = state.map(into_contiguous).unwrap_or_else(|| zeros(&x));
    let d_last = d_last.map(into_contiguous).unwrap_or_else(|| zeros(&x));
    let n_y = batch * seq * channels;
    let dy = if silu && n_y > 0 {
        let bias = bias
            .map(into_contiguous)
            .unwrap_or_else(|| zeros_like_shape(&x, Shape::new([channels]), x.dtype));
        let d_pre = empty_like_shape(&x, x.meta.shape().clone(), x.dtype);
        let client = x.client.clone();
        unsafe {
            conv_silu_grad_kernel::launch_unchecked::<R>(
                &client,
                cube_count_for(&client, n_y.div_ceil(THREADS as usize)),
                CubeDim::new_1d(THREADS),
                address_type_of(&[&x, &dy]),
                x.clone().into_tensor_arg(),
                weight.clone().into_tensor_arg(),
                bias.into_tensor_arg(),
                state.clone().into_tensor_arg(),
                dy.into_tensor_arg(),
                d_pre.clone().into_tensor_arg(),
                seq,
                channels,
                n_y,
                width,
                x.dtype.into(),
            )
        };
        d_pre
    } else {
        dy
    };
    let dx = empty_like_shape(&x, x.meta.shape().clone(), x.dtype);
    let d_state = empty_like_shape(&x, state_shape.clone(), x.dtype);
    let n_tiles = seq.div_ceil(TILE);
    let partials = empty_like_shape(
        &x,
        Shape::new([batch * n_tiles, channels, width + 1]),
        DType::F32,
    );
    let client = x.client.clone();
    let dtype: StorageType = x.dtype.into();
    let address = address_type_of(&[&x, &dy]);
    let n_input = batch * (seq + width - 1) * channels;
    if n_input > 0 {
        unsafe {
            conv_backward_input_kernel::launch_unchecked::<R>(
                &client,
                cube_count_for(&client, n_input.div_ceil(THREADS as usize)),
                CubeDim::new_1d(THREADS),
                address,
                weight.into_tensor_arg(),
                dy.clone().into_tensor_arg(),
                d_last.into_tensor_arg(),
                dx.clone().into_tensor_arg(),
                d_state.clone().into_tensor_arg(),
                seq,
                channels,
                n_input,
                width,
                dtype,
            )
        };
    }
    let n_params = batch * n_tiles * channels;
    if n_params > 0 {
        unsafe {
            conv_backward_params_kernel::launch_unchecked::<R>(
                &client,
                cube_count_for(&client, n_params.div_ceil(THREADS as usize)),
                CubeDim::new_1d(THREADS),
                address,
                x.into_tensor_arg(),
                state.into_tensor_arg(),
                dy.into_tensor_arg(),
                partials.clone().into_tensor_arg(),
                seq,
                channels,
                n_tiles,
                n_params,
                width,
                dtype,
            )
        };
    }
    ConvGradients {
        x: dx,
        state: d_state,
        param_partials: partials,
    }
}

#[cube(launch_unchecked, address_type = "dynamic")]
#[allow(clippy::too_many_arguments)]
fn conv_step_kernel<F: Float>(
    x: &Tensor<F>,
    weight: &Tensor<F>,
    bias: &Tensor<F>,
    state: &mut Tensor<F>,
    y: &mut Tensor<F>,
    n_items: usize,
    channels: usize,
    #[comptime] width: usize,
    #[define(F)] _dtype: StorageType,
) {
    let i = CUBE_POS * comptime!(THREADS as usize) + UNIT_POS as usize;
    if i >= n_items {
        terminate!();
    }
    let carried = comptime!(width - 1);
    let d = i % channels;
    let xv = f32::cast_from(x[i]);
    let base = i * carried;
    let mut acc = f32::cast_from(bias[d]) + f32::cast_from(weight[d * width + carried]) * xv;
    // Window `[state_0 .. state_{W−2}, x]`; the state shifts left by one and takes `x`.
    #[unroll]
    for k in 0..carried {
        let s = f32::cast_from(state[base + k]);
        acc += f32::cast_from(weight[d * width + k]) * s;
        if k > 0 {
            state[base + k - 1] = F::cast_from(s);
        }
    }
    state[base + carried - 1] = F::cast_from(xv);
    y[i] = F::cast_from(acc);
}

/// One decoding step: `x [B, D]` → `(y [B, D], state)`, the state `[B, D, W − 1]` updated in
/// place (copied first when shared or strided). A missing bias is zeros. Needs `W ≥ 2`.
pub fn causal_conv1d_step<R: CubeRuntime>(
    x: CubeTensor<R>,
    weight: CubeTensor<R>,
    bias: Option<CubeTensor<R>>,
    state: CubeTensor<R>,
) -> (CubeTensor<R>, CubeTensor<R>) {
    let [batch, channels] = [x.meta.shape()[0], x.meta.shape()[1]];
    let width = weight.meta.shape()[1];
    let [x, weight] = [x, weight].map(into_contiguous);
    let bias = bias
        .map(into_contiguous)
        .unwrap_or_else(|| zeros_like_shape(&x, Shape::new([channels]), x.dtype));
    let state = into_owned_contiguous(state);
    let y = empty_like_shape(&x, x.meta.shape().clone(), x.dtype);
    let n_items = batch * channels;
    if n_items == 0 {
        return (y, state);
    }
    let client = x.client.clone();
    let dtype = x.dtype.into();
    unsafe {
        conv_step_kernel::launch_unchecked::<R>(
            &client,
            cube_count_for(&client, n_items.div_ceil(THREADS as usize)),
            CubeDim::new_1d(THREADS),
            address_type_of(&[&state]),
            x.into_tensor_arg(),
            weight.into_tensor_arg(),
            bias.into_tensor_arg(),
            state.clone().into_tensor_arg(),
            y.clone().into_tensor_arg(),
            n_items,
            channels,
            width,
            dtype,
        )
    };
    (y, state)
}

fn dims3(shape: &Shape) -> [usize; 3] {
    [shape[0], shape[1], shape[2]]
}
