//! Data-parallel settings of `[train]`: which local devices train (`train.devices`) and, for
//! several machines, how the nodes find each other (`[train.cluster]`).
//!
//! Peers are threads, one per local device (they meet through Burn's `burn-collective`), and
//! with `cluster.nodes > 1` the processes of other machines, which connect to node 0.

use anyhow::{bail, Result};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The local devices a run trains on: `[0, 1]` (device indices of the backend) or `"all"`.
///
/// On the CPU backend the host is one device: `[0, 1]` makes two data-parallel replicas there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Devices {
    /// Every device the backend reports.
    All,
    /// These device indices, in this order (the first one is the node's lead device).
    List(Vec<usize>),
}

impl Default for Devices {
    fn default() -> Self {
        Devices::List(vec![0])
    }
}

impl Devices {
    /// The indices to use when the backend has `available` devices. Errors name
    /// `train.devices` and what the backend has.
    pub fn resolve(&self, available: usize) -> Result<Vec<usize>> {
        match self {
            Devices::All if available == 0 => {
                bail!("train.devices = \"all\": the backend reports no device")
            }
            Devices::All => Ok((0..available).collect()),
            Devices::List(list) => {
                if let Some(&missing) = list.iter().find(|&&d| d >= available) {
                    bail!(
                        "train.devices = {list:?}: device {missing} does not exist (the backend \
                         has {available} device{}, 0..{available})",
                        if available == 1 { "" } else { "s" }
                    );
                }
                Ok(list.clone())
            }
        }
    }

    fn validate(&self) -> Result<()> {
        if let Devices::List(list) = self {
            if list.is_empty() {
                bail!("train.devices must name at least one device, e.g. [0] or \"all\"");
            }
            let mut sorted = list.clone();
            sorted.sort_unstable();
            if sorted.windows(2).any(|w| w[0] == w[1]) {
                bail!("train.devices = {list:?} names a device twice");
            }
        }
        Ok(())
    }
}

impl Serialize for Devices {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Devices::All => s.serialize_str("all"),
            Devices::List(list) => list.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Devices {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            List(Vec<usize>),
            Word(String),
        }
        match Raw::deserialize(d).map_err(|_| {
            serde::de::Error::custom("expected a list of device indices like [0, 1], or \"all\"")
        })? {
            Raw::List(list) => Ok(Devices::List(list)),
            Raw::Word(w) if w == "all" => Ok(Devices::All),
            Raw::Word(w) => Err(serde::de::Error::custom(format!(
                "expected a list of device indices like [0, 1], or \"all\" (got {w:?})"
            ))),
        }
    }
}

/// Several machines (`[train.cluster]`). Each runs the same experiment with its own `rank`;
/// node 0 listens at `coordinator`, the others connect to it; node 0 writes the checkpoints and
/// the metrics.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// Machines taking part (1: this machine only, the other keys are unused).
    pub nodes: u32,
    /// This machine's index in `0..nodes`. Rows of the global batch are split by node, then by
    /// local device. Every node has the same number of devices.
    pub rank: u32,
    /// `host:port` of node 0 as the other nodes reach it; node 0 listens on that port.
    pub coordinator: String,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            nodes: 1,
            rank: 0,
            coordinator: String::new(),
        }
    }
}

impl ClusterConfig {
    /// More than one machine.
    pub fn is_multi_node(&self) -> bool {
        self.nodes > 1
    }

    /// The port of `coordinator` (node 0 listens there).
    pub fn coordinator_port(&self) -> Result<u16> {
        port_of("train.cluster.coordinator", &self.coordinator)
    }

    fn validate(&self) -> Result<()> {
        if self.nodes == 0 {
            bail!("train.cluster.nodes must be ≥ 1");
        }
        if self.rank >= self.nodes {
            bail!(
                "train.cluster.rank = {} must be below train.cluster.nodes = {}",
                self.rank,
                self.nodes
            );
        }
        if self.is_multi_node() {
            self.coordinator_port()?;
        }
        Ok(())
    }
}

