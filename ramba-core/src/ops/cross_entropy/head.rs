//! The LM head's product and the loss as one graph node: `CE(x · W, targets, weights)` for
//! `x [N, d]` and `W [d, V]`, a block of rows at a time, so the `[N, V]` logits never exist
//! whole (3.3 GB in bf16 at 8 × 4096 tokens of a 50,280-token vocabulary, and on a CubeCL
//! device a pool page several times that size).
//!
//! Under `Autodiff<B>` (where `B` fuses the linear layers) the forward also forms each block's
//! gradients while its logits are at hand: the loss is the graph's last node, so its
//! gradient is a scalar `g` that only scales them. Per block: the logits, their log-sum-exp,
//! the gradient `(softmax − onehot) · w / Σw` written over the logits, then
//! `dx = G · Wᵀ` and `dW += xᵀ · G` (f32). The backward multiplies `dx` and `dW` by `g`. The
//! same three products as the unfused head, no recomputation, and one block's logits alive at
//! a time. The cost is that a forward whose loss is never differentiated still forms the
//! gradients; the models take this node only for the training loss.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::Autodiff;
use burn::prelude::*;
use burn::tensor::ops::{FloatTensor, IntTensor};
use burn::tensor::{DType, TensorMetadata};

use super::reference::weighted_nll_sum;
use crate::ops::linear::{cast_to, weight_grad, LinearPass};
use crate::ops::{from_float, into_float, RambaBackend};

/// Bytes of one block's logits: a few hundred MiB keeps the products large while the block is
/// a small share of a batch's activations.
const BLOCK_BYTES: usize = 512 << 20;

/// Rows per block for a vocabulary of `vocab` logits of `elem_bytes` each.
pub fn block_rows(vocab: usize, elem_bytes: usize) -> usize {
    (BLOCK_BYTES / (vocab.max(1) * elem_bytes.max(1))).max(1)
}

/// The loss, and (when asked) the gradients of the inputs for a loss gradient of 1.
pub struct Blocks<B: Backend> {
    /// f32 `[1]`.
    pub loss: FloatTensor<B>,
    /// `dx [N, d]` in `x`'s dtype and `dW [d, V]` f32.
    pub grads: Option<(FloatTensor<B>, FloatTensor<B>)>,
}

/// The blockwise pass without a graph, `block` rows at a time: `x [N, d]`, `weight [d, V]` (in
/// `x`'s dtype), `targets [N]`, `weights [N]`. With `with_grads`, also the gradients for a
/// loss gradient of 1 (what the node's forward keeps; tests call this with small blocks).
pub fn blocks<B: RambaBackend>(
    x: FloatTensor<B>,
    weight: FloatTensor<B>,
    targets: IntTensor<B>,
    weights: FloatTensor<B>,
    block: usize,
    with_grads: bool,
) -> Blocks<B> {
    let [n, d] = x.shape().dims();
    let vocab = weight.shape().dims::<2>()[1];
    let dtype = x.dtype();
    let block = block.max(1);
    let x: Tensor<B, 2> = from_float(x);
    let targets: Tensor<B, 1, Int> = Tensor::from_primitive(targets);
    let weights: Tensor<B, 1> = from_float::<B, 1>(weights).cast(DType::F32);
    let total = weights.clone().sum().clamp_min(1e-9);
    let inv_total = total.clone().recip();
    let mut loss_sum: Option<Tensor<B, 1>> = None;
    let mut dxs = Vec::new();
    let mut dw: Option<FloatTensor<B>> = None;
    for start in (0..n).step_by(block) {
        let end = (start + block).min(n);
        let xb = x.clone().slice(start..end);
        let (tb, wb) = (
            targets.clone().slice(start..end),
            weights.clone().slice(start..end),
        );
        let logits = B::matmul_into(
            into_float(xb.clone()),
            weight.clone(),
            dtype,
            LinearPass::Forward,
        );
        let lse = B::row_logsumexp(logits.clone());
        let part_sum = weighted_nll_sum::<B>(
            from_float(logits.clone()),
            tb.clone(),
            wb.clone(),
            from_float(lse.clone()),
        );
        loss_sum = Some(match loss_sum {
            Some(s) => s + part_sum,
            None => part_sum,
        });
        if with_grads {
            let coef = wb * inv_total.clone();
            let g =
                B::cross_entropy_logits_grad(logits, tb.into_primitive(), into_float(coef), lse);
            dxs.push(from_float::<B, 2>(B::matmul_into(
                g.clone(),
                B::float_transpose(weight.clone()),
                dtype,
                LinearPass::InputGrad,
            )));
            let dwb = weight_grad::<B>(into_float(xb), g, DType::F32);
            dw = Some(match dw {
                Some(acc) => B::float_add(acc, dwb),
                None => dwb,
            });
        }
    }
    let loss = match loss_sum {
        Some(s) => s / total,
        None => Tensor::zeros([1], &x.device()),
    };
    let grads = with_grads.then(|| {
        let dx = if dxs.is_empty() {
            Tensor::<B, 2>::zeros([0, d], &x.device()).cast(dtype)
        } else {
            Tensor::cat(dxs, 0)
        };
        let dw = dw.unwrap_or_else(|| {
            into_float(Tensor::<B, 2>::zeros([d, vocab], &x.device()).cast(DType::F32))
        });
        (into_float(dx), dw)
    });
    Blocks {
        loss: into_float(loss),
        grads,
    }
}

