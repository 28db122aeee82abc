use std::{
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use redis::{Cmd, FromRedisValue, Pipeline};
use serde::Serialize;

use super::{
    RedisError,
    feed::{self, FeedEvent, InvalidationFeed},
    push::{self, PushEvents, Subscriber},
    target::{Connection, Target},
};

/// A cloneable handle to the process's Redis connection, made by [`RedisHandle::connect`].
/// Cheap to clone; every clone shares one multiplexed connection and one health state.
#[derive(Clone)]
pub struct RedisHandle {
    conn: Connection,
    timeout: Duration,
    shared: Arc<Shared>,
}

#[derive(Debug)]
pub(super) struct Shared {
    up: AtomicBool,
    latency_us: AtomicU64,
    errors: AtomicU64,
    reconnects: AtomicU64,
    latency: prometheus_client::metrics::histogram::Histogram,
    target: Target,
}

/// One cluster node as `/health` reports it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[non_exhaustive]
pub struct NodeState {
    /// `host:port`, as the cluster announces it.
    pub address: String,
    /// `primary` or `replica`.
    pub role: &'static str,
    /// `up` when it answered a `PING` within the response timeout, else `down`.
    pub status: &'static str,
}

/// What is known about the Redis connection, without asking Redis.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[non_exhaustive]
pub struct RedisStatus {
    /// Whether the last command or watchdog ping succeeded.
    pub up: bool,
    /// Round-trip time of the last successful watchdog ping, in microseconds.
    pub latency_us: u64,
    /// Commands that failed because Redis was unreachable or slow, since start.
    pub errors: u64,
    /// Times the connection came back after being down, since start.
    pub reconnects: u64,
}

impl std::fmt::Debug for RedisHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisHandle")
            .field("timeout", &self.timeout)
            .field("status", &self.status())
            .finish()
    }
}

/// How often the watchdog pings Redis.
const WATCHDOG_INTERVAL: Duration = Duration::from_secs(1);

