//! Data parallelism: the devices of a machine meet through Burn's `burn-collective`, machines
//! through [`nodes`].
//!
//! Every device taking part is a *peer*: a thread per local device, and with
//! `[train.cluster] nodes > 1` the peers of other processes. An all-reduce sums over the local
//! peers (burn-collective), then the node leads sum over the nodes ([`nodes::NodeLink`]), then
//! each lead hands the total to its local peers. Each peer holds a full replica of the model and its AdamW state, computes
//! the gradient of its equal share of the rows of every batch, and takes part in one all-reduce
//! (sum) per optimizer step. The shares are weighted by loss weight (see
//! [`Peer::rows`] and the trainer), so the summed gradient is the whole batch's: N devices train
//! as one device would, up to float summation order.
//!
//! Per step, all gradients, the loss, the answer tallies and the stop flag travel in one flat
//! vector (split into buckets of at most [`BUCKET`] elements): a call per parameter would cost a
//! round trip through the collective server for each of a model's hundreds of tensors.

use std::ops::Range;
use std::sync::Mutex;

use anyhow::{anyhow, Result};
use burn::module::{AutodiffModule, ModuleMapper, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::TensorPrimitive;
use burn_collective::{
    AllReduceStrategy, CollectiveConfig, CollectiveError, PeerId, ReduceOperation,
};

pub mod nodes;
use nodes::NodeLink;
use ramba_core::backend::BackendKind;
use ramba_core::model::ModelState;
use ramba_core::nn::block::BlockState;
use ramba_core::nn::mamba2::Mamba2State;
use ramba_data::AnswerScore;
use ramba_experiment::{ClusterConfig, Devices};

/// Largest all-reduce call, in elements (256 MiB of f32): bounds the host copies a node makes
/// for the link between machines.
pub const BUCKET: usize = 1 << 26;

/// burn-collective keeps one collective server per backend type and process: two data-parallel
/// runs of one backend in one process (tests run in parallel threads) must not overlap.
static ONE_RUN_PER_PROCESS: Mutex<()> = Mutex::new(());

/// Holds the process-wide collective for the duration of a data-parallel run.
pub fn exclusive() -> std::sync::MutexGuard<'static, ()> {
    ONE_RUN_PER_PROCESS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Where the peers of a run are: this node's devices and the node's place among the nodes.
#[derive(Clone, Debug)]
pub struct Topology<D> {
    /// This node's devices, lead (first of `train.devices`) first.
    pub devices: Vec<D>,
    /// This node's rank.
    pub node: usize,
    /// Nodes taking part.
    pub nodes: usize,
}

impl<D: Clone> Topology<D> {
    /// Peers taking part, on every node.
    pub fn world(&self) -> usize {
        self.devices.len() * self.nodes
    }

    /// The global rank of this node's `local`-th device: nodes in rank order, then devices.
    pub fn rank(&self, local: usize) -> usize {
        self.node * self.devices.len() + local
    }

    /// Whether this node's lead peer is global rank 0: the one that writes checkpoints,
    /// metrics and reports.
    pub fn is_writer_node(&self) -> bool {
        self.node == 0
    }

    /// One line for the start-up log.
    pub fn describe(&self, kind: BackendKind) -> String {
        let n = self.devices.len();
        let plural = if n == 1 { "" } else { "s" };
        let here = match kind {
            BackendKind::Cpu => format!("{n} replica{plural} on the host"),
            _ => format!("{n} device{plural}"),
        };
        if self.nodes > 1 {
            format!(
                "data-parallel over {} peers: {here} on each of {} nodes (this is node {})",
                self.world(),
                self.nodes,
                self.node
            )
        } else {
            format!("data-parallel over {here}")
        }
    }
}

/// Resolves `train.devices` and `[train.cluster]` on backend `B`, whose default device is
/// `lead`. The CPU backend has one device, the host: each entry there is a replica on it.
pub fn topology<B: Backend>(
    kind: BackendKind,
    lead: &B::Device,
    devices: &Devices,
    cluster: &ClusterConfig,
) -> Result<Topology<B::Device>> {
    let devices = match (kind, devices) {
        // Nothing asked beyond the default: the device the backend opened.
        (_, Devices::List(list)) if list == &[0] => vec![lead.clone()],
        (BackendKind::Cpu, Devices::All) => vec![lead.clone()],
        (BackendKind::Cpu, Devices::List(list)) => vec![lead.clone(); list.len()],
        _ => {
            // CUDA ordinals; for wgpu the discrete GPUs (device type 0 of both runtimes).
            let available = B::device_count(0);
            devices
                .resolve(available)?
                .into_iter()
                .map(|i| {
                    let index = u16::try_from(i)
                        .map_err(|_| anyhow!("train.devices: {i} is not a device index"))?;
                    Ok(<B::Device as burn::tensor::backend::Device>::from_id(
                        burn::tensor::backend::DeviceId::new(0, index),
                    ))
                })
                .collect::<Result<Vec<_>>>()?
        }
    };
    Ok(Topology {
        devices,
        node: cluster.rank as usize,
        nodes: cluster.nodes as usize,
    })
}

/// One peer's handle on the collective. A run on one device has a solo peer, which never calls
/// the collective.
pub struct Peer<B: Backend> {
    id: PeerId,
    rank: usize,
    world: usize,
    /// Peers on this node (burn-collective is used when there are several).
    local: usize,
    /// Nodes taking part.
    nodes: usize,
    /// The link to the other nodes, held by this node's lead peer.
    link: Option<Mutex<NodeLink>>,
    _backend: std::marker::PhantomData<B>,
}

/// What is summed over the peers each step besides the gradients.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StepTotals {
    /// The step's loss (each peer contributes its weighted share).
    pub loss: f64,
    /// Synthetic-task answers scored this step.
    pub answers: AnswerScore,
    /// Whether any peer was asked to stop (Ctrl-C on any node).
    pub stop: bool,
}

