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
    /// The certificate a `rediss://` server that authenticates clients (`tls-auth-clients yes`,
    /// Redis's default once TLS is on) is shown, with its key; ignored for `redis://`. Needs the
    /// `tls` feature.
    pub tls_client_identity: Option<TlsClientIdentity>,
}

/// A client certificate chain and its private key, both PEM: mutual TLS with Redis.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TlsClientIdentity {
    /// The certificate chain, leaf first (PEM).
    pub cert_chain: Vec<u8>,
    /// The leaf certificate's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub private_key: Vec<u8>,
}

impl TlsClientIdentity {
    /// The identity of `cert_chain` and its `private_key` (both PEM; checked when connecting).
    pub fn new(cert_chain: Vec<u8>, private_key: Vec<u8>) -> Self {
        Self {
            cert_chain,
            private_key,
        }
    }
}

impl std::fmt::Debug for TlsClientIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsClientIdentity")
            .field(
                "cert_chain",
                &format_args!("{} bytes", self.cert_chain.len()),
            )
            .field("private_key", &"[redacted]")
            .finish()
    }
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
            tls_client_identity: None,
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
