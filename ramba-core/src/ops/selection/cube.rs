//! Chunk selection on Burn's CubeCL backends: the fused kernel of
//! `cubecl-kernels/src/selection/`.

use burn::tensor::ops::{FloatTensor, IntTensor};
use burn_cubecl::{BoolElement, CubeBackend, CubeRuntime, FloatElement, IntElement};

use super::SelectionOptions;

pub(crate) fn select_chunks<R, F, I, BT>(
    queries: FloatTensor<CubeBackend<R, F, I, BT>>,
    landmarks: FloatTensor<CubeBackend<R, F, I, BT>>,
    options: SelectionOptions,
) -> IntTensor<CubeBackend<R, F, I, BT>>
where
    R: CubeRuntime,
    F: FloatElement,
    I: IntElement,
    BT: BoolElement,
{
    cubecl_kernels::selection::select_chunks(
        queries,
        landmarks,
        options.chunk_size,
        options.top_k,
        options.query_start,
        I::dtype(),
    )
}
