//! Where the connections go: one Redis or a Redis Cluster, decided once from
//! [`RedisSettings`], and the [`Connection`] that hides which one it is.
//!
//! Every connection of the process is opened here, from one set of settings: the command
//! connection ([`Target::commands`]) and the push connections ([`Target::push`]), all with
//! redis-rs's own reconnection (a [`ConnectionManager`] on one Redis, an async
//! [`ClusterConnection`] on a cluster, which keeps one multiplexed connection per node).
//! `rediss://` connects over TLS (rustls, `ring`), checking the server's certificate against
//! [`RedisSettings::tls_root_certs`] when given, the system's roots otherwise, and showing
//! [`RedisSettings::tls_client_identity`] to a server that authenticates clients.

use std::time::Duration;

use redis::{
    Cmd, Pipeline, RedisFuture, Value,
    aio::{AsyncPushSender, ConnectionLike, ConnectionManager, ConnectionManagerConfig},
    cluster::{ClusterClient, ClusterClientBuilder, ClusterConfig},
    cluster_async::ClusterConnection,
    cluster_routing::{
        MultipleNodeRoutingInfo, ResponsePolicy, RoutingInfo, SingleNodeRoutingInfo,
    },
};

use super::RedisError;
use super::RedisSettings;

/// How redis-rs's cluster connection words its refusal of a cross-slot pipeline, which it makes
/// before sending anything (`route_for_pipeline` in redis-rs 1.8).
const CLIENT_SIDE_CROSSSLOT: &str = "Received crossed slots in pipeline";

/// What a `rediss://` connection checks the server's certificate against, and the client
/// certificate it shows, if any.
#[cfg(feature = "tls")]
type TlsCerts = redis::TlsCertificates;

/// A build without the `tls` feature has no roots to give.
#[cfg(not(feature = "tls"))]
#[derive(Clone)]
enum TlsCerts {}

/// A connection to Redis or to a Redis Cluster: commands are routed by key on a cluster, sent
/// as they are to one Redis. Cheap to clone; clones share the connection.
#[derive(Clone)]
pub struct Connection(Kind);

#[derive(Clone)]
enum Kind {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.0 {
            Kind::Single(_) => "Connection::Single",
            Kind::Cluster(_) => "Connection::Cluster",
        })
    }
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match &mut self.0 {
            Kind::Single(conn) => conn.req_packed_command(cmd),
            Kind::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match &mut self.0 {
            Kind::Single(conn) => conn.req_packed_commands(pipeline, offset, count),
            Kind::Cluster(conn) => {
                let mut conn = conn.clone();
                Box::pin(async move {
                    let tried = conn.req_packed_commands(pipeline, offset, count).await;
                    match tried {
                        // redis-rs refuses a pipeline whose keys span slots before sending
                        // anything (this message; the server's own CROSSSLOT reads otherwise
                        // and means commands may have run, so it is never retried): run its
                        // commands one by one instead (all at once, answers in order), each
                        // routed by its key. Features pipeline for round trips, not atomicity;
                        // an atomic pipeline is not split, and fails.
                        Err(err)
                            if err.code() == Some("CROSSSLOT")
                                && err.to_string().contains(CLIENT_SIDE_CROSSSLOT)
                                && !pipeline.is_transaction() =>
                        {
                            let calls = pipeline.cmd_iter().map(|cmd| {
                                let mut conn = conn.clone();
                                async move { cmd.query_async::<Value>(&mut conn).await }
                            });
                            futures_util::future::join_all(calls)
                                .await
                                .into_iter()
                                .collect()
                        }
                        other => other,
                    }
                })
            }
        }
    }

    fn get_db(&self) -> i64 {
        match &self.0 {
            Kind::Single(conn) => conn.get_db(),
            Kind::Cluster(conn) => conn.get_db(),
        }
    }
}

/// A subscription command of a push connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Subscription {
    Subscribe,
    Unsubscribe,
    /// One sharded channel.
    SSubscribe,
    /// One sharded channel.
    SUnsubscribe,
}

