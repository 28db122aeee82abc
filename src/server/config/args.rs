//! The command line of the `redkit` binary: the server's own options, and each feature's
//! settings struct flattened in (their fields carry their flags, variables and defaults).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use super::{
    DEFAULT_BIND, DEFAULT_BODY_LIMIT, DEFAULT_SHUTDOWN_TIMEOUT_SECS, DEFAULT_WRITE_TIMEOUT_SECS,
};
use crate::{
    auth::AuthConfig,
    cache::CacheConfig,
    catalog::CatalogConfig,
    connection::RedisSettings,
    db::DEFAULT_DATABASE_URL,
    events::EventsConfig,
    ratelimit::RateLimitConfig,
    settings::{DEFAULT_KEY_PREFIX, parse_secs_or_off},
};

/// The command line of the `redkit` binary.
#[derive(Debug, Parser)]
#[command(
    name = "redkit",
    version,
    about = "Redis-backed caching, sessions, rate limiting and live events for actix-web",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    /// What to do; `serve` when omitted.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Options of `serve`, accepted without the subcommand too.
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// Subcommands of the `redkit` binary.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP server (the default).
    Serve(Box<ServeArgs>),
    /// Manage user accounts.
    #[command(subcommand)]
    User(UserCommand),
}

/// `redkit user ...` subcommands.
#[derive(Debug, Subcommand)]
#[non_exhaustive]
pub enum UserCommand {
    /// Create a user, reading the password from the first line of standard input.
    Add(UserAddArgs),
}

