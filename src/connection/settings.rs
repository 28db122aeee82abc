//! How to reach Redis: the one set of settings every connection the layer opens is made with.

use std::time::Duration;

/// Default Redis response timeout, in milliseconds.
pub const DEFAULT_REDIS_TIMEOUT_MS: u64 = 1000;
/// Default Redis connect timeout, in milliseconds.
pub const DEFAULT_REDIS_CONNECT_TIMEOUT_MS: u64 = 1000;

/// How to reach Redis.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RedisSettings {
    /// The parsed connection target (one Redis); unused when `cluster_nodes` is not empty.
    pub url: String,
    /// Seed nodes of a Redis Cluster; empty for one Redis at `url`.
    pub cluster_nodes: Vec<String>,
    /// Per-command response timeout.
    pub response_timeout: Duration,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Root certificates (PEM) that a `rediss://` server's certificate must chain to, instead of
    /// the system's; ignored for `redis://` and `unix://`. Needs the `tls` feature (without it,
    /// `rediss://` and this are refused when the connections are set up).
    pub tls_root_certs: Option<Vec<u8>>,
}

impl RedisSettings {
    /// Settings for `url` with the default timeouts.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            cluster_nodes: Vec::new(),
            response_timeout: Duration::from_millis(DEFAULT_REDIS_TIMEOUT_MS),
            connect_timeout: Duration::from_millis(DEFAULT_REDIS_CONNECT_TIMEOUT_MS),
            tls_root_certs: None,
        }
    }

    /// Settings for a Redis Cluster reached through `nodes` (seed URLs), default timeouts.
    pub fn cluster<S: Into<String>>(nodes: impl IntoIterator<Item = S>) -> Self {
        Self {
            cluster_nodes: nodes.into_iter().map(Into::into).collect(),
            ..Self::new("")
        }
    }
}
