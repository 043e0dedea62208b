//! Causal depthwise 1-D convolution with carried state (Mamba-2's short convolution).
//!
//! [`causal_conv1d`] is what models call; [`reference`] is plain tensor ops (the CPU backend's
//! path and the kernels' oracle); [`cube`] runs the kernels of `cubecl-kernels/src/conv/` on
//! Burn's CubeCL backends; [`autodiff`] makes them one graph node under `Autodiff`.

pub mod autodiff;
pub mod cube;
pub mod reference;

use burn::prelude::*;

use super::{from_float, into_float, RambaBackend};

/// Gradients of the convolution's inputs, each shaped like its input.
#[derive(Debug)]
pub struct ConvGrads<B: burn::tensor::backend::Backend> {
    /// `[B, L, D]`.
    pub x: burn::tensor::ops::FloatTensor<B>,
    /// `[D, W]`.
    pub weight: burn::tensor::ops::FloatTensor<B>,
    /// `[D]`.
    pub bias: burn::tensor::ops::FloatTensor<B>,
    /// `[B, D, W − 1]`.
    pub init_state: burn::tensor::ops::FloatTensor<B>,
}

/// The convolution on tensors: `x [B, L, D]`, `weight [D, W]`, `bias [D]`,
/// `init_state [B, D, W − 1]` (the inputs preceding `x`); returns `y [B, L, D]` and the state
/// after `x`.
pub fn causal_conv1d<B: RambaBackend>(
    x: Tensor<B, 3>,
    weight: Tensor<B, 2>,
    bias: Option<Tensor<B, 1>>,
    init_state: Option<Tensor<B, 3>>,
) -> (Tensor<B, 3>, Tensor<B, 3>) {
    conv_with::<B>(x, weight, bias, init_state, false)
}

/// [`causal_conv1d`] followed by SiLU, as Mamba-2 runs it: one op, so that backends with the
/// kernels apply SiLU in the convolution's own pass and never keep the pre-activation.
pub fn causal_conv1d_silu<B: RambaBackend>(
    x: Tensor<B, 3>,
    weight: Tensor<B, 2>,
    bias: Option<Tensor<B, 1>>,
    init_state: Option<Tensor<B, 3>>,
) -> (Tensor<B, 3>, Tensor<B, 3>) {
    conv_with::<B>(x, weight, bias, init_state, true)
}

fn conv_with<B: RambaBackend>(
    x: Tensor<B, 3>,
    weight: Tensor<B, 2>,
    bias: Option<Tensor<B, 1>>,
    init_state: Option<Tensor<B, 3>>,
    silu: bool,
) -> (Tensor<B, 3>, Tensor<B, 3>) {
    let (y, state) = B::causal_conv1d(
        into_float(x),
        into_float(weight),
        bias.map(into_float),
        init_state.map(into_float),
        silu,
    );
    (from_float(y), from_float(state))
}

/// One decoding step (see [`RambaBackend::causal_conv1d_step`]): `x [B, D]`,
/// `state [B, D, W − 1]` → `(y [B, D], state after)`.
pub fn causal_conv1d_step<B: RambaBackend>(
    x: Tensor<B, 2>,
    weight: Tensor<B, 2>,
    bias: Option<Tensor<B, 1>>,
    state: Tensor<B, 3>,
) -> (Tensor<B, 2>, Tensor<B, 3>) {
    let (y, state) = B::causal_conv1d_step(
        into_float(x),
        into_float(weight),
        bias.map(into_float),
        into_float(state),
    );
    (from_float(y), from_float(state))
}
