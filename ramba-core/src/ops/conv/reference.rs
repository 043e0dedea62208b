//! Reference causal depthwise 1-D convolution with state in and out.
//!
//! `y[t, d] = bias[d] + Σ_{i<W} weight[d, i] · x̃[t + i, d]`, where `x̃` is `x` preceded by the
//! `W−1` carried inputs (`init_state`, zeros when absent). The returned state is the last `W−1`
//! inputs of `x̃`, so running two segments with the state carried equals running them at once.

use burn::prelude::*;

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
