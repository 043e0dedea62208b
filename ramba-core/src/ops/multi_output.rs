//! Several outputs for one autodiff node (the parts of a product split by columns).
//!
//! Burn's backward nodes have one output. Here the op's node outputs a one-element token nobody
//! reads, and each real output is a node of its own whose one parent is the op's node. The
//! outputs' nodes sit one level deeper than the op's, so their backwards all run before the
//! op's: each leaves its gradient in the shared [`OutputGrads`], and the first to run registers
//! the token as the op's gradient (no launch: it is the token itself), which makes the op's node
//! run. An output no loss reaches never runs; the op's backward sees `None` for it.
//!
//! Unlike slicing one output apart, nothing is zero-filled at the outputs' full size and the
//! parts' gradients are never summed: the op's backward gets each part's gradient and decides how
//! to combine them (see `ops/linear/parts.rs`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::Autodiff;
use burn::prelude::*;
use burn::tensor::ops::FloatTensor;

/// The outputs' gradients, left by their nodes for the op's node.
pub(crate) struct OutputGrads<B: Backend> {
    grads: Mutex<Vec<Option<FloatTensor<B>>>>,
    token_registered: AtomicBool,
}

impl<B: Backend> OutputGrads<B> {
    pub(crate) fn new(outputs: usize) -> Arc<Self> {
        Arc::new(Self {
            grads: Mutex::new(vec![None; outputs]),
            token_registered: AtomicBool::new(false),
        })
    }

    /// Each output's gradient, `None` where no loss reached the output.
    pub(crate) fn take(&self) -> Vec<Option<FloatTensor<B>>> {
        let mut grads = self.grads.lock().unwrap_or_else(|e| e.into_inner());
        grads.iter_mut().map(Option::take).collect()
    }

    fn put(&self, index: usize, grad: FloatTensor<B>) {
        self.grads.lock().unwrap_or_else(|e| e.into_inner())[index] = Some(grad);
    }
}

impl<B: Backend> std::fmt::Debug for OutputGrads<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OutputGrads")
    }
}

/// The op node's output: one element, never read; also what the outputs' nodes register as the
/// op's gradient.
pub(crate) fn token<B: Backend>(device: &B::Device) -> FloatTensor<B> {
    B::float_empty(Shape::new([1]), device, burn::tensor::FloatDType::F32)
}

#[derive(Debug)]
struct OutputBackward;

#[derive(Clone, Debug)]
struct OutputState<B: Backend> {
    grads: Arc<OutputGrads<B>>,
    index: usize,
    token: FloatTensor<B>,
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
        let state = ops.state;
        state.grads.put(state.index, grad);
        if let [Some(op)] = ops.parents {
            if !state.grads.token_registered.swap(true, Ordering::Relaxed) {
                grads.register::<B>(op.id, state.token);
            }
        }
    }
}

/// `values` as the outputs of the node that produced `token` (see the module docs).
pub(crate) fn outputs<B: Backend, C: CheckpointStrategy>(
    token: &FloatTensor<Autodiff<B, C>>,
    values: Vec<FloatTensor<B>>,
    grads: Arc<OutputGrads<B>>,
) -> Vec<FloatTensor<Autodiff<B, C>>> {
    values
        .into_iter()
        .enumerate()
        .map(|(index, value)| {
            match OutputBackward
                .prepare::<C>([token.node.clone()])
                .compute_bound()
                .stateful()
            {
                OpsKind::Tracked(prep) => {
                    let state = OutputState {
                        grads: grads.clone(),
                        index,
                        token: token.primitive.clone(),
                    };
                    prep.finish(state, value)
                }
                OpsKind::UnTracked(prep) => prep.finish(value),
            }
        })
        .collect()
}