impl Connection {
    /// Sends a subscription command through redis-rs's own subscription methods (which count
    /// the server's confirmations and remember what to resubscribe after a reconnect).
    pub(crate) async fn subscription(
        &mut self,
        what: Subscription,
        channels: &[&[u8]],
    ) -> redis::RedisResult<()> {
        match (&mut self.0, what) {
            (Kind::Single(conn), Subscription::Subscribe) => conn.subscribe(channels).await,
            (Kind::Single(conn), Subscription::Unsubscribe) => conn.unsubscribe(channels).await,
            // The manager has no sharded methods: one channel is one confirmation, which is
            // what a plain command expects.
            (Kind::Single(conn), Subscription::SSubscribe) => {
                redis::cmd("SSUBSCRIBE")
                    .arg(channels)
                    .exec_async(conn)
                    .await
            }
            (Kind::Single(conn), Subscription::SUnsubscribe) => {
                redis::cmd("SUNSUBSCRIBE")
                    .arg(channels)
                    .exec_async(conn)
                    .await
            }
            (Kind::Cluster(conn), Subscription::Subscribe) => conn.subscribe(channels).await,
            (Kind::Cluster(conn), Subscription::Unsubscribe) => conn.unsubscribe(channels).await,
            (Kind::Cluster(conn), Subscription::SSubscribe) => conn.ssubscribe(channels).await,
            (Kind::Cluster(conn), Subscription::SUnsubscribe) => conn.sunsubscribe(channels).await,
        }
    }

    /// Whether this is a cluster connection.
    pub fn is_cluster(&self) -> bool {
        matches!(self.0, Kind::Cluster(_))
    }

    /// Runs `cmd` on one node given by its address (`host`, `port`); on one Redis, on that one.
    pub(crate) async fn on_node(
        &mut self,
        cmd: &Cmd,
        host: &str,
        port: u16,
    ) -> redis::RedisResult<Value> {
        match &mut self.0 {
            Kind::Single(conn) => cmd.query_async(conn).await,
            Kind::Cluster(conn) => {
                conn.route_command(
                    cmd.clone(),
                    RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                        host: host.to_owned(),
                        port,
                    }),
                )
                .await
            }
        }
    }

    /// Runs `cmd` on every node, replicas included (one Redis: that one); answers once each
    /// succeeded (the first error otherwise).
    pub(crate) async fn on_every_node(&mut self, cmd: &Cmd) -> redis::RedisResult<()> {
        match &mut self.0 {
            Kind::Single(conn) => cmd.query_async::<Value>(conn).await.map(drop),
            Kind::Cluster(conn) => conn
                .route_command(
                    cmd.clone(),
                    RoutingInfo::MultiNode((
                        MultipleNodeRoutingInfo::AllNodes,
                        Some(ResponsePolicy::AllSucceeded),
                    )),
                )
                .await
                .map(drop),
        }
    }

    /// Runs `cmd` on every primary this connection knows now (its view of the topology) and
    /// answers each one's reply by its address (`host:port`); a node's error reply is its
    /// [`Value::ServerError`]. One Redis: its one reply, under an empty address.
    pub(crate) async fn per_primary(
        &mut self,
        cmd: &Cmd,
    ) -> redis::RedisResult<Vec<(String, Value)>> {
        match &mut self.0 {
            Kind::Single(conn) => Ok(vec![(String::new(), cmd.query_async(conn).await?)]),
            Kind::Cluster(conn) => {
                // No response policy: redis-rs answers a map of each node's address to its reply.
                let replies = conn
                    .route_command(
                        cmd.clone(),
                        RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, None)),
                    )
                    .await?;
                let Value::Map(replies) = replies else {
                    return Err(redis::RedisError::from((
                        redis::ErrorKind::Client,
                        "a fan-out without response policy answered no map",
                    )));
                };
                Ok(replies
                    .into_iter()
                    .map(|(addr, reply)| {
                        let addr = match addr {
                            Value::BulkString(bytes) => {
                                String::from_utf8_lossy(&bytes).into_owned()
                            }
                            Value::SimpleString(text) => text,
                            _ => String::new(),
                        };
                        (addr, reply)
                    })
                    .collect())
            }
        }
    }
}