impl RedisHandle {
    /// Creates the (lazy) command connection for `settings` and starts its watchdog: a task on
    /// the current actix system or tokio `LocalSet` that `PING`s Redis every second, so that a
    /// recovery is noticed (and logged) without a request, and that ends with the last clone of
    /// the handle. Does not wait for Redis.
    ///
    /// # Errors
    /// [`RedisError::Command`] when the URL is invalid; never for an unreachable server.
    pub fn connect(settings: &super::RedisSettings) -> Result<Self, RedisError> {
        let target = Target::new(settings)?;
        let commands = target.commands()?;
        let handle = Self::new(commands, target);
        let (conn, timeout, shared) = (
            handle.conn.clone(),
            handle.timeout,
            Arc::downgrade(&handle.shared),
        );
        actix_web::rt::spawn(async move {
            let mut ticks = tokio::time::interval(WATCHDOG_INTERVAL);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                // The drop guard: every handle gone, the watchdog goes too.
                let Some(shared) = shared.upgrade() else {
                    break;
                };
                let handle = Self {
                    conn: conn.clone(),
                    timeout,
                    shared,
                };
                let result = handle.ping().await;
                if handle.set_up(result.is_ok()) {
                    if result.is_ok() {
                        tracing::info!("redis connection is up");
                    } else {
                        tracing::warn!("redis is not answering; serving degraded until it does");
                    }
                }
                if let Err(err) = result {
                    tracing::debug!(error = %err, "redis watchdog ping failed");
                }
            }
        });
        Ok(handle)
    }

    pub(super) fn new(conn: Connection, target: Target) -> Self {
        Self {
            conn,
            timeout: target.response_timeout,
            shared: Arc::new(Shared {
                // Optimistic until the first command says otherwise: reads try L2 at once.
                up: AtomicBool::new(true),
                latency_us: AtomicU64::new(0),
                errors: AtomicU64::new(0),
                reconnects: AtomicU64::new(0),
                latency: crate::latency::latency_histogram(),
                target,
            }),
        }
    }

    /// Runs one command, bounded by the response timeout.
    ///
    /// # Errors
    /// [`RedisError`] classified by cause; unavailability also marks Redis down.
    pub async fn query<T: FromRedisValue>(&self, cmd: &Cmd) -> Result<T, RedisError> {
        let mut conn = self.conn.clone();
        self.bounded(async move { cmd.query_async(&mut conn).await })
            .await
    }

    /// Runs a pipeline (one round trip), bounded by the response timeout.
    ///
    /// # Errors
    /// As [`query`](Self::query).
    pub async fn query_pipe<T: FromRedisValue>(&self, pipe: &Pipeline) -> Result<T, RedisError> {
        let mut conn = self.conn.clone();
        self.bounded(async move { pipe.query_async(&mut conn).await })
            .await
    }

    /// Runs a Lua script invocation (`EVALSHA`, reloaded on `NOSCRIPT`), bounded by the timeout.
    ///
    /// # Errors
    /// As [`query`](Self::query).
    pub async fn invoke<T: FromRedisValue>(
        &self,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<T, RedisError> {
        let mut conn = self.conn.clone();
        self.bounded(async move { invocation.invoke_async(&mut conn).await })
            .await
    }

    /// Sends a `PING` and answers its round-trip time.
    ///
    /// # Errors
    /// As [`query`](Self::query).
    pub async fn ping(&self) -> Result<Duration, RedisError> {
        let started = Instant::now();
        let _: String = self.query(&redis::cmd("PING")).await?;
        let rtt = started.elapsed();
        self.shared.latency_us.store(
            u64::try_from(rtt.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        Ok(rtt)
    }

    /// Visits every key matching `pattern` (a `SCAN MATCH` glob; escape what is not meant as one)
    /// in batches of about `count`: on one Redis, one `SCAN`; on a cluster, a `SCAN` of every
    /// primary in turn, since each holds only its own slots. Each step is bounded by the
    /// response timeout; `on_batch` runs between steps.
    ///
    /// # Errors
    /// The first [`RedisError`] of a `SCAN` or of `on_batch`; on a cluster, also a topology that
    /// could not be read.
    pub async fn scan(
        &self,
        pattern: &str,
        count: usize,
        mut on_batch: impl AsyncFnMut(Vec<Vec<u8>>) -> Result<(), RedisError>,
    ) -> Result<(), RedisError> {
        let primaries: Vec<Option<(String, u16)>> = if self.conn.is_cluster() {
            let topology: String = self
                .query(&redis::cmd("CLUSTER").arg("NODES").to_owned())
                .await?;
            parse_cluster_nodes(&topology)
                .into_iter()
                .filter(|(_, _, primary)| *primary)
                .map(|(host, port, _)| Some((host, port)))
                .collect()
        } else {
            vec![None]
        };
        for node in primaries {
            let mut cursor: u64 = 0;
            loop {
                let mut scan = redis::cmd("SCAN");
                scan.arg(cursor)
                    .arg("MATCH")
                    .arg(pattern)
                    .arg("COUNT")
                    .arg(count);
                let (next, keys): (u64, Vec<Vec<u8>>) = match &node {
                    None => self.query(&scan).await?,
                    Some((host, port)) => {
                        let mut conn = self.conn.clone();
                        let value = self
                            .bounded(async move { conn.on_node(&scan, host, *port).await })
                            .await?;
                        redis::from_redis_value(value).map_err(|e| RedisError::Command(e.into()))?
                    }
                };
                if !keys.is_empty() {
                    on_batch(keys).await?;
                }
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        Ok(())
    }

    /// Each node of the cluster with its state, pinged now (all at once, each within the
    /// response timeout); `None` on one Redis. An empty list when no node answered the topology
    /// query.
    pub async fn nodes(&self) -> Option<Vec<NodeState>> {
        if !self.conn.is_cluster() {
            return None;
        }
        let topology: String = match self
            .query(&redis::cmd("CLUSTER").arg("NODES").to_owned())
            .await
        {
            Ok(text) => text,
            Err(err) => {
                tracing::debug!(error = %err, "cluster topology query failed");
                return Some(Vec::new());
            }
        };
        let nodes = parse_cluster_nodes(&topology);
        let pings = nodes.iter().map(|(host, port, _)| {
            let mut conn = self.conn.clone();
            let timeout = self.timeout;
            async move {
                matches!(
                    tokio::time::timeout(timeout, conn.on_node(&redis::cmd("PING"), host, *port))
                        .await,
                    Ok(Ok(_))
                )
            }
        });
        let answers = futures_util::future::join_all(pings).await;
        Some(
            nodes
                .iter()
                .zip(answers)
                .map(|((host, port, primary), up)| NodeState {
                    address: format!("{host}:{port}"),
                    role: if *primary { "primary" } else { "replica" },
                    status: if up { "up" } else { "down" },
                })
                .collect(),
        )
    }

    /// Opens a [`Subscriber`] connection named `name` (for logs) and starts its liveness check
    /// (see [`push`](super::push)); its events arrive on the returned receiver. Call from a Tokio
    /// runtime (an actix system). Does not wait for Redis.
    ///
    /// # Errors
    /// [`RedisError::Command`] when the connection cannot be configured (never for an
    /// unreachable server).
    pub fn subscriber(&self, name: &'static str) -> Result<(Subscriber, PushEvents), RedisError> {
        push::start(&self.shared.target, name)
    }

    /// Starts an [`InvalidationFeed`] on its own RESP3 connection (see [`feed`](super::feed)):
    /// `listener` hears about every change to a key under one of `prefixes`, made by any client,
    /// and whether the feed is up. Call from a Tokio runtime (an actix system). Does not wait for
    /// Redis: the listener hears [`FeedEvent::Up`] once tracking is armed.
    ///
    /// # Errors
    /// [`RedisError::Command`] when the connection cannot be configured (never for an
    /// unreachable server).
    pub fn invalidation_feed(
        &self,
        prefixes: Vec<String>,
        listener: impl Fn(FeedEvent) + Send + Sync + 'static,
    ) -> Result<InvalidationFeed, RedisError> {
        feed::start(&self.shared.target, prefixes, Arc::new(listener))
    }

    /// A clone of the underlying connection, for commands this handle has no method for.
    /// Callers should bound their own calls with [`timeout`](Self::timeout).
    pub fn connection(&self) -> Connection {
        self.conn.clone()
    }

    /// Whether every script call and pipeline must keep its keys in one hash slot (a Redis
    /// Cluster): callers that batch several identities into one call split the batch per slot.
    /// Answers false on one Redis, which takes any batch whole.
    pub fn requires_single_slot(&self) -> bool {
        self.shared.target.is_cluster()
    }

    /// Whether the connection goes to a Redis Cluster (`"redis-cluster"`) or one Redis
    /// (`"redis"`): for reports such as `/health`, never for routing (the layer routes).
    pub fn backend_name(&self) -> &'static str {
        if self.shared.target.is_cluster() {
            "redis-cluster"
        } else {
            "redis"
        }
    }

    /// The histogram of command round trips (every command through this handle).
    pub fn latency_histogram(&self) -> prometheus_client::metrics::histogram::Histogram {
        self.shared.latency.clone()
    }

    /// The response timeout every command is bounded by.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Whether Redis answered the last command or ping. Readers use this to skip a dead L2.
    pub fn is_up(&self) -> bool {
        self.shared.up.load(Ordering::Relaxed)
    }

    /// The last observed state.
    pub fn status(&self) -> RedisStatus {
        RedisStatus {
            up: self.is_up(),
            latency_us: self.shared.latency_us.load(Ordering::Relaxed),
            errors: self.shared.errors.load(Ordering::Relaxed),
            reconnects: self.shared.reconnects.load(Ordering::Relaxed),
        }
    }

    /// Records the watchdog's verdict; answers whether this was a change of state.
    pub(super) fn set_up(&self, up: bool) -> bool {
        let was = self.shared.up.swap(up, Ordering::Relaxed);
        if up && !was {
            self.shared.reconnects.fetch_add(1, Ordering::Relaxed);
        }
        was != up
    }

    async fn bounded<T>(
        &self,
        fut: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, RedisError> {
        // No timer of our own: redis-rs bounds every request by the response timeout already (the
        // manager's `set_response_timeout`, the cluster client's overall response timeout; both
        // answer `is_timeout` errors, classified unavailable). A second one cost the worker a
        // timer-wheel insert and removal per command, ~7 % of its samples serving L2 reads
        // (`perf` on `benches/cluster.rs`); the L2 ratio moved within the noise (0.804–0.841
        // against 0.816–0.825), so this stands as the plainer code, not as a receipt.
        let started = Instant::now();
        let outcome = fut.await;
        self.shared.latency.observe(started.elapsed().as_secs_f64());
        let result = match outcome {
            Ok(value) => {
                // Any answer proves Redis is back; readers stop skipping L2 at once.
                if !self.is_up() && self.set_up(true) {
                    tracing::info!("redis connection is up");
                }
                return Ok(value);
            }
            Err(err) => RedisError::classify(err),
        };
        if result.is_unavailable() {
            self.shared.errors.fetch_add(1, Ordering::Relaxed);
            if self.shared.up.swap(false, Ordering::Relaxed) {
                tracing::warn!(error = %result, "redis became unreachable; serving degraded");
            }
        }
        Err(result)
    }
}

/// The nodes of a `CLUSTER NODES` answer that are not known failed or without address:
/// `(host, port, is_primary)`, in address order.
pub(super) fn parse_cluster_nodes(text: &str) -> Vec<(String, u16, bool)> {
    let mut nodes: Vec<(String, u16, bool)> = text
        .lines()
        .filter_map(|line| {
            let mut fields = line.split(' ');
            let _id = fields.next()?;
            // `ip:port@cport[,hostname]`
            let addr = fields.next()?.split('@').next()?;
            let flags = fields.next()?;
            if flags.contains("noaddr") || flags.contains("handshake") {
                return None;
            }
            let (host, port) = addr.rsplit_once(':')?;
            let port = port.parse().ok()?;
            if host.is_empty() || port == 0 {
                return None;
            }
            Some((host.to_owned(), port, flags.contains("master")))
        })
        .collect();
    nodes.sort();
    nodes
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `CLUSTER NODES` lines give each node's address and role; nodes without address are skipped.
    #[test]
    fn cluster_nodes_are_parsed() {
        let text = "\
07c3 127.0.0.1:30004@40004 slave e7d1 0 1426238317239 4 connected
e7d1 127.0.0.1:30001@40001 myself,master - 0 0 1 connected 0-5460
6ec2 :0@0 master,noaddr - 0 0 3 disconnected
292f 127.0.0.1:30002@40002,host.example master - 0 1426238316232 2 connected 5461-10922
";
        assert_eq!(
            parse_cluster_nodes(text),
            [
                ("127.0.0.1".to_owned(), 30001, true),
                ("127.0.0.1".to_owned(), 30002, true),
                ("127.0.0.1".to_owned(), 30004, false),
            ]
        );
    }
}
