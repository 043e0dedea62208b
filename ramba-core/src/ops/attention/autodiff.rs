//! Attention under `Autodiff<B>` when `B` has fused kernels: one graph node whose backward
//! calls `B::attention_backward`, instead of differentiating the reference's dense scores.
//!
//! The node checkpoints `q`, `k`, `v` and keeps the output and the row log-sum-exp (`O(L)` per
//! head); the probabilities are recomputed in the backward, so nothing of size `L_q × L_k` is
//! stored.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::NodeId;
use burn::backend::Autodiff;
use burn::tensor::ops::FloatTensor;

use super::AttentionOptions;
use crate::ops::RambaBackend;

#[derive(Debug)]
struct AttentionBackward;

/// What the backward needs beyond the checkpointed inputs.
#[derive(Clone, Debug)]
struct AttentionState<B: RambaBackend> {
    inputs: [NodeId; 3],
    out: FloatTensor<B>,
    lse: FloatTensor<B>,
    options: AttentionOptions,
}

impl<B: RambaBackend> Backward<B, 3> for AttentionBackward {
    type State = AttentionState<B>;

    fn backward(
        self,
        ops: Ops<Self::State, 3>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let [node_q, node_k, node_v] = ops.parents;
        let d_out = grads.consume::<B>(&ops.node);
        let state = ops.state;
        let [q, k, v] = state
            .inputs
            .map(|id| checkpointer.retrieve_node_output::<FloatTensor<B>>(id));
        let g = B::attention_backward(q, k, v, state.out, state.lse, d_out, state.options);
        for (node, grad) in [(node_q, g.q), (node_k, g.k), (node_v, g.v)] {
            if let Some(node) = node {
                grads.register::<B>(node.id, grad);
            }
        }
    }
}

/// `Autodiff<B>::attention` for a `B` with fused kernels.
pub(crate) fn attention<B: RambaBackend, C: CheckpointStrategy>(
    q: FloatTensor<Autodiff<B, C>>,
    k: FloatTensor<Autodiff<B, C>>,
    v: FloatTensor<Autodiff<B, C>>,
    options: AttentionOptions,
) -> FloatTensor<Autodiff<B, C>> {
    match AttentionBackward
        .prepare::<C>([q.node.clone(), k.node.clone(), v.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(mut prep) => {
            let inputs = [
                prep.checkpoint(&q),
                prep.checkpoint(&k),
                prep.checkpoint(&v),
            ];
            let fwd = B::attention_forward(q.primitive, k.primitive, v.primitive, options);
            let state = AttentionState {
                inputs,
                out: fwd.out.clone(),
                lse: fwd.lse,
                options,
            };
            prep.finish(state, fwd.out)
        }
        OpsKind::UnTracked(prep) => prep.finish(B::softmax_attention(
            q.primitive,
            k.primitive,
            v.primitive,
            options,
        )),
    }
}