/// One Redis: the command client (RESP2, as configured) and the push client (RESP3).
#[derive(Clone)]
struct SingleClients {
    commands: redis::Client,
    push: redis::Client,
}

/// Where connections go, with the settings every connection shares.
#[derive(Clone)]
pub(crate) struct Target {
    kind: TargetKind,
    /// Per-command response timeout; also the deadline of push connections' liveness checks.
    pub(crate) response_timeout: Duration,
    connect_timeout: Duration,
}

#[derive(Clone)]
enum TargetKind {
    /// One Redis.
    Single(Box<SingleClients>),
    /// A cluster: the seed URLs, and its TLS material (`rediss://` seeds given roots or a client
    /// identity).
    Cluster {
        nodes: Vec<String>,
        certs: Option<TlsCerts>,
    },
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("cluster", &self.is_cluster())
            .field("response_timeout", &self.response_timeout)
            .finish_non_exhaustive()
    }
}

impl Target {
    /// Checks `settings` (never connects).
    ///
    /// # Errors
    /// [`RedisError::Command`] when a URL is invalid.
    pub(crate) fn new(settings: &RedisSettings) -> Result<Self, RedisError> {
        let kind = if settings.cluster_nodes.is_empty() {
            let url = settings.url.as_str();
            let commands = match tls_certificates(settings, url)? {
                #[cfg(feature = "tls")]
                Some(certs) => redis::Client::build_with_tls(url, certs),
                #[cfg(not(feature = "tls"))]
                Some(never) => match never {},
                None => redis::Client::open(url),
            }
            .map_err(RedisError::Command)?;
            let info = commands.get_connection_info().clone();
            let resp3 = info
                .redis_settings()
                .clone()
                .set_protocol(redis::ProtocolVersion::RESP3);
            let push =
                redis::Client::open(info.set_redis_settings(resp3)).map_err(RedisError::Command)?;
            TargetKind::Single(Box::new(SingleClients { commands, push }))
        } else {
            TargetKind::Cluster {
                nodes: settings.cluster_nodes.clone(),
                // Non-empty here; redis-rs takes TLS or not from the first seed.
                certs: tls_certificates(settings, &settings.cluster_nodes[0])?,
            }
        };
        let target = Self {
            kind,
            response_timeout: settings.response_timeout,
            connect_timeout: settings.connect_timeout,
        };
        if let TargetKind::Cluster { nodes, certs } = &target.kind {
            // Checked now so that a bad seed fails at start, not at first use.
            target.cluster_client(nodes, certs.as_ref(), false)?;
        }
        Ok(target)
    }

    /// Whether this is a Redis Cluster.
    pub(crate) fn is_cluster(&self) -> bool {
        matches!(self.kind, TargetKind::Cluster { .. })
    }

    /// The command connection, lazy (connects on first use, never waits here).
    ///
    /// # Errors
    /// [`RedisError::Command`] when the connection cannot be configured.
    pub(crate) fn commands(&self) -> Result<Connection, RedisError> {
        match &self.kind {
            TargetKind::Single(clients) => {
                let config = self
                    .manager_config()
                    // Hundreds of concurrent requests share this connection.
                    .set_pipeline_buffer_size(4096);
                ConnectionManager::new_lazy_with_config(clients.commands.clone(), config)
                    .map(|c| Connection(Kind::Single(c)))
                    .map_err(RedisError::Command)
            }
            TargetKind::Cluster { nodes, certs } => {
                let client = self.cluster_client(nodes, certs.as_ref(), false)?;
                Ok(Connection(Kind::Cluster(
                    client.get_pending_async_connection_with_config(self.cluster_config()),
                )))
            }
        }
    }

