//! One `redis-server` of a private cluster: its ports, its own temp dir (nodes.conf, log), and
//! what the harness asks it.

use std::{
    net::TcpListener,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU16, Ordering},
    time::{Duration, Instant},
};

use super::super::tls::{TestCa, tls_args};

/// The first and one-past-last port a node may get.
const PORTS: (u16, u16) = (20000, 22768);

/// One `redis-server` of a cluster: its port, its own temp dir (nodes.conf, log).
pub struct ClusterNode {
    pub(super) port: u16,
    pub(super) dir: tempfile::TempDir,
    pub(super) child: Option<Child>,
    pub(super) node_timeout_ms: u64,
    /// On a TLS cluster: the TLS port (its bus port is this + 10000), and the TLS arguments.
    pub(super) tls: Option<(u16, Vec<String>)>,
}

impl ClusterNode {
    /// Starts a node on `port`; on a TLS cluster (`ca`) also on a TLS port, which the cluster
    /// bus and replication use (`auth_clients`: clients must show a certificate).
    pub(super) fn spawn(
        port: u16,
        node_timeout_ms: u64,
        ca: Option<&TestCa>,
        auth_clients: bool,
    ) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let tls = ca.map(|ca| {
            let tls_port = free_port();
            let mut args = tls_args(ca, tls_port, auth_clients);
            args.extend(["--tls-cluster", "yes", "--tls-replication", "yes"].map(String::from));
            (tls_port, args)
        });
        let mut node = Self {
            port,
            dir,
            child: None,
            node_timeout_ms,
            tls,
        };
        node.launch();
        node
    }

    /// The port other nodes and redkit reach this node on: the TLS port on a TLS cluster.
    pub fn client_port(&self) -> u16 {
        self.tls.as_ref().map_or(self.port, |(port, _)| *port)
    }

    pub(super) fn launch(&mut self) {
        let dir = self.dir.path();
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port"])
            .arg(self.port.to_string())
            .args([
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
            ])
            .arg(self.node_timeout_ms.to_string())
            // Replicas sync at once instead of after the default 5 s diskless-sync delay.
            .args(["--repl-diskless-sync-delay", "0"])
            .args(self.tls.iter().flat_map(|(_, args)| args))
            .args(["--save", "", "--appendonly", "no", "--dir"])
            .arg(dir)
            .arg("--logfile")
            .arg(dir.join("redis.log"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (the CI script installs it)");
        self.child = Some(child);
    }

    /// Waits until the node answers `PING`; false if it exited (e.g. its port was taken).
    pub(super) fn wait_up(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(mut conn) = self.conn()
                && redis::cmd("PING").query::<String>(&mut conn).is_ok()
            {
                return true;
            }
            let exited = self
                .child
                .as_mut()
                .is_none_or(|c| c.try_wait().ok().flatten().is_some());
            if exited || Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The node's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Whether the process runs (it was not killed).
    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    /// A direct connection to this node alone, with 1 s timeouts.
    pub fn conn(&self) -> redis::RedisResult<redis::Connection> {
        let client = redis::Client::open(self.url())?;
        let conn = client.get_connection_with_timeout(Duration::from_secs(1))?;
        conn.set_read_timeout(Some(Duration::from_secs(1)))?;
        conn.set_write_timeout(Some(Duration::from_secs(1)))?;
        Ok(conn)
    }

    /// The node's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
    }

    /// This node's id in the cluster.
    pub fn id(&self) -> String {
        redis::cmd("CLUSTER")
            .arg("MYID")
            .query(&mut self.conn().expect("node up"))
            .expect("CLUSTER MYID")
    }

    pub(super) fn info(&self, section: &str) -> Option<String> {
        let mut conn = self.conn().ok()?;
        let mut cmd = redis::cmd(if section == "cluster" {
            "CLUSTER"
        } else {
            "INFO"
        });
        cmd.arg(if section == "cluster" {
            "INFO"
        } else {
            section
        });
        cmd.query(&mut conn).ok()
    }

    pub(super) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub(super) fn dir(&self) -> PathBuf {
        self.dir.path().to_owned()
    }

    /// `(first slot, last slot, primary's port)` for every slot range, in this node's view.
    pub(super) fn slot_owners(&self) -> Option<Vec<(u16, u16, u16)>> {
        let mut conn = self.conn().ok()?;
        let slots: Vec<redis::Value> = redis::cmd("CLUSTER").arg("SLOTS").query(&mut conn).ok()?;
        slots
            .into_iter()
            .map(|range| {
                let redis::Value::Array(items) = range else {
                    return None;
                };
                let from: u16 = redis::from_redis_value_ref(items.first()?).ok()?;
                let to: u16 = redis::from_redis_value_ref(items.get(1)?).ok()?;
                let redis::Value::Array(primary) = items.get(2)? else {
                    return None;
                };
                let port: u16 = redis::from_redis_value_ref(primary.get(1)?).ok()?;
                Some((from, to, port))
            })
            .collect()
    }
}

impl Drop for ClusterNode {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A port in [`PORTS`] free now, with its bus port (+10000) free too; never the same twice in
/// one process.
pub(super) fn free_port() -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let span = PORTS.1 - PORTS.0;
    // Processes start at different offsets (by pid) so that two test binaries rarely probe the
    // same ports at once.
    let _ = NEXT.compare_exchange(
        0,
        (std::process::id() % u32::from(span)) as u16 + 1,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    for _ in 0..span {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = PORTS.0 + n % span;
        let bus = port + 10000;
        if TcpListener::bind(("127.0.0.1", port)).is_ok()
            && TcpListener::bind(("127.0.0.1", bus)).is_ok()
        {
            return port;
        }
    }
    panic!("no free port pair in {PORTS:?}");
}