/// Options of `redkit user add`.
#[derive(Debug, Clone, Args)]
pub struct UserAddArgs {
    /// Username: 3 to 32 characters of `a-z 0-9 _ . -`.
    #[arg(long)]
    pub username: String,
    /// Email address.
    #[arg(long)]
    pub email: String,
    /// Database URL: `sqlite://PATH`.
    #[arg(long, env = "DATABASE_URL", default_value = DEFAULT_DATABASE_URL, value_name = "URL")]
    pub database_url: String,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
#[non_exhaustive]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Options of `redkit serve`. Each has an environment-variable fallback.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "BIND", default_value = DEFAULT_BIND, value_name = "ADDR")]
    pub bind: String,
    /// Redis URL (`redis://`, `rediss://` for TLS, `unix://`). Unset: in-process memory backend,
    /// single-instance only.
    #[arg(long, env = "REDIS_URL", hide_env_values = true, value_name = "URL")]
    pub redis_url: Option<String>,
    /// Redis Cluster seed nodes, comma-separated (`redis://host:port,redis://host:port`, or all
    /// `rediss://` for TLS). Excludes `--redis-url`.
    #[arg(
        long,
        env = "REDIS_CLUSTER_NODES",
        hide_env_values = true,
        value_name = "URLS"
    )]
    pub redis_cluster_nodes: Option<String>,
    /// PEM file of the root certificates a `rediss://` server's certificate must chain to
    /// (default: the system's roots). Needs a `rediss://` URL or seeds.
    #[arg(long, env = "REDIS_CA_CERT", value_name = "FILE")]
    pub redis_ca_cert: Option<PathBuf>,
    /// PEM file of the client certificate (chain) shown to a `rediss://` server that
    /// authenticates clients (`tls-auth-clients yes`). Goes with `--redis-client-key`.
    #[arg(long, env = "REDIS_CLIENT_CERT", value_name = "FILE")]
    pub redis_client_cert: Option<PathBuf>,
    /// PEM file of the private key of `--redis-client-cert`.
    #[arg(long, env = "REDIS_CLIENT_KEY", value_name = "FILE")]
    pub redis_client_key: Option<PathBuf>,
    /// Database URL: `sqlite://PATH` or `sqlite::memory:`.
    #[arg(long, env = "DATABASE_URL", default_value = DEFAULT_DATABASE_URL, value_name = "URL")]
    pub database_url: String,
    /// HTTP worker threads (default: one per CPU).
    #[arg(long, env = "WORKERS", value_name = "N")]
    pub workers: Option<usize>,
    /// Log format; the filter comes from `RUST_LOG` (default `info`).
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Prefix of every Redis key redkit writes (every feature's).
    #[arg(long, env = "KEY_PREFIX", default_value = DEFAULT_KEY_PREFIX, value_name = "PREFIX")]
    pub key_prefix: String,
    /// Largest accepted request body, in bytes.
    #[arg(long, env = "BODY_LIMIT", default_value_t = DEFAULT_BODY_LIMIT, value_name = "BYTES")]
    pub body_limit: usize,
    /// Seconds to let in-flight requests finish on SIGINT/SIGTERM.
    #[arg(long, env = "SHUTDOWN_TIMEOUT", default_value_t = DEFAULT_SHUTDOWN_TIMEOUT_SECS, value_name = "SECS")]
    pub shutdown_timeout: u64,
    /// Seconds a connection's sent data may stay unacknowledged (a client that stopped reading,
    /// such as a stalled SSE subscriber) before the connection is closed; 0 turns it off.
    /// Linux only (`TCP_USER_TIMEOUT`); ignored elsewhere.
    // Spelled out so that clap takes the whole `Option` from the parser (0 is `None`).
    #[arg(long, env = "WRITE_TIMEOUT", value_name = "SECS", value_parser = parse_secs_or_off,
        default_value = DEFAULT_WRITE_TIMEOUT_SECS.to_string())]
    pub write_timeout: ::std::option::Option<std::time::Duration>,
    /// A rate-limit policy: `default=100/60s`, `default=off` or `METHOD PATH=COUNT/WINDOW`, with
    /// optional `,algorithm=log|counter|gcra`, `,shadow`, `,fail_closed`. Repeatable; the env var
    /// separates specs with `;`.
    #[arg(
        long = "rate-limit",
        env = "RATE_LIMITS",
        value_delimiter = ';',
        value_name = "SPEC"
    )]
    pub rate_limit: Vec<String>,
    /// Proxies (CIDRs, comma-separated) whose `X-Forwarded-For`/`Forwarded` are believed.
    #[arg(
        long,
        env = "TRUSTED_PROXIES",
        value_delimiter = ',',
        value_name = "CIDRS"
    )]
    pub trusted_proxies: Vec<String>,
    /// HS256 token secret (at least 32 bytes). Unset: a random key per process. Warning: a
    /// command-line value shows in process listings (`ps`, `/proc/<pid>/cmdline`) to every local
    /// user; prefer `--secret-key-file` or the `SECRET_KEY` variable.
    #[arg(long, env = "SECRET_KEY", hide_env_values = true, value_name = "KEY")]
    pub secret_key: Option<String>,
    /// File holding the token secret (its bytes, a trailing newline removed).
    #[arg(
        long,
        env = "SECRET_KEY_FILE",
        value_name = "PATH",
        conflicts_with = "secret_key"
    )]
    pub secret_key_file: Option<PathBuf>,
    /// List a Redis Cluster's nodes (internal addresses, roles, states) in `GET /health`; off,
    /// an unauthenticated caller learns only whether Redis answers.
    #[arg(long, env = "HEALTH_NODES")]
    pub health_nodes: bool,
    /// Redis timeouts (the target and certificates are the options above).
    #[command(flatten)]
    pub redis: RedisSettings,
    /// The cache's options.
    #[command(flatten)]
    pub cache: CacheConfig,
    /// The catalog's options.
    #[command(flatten)]
    pub catalog: CatalogConfig,
    /// The limiter's options besides `--rate-limit` and `--trusted-proxies`.
    #[command(flatten)]
    pub limits: RateLimitConfig,
    /// Auth's options besides the secret.
    #[command(flatten)]
    pub auth: AuthConfig,
    /// Live events' options.
    #[command(flatten)]
    pub events: EventsConfig,
}

impl Default for ServeArgs {
    /// The documented defaults, without reading the environment.
    fn default() -> Self {
        Self {
            bind: DEFAULT_BIND.to_owned(),
            redis_url: None,
            redis_cluster_nodes: None,
            redis_ca_cert: None,
            redis_client_cert: None,
            redis_client_key: None,
            database_url: DEFAULT_DATABASE_URL.to_owned(),
            workers: None,
            log_format: LogFormat::Text,
            key_prefix: DEFAULT_KEY_PREFIX.to_owned(),
            body_limit: DEFAULT_BODY_LIMIT,
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT_SECS,
            write_timeout: Some(std::time::Duration::from_secs(DEFAULT_WRITE_TIMEOUT_SECS)),
            rate_limit: Vec::new(),
            trusted_proxies: Vec::new(),
            secret_key: None,
            secret_key_file: None,
            health_nodes: false,
            redis: RedisSettings::new(""),
            cache: CacheConfig::default(),
            catalog: CatalogConfig::default(),
            limits: RateLimitConfig::default(),
            auth: AuthConfig::default(),
            events: EventsConfig::default(),
        }
    }
}