/// The loss of the head's logits on one backend without a graph: the seam's method on the
/// CubeCL backends.
pub(crate) fn forward<B: RambaBackend>(
    x: FloatTensor<B>,
    weight: FloatTensor<B>,
    targets: IntTensor<B>,
    weights: FloatTensor<B>,
) -> FloatTensor<B> {
    let dtype = x.dtype();
    let block = block_rows(weight.shape().dims::<2>()[1], dtype.size());
    blocks::<B>(
        x,
        cast_to::<B>(weight, dtype),
        targets,
        weights,
        block,
        false,
    )
    .loss
}

#[derive(Debug)]
struct HeadLossBackward;

/// The gradients for a loss gradient of 1, and the master weight's dtype.
#[derive(Clone, Debug)]
struct HeadLossState<B: Backend> {
    dx: FloatTensor<B>,
    dw: FloatTensor<B>,
    weight_dtype: DType,
}

impl<B: RambaBackend> Backward<B, 2> for HeadLossBackward {
    type State = HeadLossState<B>;

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_weight] = ops.parents;
        let g: Tensor<B, 1> = from_float(grads.consume::<B>(&ops.node));
        let s = ops.state;
        if let Some(node) = node_weight {
            let dw: Tensor<B, 2> = from_float(s.dw);
            let dw = (dw * g.clone().cast(DType::F32).reshape([1, 1])).cast(s.weight_dtype);
            grads.register::<B>(node.id, into_float(dw));
        }
        if let Some(node) = node_x {
            let dx: Tensor<B, 2> = from_float(s.dx);
            let dtype = dx.dtype();
            let dx = dx * g.cast(dtype).reshape([1, 1]);
            grads.register::<B>(node.id, into_float(dx));
        }
    }
}

/// `Autodiff<B>::linear_cross_entropy`.
pub(crate) fn linear_cross_entropy<B: RambaBackend, C: CheckpointStrategy>(
    x: FloatTensor<Autodiff<B, C>>,
    weight: FloatTensor<Autodiff<B, C>>,
    targets: IntTensor<Autodiff<B, C>>,
    weights: FloatTensor<Autodiff<B, C>>,
) -> FloatTensor<Autodiff<B, C>> {
    let dtype = x.primitive.dtype();
    let weight_dtype = weight.primitive.dtype();
    let cast = cast_to::<B>(weight.primitive.clone(), dtype);
    let block = block_rows(cast.shape().dims::<2>()[1], dtype.size());
    // The weights are the loss mask: constants, not differentiated.
    let weights = weights.primitive;
    match HeadLossBackward
        .prepare::<C>([x.node.clone(), weight.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let out = blocks::<B>(x.primitive.clone(), cast, targets, weights, block, true);
            let (dx, dw) = out.grads.expect("the gradients were asked for");
            prep.finish(
                HeadLossState {
                    dx,
                    dw,
                    weight_dtype,
                },
                out.loss,
            )
        }
        OpsKind::UnTracked(prep) => {
            let out = blocks::<B>(x.primitive.clone(), cast, targets, weights, block, false);
            prep.finish(out.loss)
        }
    }
}
