//! Two outputs through one autodiff node: Burn's backward nodes have a single output, so the
//! scan's and the conv's nodes return `[y ‖ state]` flattened into one tensor, and `y` and the
//! state are views of it (`narrow` + `reshape`). A loss on either or both sends its gradient back
//! through the one node; an unused state contributes zeros.

use burn::prelude::*;
use burn::tensor::ops::FloatTensor;

use super::{from_float, into_float};

/// `[y ‖ state]`, flattened.
pub(crate) fn pack<B: Backend, const D: usize>(
    y: FloatTensor<B>,
    state: FloatTensor<B>,
) -> FloatTensor<B> {
    let y: Tensor<B, D> = from_float(y);
    let state: Tensor<B, D> = from_float(state);
    let (ny, ns) = (y.shape().num_elements(), state.shape().num_elements());
    into_float(Tensor::cat(vec![y.reshape([ny]), state.reshape([ns])], 0))
}

/// The inverse of [`pack`]: `[y, state]` as views of `packed`.
pub(crate) fn unpack<B: Backend, const D: usize>(
    packed: FloatTensor<B>,
    y: &Shape,
    state: &Shape,
) -> [FloatTensor<B>; 2] {
    let packed: Tensor<B, 1> = from_float(packed);
    let (ny, ns) = (y.num_elements(), state.num_elements());
    let dims = |s: &Shape| -> [usize; D] { std::array::from_fn(|i| s[i]) };
    [
        into_float(packed.clone().narrow(0, 0, ny).reshape(dims(y))),
        into_float(packed.narrow(0, ny, ns).reshape(dims(state))),
    ]
}
