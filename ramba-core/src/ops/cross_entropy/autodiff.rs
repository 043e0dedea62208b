//! The cross-entropy under `Autodiff<B>` where `B` fuses it: one graph node whose forward and
//! backward are `B`'s two passes over the logits ([`RambaBackend::row_logsumexp`],
//! [`RambaBackend::cross_entropy_logits_grad`]: kernels on the CubeCL backends, the blockwise
//! reference elsewhere). It keeps the
//! logits (in their dtype: bf16 under mixed precision), the targets, the weights and the rows'
//! log-sum-exp; `log_softmax` through autodiff would keep f32 `[N, V]` tensors instead.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::NodeId;
use burn::backend::Autodiff;
use burn::prelude::*;
use burn::tensor::ops::{FloatTensor, IntTensor};

use super::reference::{grad_coefficients, loss_from_lse};
use crate::ops::{from_float, into_float, RambaBackend};

#[derive(Debug)]
struct CrossEntropyBackward;

/// What the backward needs beyond the checkpointed logits.
#[derive(Clone, Debug)]
struct CrossEntropyState<B: Backend> {
    logits: NodeId,
    targets: IntTensor<B>,
    weights: FloatTensor<B>,
    lse: FloatTensor<B>,
    total: FloatTensor<B>,
}

impl<B: RambaBackend> Backward<B, 1> for CrossEntropyBackward {
    type State = CrossEntropyState<B>;

    fn backward(
        self,
        ops: Ops<Self::State, 1>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let [node] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let s = ops.state;
        let logits = checkpointer.retrieve_node_output::<FloatTensor<B>>(s.logits);
        let coef =
            grad_coefficients::<B>(from_float(s.weights), from_float(s.total), from_float(grad));
        let d_logits = B::cross_entropy_logits_grad(logits, s.targets, into_float(coef), s.lse);
        if let Some(node) = node {
            grads.register::<B>(node.id, d_logits);
        }
    }
}

/// `Autodiff<B>::cross_entropy`.
pub(crate) fn cross_entropy<B: RambaBackend, C: CheckpointStrategy>(
    logits: FloatTensor<Autodiff<B, C>>,
    targets: IntTensor<Autodiff<B, C>>,
    weights: FloatTensor<Autodiff<B, C>>,
) -> FloatTensor<Autodiff<B, C>> {
    // The weights are the loss mask: constants, not differentiated.
    let weights = weights.primitive;
    let lse = B::row_logsumexp(logits.primitive.clone());
    let fwd = loss_from_lse::<B>(
        from_float(logits.primitive.clone()),
        Tensor::from_primitive(targets.clone()),
        from_float(weights.clone()),
        from_float(lse),
    );
    match CrossEntropyBackward
        .prepare::<C>([logits.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(mut prep) => {
            let state = CrossEntropyState {
                logits: prep.checkpoint(&logits),
                targets,
                weights,
                lse: into_float(fwd.lse),
                total: into_float(fwd.total),
            };
            prep.finish(state, into_float(fwd.loss))
        }
        OpsKind::UnTracked(prep) => prep.finish(into_float(fwd.loss)),
    }
}