    /// A push connection (RESP3) whose pushes, `Disconnection` notices included, go to
    /// `sender`; lazy like [`commands`](Self::commands). redis-rs reconnects it and restores
    /// its subscriptions (on a cluster, per node).
    ///
    /// # Errors
    /// As [`commands`](Self::commands).
    pub(crate) fn push(&self, sender: impl AsyncPushSender) -> Result<Connection, RedisError> {
        match &self.kind {
            TargetKind::Single(clients) => {
                let config = self
                    .manager_config()
                    .set_push_sender(sender)
                    .set_automatic_resubscription();
                ConnectionManager::new_lazy_with_config(clients.push.clone(), config)
                    .map(|c| Connection(Kind::Single(c)))
                    .map_err(RedisError::Command)
            }
            TargetKind::Cluster { nodes, certs } => {
                let client = self.cluster_client(nodes, certs.as_ref(), true)?;
                Ok(Connection(Kind::Cluster(
                    client.get_pending_async_connection_with_config(
                        self.cluster_config().set_push_sender(sender),
                    ),
                )))
            }
        }
    }

    fn manager_config(&self) -> ConnectionManagerConfig {
        ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(Some(self.response_timeout))
            // Few, quick retries: a request waits at most a fraction of a second on a dead
            // server; the watchdog keeps trying every second after that.
            .set_number_of_retries(2)
            .set_min_delay(Duration::from_millis(20))
            .set_max_delay(Duration::from_millis(200))
    }

    fn cluster_config(&self) -> ClusterConfig {
        ClusterConfig::new()
            .set_connection_timeout(self.connect_timeout)
            .set_response_timeout(self.response_timeout)
    }

    fn cluster_client(
        &self,
        nodes: &[String],
        certs: Option<&TlsCerts>,
        resp3: bool,
    ) -> Result<ClusterClient, RedisError> {
        let mut builder = ClusterClientBuilder::new(nodes.iter().map(String::as_str))
            .connection_timeout(self.connect_timeout)
            .response_timeout(self.response_timeout)
            // A request may follow a MOVED/ASK or retry a TRYAGAIN/CLUSTERDOWN, but never for
            // longer than the response timeout, as on one Redis: then it is a 503. This is the
            // only bound on a cluster request (`RedisHandle` adds no timer of its own).
            .overall_response_timeout(Some(self.response_timeout))
            .retries(3)
            .min_retry_wait(20)
            .max_retry_wait(200);
        if resp3 {
            builder = builder.use_protocol(redis::ProtocolVersion::RESP3);
        }
        if let Some(certs) = certs {
            #[cfg(feature = "tls")]
            {
                builder = builder.certs(certs.clone());
            }
            #[cfg(not(feature = "tls"))]
            match *certs {}
        }
        builder.build().map_err(RedisError::Command)
    }
}

/// The TLS material given in `settings` (roots, a client identity) for a connection to `url`:
/// only `rediss://` uses it (redis-rs would turn a `redis://` cluster into TLS if given some).
/// Without roots, the system's are used.
///
/// # Errors
/// [`RedisError::Command`] when some is given to a build without the `tls` feature.
fn tls_certificates(settings: &RedisSettings, url: &str) -> Result<Option<TlsCerts>, RedisError> {
    if settings.tls_root_certs.is_none() && settings.tls_client_identity.is_none() {
        return Ok(None);
    }
    if !url.starts_with("rediss://") {
        return Ok(None);
    }
    #[cfg(feature = "tls")]
    {
        Ok(Some(redis::TlsCertificates {
            client_tls: settings
                .tls_client_identity
                .as_ref()
                .map(|id| redis::ClientTlsConfig {
                    client_cert: id.cert_chain.clone(),
                    client_key: id.private_key.clone(),
                }),
            root_cert: settings.tls_root_certs.clone(),
        }))
    }
    #[cfg(not(feature = "tls"))]
    {
        Err(RedisError::Command(redis::RedisError::from((
            redis::ErrorKind::InvalidClientConfig,
            "TLS certificates given, but redkit is built without its `tls` feature",
        ))))
    }
}
