//! The link between the machines of a multi-node run: node 0 listens at
//! `train.cluster.coordinator`, every other node connects to it, and each all-reduce is a
//! centralised sum over TCP (node 0 adds the nodes' vectors in rank order and sends the total
//! back), so every node gets bit-identical results.
//!
//! Why not burn-collective's global level: in burn-collective 0.21 every global all-reduce
//! strategy ends with `SyncService::sync` (`src/global/node/sync.rs`), which clears a *copy* of
//! its list of synced nodes instead of the list itself; the list then never again equals the
//! node set, so the second global all-reduce of a run waits forever (seen here with two
//! processes on localhost: both parked in the all-reduce after the first one had completed).
//! The devices of one machine still meet through burn-collective.
//!
//! Wire format: a hello (`MAGIC`, rank, nodes, the run's fingerprint) answered by node 0 with
//! `MAGIC`; then per all-reduce, each message is a little-endian `u64` element count followed
//! by the `f32` values.

use std::io::{BufReader, BufWriter, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use ramba_experiment::ClusterConfig;

const MAGIC: u64 = u64::from_le_bytes(*b"ramba-dp");

/// How long nodes wait for each other: to connect at start-up, and for a peer's part of an
/// all-reduce (the first step compiles every kernel; node 0 also validates and checkpoints
/// between steps).
const PATIENCE: Duration = Duration::from_secs(30 * 60);

/// One node's connections: node 0 holds one per other node (in rank order), the others one to
/// node 0.
pub struct NodeLink {
    rank: usize,
    streams: Vec<(BufReader<TcpStream>, BufWriter<TcpStream>)>,
}

impl NodeLink {
    /// Meets the other nodes. `fingerprint` identifies the run (model size, batch, ...): nodes
    /// started with different experiments are refused with an error naming both values.
    pub fn connect(cluster: &ClusterConfig, fingerprint: u64) -> Result<Self> {
        let rank = cluster.rank as usize;
        let nodes = cluster.nodes as usize;
        let coordinator = cluster.coordinator.trim();
        let streams = if rank == 0 {
            let port = cluster.coordinator_port()?;
            let listener = TcpListener::bind(("0.0.0.0", port)).with_context(|| {
                format!("train.cluster.coordinator = {coordinator:?}: node 0 cannot listen on port {port}")
            })?;
            let mut by_rank: Vec<Option<TcpStream>> = (0..nodes).map(|_| None).collect();
            for _ in 1..nodes {
                let (mut s, from) = listener.accept().context("accepting a node")?;
                let (r, n, f) = read_hello(&mut s).with_context(|| format!("hello from {from}"))?;
                if n != nodes as u64 || f != fingerprint {
                    bail!(
                        "the node at {from} runs another experiment (nodes {n}, fingerprint \
                         {f:#x}; here: nodes {nodes}, fingerprint {fingerprint:#x}): start every \
                         node with the same config"
                    );
                }
                let r = r as usize;
                if r == 0 || r >= nodes || by_rank[r].is_some() {
                    bail!(
                        "the node at {from} says it is rank {r}: each of 1..{nodes} must join once"
                    );
                }
                s.write_all(&MAGIC.to_le_bytes())?;
                by_rank[r] = Some(s);
            }
            by_rank.into_iter().flatten().collect()
        } else {
            let deadline = Instant::now() + PATIENCE;
            let mut s = loop {
                match TcpStream::connect(coordinator) {
                    Ok(s) => break s,
                    Err(e) if Instant::now() < deadline => {
                        let _ = e;
                        std::thread::sleep(Duration::from_millis(200));
                    }
                    Err(e) => {
                        return Err(e).with_context(|| {
                            format!("node {rank}: node 0 at {coordinator} did not answer")
                        })
                    }
                }
            };
            for v in [MAGIC, rank as u64, nodes as u64, fingerprint] {
                s.write_all(&v.to_le_bytes())?;
            }
            let mut ack = [0u8; 8];
            s.set_read_timeout(Some(PATIENCE))?;
            s.read_exact(&mut ack).with_context(|| {
                format!("node {rank}: node 0 at {coordinator} refused this node (see its log)")
            })?;
            if u64::from_le_bytes(ack) != MAGIC {
                bail!("{coordinator} is not node 0 of a ramba run");
            }
            vec![s]
        };
        let streams = streams
            .into_iter()
            .map(|s| {
                s.set_nodelay(true)?;
                s.set_read_timeout(Some(PATIENCE))?;
                Ok((BufReader::new(s.try_clone()?), BufWriter::new(s)))
            })
            .collect::<std::io::Result<Vec<_>>>()
            .context("setting up the node connections")?;
        Ok(Self { rank, streams })
    }

    /// The sum of `values` over the nodes (every node passes the same length).
    pub fn sum(&mut self, mut values: Vec<f32>) -> Result<Vec<f32>> {
        if self.rank == 0 {
            for (i, (reader, _)) in self.streams.iter_mut().enumerate() {
                let part = read_values(reader, values.len())
                    .with_context(|| format!("receiving node {}'s part of an all-reduce", i + 1))?;
                for (acc, v) in values.iter_mut().zip(part) {
                    *acc += v;
                }
            }
            for (i, (_, writer)) in self.streams.iter_mut().enumerate() {
                write_values(writer, &values)
                    .with_context(|| format!("sending node {} the all-reduce", i + 1))?;
            }
            Ok(values)
        } else {
            let (reader, writer) = &mut self.streams[0];
            write_values(writer, &values).context("sending this node's part to node 0")?;
            read_values(reader, values.len()).context("receiving the all-reduce from node 0")
        }
    }
}

fn read_u64(r: &mut impl Read) -> std::io::Result<u64> {
    let mut b = [0u8; 8];
    r.read_exact(&mut b)?;
    Ok(u64::from_le_bytes(b))
}

fn read_hello(s: &mut TcpStream) -> Result<(u64, u64, u64)> {
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    if read_u64(s)? != MAGIC {
        bail!("not a ramba node (wrong greeting)");
    }
    Ok((read_u64(s)?, read_u64(s)?, read_u64(s)?))
}

fn write_values(w: &mut BufWriter<TcpStream>, values: &[f32]) -> std::io::Result<()> {
    w.write_all(&(values.len() as u64).to_le_bytes())?;
    for chunk in values.chunks(1 << 16) {
        let bytes: Vec<u8> = chunk.iter().flat_map(|v| v.to_le_bytes()).collect();
        w.write_all(&bytes)?;
    }
    w.flush()
}

fn read_values(r: &mut BufReader<TcpStream>, expected: usize) -> Result<Vec<f32>> {
    let n = read_u64(r).context("the other node closed the connection")? as usize;
    if n != expected {
        bail!("a node sent {n} values where {expected} were expected (different models?)");
    }
    let mut out = Vec::with_capacity(n);
    let mut buf = vec![0u8; 4 << 16];
    let mut left = n;
    while left > 0 {
        let take = left.min(1 << 16);
        let bytes = &mut buf[..take * 4];
        r.read_exact(bytes)?;
        out.extend(
            bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        );
        left -= take;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_nodes_sum_in_rank_order() {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let cluster = |rank| ClusterConfig {
            nodes: 3,
            rank,
            coordinator: format!("127.0.0.1:{port}"),
        };
        let handles: Vec<_> = (0..3u32)
            .map(|rank| {
                let c = cluster(rank);
                std::thread::spawn(move || {
                    let mut link = NodeLink::connect(&c, 7).unwrap();
                    let a = link.sum(vec![rank as f32, 1.0, 0.5]).unwrap();
                    // Long enough to span several chunks of the wire format.
                    let long: Vec<f32> = (0..200_000)
                        .map(|i| (i % 7) as f32 * (rank + 1) as f32)
                        .collect();
                    let b = link.sum(long).unwrap();
                    (a, b)
                })
            })
            .collect();
        for h in handles {
            let (a, b) = h.join().unwrap();
            assert_eq!(a, vec![3.0, 3.0, 1.5]);
            assert_eq!(b.len(), 200_000);
            assert!(b
                .iter()
                .enumerate()
                .all(|(i, v)| *v == (i % 7) as f32 * 6.0));
        }
    }

    #[test]
    fn a_node_of_another_experiment_is_refused() {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let c = |rank| ClusterConfig {
            nodes: 2,
            rank,
            coordinator: format!("127.0.0.1:{port}"),
        };
        let (c0, c1) = (c(0), c(1));
        let lead = std::thread::spawn(move || NodeLink::connect(&c0, 1).map(|_| ()));
        let other = std::thread::spawn(move || NodeLink::connect(&c1, 2).map(|_| ()));
        let err = lead.join().unwrap().unwrap_err().to_string();
        assert!(err.contains("another experiment"), "{err}");
        assert!(other.join().unwrap().is_err());
    }
}
