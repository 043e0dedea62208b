//! A linear layer whose output is consumed in column parts (Mamba-2's `in_proj`: `z`, `x`, `B`,
//! `C`, `Δ`), as one graph node under `Autodiff<B>` where `B` fuses the linear layers.
//!
//! Each part is its own product `x · cast(W[:, part])`, so no activation is ever sliced. What
//! the node saves is the backward: differentiated part by part, the weight's column slices cost
//! a zero-filled `[d_in, d_out]` gradient and a slice-assign per part plus the adds that merge
//! them, and the input gradient is one product per part plus the adds that sum them. Here the
//! parts' gradients are laid side by side into one `dY [rows, d_out]` (a concatenation), then
//! `dx = dY · cast(W)ᵀ` and `dW = xᵀ · dY` are one product each. The parts are outputs of their
//! own (`ops/outputs.rs`); a part no loss reaches contributes zeros.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::Autodiff;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{Shape, Slice, TensorMetadata};

use crate::ops::outputs::{outputs, token, OpGrad, OutputGrads};
use crate::ops::RambaBackend;

/// The column ranges of consecutive parts of the given widths.
pub fn column_ranges(widths: &[usize]) -> Vec<std::ops::Range<usize>> {
    widths
        .iter()
        .scan(0, |start, &w| {
            let range = *start..*start + w;
            *start += w;
            Some(range)
        })
        .collect()
}

/// `x [rows, d_in] · weight[:, part]` for each column part of `widths` (which sum to at most
/// `d_out`), in `x`'s dtype, the weight cast at use.
pub(crate) fn forward<B: RambaBackend>(
    x: FloatTensor<B>,
    weight: FloatTensor<B>,
    widths: &[usize],
) -> Vec<FloatTensor<B>> {
    let d_in = weight.shape()[0];
    column_ranges(widths)
        .into_iter()
        .map(|cols| {
            let part = B::float_slice(weight.clone(), &[Slice::from(0..d_in), Slice::from(cols)]);
            B::linear_rows(x.clone(), part)
        })
        .collect()
}

#[derive(Debug)]
struct LinearPartsBackward;

#[derive(Clone, Debug)]
struct LinearPartsState<B: burn::prelude::Backend> {
    x: FloatTensor<B>,
    /// The master weight (a parameter: shared, not copied).
    weight: FloatTensor<B>,
    widths: Vec<usize>,
    grads: std::sync::Arc<OutputGrads<B>>,
}

impl<B: RambaBackend> Backward<B, 2> for LinearPartsBackward {
    type State = LinearPartsState<B>;

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_weight] = ops.parents;
        // The token the parts' nodes registered: it only made this node run.
        let _ = grads.consume::<B>(&ops.node);
        let s = ops.state;
        let dtype = s.x.dtype();
        let rows = s.x.shape()[0];
        let device = B::float_device(&s.x);
        let d_out = s.weight.shape()[1];
        let mut parts: Vec<FloatTensor<B>> = s
            .grads
            .take()
            .into_iter()
            .zip(&s.widths)
            .map(|(g, &w)| {
                g.unwrap_or_else(|| B::float_zeros(Shape::new([rows, w]), &device, dtype.into()))
            })
            .collect();
        let covered: usize = s.widths.iter().sum();
        // Columns no part takes (none in Mamba-2) get zero gradients, so `dY` matches `W`.
        if covered < d_out {
            parts.push(B::float_zeros(
                Shape::new([rows, d_out - covered]),
                &device,
                dtype.into(),
            ));
        }
        let dy = if parts.len() == 1 {
            parts.remove(0)
        } else {
            B::float_cat(parts, 1)
        };
        let weight_dtype = s.weight.dtype();
        let weight = s.weight;
        super::autodiff::register_grads::<B>(
            grads,
            [node_x, node_weight].map(|p| p.map(|n| n.id)),
            s.x,
            dy,
            || super::cast_to::<B>(weight, dtype),
            weight_dtype,
        );
    }
}

/// `Autodiff<B>`'s column-part products where `B` fuses the linear layers.
pub(crate) fn linear_parts<B: RambaBackend, C: CheckpointStrategy>(
    x: FloatTensor<Autodiff<B, C>>,
    weight: FloatTensor<Autodiff<B, C>>,
    widths: &[usize],
) -> Vec<FloatTensor<Autodiff<B, C>>> {
    let values = forward::<B>(x.primitive.clone(), weight.primitive.clone(), widths);
    let device = B::float_device(&x.primitive);
    let grads = OutputGrads::new(widths.len());
    let op: FloatTensor<Autodiff<B, C>> = match LinearPartsBackward
        .prepare::<C>([x.node, weight.node])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish(
            LinearPartsState {
                x: x.primitive,
                weight: weight.primitive,
                widths: widths.to_vec(),
                grads: grads.clone(),
            },
            token::<B>(&device),
        ),
        OpsKind::UnTracked(prep) => prep.finish(token::<B>(&device)),
    };
    let op_grad = OpGrad::Token(op.primitive.clone());
    outputs::<B, C>(&op, values, grads, op_grad)
}
