//! The embedding lookup under `Autodiff<B>`: Burn's lookup forward, and a backward that calls
//! [`RambaBackend::embedding_grad`] on the inner backend. The node keeps the weight (a
//! parameter: no copy) and the token ids.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::Autodiff;
use burn::tensor::ops::{FloatTensor, IntTensor};

use crate::ops::RambaBackend;

#[derive(Debug)]
struct EmbeddingBackward;

impl<B: RambaBackend> Backward<B, 1> for EmbeddingBackward {
    type State = (FloatTensor<B>, IntTensor<B>);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node] = ops.parents;
        let dy = grads.consume::<B>(&ops.node);
        let (weight, tokens) = ops.state;
        if let Some(node) = node {
            grads.register::<B>(node.id, B::embedding_grad(weight, dy, tokens));
        }
    }
}

/// `Autodiff<B>::embedding_lookup`.
pub(crate) fn embedding<B: RambaBackend, C: CheckpointStrategy>(
    weight: FloatTensor<Autodiff<B, C>>,
    tokens: IntTensor<Autodiff<B, C>>,
) -> FloatTensor<Autodiff<B, C>> {
    let out = B::embedding(weight.primitive.clone(), tokens.clone());
    match EmbeddingBackward
        .prepare::<C>([weight.node])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish((weight.primitive, tokens), out),
        OpsKind::UnTracked(prep) => prep.finish(out),
    }
}