impl<B: Backend> Peer<B> {
    /// The only peer of a one-device run.
    pub fn solo() -> Self {
        Self {
            id: PeerId::from(0u32),
            rank: 0,
            world: 1,
            local: 1,
            nodes: 1,
            link: None,
            _backend: Default::default(),
        }
    }

    /// Joins this node's `local`-th device to the run: registers it with burn-collective when
    /// the node has several devices, and connects the lead (`local == 0`) to the other nodes.
    /// Returns once every local peer has registered and every node has connected.
    /// `fingerprint` identifies the experiment, so that mismatched nodes are refused.
    pub fn join(
        topo: &Topology<B::Device>,
        local: usize,
        cluster: &ClusterConfig,
        fingerprint: u64,
    ) -> Result<Self> {
        let rank = topo.rank(local);
        let world = topo.world();
        let id = PeerId::from(rank as u32);
        if topo.devices.len() > 1 {
            let config = CollectiveConfig::default()
                .with_num_devices(topo.devices.len())
                .with_local_all_reduce_strategy(AllReduceStrategy::Tree(2));
            burn_collective::register::<B>(id, topo.devices[local].clone(), config)
                .map_err(|e| anyhow!("device {local} could not join this node's peers: {e:?}"))?;
        }
        let link = if topo.nodes > 1 && local == 0 {
            Some(Mutex::new(NodeLink::connect(cluster, fingerprint)?))
        } else {
            None
        };
        Ok(Self {
            id,
            rank,
            world,
            local: topo.devices.len(),
            nodes: topo.nodes,
            link,
            _backend: Default::default(),
        })
    }

    /// This peer's global rank.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// Peers taking part.
    pub fn world(&self) -> usize {
        self.world
    }

    /// Global rank 0: writes checkpoints, metrics and reports.
    pub fn is_writer(&self) -> bool {
        self.rank == 0
    }

    /// This peer's rows of a global batch of `batch` rows (a multiple of the world size, as
    /// the config validation requires).
    pub fn rows(&self, batch: usize) -> Range<usize> {
        let per = batch / self.world;
        self.rank * per..(self.rank + 1) * per
    }

    /// Sums a flat vector over the peers.
    pub fn sum(&self, flat: Tensor<B, 1>) -> Result<Tensor<B, 1>> {
        if self.world == 1 {
            return Ok(flat);
        }
        let n = flat.dims()[0];
        if n <= BUCKET {
            return self.sum_bucket(flat);
        }
        let parts = (0..n)
            .step_by(BUCKET)
            .map(|at| self.sum_bucket(flat.clone().narrow(0, at, BUCKET.min(n - at))))
            .collect::<Result<Vec<_>>>()?;
        Ok(Tensor::cat(parts, 0))
    }

    /// Local peers, then nodes, then the lead's total to the local peers.
    fn sum_bucket(&self, part: Tensor<B, 1>) -> Result<Tensor<B, 1>> {
        let mut part = if self.local > 1 {
            self.sum_local(part)?
        } else {
            part
        };
        if self.nodes > 1 {
            if let Some(link) = &self.link {
                let device = part.device();
                let n = part.dims()[0];
                let values = part
                    .into_data()
                    .convert::<f32>()
                    .into_vec::<f32>()
                    .map_err(|e| anyhow!("reading a tensor for the node link: {e:?}"))?;
                let total = link.lock().unwrap_or_else(|p| p.into_inner()).sum(values)?;
                part = Tensor::from_data(TensorData::new(total, [n]), &device);
            } else {
                part = part.zeros_like();
            }
            if self.local > 1 {
                // Only the lead holds the total: summing with zeros hands it to the others.
                part = self.sum_local(part)?;
            }
        }
        Ok(part)
    }

