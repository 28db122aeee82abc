//! How to reach Redis: the one set of settings every connection the layer opens is made with.

use std::time::Duration;

use crate::settings::ConfigError;

/// Default Redis response timeout, in milliseconds.
pub const DEFAULT_REDIS_TIMEOUT_MS: u64 = 1000;
/// Default Redis connect timeout, in milliseconds.
pub const DEFAULT_REDIS_CONNECT_TIMEOUT_MS: u64 = 1000;

/// How to reach Redis. Its `Debug` output shows the URLs with their passwords redacted. With the
/// `server` feature, the timeouts are also command-line options (each doc line is its `--help`);
/// the server fills the target and the certificates from its own options.
#[derive(Clone)]
#[cfg_attr(feature = "server", derive(clap::Args))]
#[non_exhaustive]
pub struct RedisSettings {
    /// The parsed connection target (one Redis); unused when `cluster_nodes` is not empty.
    #[cfg_attr(feature = "server", arg(skip))]
    pub url: String,
    /// Seed nodes of a Redis Cluster; empty for one Redis at `url`.
    #[cfg_attr(feature = "server", arg(skip))]
    pub cluster_nodes: Vec<String>,
    /// Redis response timeout, per command.
    #[cfg_attr(feature = "server", arg(long = "redis-timeout-ms", env = "REDIS_TIMEOUT_MS",
        value_name = "MS", value_parser = crate::settings::parse_millis,
        default_value = DEFAULT_REDIS_TIMEOUT_MS.to_string()))]
    pub response_timeout: Duration,
    /// Redis connect timeout.
    #[cfg_attr(feature = "server", arg(long = "redis-connect-timeout-ms",
        env = "REDIS_CONNECT_TIMEOUT_MS", value_name = "MS",
        value_parser = crate::settings::parse_millis,
        default_value = DEFAULT_REDIS_CONNECT_TIMEOUT_MS.to_string()))]
    pub connect_timeout: Duration,
    /// Root certificates (PEM) that a `rediss://` server's certificate must chain to, instead of
    /// the system's; ignored for `redis://` and `unix://`. Needs the `tls` feature (without it,
    /// `rediss://` and this are refused when the connections are set up).
    #[cfg_attr(feature = "server", arg(skip))]
    pub tls_root_certs: Option<Vec<u8>>,
    /// The certificate a `rediss://` server that authenticates clients (`tls-auth-clients yes`,
    /// Redis's default once TLS is on) is shown, with its key; ignored for `redis://`. Needs the
    /// `tls` feature.
    #[cfg_attr(feature = "server", arg(skip))]
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

impl std::fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSettings")
            .field("url", &redact_url(&self.url))
            .field(
                "cluster_nodes",
                &self
                    .cluster_nodes
                    .iter()
                    .map(|n| redact_url(n))
                    .collect::<Vec<_>>(),
            )
            .field("response_timeout", &self.response_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field(
                "tls_root_certs",
                &self
                    .tls_root_certs
                    .as_ref()
                    .map(|pem| format!("{} bytes", pem.len())),
            )
            .field("tls_client_identity", &self.tls_client_identity)
            .finish()
    }
}

