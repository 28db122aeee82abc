//! A private Redis Cluster per test, started as redis-rs's own test harness starts one
//! (`redis/tests/support/cluster.rs`): N `redis-server --cluster-enabled yes` in temp dirs, then
//! `redis-cli --cluster create`, then a wait until every node agrees the cluster is up.
//!
//! Ports: each node's cluster bus listens on its port + 10000, so a node's port is taken from
//! 20000..22768, whose bus ports (30000..32768) sit below Linux's ephemeral range (32768..) where
//! outgoing connections would take them. 6379/16379 are never in range (a Redis may run there).
#![allow(dead_code, unreachable_pub)]

use std::{
    collections::BTreeMap,
    process::{Child, Command},
    time::{Duration, Instant},
};

use super::tls::TestCa;

mod node;

pub use node::ClusterNode;
use node::free_port;

/// The number of hash slots of every Redis Cluster.
pub const SLOTS: u16 = 16384;

/// How a cluster is laid out.
#[derive(Clone, Copy, Debug)]
pub struct ClusterOptions {
    /// Primaries, among which the 16384 slots are split.
    pub primaries: usize,
    /// Replicas of each primary.
    pub replicas_per_primary: usize,
    /// `--cluster-node-timeout`: how long a primary may be unreachable before its replica is
    /// promoted.
    pub node_timeout_ms: u64,
    /// Whether clients, the cluster bus and replication speak TLS (`--tls-cluster yes`), with
    /// a CA made for the cluster; each node also keeps a plain port for the harness.
    pub tls: bool,
    /// With `tls`: clients (and nodes on the bus) must show a certificate signed by the CA
    /// (`tls-auth-clients yes`); the harness's plain ports ask none.
    pub auth_clients: bool,
}

impl ClusterOptions {
    /// `primaries` primaries with `replicas_per_primary` replicas each, node timeout 5 s.
    pub fn new(primaries: usize, replicas_per_primary: usize) -> Self {
        Self {
            primaries,
            replicas_per_primary,
            node_timeout_ms: 5000,
            tls: false,
            auth_clients: false,
        }
    }
}

/// A private Redis Cluster: killed on drop, every node's log printed when the test panicked.
pub struct RedisCluster {
    nodes: Vec<ClusterNode>,
    options: ClusterOptions,
    /// The CA of a TLS cluster's certificates.
    ca: Option<TestCa>,
}

impl RedisCluster {
    /// Starts `primaries` primaries with `replicas_per_primary` replicas each
    /// (`--cluster-node-timeout 5000`), and waits until every node sees the cluster up with all
    /// 16384 slots covered and every replica in sync.
    pub fn start(primaries: usize, replicas_per_primary: usize) -> Self {
        Self::start_with(ClusterOptions::new(primaries, replicas_per_primary))
    }

    /// As [`start`](Self::start), with every option given.
    pub fn start_with(options: ClusterOptions) -> Self {
        let total = options.primaries * (1 + options.replicas_per_primary);
        assert!(options.primaries >= 3, "redis-cli needs 3 primaries");
        let mut last_error = String::new();
        let mut ca = options.tls.then(TestCa::new);
        // A port checked free may be taken before redis-server binds it (another test process):
        // start again on other ports.
        for _ in 0..3 {
            let nodes: Vec<ClusterNode> = (0..total)
                .map(|_| {
                    ClusterNode::spawn(
                        free_port(),
                        options.node_timeout_ms,
                        ca.as_ref(),
                        options.auth_clients,
                    )
                })
                .collect();
            let mut cluster = Self {
                nodes,
                options,
                ca: ca.take(),
            };
            if let Some(bad) = cluster.nodes.iter_mut().position(|n| !n.wait_up()) {
                last_error = format!(
                    "node on port {} did not start: {}",
                    cluster.nodes[bad].port,
                    cluster.nodes[bad].log()
                );
                ca = cluster.ca.take();
                continue;
            }
            cluster.create();
            cluster.wait_ready(Duration::from_secs(30));
            return cluster;
        }
        panic!("cluster did not start: {last_error}");
    }

