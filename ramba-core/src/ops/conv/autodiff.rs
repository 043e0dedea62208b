//! The causal conv1d under `Autodiff<B>` when `B` has the kernels: one graph node whose
//! backward calls `B::causal_conv1d_backward`. Like the scan's node (see
//! `ops/scan/autodiff.rs`), its one output packs `[y ‖ final state]`, and a missing bias or
//! initial state is a zero constant input.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::NodeId;
use burn::backend::Autodiff;
use burn::prelude::*;
use burn::tensor::ops::FloatTensor;
use burn::tensor::TensorMetadata;

use crate::ops::packed::{pack, unpack};
use crate::ops::{from_float, into_float, OutputAndState, RambaBackend};

#[derive(Debug)]
struct ConvBackward;

#[derive(Clone, Debug)]
struct ConvState {
    /// x, weight, bias, init_state.
    inputs: [NodeId; 4],
    y_shape: Shape,
    state_shape: Shape,
    /// The output went through SiLU.
    silu: bool,
}

impl<B: RambaBackend> Backward<B, 4> for ConvBackward {
    type State = ConvState;

    fn backward(
        self,
        ops: Ops<Self::State, 4>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let d_packed = grads.consume::<B>(&ops.node);
        let state = ops.state;
        let [dy, d_final] = unpack::<B, 3>(d_packed, &state.y_shape, &state.state_shape);
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
    let packed = match ConvBackward
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
                y_shape: y_shape.clone(),
                state_shape: state_shape.clone(),
                silu,
            };
            prep.finish(state, pack::<B, 3>(y, last))
        }
        OpsKind::UnTracked(prep) => {
            let (y, last) = B::causal_conv1d(
                x.primitive,
                weight.primitive,
                Some(bias.primitive),
                Some(init_state.primitive),
                silu,
            );
            prep.finish(pack::<B, 3>(y, last))
        }
    };
    let [y, last] = unpack::<Autodiff<B, C>, 3>(packed, &y_shape, &state_shape);
    (y, last)
}
