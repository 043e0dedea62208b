//! The causal conv1d on Burn's CubeCL backends (CUDA, wgpu): the kernels of
//! `cubecl-kernels/src/conv/`, with the reference for width-1 convolutions (no state).

use burn::prelude::*;
use burn::tensor::ops::FloatTensor;
use burn::tensor::TensorMetadata;
use burn_cubecl::{BoolElement, CubeBackend, CubeRuntime, FloatElement, IntElement};
use cubecl_kernels::conv as kernels;

use super::{reference, ConvGrads};
use crate::ops::{from_float, into_float, OutputAndState};

type Cube<R, F, I, BT> = CubeBackend<R, F, I, BT>;

/// The kernels carry `W − 1 ≥ 1` state columns.
fn fits(weight_shape: &burn::tensor::Shape) -> bool {
    weight_shape[1] >= 2
}

pub(crate) fn forward<R, F, I, BT>(
    x: FloatTensor<Cube<R, F, I, BT>>,
    weight: FloatTensor<Cube<R, F, I, BT>>,
    bias: Option<FloatTensor<Cube<R, F, I, BT>>>,
    init_state: Option<FloatTensor<Cube<R, F, I, BT>>>,
    silu: bool,
) -> OutputAndState<Cube<R, F, I, BT>>
where
    R: CubeRuntime,
    F: FloatElement,
    I: IntElement,
    BT: BoolElement,
{
    if !fits(&weight.shape()) {
        return reference::causal_conv1d_primitive::<Cube<R, F, I, BT>>(
            x, weight, bias, init_state, silu,
        );
    }
    kernels::causal_conv1d_forward(x, weight, bias, init_state, silu)
}

pub(crate) fn backward<R, F, I, BT>(
    x: FloatTensor<Cube<R, F, I, BT>>,
    weight: FloatTensor<Cube<R, F, I, BT>>,
    bias: FloatTensor<Cube<R, F, I, BT>>,
    init_state: FloatTensor<Cube<R, F, I, BT>>,
    dy: FloatTensor<Cube<R, F, I, BT>>,
    d_final_state: FloatTensor<Cube<R, F, I, BT>>,
    silu: bool,
) -> ConvGrads<Cube<R, F, I, BT>>
where
    R: CubeRuntime,
    F: FloatElement,
    I: IntElement,
    BT: BoolElement,
{
    let w_shape = weight.shape();
    if !fits(&w_shape) {
        return reference::backward::<Cube<R, F, I, BT>>(
            from_float(x),
            from_float(weight),
            from_float(bias),
            from_float(init_state),
            from_float(dy),
            from_float(d_final_state),
            silu,
        );
    }
    let dtype = x.dtype();
    let (channels, width) = (w_shape[0], w_shape[1]);
    let g = kernels::causal_conv1d_backward(
        x,
        weight,
        Some(bias),
        Some(init_state),
        dy,
        Some(d_final_state),
        silu,
    );
    // Per-tile partials `[B·tiles, D, W + 1]` → the weight (`..W`) and bias (`W`) gradients.
    let tiles = g.param_partials.meta.shape()[0];
    let partials = into_float::<Cube<R, F, I, BT>, 2>(
        from_float::<Cube<R, F, I, BT>, 3>(g.param_partials)
            .reshape([tiles, channels * (width + 1)]),
    );
    let sums: Tensor<Cube<R, F, I, BT>, 1> = from_float(cubecl_kernels::reduce::sum_rows(partials));
    let sums = sums.reshape([channels, width + 1]).cast(dtype);
    ConvGrads {
        x: g.x,
        weight: into_float(sums.clone().slice([0..channels, 0..width])),
        bias: into_float(
            sums.slice([0..channels, width..width + 1])
                .reshape([channels]),
        ),
        init_state: g.state,
    }
}
