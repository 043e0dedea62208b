//! 16×16×16 `cmma` fragments shared by the tensor-core kernels (HSA and the scan): a zeroed f32
//! accumulator, and `A`/`B` operand loads from a slice at an offset with a row stride.

use cubecl::cmma;
use cubecl::prelude::*;

/// A 16×16 f32 accumulator filled with zeros.
#[cube]
pub(crate) fn new_acc() -> cmma::Matrix<f32> {
    cmma::Matrix::<f32>::from_value(
        cmma::MatrixIdent::Accumulator,
        16usize,
        16usize,
        16usize,
        cmma::MatrixLayout::Undefined,
        0.0,
    )
}

/// A row-major fragment `A` of 16×16 at `off` (row stride `stride`).
#[cube]
pub(crate) fn load_a<F: Float>(src: &Slice<F>, off: usize, stride: u32) -> cmma::Matrix<F> {
    cmma::Matrix::<F>::from_slice(
        cmma::MatrixIdent::A,
        16usize,
        16usize,
        16usize,
        cmma::MatrixLayout::RowMajor,
        &src.slice(off, src.len()),
        stride,
    )
}

/// A fragment `B` of 16×16 at `off` (stride `stride`) in `layout`.
#[cube]
pub(crate) fn load_b<F: Float>(
    src: &Slice<F>,
    off: usize,
    stride: u32,
    #[comptime] layout: cmma::MatrixLayout,
) -> cmma::Matrix<F> {
    cmma::Matrix::<F>::from_slice(
        cmma::MatrixIdent::B,
        16usize,
        16usize,
        16usize,
        layout,
        &src.slice(off, src.len()),
        stride,
    )
}
