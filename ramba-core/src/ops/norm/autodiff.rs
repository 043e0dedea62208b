//! The norm and SiLU nodes under `Autodiff<B>` where `B` fuses them: forward and backward are the
//! formulas of [`super::math`] on the inner backend. Each node keeps its inputs (shared with
//! the graph, not copied) and, for the norms, `1 / rms` per row.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::Autodiff;
use burn::prelude::*;
use burn::tensor::ops::FloatTensor;

use super::math;
use crate::ops::{from_float, into_float};

#[derive(Debug)]
struct RmsNormBackward;

#[derive(Clone, Debug)]
struct RmsNormState<B: Backend> {
    x: FloatTensor<B>,
    gamma: FloatTensor<B>,
    rstd: FloatTensor<B>,
}

impl<B: Backend> Backward<B, 2> for RmsNormBackward {
    type State = RmsNormState<B>;

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_gamma] = ops.parents;
        let dy = grads.consume::<B>(&ops.node);
        let s = ops.state;
        let (dx, d_gamma) = math::rms_norm_backward::<B>(
            from_float(s.x),
            from_float(s.gamma),
            from_float(s.rstd),
            from_float(dy),
        );
        if let Some(node) = node_x {
            grads.register::<B>(node.id, into_float(dx));
        }
        if let Some(node) = node_gamma {
            grads.register::<B>(node.id, into_float(d_gamma));
        }
    }
}

/// `Autodiff<B>::rms_norm`: `x [rows, d]`, `gamma [d]`.
pub(crate) fn rms_norm<B: Backend, C: CheckpointStrategy>(
    x: FloatTensor<Autodiff<B, C>>,
    gamma: FloatTensor<Autodiff<B, C>>,
    epsilon: f64,
) -> FloatTensor<Autodiff<B, C>> {
    let (xp, gp) = (x.primitive.clone(), gamma.primitive.clone());
    let (y, rstd) =
        math::rms_norm_forward::<B>(from_float(xp.clone()), from_float(gp.clone()), epsilon);
    match RmsNormBackward
        .prepare::<C>([x.node, gamma.node])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish(
            RmsNormState {
                x: xp,
                gamma: gp,
                rstd: into_float(rstd),
            },
            into_float(y),
        ),
        OpsKind::UnTracked(prep) => prep.finish(into_float(y)),
    }
}

#[derive(Debug)]
struct GatedRmsNormBackward;

#[derive(Clone, Debug)]
struct GatedRmsNormState<B: Backend> {
    x: FloatTensor<B>,
    z: FloatTensor<B>,
    gamma: FloatTensor<B>,
    rstd: FloatTensor<B>,
}

impl<B: Backend> Backward<B, 3> for GatedRmsNormBackward {
    type State = GatedRmsNormState<B>;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_z, node_gamma] = ops.parents;
        let dy = grads.consume::<B>(&ops.node);
        let s = ops.state;
        let (dx, dz, d_gamma) = math::gated_rms_norm_backward::<B>(
            from_float(s.x),
            from_float(s.z),
            from_float(s.gamma),
            from_float(s.rstd),
            from_float(dy),
        );
        if let Some(node) = node_x {
            grads.register::<B>(node.id, into_float(dx));
        }
        if let Some(node) = node_z {
            grads.register::<B>(node.id, into_float(dz));
        }
        if let Some(node) = node_gamma {
            grads.register::<B>(node.id, into_float(d_gamma));
        }
    }
}

/// `Autodiff<B>::gated_rms_norm`: `x, z [rows, d]`, `gamma [d]`.
pub(crate) fn gated_rms_norm<B: Backend, C: CheckpointStrategy>(
    x: FloatTensor<Autodiff<B, C>>,
    z: FloatTensor<Autodiff<B, C>>,
    gamma: FloatTensor<Autodiff<B, C>>,
    epsilon: f64,
) -> FloatTensor<Autodiff<B, C>> {
    let (xp, zp, gp) = (
        x.primitive.clone(),
        z.primitive.clone(),
        gamma.primitive.clone(),
    );
    let (y, rstd) = math::gated_rms_norm_forward::<B>(
        from_float(xp.clone()),
        from_float(zp.clone()),
        from_float(gp.clone()),
        epsilon,
    );
    match GatedRmsNormBackward
        .prepare::<C>([x.node, z.node, gamma.node])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish(
            GatedRmsNormState {
                x: xp,
                z: zp,
                gamma: gp,
                rstd: into_float(rstd),
            },
            into_float(y),
        ),
        OpsKind::UnTracked(prep) => prep.finish(into_float(y)),
    }
}

#[derive(Debug)]
struct SiluBackward;

impl<B: Backend> Backward<B, 1> for SiluBackward {
    type State = FloatTensor<B>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node] = ops.parents;
        let dy = grads.consume::<B>(&ops.node);
        let dx = math::silu_backward::<B>(from_float(ops.state), from_float(dy));
        if let Some(node) = node {
            grads.register::<B>(node.id, into_float(dx));
        }
    }
}

/// `Autodiff<B>::silu`: `x [n]`.
pub(crate) fn silu<B: Backend, C: CheckpointStrategy>(
    x: FloatTensor<Autodiff<B, C>>,
) -> FloatTensor<Autodiff<B, C>> {
    let xp = x.primitive.clone();
    let y = math::silu_forward::<B>(from_float(xp.clone()));
    match SiluBackward
        .prepare::<C>([x.node])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish(xp, into_float(y)),
        OpsKind::UnTracked(prep) => prep.finish(into_float(y)),
    }
}
