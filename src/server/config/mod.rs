//! Configuration of the `redkit` binary: one [`Config`] struct, filled from the command line and
//! the environment by clap ([`ServeArgs`], in `args.rs`).
//!
//! Top layer: every feature owns its settings struct and its `DEFAULT_*` constants in its own
//! `config.rs`, in one style (see [`crate::settings`]); with the `server` feature each struct
//! derives `clap::Args`, and [`ServeArgs`] flattens them in. This module only sets what several
//! features share (the key prefix), has each feature `validate()` its own, and keeps the server's
//! own settings (listen address, workers, body limit, shutdown). [`Config::from_args`] reports
//! the first problem as one human-readable line.

mod args;

use std::{net::SocketAddr, time::Duration};

pub use args::{Cli, Command, LogFormat, ServeArgs, UserAddArgs, UserCommand};

pub use crate::{
    connection::{RedisSettings, TlsClientIdentity},
    db::{DatabaseLocation, parse_database_url},
    settings::ConfigError,
};

/// Default listen address.
pub const DEFAULT_BIND: &str = "127.0.0.1:8080";
/// Default request body limit: 1 MiB.
pub const DEFAULT_BODY_LIMIT: usize = 1024 * 1024;
/// Default graceful-shutdown deadline for in-flight requests, in seconds.
pub const DEFAULT_SHUTDOWN_TIMEOUT_SECS: u64 = 30;
/// Default write timeout, in seconds: how long a connection's sent data may stay unacknowledged
/// (a peer that stopped reading) before the connection is closed.
pub const DEFAULT_WRITE_TIMEOUT_SECS: u64 = 60;

impl Default for Config {
    /// The documented defaults (memory backend, `sqlite://redkit.db`), as `redkit` with no options.
    fn default() -> Self {
        // unwrap: the defaults are valid by construction (checked by the `defaults_are_valid` test).
        Self::from_args(&ServeArgs::default()).unwrap()
    }
}

/// Checked configuration of a redkit instance, built from [`ServeArgs`] or by hand.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// Listen address.
    pub bind: SocketAddr,
    /// Redis connection, `None` for the memory backend.
    pub redis: Option<RedisSettings>,
    /// Catalog database.
    pub database: DatabaseLocation,
    /// HTTP worker threads.
    pub workers: usize,
    /// Log output format.
    pub log_format: LogFormat,
    /// Cache settings (with the `/cache` API's TTLs and value limit).
    pub cache: crate::cache::CacheConfig,
    /// Catalog settings (the product TTLs).
    pub catalog: crate::catalog::CatalogConfig,
    /// Largest accepted request body, in bytes.
    pub body_limit: usize,
    /// Whether `GET /health` lists a cluster's nodes.
    pub health_nodes: bool,
    /// Graceful-shutdown deadline.
    pub shutdown_timeout: Duration,
    /// Longest a connection's sent data may stay unacknowledged before the connection is closed
    /// (`None`: no limit). Applied by [`run`](crate::server::run) on Linux (`TCP_USER_TIMEOUT`).
    pub write_timeout: Option<Duration>,
    /// Rate-limit policies, trusted proxies and clock.
    pub rate_limit: crate::ratelimit::RateLimitConfig,
    /// Users, tokens and sessions.
    pub auth: crate::auth::AuthConfig,
    /// Live events settings.
    pub events: crate::events::EventsConfig,
}

