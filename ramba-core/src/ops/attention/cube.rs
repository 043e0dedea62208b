//! Attention on Burn's CubeCL backends (CUDA, wgpu): the kernels of
//! `cubecl-kernels/src/attention/`.

use burn::tensor::ops::FloatTensor;
use burn::tensor::TensorMetadata;
use burn_cubecl::{BoolElement, CubeBackend, CubeRuntime, FloatElement, IntElement};
use cubecl_kernels::attention::{self as kernels, AttentionShape};

use super::{reference, AttentionForward, AttentionGrads, AttentionOptions};
use crate::ops::{from_float, into_float};

type Cube<R, F, I, BT> = CubeBackend<R, F, I, BT>;

/// Whether the kernels' shared memory fits the device at this shape; when it does not (a head
/// dim past what one tile row can hold), the backend runs the reference instead.
fn fits<R: CubeRuntime>(
    q: &burn_cubecl::tensor::CubeTensor<R>,
    k: &burn_cubecl::tensor::CubeTensor<R>,
    options: AttentionOptions,
) -> bool {
    let shape = shape_of(q, k, options);
    let limit = q.client.properties().hardware.max_shared_memory_size;
    shape.head_dim <= 256 && shape.shared_bytes() <= limit
}

fn shape_of<R: CubeRuntime>(
    q: &burn_cubecl::tensor::CubeTensor<R>,
    k: &burn_cubecl::tensor::CubeTensor<R>,
    options: AttentionOptions,
) -> AttentionShape {
    AttentionShape::of(
        &q.shape(),
        &k.shape(),
        options.q_offset,
        options.causal,
        options.window_or_zero(),
    )
}

pub(crate) fn forward<R, F, I, BT>(
    q: FloatTensor<Cube<R, F, I, BT>>,
    k: FloatTensor<Cube<R, F, I, BT>>,
    v: FloatTensor<Cube<R, F, I, BT>>,
    options: AttentionOptions,
) -> AttentionForward<Cube<R, F, I, BT>>
where
    R: CubeRuntime,
    F: FloatElement,
    I: IntElement,
    BT: BoolElement,
{
    if !fits(&q, &k, options) {
        let (out, lse) = reference::forward::<Cube<R, F, I, BT>>(
            from_float(q),
            from_float(k),
            from_float(v),
            options,
        );
        return AttentionForward {
            out: into_float(out),
            lse: into_float(lse),
        };
    }
    let (out, lse) = kernels::attention_forward(
        q,
        k,
        v,
        options.q_offset,
        options.causal,
        options.window_or_zero(),
    );
    AttentionForward { out, lse }
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn backward<R, F, I, BT>(
    q: FloatTensor<Cube<R, F, I, BT>>,
    k: FloatTensor<Cube<R, F, I, BT>>,
    v: FloatTensor<Cube<R, F, I, BT>>,
    out: FloatTensor<Cube<R, F, I, BT>>,
    lse: FloatTensor<Cube<R, F, I, BT>>,
    d_out: FloatTensor<Cube<R, F, I, BT>>,
    options: AttentionOptions,
) -> AttentionGrads<Cube<R, F, I, BT>>
where
    R: CubeRuntime,
    F: FloatElement,
    I: IntElement,
    BT: BoolElement,
{
    if !fits(&q, &k, options) {
        let [q, k, v] = reference::backward::<Cube<R, F, I, BT>>(
            from_float(q),
            from_float(k),
            from_float(v),
            from_float(d_out),
            options,
        )
        .map(into_float);
        return AttentionGrads { q, k, v };
    }
    let g = kernels::attention_backward(
        q,
        k,
        v,
        out,
        lse,
        d_out,
        options.q_offset,
        options.causal,
        options.window_or_zero(),
    );
    AttentionGrads {
        q: g.q,
        k: g.k,
        v: g.v,
    }
}