    fn sum_local(&self, part: Tensor<B, 1>) -> Result<Tensor<B, 1>> {
        let out = burn_collective::all_reduce::<B>(
            self.id,
            part.into_primitive().tensor(),
            ReduceOperation::Sum,
        )
        .map_err(|e| match e {
            CollectiveError::LocalServerMissing => {
                anyhow!("peer {} of {}: {PEER_LEFT}", self.rank, self.world)
            }
            e => anyhow!("all-reduce of peer {} of {}: {e:?}", self.rank, self.world),
        })?;
        Ok(Tensor::from_primitive(TensorPrimitive::Float(out)))
    }

    /// Sums the step's gradients and totals over the peers. Every peer gets the same result.
    pub fn sum_step<AD, M>(
        &self,
        model: &M,
        grads: GradientsParams,
        totals: StepTotals,
        device: &B::Device,
    ) -> Result<(GradientsParams, StepTotals)>
    where
        AD: AutodiffBackend<InnerBackend = B>,
        M: AutodiffModule<AD>,
    {
        if self.world == 1 {
            return Ok((grads, totals));
        }
        let scalars = [
            totals.loss,
            f64::from(u8::from(totals.stop)),
            totals.answers.answers as f64,
            totals.answers.exact as f64,
            totals.answers.tokens as f64,
            totals.answers.right_tokens as f64,
        ];
        let (mut flat, layout) = flatten_grads::<AD, M>(model, &grads);
        let scalars_at: usize = layout.iter().map(|(_, dims)| numel(dims)).sum();
        flat.push(Tensor::from_data(
            TensorData::new(scalars.map(|v| v as f32).to_vec(), [scalars.len()]),
            device,
        ));
        let summed = self.sum(Tensor::cat(flat, 0))?;
        let s: Vec<f32> = summed
            .clone()
            .narrow(0, scalars_at, scalars.len())
            .into_data()
            .convert::<f32>()
            .into_vec()
            .map_err(|e| anyhow!("reading the summed step totals: {e:?}"))?;
        let count = |v: f32| v.round().max(0.0) as usize;
        let totals = StepTotals {
            loss: f64::from(s[0]),
            stop: s[1] > 0.5,
            answers: AnswerScore {
                answers: count(s[2]),
                exact: count(s[3]),
                tokens: count(s[4]),
                right_tokens: count(s[5]),
            },
        };
        Ok((unflatten_grads::<AD, M>(model, summed, &layout), totals))
    }

    /// Makes every peer's parameters those of rank 0 (a multi-node run's nodes initialise
    /// their replicas apart, and may resume from copies of a checkpoint). Gradient tracking is
    /// kept as it was.
    pub fn broadcast_params<AD, M>(&self, model: M) -> Result<M>
    where
        AD: AutodiffBackend<InnerBackend = B>,
        M: AutodiffModule<AD>,
    {
        if self.world == 1 {
            return Ok(model);
        }
        struct Collect<B: Backend> {
            parts: Vec<Tensor<B, 1>>,
        }
        impl<AD: AutodiffBackend> ModuleVisitor<AD> for Collect<AD::InnerBackend> {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<AD, D>>) {
                self.parts.push(param.val().inner().reshape([-1]));
            }
        }
        let mut collect = Collect::<B> { parts: vec![] };
        model.visit(&mut collect);
        if collect.parts.is_empty() {
            return Ok(model);
        }
        let mut flat = Tensor::cat(collect.parts, 0);
        if !self.is_writer() {
            flat = flat.zeros_like();
        }
        let flat = self.sum(flat)?;
        struct Load<B: Backend> {
            flat: Tensor<B, 1>,
            at: usize,
        }
        impl<AD: AutodiffBackend> ModuleMapper<AD> for Load<AD::InnerBackend> {
            fn map_float<const D: usize>(
                &mut self,
                param: Param<Tensor<AD, D>>,
            ) -> Param<Tensor<AD, D>> {
                param.map(|t| {
                    let grad = t.is_require_grad();
                    let dims = t.dims();
                    let n = numel(&dims);
                    let v = self.flat.clone().narrow(0, self.at, n).reshape(dims);
                    self.at += n;
                    let t = Tensor::from_inner(v);
                    if grad {
                        t.require_grad()
                    } else {
                        t
                    }
                })
            }
        }
        Ok(model.map(&mut Load::<B> { flat, at: 0 }))
    }

    /// The whole batch's recurrent state from every peer's rows of it (memory reset draws its
    /// stale states from any row of the previous batch).
    pub fn gather_state(&self, state: ModelState<B>, batch: usize) -> Result<ModelState<B>> {
        if self.world == 1 {
            return Ok(state);
        }
        let rows = self.rows(batch);
        let pad = |t: Tensor<B, 1>, row: usize| -> Tensor<B, 1> {
            // Rows are contiguous: zeros before and after this peer's block of rows.
            let device = t.device();
            let (before, after) = (rows.start * row, (batch - rows.end) * row);
            Tensor::cat(
                vec![
                    Tensor::zeros([before], &device),
                    t,
                    Tensor::zeros([after], &device),
                ],
                0,
            )
        };
        let mut parts = vec![];
        for block in &state.blocks {
            if let BlockState::Mamba(m) = block {
                let [_, a, b] = m.conv.dims();
                parts.push(pad(m.conv.clone().reshape([-1]), a * b));
                let [_, h, p, n] = m.ssm.dims();
                parts.push(pad(m.ssm.clone().reshape([-1]), h * p * n));
            }
        }
        if parts.is_empty() {
            return Ok(state);
        }
        let full = self.sum(Tensor::cat(parts, 0))?;
        let mut at = 0;
        let mut take = |n: usize| {
            let v = full.clone().narrow(0, at, n);
            at += n;
            v
        };
        let blocks = state
            .blocks
            .into_iter()
            .map(|block| match block {
                BlockState::Mamba(m) => {
                    let [_, a, b] = m.conv.dims();
                    let [_, h, p, n] = m.ssm.dims();
                    BlockState::Mamba(Mamba2State {
                        conv: take(batch * a * b).reshape([batch, a, b]),
                        ssm: take(batch * h * p * n).reshape([batch, h, p, n]),
                    })
                }
                other => other,
            })
            .collect();
        Ok(ModelState { blocks })
    }

    /// Leaves the collective (after the last step).
    pub fn finish(self) {
        if self.local > 1 {
            // An error here means a peer already failed; its error is the one reported.
            let _ = burn_collective::finish_collective::<B>(self.id);
        }
    }
}