impl Config {
    /// Checks `args` and builds a [`Config`].
    ///
    /// # Errors
    /// The first invalid value, described in one human-readable line.
    pub fn from_args(args: &ServeArgs) -> Result<Self, ConfigError> {
        let bind = args.bind.parse::<SocketAddr>().map_err(|_| {
            ConfigError(format!(
                "invalid --bind/BIND {:?}: expected HOST:PORT such as 127.0.0.1:8080",
                args.bind
            ))
        })?;
        let redis = redis_settings(args)?;
        let database = parse_database_url(&args.database_url)?;
        if args.workers == Some(0) {
            return Err(ConfigError::new("--workers/WORKERS must be at least 1"));
        }
        if args.body_limit == 0 {
            return Err(ConfigError::new(
                "--body-limit/BODY_LIMIT must be at least 1 byte",
            ));
        }
        let mut cache = args.cache.clone();
        cache.key_prefix.clone_from(&args.key_prefix);
        cache.validate()?;
        args.catalog.validate()?;
        let auth = auth_config(args)?;
        let mut events = args.events.clone();
        events.key_prefix.clone_from(&args.key_prefix);
        events.validate()?;
        let mut rate_limit = args.limits.clone();
        rate_limit.apply_specs(&args.rate_limit, &args.trusted_proxies)?;
        rate_limit.key_prefix.clone_from(&args.key_prefix);
        rate_limit.validate()?;
        Ok(Self {
            bind,
            redis,
            database,
            workers: args.workers.unwrap_or_else(|| {
                std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get)
            }),
            log_format: args.log_format,
            cache,
            catalog: args.catalog.clone(),
            body_limit: args.body_limit,
            health_nodes: args.health_nodes,
            shutdown_timeout: Duration::from_secs(args.shutdown_timeout),
            write_timeout: args.write_timeout,
            rate_limit,
            auth,
            events,
        })
    }

    /// The defaults, with an in-memory database and port 0: a starting point for tests.
    pub fn for_tests() -> Self {
        Self {
            database: DatabaseLocation::Memory,
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            ..Self::default()
        }
    }

    /// Name of the backend in use: `"redis"`, `"redis-cluster"` or `"memory"`.
    pub fn backend_name(&self) -> &'static str {
        match &self.redis {
            Some(redis) if !redis.cluster_nodes.is_empty() => "redis-cluster",
            Some(_) => "redis",
            None => "memory",
        }
    }
}

/// The Redis target of `--redis-url` or `--redis-cluster-nodes` (`None`: neither, the memory
/// backend), checked, with its timeouts and certificates.
fn redis_settings(args: &ServeArgs) -> Result<Option<RedisSettings>, ConfigError> {
    let url = args.redis_url.as_deref().map(str::trim).unwrap_or_default();
    let mut redis = RedisSettings {
        url: url.to_owned(),
        cluster_nodes: args
            .redis_cluster_nodes
            .as_deref()
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(str::to_owned)
            .collect(),
        ..args.redis.clone()
    };
    if redis.url.is_empty() && redis.cluster_nodes.is_empty() {
        return Ok(None);
    }
    redis.validate()?;
    let tls = redis.is_tls();
    redis.tls_root_certs = args
        .redis_ca_cert
        .as_deref()
        .map(|path| read_ca_cert(path, tls))
        .transpose()?;
    redis.tls_client_identity = read_client_identity(args, tls)?;
    Ok(Some(redis))
}

/// Reads `--redis-ca-cert`: a PEM file holding at least one certificate, for a `rediss://`
/// target (`tls`).
fn read_ca_cert(path: &std::path::Path, tls: bool) -> Result<Vec<u8>, ConfigError> {
    if !tls {
        return Err(ConfigError::new(
            "--redis-ca-cert/REDIS_CA_CERT needs a rediss:// --redis-url or --redis-cluster-nodes",
        ));
    }
    read_pem_certs(path, "--redis-ca-cert/REDIS_CA_CERT")
}

/// Reads `--redis-client-cert` and `--redis-client-key` (both or neither) for a `rediss://`
/// target (`tls`): at least one certificate, and a private key.
fn read_client_identity(
    args: &ServeArgs,
    tls: bool,
) -> Result<Option<TlsClientIdentity>, ConfigError> {
    use rustls::pki_types::{PrivateKeyDer, pem::PemObject};
    let (cert, key) = match (&args.redis_client_cert, &args.redis_client_key) {
        (None, None) => return Ok(None),
        (Some(cert), Some(key)) => (cert, key),
        _ => {
            return Err(ConfigError::new(
                "--redis-client-cert/REDIS_CLIENT_CERT and --redis-client-key/REDIS_CLIENT_KEY go together: give both",
            ));
        }
    };
    if !tls {
        return Err(ConfigError::new(
            "--redis-client-cert/REDIS_CLIENT_CERT needs a rediss:// --redis-url or --redis-cluster-nodes",
        ));
    }
    let cert_chain = read_pem_certs(cert, "--redis-client-cert/REDIS_CLIENT_CERT")?;
    let option = "--redis-client-key/REDIS_CLIENT_KEY";
    let private_key = read_file(key, option)?;
    if PrivateKeyDer::from_pem_slice(&private_key).is_err() {
        return Err(ConfigError(format!(
            "{option} {}: no PEM private key in it",
            key.display()
        )));
    }
    Ok(Some(TlsClientIdentity::new(cert_chain, private_key)))
}