fn port_of(key: &str, addr: &str) -> Result<u16> {
    let a = addr.trim();
    if a.is_empty() {
        bail!("{key} is needed when train.cluster.nodes > 1 (host:port, e.g. \"10.0.0.1:29500\")");
    }
    let Some((host, port)) = a.rsplit_once(':') else {
        bail!("{key} = {addr:?} needs a port (host:port, e.g. \"10.0.0.1:29500\")");
    };
    if host.is_empty() {
        bail!("{key} = {addr:?} needs a host before the port");
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => bail!("{key} = {addr:?}: {port:?} is not a port number (1-65535)"),
    }
}

/// Checks `train.devices` and `[train.cluster]` against the batch: the global batch is split
/// evenly over every device of every node.
pub fn validate_parallel(devices: &Devices, cluster: &ClusterConfig, batch: usize) -> Result<()> {
    devices.validate()?;
    cluster.validate()?;
    if let Devices::List(list) = devices {
        let peers = list.len() * cluster.nodes as usize;
        if !batch.is_multiple_of(peers) {
            bail!(
                "data.batch_size = {batch} must be a multiple of the number of devices taking \
                 part ({} per node × {} node{} = {peers}): each gets the same number of rows",
                list.len(),
                cluster.nodes,
                if cluster.nodes == 1 { "" } else { "s" }
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize, Serialize)]
    struct Doc {
        devices: Devices,
    }

    fn parse(text: &str) -> Result<Devices, String> {
        toml::from_str::<Doc>(text)
            .map(|d| d.devices)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn devices_parse_lists_and_all() {
        assert_eq!(parse("devices = [0, 1]"), Ok(Devices::List(vec![0, 1])));
        assert_eq!(parse("devices = \"all\""), Ok(Devices::All));
        let err = parse("devices = \"both\"").unwrap_err();
        assert!(err.contains("\"all\""), "{err}");
        let back = toml::to_string(&Doc {
            devices: Devices::All,
        })
        .unwrap();
        assert_eq!(parse(&back), Ok(Devices::All));
    }

    #[test]
    fn devices_resolve_against_the_backend() {
        assert_eq!(Devices::All.resolve(3).unwrap(), vec![0, 1, 2]);
        let err = Devices::List(vec![0, 2])
            .resolve(2)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("device 2 does not exist") && err.contains("2 devices"),
            "{err}"
        );
        assert!(Devices::All.resolve(0).is_err());
    }

    #[test]
    fn bad_parallel_settings_name_their_key() {
        let one = ClusterConfig::default();
        let msg = |r: Result<()>| r.unwrap_err().to_string();
        assert!(msg(validate_parallel(&Devices::List(vec![]), &one, 2)).contains("train.devices"));
        assert!(msg(validate_parallel(&Devices::List(vec![1, 1]), &one, 2)).contains("twice"));
        assert!(
            msg(validate_parallel(&Devices::List(vec![0, 1]), &one, 3)).contains("data.batch_size")
        );
        let two = ClusterConfig {
            nodes: 2,
            ..Default::default()
        };
        assert!(msg(validate_parallel(&Devices::default(), &two, 2))
            .contains("train.cluster.coordinator"));
        let bad_port = ClusterConfig {
            nodes: 2,
            coordinator: "10.0.0.1:http".into(),
            ..Default::default()
        };
        assert!(msg(validate_parallel(&Devices::default(), &bad_port, 2)).contains("port number"));
        let bad_rank = ClusterConfig {
            rank: 2,
            ..two.clone()
        };
        assert!(msg(validate_parallel(&Devices::default(), &bad_rank, 2))
            .contains("train.cluster.rank"));
        let ok = ClusterConfig {
            nodes: 2,
            rank: 1,
            coordinator: "10.0.0.1:29500".into(),
        };
        validate_parallel(&Devices::List(vec![0, 1]), &ok, 4).unwrap();
        assert_eq!(ok.coordinator_port().unwrap(), 29500);
    }
}
