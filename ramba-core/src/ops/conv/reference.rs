//! Reference causal depthwise 1-D convolution with state in and out.
//!
//! `y[t, d] = bias[d] + Σ_{i<W} weight[d, i] · x̃[t + i, d]`, where `x̃` is `x` preceded by the
//! `W−1` carried inputs (`init_state`, zeros when absent). The returned state is the last `W−1`
//! inputs of `x̃`, so running two segments with the state carried equals running them at once.

use burn::prelude::*;
use burn::tensor::ops::FloatTensor;

use super::ConvGrads;
use crate::ops::vjp::{grad, track};
use crate::ops::{from_float, into_float};

/// See the module docs. `x [B, L, D]`, `weight [D, W]`, `init_state [B, D, W−1]`.
pub fn causal_conv1d<B: Backend>(
    x: Tensor<B, 3>,
    weight: Tensor<B, 2>,
    bias: Option<Tensor<B, 1>>,
    init_state: Option<Tensor<B, 3>>,
) -> (Tensor<B, 3>, Tensor<B, 3>) {
    let [batch, seq, channels] = x.dims();
    let width = weight.dims()[1];
    let device = x.device();
    let state = init_state.unwrap_or_else(|| Tensor::zeros([batch, channels, width - 1], &device));
    let padded = Tensor::cat(vec![state.swap_dims(1, 2), x], 1); // [B, W-1+L, D]

    let mut y = Tensor::<B, 3>::zeros([batch, seq, channels], &device);
    for i in 0..width {
        let tap = weight
            .clone()
            .slice([0..channels, i..i + 1])
            .reshape([1, 1, channels]);
        y = y + padded.clone().slice([0..batch, i..i + seq]) * tap;
    }
    if let Some(bias) = bias {
        y = y + bias.reshape([1, 1, channels]);
    }
    let total = seq + width - 1;
    let final_state = padded.slice([0..batch, seq..total]).swap_dims(1, 2);
    (y, final_state)
}

/// One decoding step: `x [B, D]`, `state [B, D, W − 1]` → `(y [B, D], state after)`.
pub fn step<B: Backend>(
    x: Tensor<B, 2>,
    weight: Tensor<B, 2>,
    bias: Option<Tensor<B, 1>>,
    state: Tensor<B, 3>,
) -> (Tensor<B, 2>, Tensor<B, 3>) {
    let [batch, channels] = x.dims();
    let width = weight.dims()[1];
    let window = Tensor::cat(vec![state, x.reshape([batch, channels, 1])], 2); // [B, D, W]
    let mut y = (window.clone() * weight.reshape([1, channels, width]))
        .sum_dim(2)
        .reshape([batch, channels]);
    if let Some(bias) = bias {
        y = y + bias.reshape([1, channels]);
    }
    (y, window.slice([0..batch, 0..channels, 1..width]))
}

/// [`causal_conv1d`] with its output through SiLU when `silu`.
pub fn causal_conv1d_act<B: Backend>(
    x: Tensor<B, 3>,
    weight: Tensor<B, 2>,
    bias: Option<Tensor<B, 1>>,
    init_state: Option<Tensor<B, 3>>,
    silu: bool,
) -> (Tensor<B, 3>, Tensor<B, 3>) {
    let (y, state) = causal_conv1d(x, weight, bias, init_state);
    if silu {
        (burn::tensor::activation::silu(y), state)
    } else {
        (y, state)
    }
}

/// The reference on primitives (the trait's default, and `Autodiff`'s path for backends without
/// the kernels).
pub fn causal_conv1d_primitive<B: Backend>(
    x: FloatTensor<B>,
    weight: FloatTensor<B>,
    bias: Option<FloatTensor<B>>,
    init_state: Option<FloatTensor<B>>,
    silu: bool,
) -> (FloatTensor<B>, FloatTensor<B>) {
    let (y, state) = causal_conv1d_act::<B>(
        from_float(x),
        from_float(weight),
        bias.map(from_float),
        init_state.map(from_float),
        silu,
    );
    (into_float(y), into_float(state))
}

/// Gradients of every input given `dy` (of the output, after SiLU when `silu`) and the final
/// state's gradient, by differentiating [`causal_conv1d_act`] under `Autodiff<B>` (the oracle
/// of the backward kernels).
pub fn backward<B: Backend>(
    x: Tensor<B, 3>,
    weight: Tensor<B, 2>,
    bias: Tensor<B, 1>,
    init_state: Tensor<B, 3>,
    dy: Tensor<B, 3>,
    d_final_state: Tensor<B, 3>,
    silu: bool,
) -> ConvGrads<B> {
    let (tx, tw, tb, ts) = (track(&x), track(&weight), track(&bias), track(&init_state));
    let (y, state) = causal_conv1d_act(
        tx.clone(),
        tw.clone(),
        Some(tb.clone()),
        Some(ts.clone()),
        silu,
    );
    let loss =
        (y * Tensor::from_inner(dy)).sum() + (state * Tensor::from_inner(d_final_state)).sum();
    let grads = loss.backward();
    ConvGrads {
        x: grad(&tx, &grads),
        weight: grad(&tw, &grads),
        bias: grad(&tb, &grads),
        init_state: grad(&ts, &grads),
    }
}