/// Reads the file `option` names: PEM holding at least one certificate.
fn read_pem_certs(path: &std::path::Path, option: &str) -> Result<Vec<u8>, ConfigError> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let pem = read_file(path, option)?;
    match CertificateDer::pem_slice_iter(&pem).collect::<Result<Vec<_>, _>>() {
        Ok(certs) if !certs.is_empty() => Ok(pem),
        Ok(_) => Err(ConfigError(format!(
            "{option} {}: no PEM certificate in it",
            path.display()
        ))),
        Err(e) => Err(ConfigError(format!(
            "{option} {}: not PEM certificates: {e}",
            path.display()
        ))),
    }
}

fn read_file(path: &std::path::Path, option: &str) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path)
        .map_err(|e| ConfigError(format!("cannot read {option} {}: {e}", path.display())))
}

fn auth_config(args: &ServeArgs) -> Result<crate::auth::AuthConfig, ConfigError> {
    use crate::auth::{AuthConfig, SecretKey};

    let secret = match (&args.secret_key, &args.secret_key_file) {
        (Some(key), _) => {
            SecretKey::given(key.as_bytes()).map_err(|e| ConfigError(format!("SECRET_KEY: {e}")))?
        }
        (None, Some(path)) => {
            let mut bytes = std::fs::read(path).map_err(|e| {
                ConfigError(format!(
                    "cannot read --secret-key-file {}: {e}",
                    path.display()
                ))
            })?;
            while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                bytes.pop();
            }
            SecretKey::given(&bytes).map_err(|e| ConfigError(format!("--secret-key-file: {e}")))?
        }
        (None, None) => SecretKey::generate(),
    };
    let mut auth = AuthConfig {
        secret,
        ..args.auth.clone()
    };
    auth.audience.clone_from(&auth.issuer);
    auth.key_prefix.clone_from(&args.key_prefix);
    auth.validate()?;
    Ok(auth)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    /// The defaults parse into a valid configuration.
    #[test]
    fn defaults_are_valid() {
        let config = Config::from_args(&ServeArgs::default()).unwrap();
        assert_eq!(config.bind, "127.0.0.1:8080".parse().unwrap());
        assert!(config.redis.is_none());
        assert_eq!(config.database, DatabaseLocation::File("redkit.db".into()));
        assert_eq!(
            config.cache.l1_max_bytes,
            crate::cache::DEFAULT_L1_MAX_BYTES
        );
        assert_eq!(config.write_timeout, Some(Duration::from_secs(60)));
        let off = ServeArgs {
            write_timeout: None,
            ..ServeArgs::default()
        };
        assert_eq!(Config::from_args(&off).unwrap().write_timeout, None);
    }

    /// `ServeArgs::default()` agrees with what clap builds from an empty command line.
    #[test]
    fn default_args_match_clap_defaults() {
        // The CI environment sets none of the option variables.
        let from_clap = Cli::try_parse_from(["redkit"]).unwrap().serve;
        assert_eq!(
            format!("{from_clap:?}"),
            format!("{:?}", ServeArgs::default())
        );
    }

    /// Each kind of bad value is rejected with a message naming the option.
    #[test]
    fn bad_values_are_named() {
        type Mutate = fn(&mut ServeArgs);
        let cases: [(&str, Mutate); 17] = [
            ("--access-token-ttl", |a| {
                a.auth.access_ttl = a.auth.refresh_ttl + Duration::from_secs(1);
            }),
            ("--bind", |a| a.bind = "nope".into()),
            ("REDIS_URL", |a| a.redis_url = Some("http://x".into())),
            ("REDIS_CLUSTER_NODES", |a| {
                a.redis_cluster_nodes = Some("redis://127.0.0.1:7000,http://x".into());
            }),
            ("exclude each other", |a| {
                a.redis_url = Some("redis://127.0.0.1:6379".into());
                a.redis_cluster_nodes = Some("redis://127.0.0.1:7000".into());
            }),
            ("mixes redis:// and rediss://", |a| {
                a.redis_cluster_nodes = Some("rediss://h:7000,redis://h:7001".into());
            }),
            ("needs a rediss://", |a| {
                a.redis_url = Some("redis://127.0.0.1:6379".into());
                a.redis_ca_cert = Some(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml").into());
            }),
            ("cannot read --redis-ca-cert", |a| {
                a.redis_cluster_nodes = Some("rediss://h:7000".into());
                a.redis_ca_cert = Some("/nonexistent/ca.pem".into());
            }),
            ("no PEM certificate", |a| {
                a.redis_url = Some("rediss://127.0.0.1:6380".into());
                a.redis_ca_cert = Some(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml").into());
            }),
            ("go together: give both", |a| {
                a.redis_url = Some("rediss://127.0.0.1:6380".into());
                a.redis_client_key = Some("/nonexistent/client.key".into());
            }),
            (
                "--redis-client-cert/REDIS_CLIENT_CERT needs a rediss://",
                |a| {
                    a.redis_url = Some("redis://127.0.0.1:6379".into());
                    a.redis_client_cert = Some("/nonexistent/client.pem".into());
                    a.redis_client_key = Some("/nonexistent/client.key".into());
                },
            ),
            ("cannot read --redis-client-cert", |a| {
                a.redis_cluster_nodes = Some("rediss://h:7000".into());
                a.redis_client_cert = Some("/nonexistent/client.pem".into());
                a.redis_client_key = Some("/nonexistent/client.key".into());
            }),
            ("DATABASE_URL", |a| a.database_url = "postgres://x".into()),
            ("--workers", |a| a.workers = Some(0)),
            ("--cache-ttl", |a| a.cache.default_ttl = Duration::ZERO),
            ("--rate-limit", |a| {
                a.rate_limit = vec!["default=0/60s".into()]
            }),
            ("--trusted-proxies", |a| {
                a.trusted_proxies = vec!["10.0.0.0/40".into()]
            }),
        ];
        for (needle, mutate) in cases {
            let mut args = ServeArgs::default();
            mutate(&mut args);
            let err = Config::from_args(&args).unwrap_err().to_string();
            assert!(err.contains(needle), "{err:?} should name {needle}");
            assert!(!err.contains('\n'), "{err:?} should be one line");
        }
    }

    /// Comma-separated cluster seeds make a cluster backend; blanks around them are ignored.
    #[test]
    fn cluster_nodes_are_parsed() {
        let args = ServeArgs {
            redis_cluster_nodes: Some(" redis://127.0.0.1:7000, redis://h:7001 ,".into()),
            ..ServeArgs::default()
        };
        let config = Config::from_args(&args).unwrap();
        let redis = config.redis.as_ref().unwrap();
        assert_eq!(
            redis.cluster_nodes,
            ["redis://127.0.0.1:7000", "redis://h:7001"]
        );
        assert_eq!(config.backend_name(), "redis-cluster");
    }

    /// `rediss://` is accepted for one Redis and for cluster seeds; without `--redis-ca-cert`
    /// the system's roots are used (no roots in the settings).
    #[test]
    fn rediss_urls_are_accepted() {
        for args in [
            ServeArgs {
                redis_url: Some("rediss://127.0.0.1:6380".into()),
                ..ServeArgs::default()
            },
            ServeArgs {
                redis_cluster_nodes: Some("rediss://h:7000,rediss://h:7001".into()),
                ..ServeArgs::default()
            },
        ] {
            let config = Config::from_args(&args).unwrap();
            assert_eq!(config.redis.unwrap().tls_root_certs, None);
        }
    }
}
