//! The norm and SiLU nodes under `Autodiff<B>` where `B` fuses them: forward and backward are
//! `B`'s [`RambaBackend::rms_norm_forward`] / [`RambaBackend::rms_norm_backward`] (one kernel
//! each on the CubeCL backends; the formulas of [`super::math`] elsewhere) and
//! [`RambaBackend::silu`] / [`RambaBackend::silu_backward`]. Each node keeps its inputs (shared
//! with the graph, not copied) and, for the norms, `1 / rms` per row.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::Autodiff;
use burn::tensor::ops::FloatTensor;

use crate::ops::RambaBackend;

#[derive(Debug)]
struct RmsNormBackward;

#[derive(Clone, Debug)]
struct RmsNormState<B: burn::prelude::Backend> {
    x: FloatTensor<B>,
    gamma: FloatTensor<B>,
    rstd: FloatTensor<B>,
}

impl<B: RambaBackend> Backward<B, 2> for RmsNormBackward {
    type State = RmsNormState<B>;

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_gamma] = ops.parents;
        let dy = grads.consume::<B>(&ops.node);
        let s = ops.state;
        let (dx, _, d_gamma) = B::rms_norm_backward(s.x, None, s.gamma, s.rstd, dy);
        if let Some(node) = node_x {
            grads.register::<B>(node.id, dx);
        }
        if let Some(node) = node_gamma {
            grads.register::<B>(node.id, d_gamma);
        }
    }
}

/// `Autodiff<B>::rms_norm`: `x [rows, d]`, `gamma [d]`.
pub(crate) fn rms_norm<B: RambaBackend, C: CheckpointStrategy>(
    x: FloatTensor<Autodiff<B, C>>,
    gamma: FloatTensor<Autodiff<B, C>>,
    epsilon: f64,
) -> FloatTensor<Autodiff<B, C>> {
    let (xp, gp) = (x.primitive.clone(), gamma.primitive.clone());
    let (y, rstd) = B::rms_norm_forward(xp.clone(), None, gp.clone(), epsilon);
    match RmsNormBackward
        .prepare::<C>([x.node, gamma.node])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish(
            RmsNormState {
                x: xp,
                gamma: gp,
                rstd,
            },
            y,
        ),
        OpsKind::UnTracked(prep) => prep.finish(y),
    }
}

#[derive(Debug)]
struct GatedRmsNormBackward;

#[derive(Clone, Debug)]
struct GatedRmsNormState<B: burn::prelude::Backend> {
    x: FloatTensor<B>,
    z: FloatTensor<B>,
    gamma: FloatTensor<B>,
    rstd: FloatTensor<B>,
}

impl<B: RambaBackend> Backward<B, 3> for GatedRmsNormBackward {
    type State = GatedRmsNormState<B>;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_z, node_gamma] = ops.parents;
        let dy = grads.consume::<B>(&ops.node);
        let s = ops.state;
        let (dx, dz, d_gamma) = B::rms_norm_backward(s.x, Some(s.z), s.gamma, s.rstd, dy);
        if let Some(node) = node_x {
            grads.register::<B>(node.id, dx);
        }
        if let (Some(node), Some(dz)) = (node_z, dz) {
            grads.register::<B>(node.id, dz);
        }
        if let Some(node) = node_gamma {
            grads.register::<B>(node.id, d_gamma);
        }
    }
}

/// `Autodiff<B>::gated_rms_norm`: `x, z [rows, d]`, `gamma [d]`.
pub(crate) fn gated_rms_norm<B: RambaBackend, C: CheckpointStrategy>(
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
    let (y, rstd) = B::rms_norm_forward(xp.clone(), Some(zp.clone()), gp.clone(), epsilon);
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
                rstd,
            },
            y,
        ),
        OpsKind::UnTracked(prep) => prep.finish(y),
    }
}

#[derive(Debug)]
struct SiluBackward;

impl<B: RambaBackend> Backward<B, 1> for SiluBackward {
    type State = FloatTensor<B>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node] = ops.parents;
        let dy = grads.consume::<B>(&ops.node);
        let dx = B::silu_backward(ops.state, dy);
        if let Some(node) = node {
            grads.register::<B>(node.id, dx);
        }
    }
}

/// `Autodiff<B>::silu`: `x [n]`.
pub(crate) fn silu<B: RambaBackend, C: CheckpointStrategy>(
    x: FloatTensor<Autodiff<B, C>>,
) -> FloatTensor<Autodiff<B, C>> {
    let xp = x.primitive.clone();
    let y = B::silu(xp.clone());
    match SiluBackward
        .prepare::<C>([x.node])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish(xp, y),
        OpsKind::UnTracked(prep) => prep.finish(y),
    }
}
