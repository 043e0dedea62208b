//! The linear node under `Autodiff<B>` where `B` fuses it: `y = x · cast(W)` with `B`'s chosen
//! matmul kernel. The node keeps `x` (shared with the graph) and the cast weight (the product's
//! operand, `d_in × d_out` in `x`'s dtype); its backward runs `dx = dy · cast(W)ᵀ` in `x`'s
//! dtype and `dW = xᵀ · dy` straight into the weight's dtype ([`super::weight_grad`]).

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::NodeId;
use burn::backend::Autodiff;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{DType, TensorMetadata};

use super::LinearPass;
use crate::ops::RambaBackend;

#[derive(Debug)]
struct LinearBackward;

#[derive(Clone, Debug)]
struct LinearState<B: burn::prelude::Backend> {
    x: FloatTensor<B>,
    /// The weight in `x`'s dtype, as the forward multiplied it.
    weight: FloatTensor<B>,
    /// The master weight's dtype, the gradient's.
    weight_dtype: DType,
}

impl<B: RambaBackend> Backward<B, 2> for LinearBackward {
    type State = LinearState<B>;

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let dy = grads.consume::<B>(&ops.node);
        let s = ops.state;
        register_grads::<B>(
            grads,
            ops.parents.map(|p| p.map(|n| n.id)),
            s.x,
            dy,
            || s.weight,
            s.weight_dtype,
        );
    }
}

/// The linear node's backward for `dy [rows, d_out]`, shared with the column-parts node: the
/// weight gradient `xᵀ · dy` in `weight_dtype`, the input gradient `dy · Wᵀ` in `x`'s dtype with
/// `weight` (in `x`'s dtype) asked for only when the input needs it.
pub(super) fn register_grads<B: RambaBackend>(
    grads: &mut Gradients,
    [node_x, node_weight]: [Option<NodeId>; 2],
    x: FloatTensor<B>,
    dy: FloatTensor<B>,
    weight: impl FnOnce() -> FloatTensor<B>,
    weight_dtype: DType,
) {
    if let Some(node) = node_weight {
        let dw = super::weight_grad::<B>(x.clone(), dy.clone(), weight_dtype);
        grads.register::<B>(node, dw);
    }
    if let Some(node) = node_x {
        let dx = B::matmul_into(
            dy,
            B::float_transpose(weight()),
            x.dtype(),
            LinearPass::InputGrad,
        );
        grads.register::<B>(node, dx);
    }
}

/// `Autodiff<B>::linear_rows`: `x [rows, d_in]`, `weight [d_in, d_out]` → `[rows, d_out]` in `x`'s
/// dtype.
pub(crate) fn linear<B: RambaBackend, C: CheckpointStrategy>(
    x: FloatTensor<Autodiff<B, C>>,
    weight: FloatTensor<Autodiff<B, C>>,
) -> FloatTensor<Autodiff<B, C>> {
    let dtype = x.primitive.dtype();
    let weight_dtype = weight.primitive.dtype();
    let cast = super::cast_to::<B>(weight.primitive.clone(), dtype);
    let y = B::matmul_into(
        x.primitive.clone(),
        cast.clone(),
        dtype,
        LinearPass::Forward,
    );
    match LinearBackward
        .prepare::<C>([x.node, weight.node])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish(
            LinearState {
                x: x.primitive,
                weight: cast,
                weight_dtype,
            },
            y,
        ),
        OpsKind::UnTracked(prep) => prep.finish(y),
    }
}