    fn create(&self) {
        let mut cmd = Command::new("redis-cli");
        if let Some(ca) = &self.ca {
            cmd.arg("--tls").arg("--cacert").arg(ca.ca_file());
            if self.options.auth_clients {
                cmd.arg("--cert")
                    .arg(ca.client_cert_file())
                    .arg("--key")
                    .arg(ca.client_key_file());
            }
        }
        cmd.args(["--cluster", "create"]);
        for node in &self.nodes {
            cmd.arg(format!("127.0.0.1:{}", node.client_port()));
        }
        if self.options.replicas_per_primary > 0 {
            cmd.args(["--cluster-replicas"])
                .arg(self.options.replicas_per_primary.to_string());
        }
        let out = cmd
            .arg("--cluster-yes")
            .output()
            .expect("redis-cli must be installed with redis-server");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.logs()
        );
    }

    /// Waits (at most `limit`) until every running node reports `cluster_state:ok`, knows every
    /// running node, sees all 16384 slots served by running primaries, and every replica's link
    /// to its primary is up. Panics with every log past the limit.
    pub fn wait_ready(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            match self.readiness() {
                Ok(()) => return,
                Err(why) if Instant::now() > deadline => {
                    panic!("cluster not ready within {limit:?}: {why}\n{}", self.logs())
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// As [`wait_ready`](Self::wait_ready), for async tests: sleeps between probes on the
    /// runtime, so the app under test keeps running; answers how long it took.
    pub async fn wait_ready_async(&self, limit: Duration) -> Duration {
        let start = Instant::now();
        loop {
            match self.readiness() {
                Ok(()) => return start.elapsed(),
                Err(why) if start.elapsed() > limit => {
                    panic!("cluster not ready within {limit:?}: {why}\n{}", self.logs())
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// `Ok` when the cluster is fully up as seen by every running node, else what is missing.
    fn readiness(&self) -> Result<(), String> {
        let running: Vec<&ClusterNode> = self.nodes.iter().filter(|n| n.running()).collect();
        let live_ports: Vec<u16> = running.iter().map(|n| n.port).collect();
        for node in &running {
            let info = node
                .info("cluster")
                .ok_or_else(|| format!("{} does not answer", node.port))?;
            if !info.contains("cluster_state:ok") {
                return Err(format!("{}: {info}", node.port));
            }
            // Every slot served by a running primary, in this node's view.
            let slots = node
                .slot_owners()
                .ok_or_else(|| format!("{}: no CLUSTER SLOTS", node.port))?;
            let covered: u32 = slots
                .iter()
                .filter(|(_, _, owner)| live_ports.contains(owner))
                .map(|(from, to, _)| u32::from(*to) - u32::from(*from) + 1)
                .sum();
            if covered != u32::from(SLOTS) {
                return Err(format!("{} sees {covered} slots served", node.port));
            }
            let replication = node
                .info("replication")
                .ok_or_else(|| format!("{} does not answer INFO", node.port))?;
            if replication.contains("role:slave") && !replication.contains("master_link_status:up")
            {
                return Err(format!("{}: replica not in sync", node.port));
            }
        }
        // Every running node knows every other running node as connected.
        for node in &running {
            let mut conn = node.conn().map_err(|e| e.to_string())?;
            let nodes: String = redis::cmd("CLUSTER")
                .arg("NODES")
                .query(&mut conn)
                .map_err(|e| e.to_string())?;
            for port in &live_ports {
                let line = nodes
                    .lines()
                    .find(|l| {
                        l.split(' ')
                            .nth(1)
                            .is_some_and(|a| a.starts_with(&format!("127.0.0.1:{port}@")))
                    })
                    .ok_or_else(|| format!("{} does not know {port}", node.port))?;
                if line.contains("fail") || !line.contains("connected") {
                    return Err(format!("{} sees {port} as {line}", node.port));
                }
            }
        }
        Ok(())
    }

    /// The nodes, in start order.
    pub fn nodes(&self) -> &[ClusterNode] {
        &self.nodes
    }

    /// Seed URLs of every node (`redis://127.0.0.1:<port>`, `rediss://` and the TLS port on a
    /// TLS cluster), as redkit's cluster config takes.
    pub fn urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| match &n.tls {
                Some((port, _)) => format!("rediss://127.0.0.1:{port}"),
                None => n.url(),
            })
            .collect()
    }

    /// The CA a TLS cluster's certificates chain to.
    pub fn ca(&self) -> Option<&TestCa> {
        self.ca.as_ref()
    }

    /// A redis-rs cluster client for assertions, seeded with every running node.
    pub fn client(&self) -> redis::cluster::ClusterClient {
        let seeds: Vec<String> = self
            .nodes
            .iter()
            .filter(|n| n.running())
            .map(ClusterNode::url)
            .collect();
        redis::cluster::ClusterClientBuilder::new(seeds)
            .connection_timeout(Duration::from_secs(1))
            .response_timeout(Duration::from_secs(2))
            .build()
            .expect("cluster client")
    }

    /// A synchronous cluster connection for assertions (commands routed by key).
    pub fn conn(&self) -> redis::cluster::ClusterConnection {
        self.client().get_connection().expect("cluster connection")
    }

    /// The index of the node holding `key`'s slot as primary now.
    pub fn primary_for(&self, key: &str) -> usize {
        let node = self
            .nodes
            .iter()
            .find(|n| n.running())
            .expect("a live node");
        let mut conn = node.conn().expect("node up");
        let slot: u16 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query(&mut conn)
            .expect("CLUSTER KEYSLOT");
        self.owner_of_slot(slot)
    }

    /// The index of the primary serving `slot` now, in the view of the first running node.
    pub fn owner_of_slot(&self, slot: u16) -> usize {
        let node = self
            .nodes
            .iter()
            .find(|n| n.running())
            .expect("a live node");
        let owner = node
            .slot_owners()
            .expect("CLUSTER SLOTS")
            .into_iter()
            .find(|(from, to, _)| (*from..=*to).contains(&slot))
            .map(|(_, _, port)| port)
            .expect("slot covered");
        self.index_of(owner)
    }

    /// Waits (at most 5 s) until every primary's replicas have acknowledged all its writes
    /// (`INFO replication`: each replica's offset equals the primary's), so that a failover
    /// loses nothing written so far.
    pub fn wait_replicated(&self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        for index in self.primaries() {
            loop {
                let info = self.nodes[index].info("replication").unwrap_or_default();
                let field = |name: &str| {
                    info.lines()
                        .find_map(|l| l.strip_prefix(name))
                        .map(str::trim)
                        .map(str::to_owned)
                };
                let offset = field("master_repl_offset:").unwrap_or_default();
                let replicas: Vec<String> = info
                    .lines()
                    .filter(|l| l.starts_with("slave") && l.contains("offset="))
                    .filter_map(|l| l.split(',').find_map(|f| f.strip_prefix("offset=")))
                    .map(str::to_owned)
                    .collect();
                let want = self.options.replicas_per_primary;
                if replicas.len() == want && replicas.iter().all(|o| *o == offset) {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "replicas of node {index} never caught up: {info}"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Whether a running node has a sharded pub/sub channel (`PUBSUB SHARDCHANNELS`) named
    /// `name`, ending in `:name` or holding `{name}` (`redkit:events:{name}`).
    pub fn has_shard_channel(&self, name: &str) -> bool {
        self.nodes.iter().filter(|n| n.running()).any(|node| {
            let Ok(mut conn) = node.conn() else {
                return false;
            };
            let channels: Vec<String> = redis::cmd("PUBSUB")
                .arg("SHARDCHANNELS")
                .query(&mut conn)
                .unwrap_or_default();
            channels.iter().any(|c| {
                c == name || c.ends_with(&format!(":{name}")) || c.contains(&format!("{{{name}}}"))
            })
        })
    }

    /// The indexes of the running primaries that serve slots now.
    pub fn primaries(&self) -> Vec<usize> {
        let node = self
            .nodes
            .iter()
            .find(|n| n.running())
            .expect("a live node");
        let mut ports: Vec<u16> = node
            .slot_owners()
            .expect("CLUSTER SLOTS")
            .into_iter()
            .map(|(_, _, port)| port)
            .collect();
        ports.sort_unstable();
        ports.dedup();
        ports.into_iter().map(|p| self.index_of(p)).collect()
    }

    fn index_of(&self, port: u16) -> usize {
        self.nodes
            .iter()
            .position(|n| n.port == port)
            .expect("a node of this cluster")
    }

    /// Kills node `index` (SIGKILL) and waits for the process to be gone. Its nodes.conf stays,
    /// so [`restart`](Self::restart) brings the same node back.
    pub fn kill(&mut self, index: usize) {
        self.nodes[index].kill();
    }

    /// Kills the primary that serves `key`'s slot now; answers its index.
    pub fn kill_primary_for(&mut self, key: &str) -> usize {
        let index = self.primary_for(key);
        self.kill(index);
        index
    }

    /// Starts a killed node again on its port and dir (empty data; it rejoins from nodes.conf).
    pub fn restart(&mut self, index: usize) {
        self.nodes[index].kill();
        self.nodes[index].launch();
        assert!(
            self.nodes[index].wait_up(),
            "node {} did not restart: {}",
            self.nodes[index].port,
            self.nodes[index].log()
        );
    }

    /// Waits until a replica has taken over the slots of the killed node `killed` and every
    /// running node sees the cluster ready again; answers how long it took.
    pub async fn wait_failover(&self, killed: usize, limit: Duration) -> Duration {
        assert!(!self.nodes[killed].running(), "kill the node first");
        self.wait_ready_async(limit).await
    }

    /// Starts one more `redis-server` and joins it to the cluster as an empty primary
    /// (`CLUSTER MEET`, what `redis-cli --cluster add-node` sends); waits until every node knows
    /// it as connected. Answers its index.
    pub fn add_node(&mut self) -> usize {
        let node = loop {
            let mut node = ClusterNode::spawn(
                free_port(),
                self.options.node_timeout_ms,
                self.ca.as_ref(),
                self.options.auth_clients,
            );
            if node.wait_up() {
                break node;
            }
        };
        // The bus port follows the port clients use (the TLS one on a TLS cluster).
        let port = node.client_port();
        let seed = self
            .nodes
            .iter()
            .find(|n| n.running())
            .expect("a live node");
        let _: () = redis::cmd("CLUSTER")
            .arg("MEET")
            .arg("127.0.0.1")
            .arg(port)
            .query(&mut seed.conn().expect("node up"))
            .expect("CLUSTER MEET");
        self.nodes.push(node);
        self.wait_ready(Duration::from_secs(30));
        self.nodes.len() - 1
    }

    /// Removes node `index`, which must serve no slot, the way `redis-cli --cluster del-node`
    /// does: `CLUSTER FORGET` on every other node (within the 60 s in which gossip would not
    /// bring it back), then the node is killed; waits until the rest is ready without it.
    pub fn remove_node(&mut self, index: usize) {
        assert!(
            !self.primaries().contains(&index),
            "node {index} still serves slots: move them first"
        );
        let id = self.nodes[index].id();
        for (i, node) in self.nodes.iter().enumerate() {
            if i != index && node.running() {
                let _: () = redis::cmd("CLUSTER")
                    .arg("FORGET")
                    .arg(&id)
                    .query(&mut node.conn().expect("node up"))
                    .unwrap_or_else(|e| panic!("CLUSTER FORGET on {}: {e}", node.port));
            }
        }
        self.kill(index);
        self.wait_ready(Duration::from_secs(30));
    }

    /// Moves `slot` and its keys to primary `to`, the way `redis-cli --cluster reshard` does:
    /// `SETSLOT IMPORTING` on the target, `SETSLOT MIGRATING` on the source, `MIGRATE` of every
    /// key, then `SETSLOT NODE` on the target, the source and every other node; waits until
    /// every node sees `to` serving the slot.
    pub fn migrate_slot(&self, slot: u16, to: usize) {
        let from = self.owner_of_slot(slot);
        assert_ne!(from, to, "slot {slot} is already on node {to}");
        let (source, target) = (&self.nodes[from], &self.nodes[to]);
        let (source_id, target_id) = (source.id(), target.id());
        let mut source_conn = source.conn().expect("source up");
        let mut target_conn = target.conn().expect("target up");
        let setslot = |conn: &mut redis::Connection, state: &str, id: &str| {
            let _: () = redis::cmd("CLUSTER")
                .arg("SETSLOT")
                .arg(slot)
                .arg(state)
                .arg(id)
                .query(conn)
                .unwrap_or_else(|e| panic!("CLUSTER SETSLOT {slot} {state}: {e}"));
        };
        setslot(&mut target_conn, "IMPORTING", &source_id);
        setslot(&mut source_conn, "MIGRATING", &target_id);
        loop {
            let keys: Vec<String> = redis::cmd("CLUSTER")
                .arg("GETKEYSINSLOT")
                .arg(slot)
                .arg(100)
                .query(&mut source_conn)
                .expect("CLUSTER GETKEYSINSLOT");
            if keys.is_empty() {
                break;
            }
            let _: () = redis::cmd("MIGRATE")
                .arg("127.0.0.1")
                .arg(target.port)
                .arg("")
                .arg(0)
                .arg(5000)
                .arg("KEYS")
                .arg(&keys)
                .query(&mut source_conn)
                .expect("MIGRATE");
        }
        setslot(&mut target_conn, "NODE", &target_id);
        // The source may have turned replica already if that was its last slot (see below):
        // its refusal is no error then, as `redis-cli --cluster reshard` treats it.
        let told: redis::RedisResult<()> = redis::cmd("CLUSTER")
            .arg("SETSLOT")
            .arg(slot)
            .arg("NODE")
            .arg(&target_id)
            .query(&mut source_conn);
        if let Err(e) = told
            && !e.to_string().contains("SETSLOT only with masters")
        {
            panic!("CLUSTER SETSLOT {slot} NODE on the source: {e}");
        }
        // Every other primary (a replica refuses `SETSLOT`; it follows its primary). A primary
        // that gave its last slot away may be a replica by now: Redis 7 makes it one of the
        // node that took the slot (`cluster-allow-replica-migration`).
        for node in self.nodes.iter().filter(|n| n.running()) {
            let primary = node
                .info("replication")
                .is_some_and(|info| info.contains("role:master"));
            if primary && node.port != source.port && node.port != target.port {
                setslot(&mut node.conn().expect("node up"), "NODE", &target_id);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        for node in self.nodes.iter().filter(|n| n.running()) {
            loop {
                let owner = node.slot_owners().and_then(|ranges| {
                    ranges
                        .into_iter()
                        .find(|(a, b, _)| (*a..=*b).contains(&slot))
                        .map(|(_, _, port)| port)
                });
                if owner == Some(target.port) {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{} still sees slot {slot} on {owner:?}\n{}",
                    node.port,
                    self.logs()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Every key in the cluster (scanned on every running primary), with its PTTL.
    pub fn keys_with_ttl(&self) -> Vec<(String, i64)> {
        let mut all = Vec::new();
        for index in self.primaries() {
            let mut conn = self.nodes[index].conn().expect("primary up");
            let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut conn).unwrap();
            for key in keys {
                let ttl: i64 = redis::cmd("PTTL").arg(&key).query(&mut conn).unwrap();
                all.push((key, ttl));
            }
        }
        all.sort();
        all
    }

    /// Calls per command since start, summed over every running node (`INFO commandstats`).
    pub fn command_calls(&self) -> BTreeMap<String, u64> {
        let mut calls = BTreeMap::new();
        for node in self.nodes.iter().filter(|n| n.running()) {
            let Some(info) = node.info("commandstats") else {
                continue;
            };
            for (name, count) in parse_commandstats(&info) {
                *calls.entry(name).or_insert(0) += count;
            }
        }
        calls
    }

    /// Every node's log, headed by its port and role at start.
    pub fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|n| {
                format!(
                    "--- cluster node 127.0.0.1:{} ({}) ---\n{}",
                    n.port,
                    n.dir().display(),
                    n.log()
                )
            })
            .collect()
    }

    /// The process ids of the running nodes.
    pub fn pids(&self) -> Vec<u32> {
        self.nodes
            .iter()
            .filter_map(|n| n.child.as_ref().map(Child::id))
            .collect()
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
        for node in &mut self.nodes {
            node.kill();
        }
    }
}

/// `cmdstat_<name>:calls=<n>,...` lines as (name, n).
pub fn parse_commandstats(info: &str) -> impl Iterator<Item = (String, u64)> + '_ {
    info.lines().filter_map(|line| {
        let (name, rest) = line.strip_prefix("cmdstat_")?.split_once(':')?;
        let calls = rest
            .strip_prefix("calls=")?
            .split(',')
            .next()?
            .parse()
            .ok()?;
        Some((name.to_owned(), calls))
    })
}

/// The hash slot of `key` (CRC16 of the key, or of its first non-empty `{hash tag}`, mod 16384),
/// as the cluster specification defines it.
pub fn slot_of(key: &str) -> u16 {
    let bytes = key.as_bytes();
    let hashed = bytes
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let close = bytes[open + 1..].iter().position(|&b| b == b'}')?;
            (close > 0).then(|| &bytes[open + 1..open + 1 + close])
        })
        .unwrap_or(bytes);
    crc16::State::<crc16::XMODEM>::calculate(hashed) % SLOTS
}
