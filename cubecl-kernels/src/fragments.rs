//! 16×16×16 `cmma` fragments shared by the tensor-core kernels (HSA, attention, the scan): a
//! zeroed f32 accumulator, `A`/`B` operand loads from a slice at an offset with a row stride,
//! and the two 16×64-by-64 products the attention-shaped kernels are built from.

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

/// `acc += A·B` over the 64-long inner dimension in four 16-steps: `A` rows at `a_off` with
/// stride `a_stride` (row-major), `B` from `b` with layout `b_layout`; the k-step advances `A`
/// by 16 columns and `B` by `b_step` elements.
#[cube]
#[allow(clippy::too_many_arguments)]
pub(crate) fn mma_k64<F: Float>(
    a: &Slice<F>,
    a_off: usize,
    a_stride: u32,
    b: &Slice<F>,
    b_off: usize,
    b_stride: u32,
    b_step: usize,
    #[comptime] b_layout: cmma::MatrixLayout,
    acc: &cmma::Matrix<f32>,
) {
    #[unroll]
    for ks in 0..4usize {
        let fa = cmma::Matrix::<F>::from_slice(
            cmma::MatrixIdent::A,
            16usize,
            16usize,
            16usize,
            cmma::MatrixLayout::RowMajor,
            &a.slice(a_off + ks * 16, a.len()),
            a_stride,
        );
        let fb = cmma::Matrix::<F>::from_slice(
            cmma::MatrixIdent::B,
            16usize,
            16usize,
            16usize,
            b_layout,
            &b.slice(b_off + ks * b_step, b.len()),
            b_stride,
        );
        cmma::execute::<F, F, f32, f32>(&fa, &fb, acc, acc);
    }
}

/// `acc += X·Yᵀ` for a 16×64 row block `X` held as four k-step fragments and the 16 rows of
/// `Y` at `y_off` (row stride `y_stride`), read column-major as `B = Yᵀ`.
#[cube]
#[allow(clippy::too_many_arguments)]
pub(crate) fn rows_times_t<F: Float>(
    x0: &cmma::Matrix<F>,
    x1: &cmma::Matrix<F>,
    x2: &cmma::Matrix<F>,
    x3: &cmma::Matrix<F>,
    y: &Slice<F>,
    y_off: usize,
    y_stride: u32,
    acc: &cmma::Matrix<f32>,
) {
    #[unroll]
    for ks in 0..4usize {
        let fb = cmma::Matrix::<F>::from_slice(
            cmma::MatrixIdent::B,
            16usize,
            16usize,
            16usize,
            cmma::MatrixLayout::ColMajor,
            &y.slice(y_off + ks * 16, y.len()),
            y_stride,
        );
        if ks == 0 {
            cmma::execute::<F, F, f32, f32>(x0, &fb, acc, acc);
        } else if ks == 1 {
            cmma::execute::<F, F, f32, f32>(x1, &fb, acc, acc);
        } else if ks == 2 {
            cmma::execute::<F, F, f32, f32>(x2, &fb, acc, acc);
        } else {
            cmma::execute::<F, F, f32, f32>(x3, &fb, acc, acc);
        }
    }
}
