//! The causal conv1d under `Autodiff<B>` when `B` has the kernels: one graph node whose
//! backward calls `B::causal_conv1d_backward`. Like the scan's node (see
//! `ops/scan/autodiff.rs`), it outputs `y` and the final state is a node of its own
//! (`ops/outputs.rs`); a missing bias or initial state is a zero constant input.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::NodeId;
use burn::backend::Autodiff;
use burn::prelude::*;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{DType, TensorMetadata};

use crate::ops::outputs::{second_output, OutputGrads};
use crate::ops::{from_float, into_float, OutputAndState, RambaBackend};

#[derive(Debug)]
struct ConvBackward;

#[derive(Clone, Debug)]
struct ConvState<B: RambaBackend> {
    /// x, weight, bias, init_state.
    inputs: [NodeId; 4],
    /// The final state's gradient, when a loss used the state.
    d_final: std::sync::Arc<OutputGrads<B>>,
    state_shape: Shape,
    state_dtype: DType,
    /// The output went through SiLU.
    silu: bool,
}

impl<B: RambaBackend> Backward<B, 4> for ConvBackward {
    type State = ConvState<B>;

    fn backward(
        self,
        ops: Ops<Self::State, 4>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let dy = grads.consume::<B>(&ops.node);
        let state = ops.state;
        let d_final = state.d_final.take_or_zeros(
            0,
            state.state_shape,
            state.state_dtype,
            &B::float_device(&dy),
        );
        let [x, weight, bias, init] = state
            .inputs
            .map(|id| checkpointer.retrieve_node_output::<FloatTensor<B>>(id));
        let g = B::causal_conv1d_backward(x, weight, bias, init, dy, d_final, state.silu);
        let [nx, nw, nb, ns] = ops.parents;
        for (node, grad) in [(nx, g.x), (nw, g.weight), (nb, g.bias), (ns, g.init_state)] {
            if let Some(node) = node {
                grads.register::<B>(node.id, grad);
            }
        }
    }
}

/// `Autodiff<B>::causal_conv1d` for a `B` with the kernels.
pub(crate) fn causal_conv1d<B: RambaBackend, C: CheckpointStrategy>(
    x: FloatTensor<Autodiff<B, C>>,
    weight: FloatTensor<Autodiff<B, C>>,
    bias: Option<FloatTensor<Autodiff<B, C>>>,
    init_state: Option<FloatTensor<Autodiff<B, C>>>,
    silu: bool,
) -> OutputAndState<Autodiff<B, C>> {
    let y_shape = x.shape();
    let w_shape = weight.shape();
    let (channels, width) = (w_shape[0], w_shape[1]);
    let state_shape = Shape::new([y_shape[0], channels, width - 1]);
    let device = from_float::<Autodiff<B, C>, 3>(x.clone()).device();
    let bias =
        bias.unwrap_or_else(|| into_float(Tensor::<Autodiff<B, C>, 1>::zeros([channels], &device)));
    let init_state = init_state.unwrap_or_else(|| {
        into_float(Tensor::<Autodiff<B, C>, 3>::zeros(
            state_shape.clone(),
            &device,
        ))
    });
    let inputs = [&x, &weight, &bias, &init_state];
    let d_final = OutputGrads::new(1);
    let (y, last) = match ConvBackward
        .prepare::<C>(inputs.map(|t| t.node.clone()))
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(mut prep) => {
            let ids = inputs.map(|t| prep.checkpoint(t));
            let (y, last) = B::causal_conv1d(
                x.primitive,
                weight.primitive,
                Some(bias.primitive),
                Some(init_state.primitive),
                silu,
            );
            let state = ConvState {
                inputs: ids,
                d_final: d_final.clone(),
                state_shape: last.shape(),
                state_dtype: last.dtype(),
                silu,
            };
            (prep.finish(state, y), last)
        }
        OpsKind::UnTracked(prep) => {
            let (y, last) = B::causal_conv1d(
                x.primitive,
                weight.primitive,
                Some(bias.primitive),
                Some(init_state.primitive),
                silu,
            );
            (prep.finish(y), last)
        }
    };
    let last = second_output::<B, C>(&y, last, d_final);
    (y, last)
}
