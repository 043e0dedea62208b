//! The `softplus(dt + bias)` node under `Autodiff<B>`: the formulas of [`super`] on the inner
//! backend; the node keeps `dt` and `bias` (both small: one value per token and head).

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::Autodiff;
use burn::tensor::ops::FloatTensor;
use burn::tensor::DType;

use crate::ops::{from_float, into_float};

#[derive(Debug)]
struct BiasedSoftplusBackward;

impl<B: crate::ops::RambaBackend> Backward<B, 2> for BiasedSoftplusBackward {
    type State = (FloatTensor<B>, FloatTensor<B>);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_dt, node_bias] = ops.parents;
        let d_delta = grads.consume::<B>(&ops.node);
        let (dt, bias) = ops.state;
        let (d_dt, d_bias) = super::biased_softplus_backward::<B>(
            from_float(dt),
            from_float(bias),
            from_float(d_delta),
        );
        if let Some(node) = node_dt {
            grads.register::<B>(node.id, into_float(d_dt));
        }
        if let Some(node) = node_bias {
            grads.register::<B>(node.id, into_float(d_bias));
        }
    }
}

/// `Autodiff<B>::biased_softplus`: `dt [rows, n]`, `bias [n]`.
pub(crate) fn biased_softplus<B: crate::ops::RambaBackend, C: CheckpointStrategy>(
    dt: FloatTensor<Autodiff<B, C>>,
    bias: FloatTensor<Autodiff<B, C>>,
    out: DType,
) -> FloatTensor<Autodiff<B, C>> {
    let (dtp, bp) = (dt.primitive.clone(), bias.primitive.clone());
    let y =
        super::biased_softplus_forward::<B>(from_float(dtp.clone()), from_float(bp.clone()), out);
    match BiasedSoftplusBackward
        .prepare::<C>([dt.node, bias.node])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish((dtp, bp), into_float(y)),
        OpsKind::UnTracked(prep) => prep.finish(into_float(y)),
    }
}
