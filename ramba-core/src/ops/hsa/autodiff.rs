//! HSA under `Autodiff<B>` when `B` has fused kernels: one graph node whose backward calls
//! `B::hsa_backward`, instead of differentiating the reference's gather/matmul/softmax graph.
//!
//! The node checkpoints its four differentiable inputs (`q`, `k`, `v`, `weights`) and keeps the
//! indices and the forward's log-sum-exp; `p` is recomputed in the backward, so nothing of size
//! `L·K·S` is stored.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::NodeId;
use burn::backend::Autodiff;
use burn::tensor::ops::{FloatTensor, IntTensor};

use super::HsaOptions;
use crate::ops::RambaBackend;

#[derive(Debug)]
struct HsaBackward;

/// What the backward needs beyond the checkpointed inputs.
#[derive(Clone, Debug)]
struct HsaState<B: RambaBackend> {
    inputs: [NodeId; 4],
    indices: IntTensor<B>,
    lse: FloatTensor<B>,
    options: HsaOptions,
}

impl<B: RambaBackend> Backward<B, 4> for HsaBackward {
    type State = HsaState<B>;

    fn backward(
        self,
        ops: Ops<Self::State, 4>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let [node_q, node_k, node_v, node_w] = ops.parents;
        let d_out = grads.consume::<B>(&ops.node);
        let state = ops.state;
        let [q, k, v, w] = state
            .inputs
            .map(|id| checkpointer.retrieve_node_output::<FloatTensor<B>>(id));
        let g = B::hsa_backward(q, k, v, state.indices, w, state.lse, d_out, state.options);
        for (node, grad) in [
            (node_q, g.q),
            (node_k, g.k),
            (node_v, g.v),
            (node_w, g.weights),
        ] {
            if let Some(node) = node {
                grads.register::<B>(node.id, grad);
            }
        }
    }
}

/// `Autodiff<B>::hsa` for a `B` with fused kernels.
pub(crate) fn hsa<B: RambaBackend, C: CheckpointStrategy>(
    q: FloatTensor<Autodiff<B, C>>,
    k: FloatTensor<Autodiff<B, C>>,
    v: FloatTensor<Autodiff<B, C>>,
    indices: IntTensor<B>,
    weights: FloatTensor<Autodiff<B, C>>,
    options: HsaOptions,
) -> FloatTensor<Autodiff<B, C>> {
    match HsaBackward
        .prepare::<C>([
            q.node.clone(),
            k.node.clone(),
            v.node.clone(),
            weights.node.clone(),
        ])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(mut prep) => {
            let inputs = [
                prep.checkpoint(&q),
                prep.checkpoint(&k),
                prep.checkpoint(&v),
                prep.checkpoint(&weights),
            ];
            let fwd = B::hsa_forward(
                q.primitive,
                k.primitive,
                v.primitive,
                indices.clone(),
                weights.primitive,
                options,
            );
            let state = HsaState {
                inputs,
                indices,
                lse: fwd.lse,
                options,
            };
            prep.finish(state, fwd.out)
        }
        OpsKind::UnTracked(prep) => prep.finish(B::hsa(
            q.primitive,
            k.primitive,
            v.primitive,
            indices,
            weights.primitive,
            options,
        )),
    }
}
