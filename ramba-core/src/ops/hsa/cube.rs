//! HSA on Burn's CubeCL backends (CUDA, wgpu): the kernels of `cubecl-kernels/src/hsa/`.

use burn::tensor::ops::{FloatTensor, IntTensor};
use burn::tensor::TensorMetadata;
use burn_cubecl::{BoolElement, CubeBackend, CubeRuntime, FloatElement, IntElement};
use cubecl_kernels::hsa::{self as kernels, HsaShape};

use super::{reference, HsaForward, HsaGrads, HsaOptions};
use crate::ops::{from_float, into_float};

type Cube<R, F, I, BT> = CubeBackend<R, F, I, BT>;

/// Whether the kernels' shared memory fits the device at this shape; when it does not, the
/// backend runs the reference instead (correct, slower).
fn fits<R: CubeRuntime>(q: &burn_cubecl::tensor::CubeTensor<R>, shape: &HsaShape) -> bool {
    let limit = q.client.properties().hardware.max_shared_memory_size;
    shape.shared_bytes() <= limit
}

fn shape_of<R: CubeRuntime>(
    q: &burn_cubecl::tensor::CubeTensor<R>,
    k: &burn_cubecl::tensor::CubeTensor<R>,
    indices: &burn_cubecl::tensor::CubeTensor<R>,
    options: HsaOptions,
) -> HsaShape {
    HsaShape::of(&q.shape(), &k.shape(), &indices.shape(), options.chunk_size)
}

pub(crate) fn forward<R, F, I, BT>(
    q: FloatTensor<Cube<R, F, I, BT>>,
    k: FloatTensor<Cube<R, F, I, BT>>,
    v: FloatTensor<Cube<R, F, I, BT>>,
    indices: IntTensor<Cube<R, F, I, BT>>,
    weights: FloatTensor<Cube<R, F, I, BT>>,
    options: HsaOptions,
) -> HsaForward<Cube<R, F, I, BT>>
where
    R: CubeRuntime,
    F: FloatElement,
    I: IntElement,
    BT: BoolElement,
{
    let shape = shape_of(&q, &k, &indices, options);
    if !fits(&q, &shape) {
        let (out, lse) = reference::forward::<Cube<R, F, I, BT>>(
            from_float(q),
            from_float(k),
            from_float(v),
            burn::tensor::Tensor::from_primitive(indices),
            from_float(weights),
            options,
        );
        return HsaForward {
            out: into_float(out),
            lse: into_float(lse),
        };
    }
    let (out, lse) = kernels::hsa_forward(
        q,
        k,
        v,
        indices,
        weights,
        options.chunk_size,
        options.softmax_off_by_one,
    );
    HsaForward { out, lse }
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn backward<R, F, I, BT>(
    q: FloatTensor<Cube<R, F, I, BT>>,
    k: FloatTensor<Cube<R, F, I, BT>>,
    v: FloatTensor<Cube<R, F, I, BT>>,
    indices: IntTensor<Cube<R, F, I, BT>>,
    weights: FloatTensor<Cube<R, F, I, BT>>,
    lse: FloatTensor<Cube<R, F, I, BT>>,
    d_out: FloatTensor<Cube<R, F, I, BT>>,
    options: HsaOptions,
) -> HsaGrads<Cube<R, F, I, BT>>
where
    R: CubeRuntime,
    F: FloatElement,
    I: IntElement,
    BT: BoolElement,
{
    let shape = shape_of(&q, &k, &indices, options);
    if !fits(&q, &shape) {
        let [q, k, v, weights] = reference::backward::<Cube<R, F, I, BT>>(
            from_float(q),
            from_float(k),
            from_float(v),
            burn::tensor::Tensor::from_primitive(indices),
            from_float(weights),
            from_float(d_out),
            options,
        )
        .map(into_float);
        return HsaGrads { q, k, v, weights };
    }
    let g = kernels::hsa_backward(q, k, v, indices, weights, lse, d_out, options.chunk_size);
    HsaGrads {
        q: g.q,
        k: g.k,
        v: g.v,
        weights: g.weights,
    }
}