/// In the error of a peer whose collective call failed because another peer left the run.
pub const PEER_LEFT: &str = "another peer left the run";

/// Releases every peer waiting in the collective after one of them failed, so the run ends
/// with that peer's error instead of hanging.
pub fn abort<B: Backend>() {
    burn_collective::reset_collective::<B>();
}

fn numel(dims: &[usize]) -> usize {
    dims.iter().product()
}

/// Gradients in the model's parameter order, flattened; with each entry's parameter index (in
/// visiting order) and shape.
type GradLayout = Vec<(usize, Vec<usize>)>;

fn flatten_grads<AD, M>(
    model: &M,
    grads: &GradientsParams,
) -> (Vec<Tensor<AD::InnerBackend, 1>>, GradLayout)
where
    AD: AutodiffBackend,
    M: AutodiffModule<AD>,
{
    struct Flatten<'a, B: Backend> {
        grads: &'a GradientsParams,
        index: usize,
        parts: Vec<Tensor<B, 1>>,
        layout: GradLayout,
    }
    impl<AD: AutodiffBackend> ModuleVisitor<AD> for Flatten<'_, AD::InnerBackend> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<AD, D>>) {
            if let Some(g) = self.grads.get::<AD::InnerBackend, D>(param.id) {
                self.layout.push((self.index, g.dims().to_vec()));
                self.parts.push(g.reshape([-1]));
            }
            self.index += 1;
        }
    }
    let mut f = Flatten {
        grads,
        index: 0,
        parts: vec![],
        layout: vec![],
    };
    model.visit(&mut f);
    (f.parts, f.layout)
}

fn unflatten_grads<AD, M>(
    model: &M,
    flat: Tensor<AD::InnerBackend, 1>,
    layout: &GradLayout,
) -> GradientsParams
where
    AD: AutodiffBackend,
    M: AutodiffModule<AD>,
{
    struct Unflatten<'a, B: Backend> {
        flat: Tensor<B, 1>,
        layout: std::iter::Peekable<std::slice::Iter<'a, (usize, Vec<usize>)>>,
        index: usize,
        at: usize,
        out: GradientsParams,
    }
    impl<AD: AutodiffBackend> ModuleVisitor<AD> for Unflatten<'_, AD::InnerBackend> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<AD, D>>) {
            if let Some((_, dims)) = self.layout.next_if(|(i, _)| *i == self.index) {
                let n = numel(dims);
                let shape: [usize; D] = dims.as_slice().try_into().expect("same rank");
                let g = self.flat.clone().narrow(0, self.at, n).reshape(shape);
                self.out.register::<AD::InnerBackend, D>(param.id, g);
                self.at += n;
            }
            self.index += 1;
        }
    }
    let mut u = Unflatten {
        flat,
        layout: layout.iter().peekable(),
        index: 0,
        at: 0,
        out: GradientsParams::new(),
    };
    model.visit(&mut u);
    u.out
}
