//! The selective scan under `Autodiff<B>` when `B` has the kernels: one graph node whose
//! backward calls `B::selective_scan_backward`, instead of differentiating the reference's
//! graph (whose intermediates grow with `L·chunk` and `n_chunks²`).
//!
//! Burn's backward nodes have one output, and the scan has two (`y` and the final state). The
//! node's output packs them, flattened, into one tensor `[y ‖ final state]`; the two are then
//! views of it (slice + reshape), so a loss on either or both sends its gradient back through
//! the one node, and an unused final state simply contributes a zero gradient. The node
//! checkpoints its seven inputs and recomputes everything else in the backward.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::NodeId;
use burn::backend::Autodiff;
use burn::prelude::*;
use burn::tensor::ops::FloatTensor;
use burn::tensor::TensorMetadata;

use super::ScanOptions;
use crate::ops::packed::{pack, unpack};
use crate::ops::{from_float, into_float, OutputAndState, RambaBackend};

#[derive(Debug)]
struct ScanBackward;

#[derive(Clone, Debug)]
struct ScanState {
    /// x, delta, a, b, c, d, init_state.
    inputs: [NodeId; 7],
    y_shape: Shape,
    state_shape: Shape,
    options: ScanOptions,
}

impl<B: RambaBackend> Backward<B, 7> for ScanBackward {
    type State = ScanState;

    fn backward(
        self,
        ops: Ops<Self::State, 7>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let d_packed = grads.consume::<B>(&ops.node);
        let state = ops.state;
        let [dy, d_final] = unpack::<B, 4>(d_packed, &state.y_shape, &state.state_shape);
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
    let packed = match ScanBackward
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
                y_shape: y_shape.clone(),
                state_shape: state_shape.clone(),
                options,
            };
            prep.finish(state, pack::<B, 4>(y, last))
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
            prep.finish(pack::<B, 4>(y, last))
        }
    };
    let [y, last] = unpack::<Autodiff<B, C>, 4>(packed, &y_shape, &state_shape);
    (y, last)
}
