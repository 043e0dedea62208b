//! A second output for an autodiff node (the scan's and the conv's final state).
//!
//! Burn's backward nodes have one output. The op's node outputs `y`; the final state is a node
//! of its own, [`second_output`], whose one parent is `y`'s node. When a loss uses the state,
//! that node's backward (which runs before the op's: it is one level deeper) leaves the state's
//! gradient in a [`Slot`] the op's node reads, and registers a zero gradient for `y` so the op's
//! node runs even when only the state is used. When the state is unused, as in training, its node
//! is never reached and costs nothing: `y` is written once, with no packing of the two into one
//! tensor and no zero-filled gradient of `y`'s size for the slices that would unpack it.

use std::sync::{Arc, Mutex};

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::Autodiff;
use burn::prelude::*;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{DType, TensorMetadata};

/// Where the second output's node leaves its gradient for the op's node.
pub(crate) struct Slot<B: Backend>(Arc<Mutex<Option<FloatTensor<B>>>>);

impl<B: Backend> Slot<B> {
    pub(crate) fn new() -> Self {
        Self(Arc::new(Mutex::new(None)))
    }

    fn put(&self, grad: FloatTensor<B>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(grad);
    }

    /// The second output's gradient, or zeros of `shape` when it was not used.
    pub(crate) fn take_or_zeros(
        &self,
        shape: Shape,
        dtype: DType,
        device: &B::Device,
    ) -> FloatTensor<B> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .unwrap_or_else(|| B::float_zeros(shape, device, dtype.into()))
    }
}

impl<B: Backend> Clone for Slot<B> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<B: Backend> std::fmt::Debug for Slot<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Slot")
    }
}

#[derive(Debug)]
struct SecondOutputBackward;

#[derive(Clone, Debug)]
struct SecondOutputState<B: Backend> {
    slot: Slot<B>,
    first_shape: Shape,
    first_dtype: DType,
}

impl<B: Backend> Backward<B, 1> for SecondOutputBackward {
    type State = SecondOutputState<B>;

    fn backward(
        self,
        ops: Ops<Self::State, 1>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let grad = grads.consume::<B>(&ops.node);
        let device = B::float_device(&grad);
        let state = ops.state;
        state.slot.put(grad);
        if let [Some(first)] = ops.parents {
            let zeros = B::float_zeros(state.first_shape, &device, state.first_dtype.into());
            grads.register::<B>(first.id, zeros);
        }
    }
}

/// `second` as the second output of the node that produced `first`; its gradient reaches that
/// node's backward through `slot`.
pub(crate) fn second_output<B: Backend, C: CheckpointStrategy>(
    first: &FloatTensor<Autodiff<B, C>>,
    second: FloatTensor<B>,
    slot: Slot<B>,
) -> FloatTensor<Autodiff<B, C>> {
    match SecondOutputBackward
        .prepare::<C>([first.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let state = SecondOutputState {
                slot,
                first_shape: first.shape(),
                first_dtype: first.dtype(),
            };
            prep.finish(state, second)
        }
        OpsKind::UnTracked(prep) => prep.finish(second),
    }
}
