//! The linear node under `Autodiff<B>` where `B` fuses it: `y = x · cast(W)` with `B`'s chosen
//! matmul kernel. The node keeps `x` (shared with the graph) and the cast weight (the product's
//! operand, `d_in × d_out` in `x`'s dtype); its backward runs `dx = dy · cast(W)ᵀ` in `x`'s
//! dtype and `dW = xᵀ · dy` straight into the weight's dtype ([`super::weight_grad`]).

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
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
        let [node_x, node_weight] = ops.parents;
        let dy = grads.consume::<B>(&ops.node);
        let s = ops.state;
        if let Some(node) = node_weight {
            let dw = super::weight_grad::<B>(s.x.clone(), dy.clone(), s.weight_dtype);
            grads.register::<B>(node.id, dw);
        }
        if let Some(node) = node_x {
            let dtype = s.x.dtype();
            let dx = B::matmul_into(
                dy,
                B::float_transpose(s.weight),
                dtype,
                LinearPass::InputGrad,
            );
            grads.register::<B>(node.id, dx);
        }
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
    let cast = if weight_dtype == dtype {
        weight.primitive.clone()
    } else {
        B::float_cast(weight.primitive.clone(), dtype.into())
    };
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
