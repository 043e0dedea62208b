//! More than one output for an autodiff node: the scan's and the conv's final state beside `y`,
//! the column parts of one product.
//!
//! Burn's backward nodes have one output. Each further output here is a node of its own whose
//! one parent is the op's node, one level deeper than it, so its backward runs before the op's:
//! it leaves its gradient in the shared [`OutputGrads`] for the op's backward, and the first
//! such node to run registers a gradient for the op's node, so that node runs even when no loss
//! reaches its own output (see [`OpGrad`]). An output no loss reaches never runs and costs
//! nothing; the op's backward sees `None` for it. Unlike one packed output sliced apart, nothing
//! is zero-filled at the outputs' full size and no gradients are summed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::Autodiff;
use burn::prelude::*;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{DType, TensorMetadata};

/// The further outputs' gradients, left by their nodes for the op's node.
pub(crate) struct OutputGrads<B: Backend> {
    grads: Mutex<Vec<Option<FloatTensor<B>>>>,
    op_grad_registered: AtomicBool,
}

impl<B: Backend> OutputGrads<B> {
    pub(crate) fn new(outputs: usize) -> Arc<Self> {
        Arc::new(Self {
            grads: Mutex::new(vec![None; outputs]),
            op_grad_registered: AtomicBool::new(false),
        })
    }

    /// The slots (a panic elsewhere while one was held leaves them usable).
    fn slots(&self) -> std::sync::MutexGuard<'_, Vec<Option<FloatTensor<B>>>> {
        self.grads.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Each output's gradient, `None` where no loss reached the output.
    pub(crate) fn take(&self) -> Vec<Option<FloatTensor<B>>> {
        self.slots().iter_mut().map(Option::take).collect()
    }

    /// Output `index`'s gradient, or zeros of `shape` when no loss reached it.
    pub(crate) fn take_or_zeros(
        &self,
        index: usize,
        shape: Shape,
        dtype: DType,
        device: &B::Device,
    ) -> FloatTensor<B> {
        self.slots()[index]
            .take()
            .unwrap_or_else(|| B::float_zeros(shape, device, dtype.into()))
    }

    fn put(&self, index: usize, grad: FloatTensor<B>) {
        self.slots()[index] = Some(grad);
    }
}

impl<B: Backend> std::fmt::Debug for OutputGrads<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OutputGrads")
    }
}

/// What the further outputs' nodes register as the op's gradient.
#[derive(Clone, Debug)]
pub(crate) enum OpGrad<B: Backend> {
    /// The op's own output is a [`token`] nobody reads: the token itself (no launch).
    Token(FloatTensor<B>),
    /// The op's own output is a real one (`y`): zeros of its shape, which the op's backward adds
    /// to nothing when `y` is unused and to `y`'s gradient otherwise.
    Zeros(Shape, DType),
}

/// An op node's output when all its real outputs are further ones: one element, never read.
pub(crate) fn token<B: Backend>(device: &B::Device) -> FloatTensor<B> {
    B::float_empty(Shape::new([1]), device, burn::tensor::FloatDType::F32)
}

#[derive(Debug)]
struct OutputBackward;

#[derive(Clone, Debug)]
struct OutputState<B: Backend> {
    grads: Arc<OutputGrads<B>>,
    index: usize,
    op_grad: OpGrad<B>,
}

impl<B: Backend> Backward<B, 1> for OutputBackward {
    type State = OutputState<B>;

    fn backward(
        self,
        ops: Ops<Self::State, 1>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let grad = grads.consume::<B>(&ops.node);
        let device = B::float_device(&grad);
        let state = ops.state;
        state.grads.put(state.index, grad);
        if let [Some(op)] = ops.parents {
            if !state.grads.op_grad_registered.swap(true, Ordering::Relaxed) {
                let op_grad = match state.op_grad {
                    OpGrad::Token(token) => token,
                    OpGrad::Zeros(shape, dtype) => B::float_zeros(shape, &device, dtype.into()),
                };
                grads.register::<B>(op.id, op_grad);
            }
        }
    }
}

/// `values` as further outputs of the node that produced `op` (see the module docs): output
/// `i`'s gradient reaches that node's backward through `grads`, slot `i`.
pub(crate) fn outputs<B: Backend, C: CheckpointStrategy>(
    op: &FloatTensor<Autodiff<B, C>>,
    values: Vec<FloatTensor<B>>,
    grads: Arc<OutputGrads<B>>,
    op_grad: OpGrad<B>,
) -> Vec<FloatTensor<Autodiff<B, C>>> {
    values
        .into_iter()
        .enumerate()
        .map(|(index, value)| {
            match OutputBackward
                .prepare::<C>([op.node.clone()])
                .compute_bound()
                .stateful()
            {
                OpsKind::Tracked(prep) => {
                    let state = OutputState {
                        grads: grads.clone(),
                        index,
                        op_grad: op_grad.clone(),
                    };
                    prep.finish(state, value)
                }
                OpsKind::UnTracked(prep) => prep.finish(value),
            }
        })
        .collect()
}

/// `second` as the one further output of the node whose own output is `first` (the scan's and
/// the conv's final state beside `y`); its gradient is `grads`' slot 0.
pub(crate) fn second_output<B: Backend, C: CheckpointStrategy>(
    first: &FloatTensor<Autodiff<B, C>>,
    second: FloatTensor<B>,
    grads: Arc<OutputGrads<B>>,
) -> FloatTensor<Autodiff<B, C>> {
    let op_grad = OpGrad::Zeros(first.shape(), first.dtype());
    outputs::<B, C>(first, vec![second], grads, op_grad)
        .pop()
        .unwrap_or_else(|| unreachable!("one value in, one output out"))
}