/// `url` with any password replaced by `[redacted]`: the user-info password
/// (`redis://user:secret@host`, `redis://:secret@host`) and a `pass`/`password` query parameter
/// (`unix:///run/redis.sock?pass=secret`). What every log line, error and `Debug` output shows of
/// a Redis URL.
pub fn redact_url(url: &str) -> String {
    let mut out = url.to_owned();
    // Without a scheme (a malformed URL), the whole start is read as the authority.
    let rest = out.find("://").map_or(0, |i| i + 3);
    let authority_end = out[rest..]
        .find(['/', '?', '#'])
        .map_or(out.len(), |i| rest + i);
    // The last `@` of the authority ends the user info (a password may itself hold `@`).
    if let Some(at) = out[rest..authority_end].rfind('@').map(|i| rest + i)
        && let Some(colon) = out[rest..at].find(':').map(|i| rest + i)
    {
        out.replace_range(colon + 1..at, "[redacted]");
    }
    if let Some(query) = out.find('?') {
        let mut redacted = String::with_capacity(out.len());
        redacted.push_str(&out[..=query]);
        for (i, pair) in out[query + 1..].split('&').enumerate() {
            if i > 0 {
                redacted.push('&');
            }
            match pair.split_once('=') {
                Some((key, _)) if key == "pass" || key == "password" => {
                    redacted.push_str(key);
                    redacted.push_str("=[redacted]");
                }
                _ => redacted.push_str(pair),
            }
        }
        out = redacted;
    }
    out
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

    /// Whether the target is reached over TLS (`rediss://`).
    pub fn is_tls(&self) -> bool {
        self.url.starts_with("rediss://")
            || self
                .cluster_nodes
                .iter()
                .any(|n| n.starts_with("rediss://"))
    }

    /// Checks the settings: one target (a URL or cluster seeds, not both) that redis-rs can
    /// parse, seeds that are all `redis://` or all `rediss://`, and timeouts of at least 1 ms.
    ///
    /// # Errors
    /// The first bad value, in one line naming its command-line option; URLs are shown with
    /// their passwords redacted.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !self.cluster_nodes.is_empty() && !self.url.is_empty() {
            return Err(ConfigError::new(
                "--redis-url/REDIS_URL and --redis-cluster-nodes/REDIS_CLUSTER_NODES exclude each other: give one",
            ));
        }
        for node in &self.cluster_nodes {
            let problem = if node.starts_with("redis://") || node.starts_with("rediss://") {
                redis::Client::open(node.as_str())
                    .err()
                    .map(|e| e.detail().unwrap_or("unparsable URL").to_owned())
            } else {
                Some("expected redis://HOST:PORT or rediss://HOST:PORT".to_owned())
            };
            if let Some(problem) = problem {
                return Err(ConfigError(format!(
                    "invalid --redis-cluster-nodes/REDIS_CLUSTER_NODES entry {:?}: {problem}",
                    redact_url(node)
                )));
            }
        }
        let tls = |n: &String| n.starts_with("rediss://");
        if self.cluster_nodes.iter().any(tls) && !self.cluster_nodes.iter().all(tls) {
            return Err(ConfigError::new(
                "--redis-cluster-nodes/REDIS_CLUSTER_NODES mixes redis:// and rediss:// seeds: a cluster is all TLS or none",
            ));
        }
        if self.cluster_nodes.is_empty() {
            redis::Client::open(self.url.as_str()).map_err(|e| {
                ConfigError(format!(
                    "invalid --redis-url/REDIS_URL: {}",
                    e.detail().unwrap_or("unparsable URL")
                ))
            })?;
        }
        for (name, value) in [
            ("--redis-timeout-ms/REDIS_TIMEOUT_MS", self.response_timeout),
            (
                "--redis-connect-timeout-ms/REDIS_CONNECT_TIMEOUT_MS",
                self.connect_timeout,
            ),
        ] {
            if value.is_zero() {
                return Err(ConfigError(format!("{name} must be at least 1")));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `validate()` takes one parsable target with timeouts of at least 1 ms, and names the
    /// option of the first bad value without showing a password.
    #[test]
    fn validate_names_the_first_bad_value() {
        assert_eq!(
            RedisSettings::new("redis://127.0.0.1:6379").validate(),
            Ok(())
        );
        assert_eq!(
            RedisSettings::cluster(["redis://h:1", "redis://h:2"]).validate(),
            Ok(())
        );
        let mut both = RedisSettings::cluster(["redis://h:1"]);
        both.url = "redis://h:2".into();
        let mut zero = RedisSettings::new("redis://h:1");
        zero.response_timeout = Duration::ZERO;
        for (settings, needle) in [
            (
                RedisSettings::new("http://x"),
                "invalid --redis-url/REDIS_URL",
            ),
            (both, "exclude each other"),
            (
                RedisSettings::cluster(["redis://:hunter2@h:1", "nope"]),
                "entry \"nope\": expected redis://HOST:PORT",
            ),
            (
                zero,
                "--redis-timeout-ms/REDIS_TIMEOUT_MS must be at least 1",
            ),
        ] {
            let err = settings.validate().unwrap_err();
            assert!(err.contains(needle), "{err}");
            assert!(!err.contains("hunter2"), "{err}");
        }
    }

    /// Passwords leave every form of Redis URL; the rest of the URL stays readable.
    #[test]
    fn urls_are_redacted() {
        for (url, want) in [
            ("redis://127.0.0.1:6379", "redis://127.0.0.1:6379"),
            ("redis://:hunter2@h:6379/0", "redis://:[redacted]@h:6379/0"),
            (
                "rediss://alice:hun@ter2@h:1",
                "rediss://alice:[redacted]@h:1",
            ),
            ("redis://alice@h:1", "redis://alice@h:1"),
            (
                "unix:///tmp/r.sock?db=1&pass=hunter2",
                "unix:///tmp/r.sock?db=1&pass=[redacted]",
            ),
            (
                "redis://h:1/?password=hunter2",
                "redis://h:1/?password=[redacted]",
            ),
            ("alice:hunter2@h:1", "alice:[redacted]@h:1"),
        ] {
            assert_eq!(redact_url(url), want, "{url}");
        }
        let mut settings = RedisSettings::cluster(["redis://:hunter2@h:7000"]);
        settings.url = "redis://u:hunter2@h:1".into();
        let debug = format!("{settings:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(debug.contains("redis://:[redacted]@h:7000"), "{debug}");
    }
}
