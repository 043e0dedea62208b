//! The selective scan on Burn's CubeCL backends (CUDA, wgpu): the kernels of
//! `cubecl-kernels/src/scan/`, with the reference where a device's shared memory is too small.

use burn::prelude::*;
use burn::tensor::ops::FloatTensor;
use burn::tensor::TensorMetadata;
use burn_cubecl::{BoolElement, CubeBackend, CubeRuntime, FloatElement, IntElement};
use cubecl_kernels::scan::{self as kernels, ScanShape};

use super::{reference, ScanGrads, ScanOptions};
use crate::ops::{from_float, into_float, OutputAndState};

type Cube<R, F, I, BT> = CubeBackend<R, F, I, BT>;

/// Whether the kernels fit the device at this shape (shared memory; heads divisible into
/// groups; a head dim of at most a cube's threads).
fn fits<R: CubeRuntime>(x: &burn_cubecl::tensor::CubeTensor<R>, shape: &ScanShape) -> bool {
    let limit = x.client.properties().hardware.max_shared_memory_size;
    shape.groups > 0
        && shape.heads.is_multiple_of(shape.groups)
        && (1..=kernels::THREADS as usize).contains(&shape.head_dim)
        && shape.shared_bytes() <= limit
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn forward<R, F, I, BT>(
    x: FloatTensor<Cube<R, F, I, BT>>,
    delta: FloatTensor<Cube<R, F, I, BT>>,
    a: FloatTensor<Cube<R, F, I, BT>>,
    b: FloatTensor<Cube<R, F, I, BT>>,
    c: FloatTensor<Cube<R, F, I, BT>>,
    d: FloatTensor<Cube<R, F, I, BT>>,
    init_state: Option<FloatTensor<Cube<R, F, I, BT>>>,
    options: ScanOptions,
) -> OutputAndState<Cube<R, F, I, BT>>
where
    R: CubeRuntime,
    F: FloatElement,
    I: IntElement,
    BT: BoolElement,
{
    let shape = ScanShape::of(&x.shape(), &b.shape());
    if !fits(&x, &shape) {
        return reference::selective_scan_primitive::<Cube<R, F, I, BT>>(
            x, delta, a, b, c, d, init_state, options,
        );
    }
    kernels::selective_scan_forward(x, delta, a, b, c, d, init_state)
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn backward<R, F, I, BT>(
    x: FloatTensor<Cube<R, F, I, BT>>,
    delta: FloatTensor<Cube<R, F, I, BT>>,
    a: FloatTensor<Cube<R, F, I, BT>>,
    b: FloatTensor<Cube<R, F, I, BT>>,
    c: FloatTensor<Cube<R, F, I, BT>>,
    d: FloatTensor<Cube<R, F, I, BT>>,
    init_state: FloatTensor<Cube<R, F, I, BT>>,
    dy: FloatTensor<Cube<R, F, I, BT>>,
    d_final_state: FloatTensor<Cube<R, F, I, BT>>,
    options: ScanOptions,
) -> ScanGrads<Cube<R, F, I, BT>>
where
    R: CubeRuntime,
    F: FloatElement,
    I: IntElement,
    BT: BoolElement,
{
    let shape = ScanShape::of(&x.shape(), &b.shape());
    if !fits(&x, &shape) {
        return reference::backward::<Cube<R, F, I, BT>>(
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
        );
    }
    let dtype = x.dtype();
    let g = kernels::selective_scan_backward(
        x,
        delta,
        a,
        b,
        c,
        d,
        Some(init_state),
        dy,
        Some(d_final_state),
    );
    // The per-chunk partials of dA and dD, summed over batch and chunks: `[B, H, nc] → [H]`.
    let heads = shape.heads;
    let to_heads = |parts| {
        let t: Tensor<Cube<R, F, I, BT>, 3> = from_float(parts);
        into_float(t.sum_dim(2).sum_dim(0).reshape([heads]).cast(dtype))
    };
    ScanGrads {
        x: g.x,
        delta: g.delta,
        a: to_heads(g.a_partials),
        b: g.b,
        c: g.c,
        d: to_heads(g.d_partials),
        init_state: g.init_state,
    }
}
