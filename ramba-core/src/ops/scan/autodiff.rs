//! The selective scan under `Autodiff<B>` when `B` has the kernels: one graph node whose
//! backward calls `B::selective_scan_backward`, instead of differentiating the reference's
//! graph (whose intermediates grow with `L·chunk` and `n_chunks²`).
//!
//! Burn's backward nodes have one output, and the scan has two: the node outputs `y`, and the
//! final state is a node of its own whose gradient, when a loss uses it, reaches this node's
//! backward through a shared slot (see `ops/outputs.rs`). The node checkpoints its seven
//! inputs and recomputes everything else in the backward.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::NodeId;
use burn::backend::Autodiff;
use burn::prelude::*;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{DType, TensorMetadata};

use super::ScanOptions;
use crate::ops::outputs::{second_output, OutputGrads};
use crate::ops::{from_float, into_float, OutputAndState, RambaBackend};

#[derive(Debug)]
struct ScanBackward;

#[derive(Clone, Debug)]
struct ScanState<B: RambaBackend> {
    /// x, delta, a, b, c, d, init_state.
    inputs: [NodeId; 7],
    /// The final state's gradient, when a loss used the state.
    d_final: std::sync::Arc<OutputGrads<B>>,
    state_shape: Shape,
    state_dtype: DType,
    options: ScanOptions,
}

impl<B: RambaBackend> Backward<B, 7> for ScanBackward {
    type State = ScanState<B>;

    fn backward(
        self,
        ops: Ops<Self::State, 7>,
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
        let [x, delta, a, b, c, d, init] = state
            .inputs
            .map(|id| checkpointer.retrieve_node_output::<FloatTensor<B>>(id));
        let g = B::selective_scan_backward(x, delta, a, b, c, d, init, dy, d_final, state.options);
        let [nx, ndelta, na, nb, nc, nd, ninit] = ops.parents;
        for (node, grad) in [
            (nx, g.x),
            (ndelta, g.delta),
            (na, g.a),
            (nb, g.b),
            (nc, g.c),
            (nd, g.d),
            (ninit, g.init_state),
        ] {
            if let Some(node) = node {
                grads.register::<B>(node.id, grad);
            }
        }
    }
}

/// `Autodiff<B>::selective_scan` for a `B` with the kernels.
#[allow(clippy::too_many_arguments)]
pub(crate) fn selective_scan<B: RambaBackend, C: CheckpointStrategy>(
    x: FloatTensor<Autodiff<B, C>>,
    delta: FloatTensor<Autodiff<B, C>>,
    a: FloatTensor<Autodiff<B, C>>,
    b: FloatTensor<Autodiff<B, C>>,
    c: FloatTensor<Autodiff<B, C>>,
    d: FloatTensor<Autodiff<B, C>>,
    init_state: Option<FloatTensor<Autodiff<B, C>>>,
    options: ScanOptions,
) -> OutputAndState<Autodiff<B, C>> {
    let y_shape = x.shape();
    let b_shape = b.shape();
    let state_shape = Shape::new([y_shape[0], y_shape[2], y_shape[3], b_shape[3]]);
    // A missing initial state is a zero constant: one more (untracked) input keeps the node's
    // arity fixed.
    let init_state = init_state.unwrap_or_else(|| {
        into_float(Tensor::<Autodiff<B, C>, 4>::zeros(
            state_shape.clone(),
            &from_float::<Autodiff<B, C>, 4>(x.clone()).device(),
        ))
    });
    let inputs = [&x, &delta, &a, &b, &c, &d, &init_state];
    let d_final = OutputGrads::new(1);
    let (y, last) = match ScanBackward
        .prepare::<C>(inputs.map(|t| t.node.clone()))
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(mut prep) => {
            let ids = inputs.map(|t| prep.checkpoint(t));
            let (y, last) = B::selective_scan(
                x.primitive,
                delta.primitive,
                a.primitive,
                b.primitive,
                c.primitive,
                d.primitive,
                Some(init_state.primitive),
                options,
            );
            let state = ScanState {
                inputs: ids,
                d_final: d_final.clone(),
                state_shape: last.shape(),
                state_dtype: last.dtype(),
                options,
            };
            (prep.finish(state, y), last)
        }
        OpsKind::UnTracked(prep) => {
            let (y, last) = B::selective_scan(
                x.primitive,
                delta.primitive,
                a.primitive,
                b.primitive,
                c.primitive,
                d.primitive,
                Some(init_state.primitive),
                options,
            );
            (prep.finish(y), last)
        }
    };
    let last = second_output::<B, C>(&y, last, d_final);
    (y, last)
}
