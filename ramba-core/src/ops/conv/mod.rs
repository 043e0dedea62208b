//! Causal depthwise 1-D convolution with carried state (Mamba-2's short convolution).
//!
//! [`causal_conv1d`] is what models call; [`reference`] is plain tensor ops (the path of every
//! backend until the conv kernels land, and their oracle).

pub mod reference;

use burn::prelude::*;

use super::{from_float, into_float, RambaBackend};

/// The convolution on tensors: `x [B, L, D]`, `weight [D, W]`, `bias [D]`,
/// `init_state [B, D, W − 1]` (the inputs preceding `x`); returns `y [B, L, D]` and the state
/// after `x`.
pub fn causal_conv1d<B: RambaBackend>(
    x: Tensor<B, 3>,
    weight: Tensor<B, 2>,
    bias: Option<Tensor<B, 1>>,
    init_state: Option<Tensor<B, 3>>,
) -> (Tensor<B, 3>, Tensor<B, 3>) {
    let (y, state) = B::causal_conv1d(
        into_float(x),
        into_float(weight),
        bias.map(into_float),
        init_state.map(into_float),
    );
    (from_float(y), from_float(state))
}
