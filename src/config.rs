//! Configuration: one [`Config`] struct, filled from the command line and the environment by clap.
//!
//! Every default lives in a `DEFAULT_*` constant here, so the `--help` text, the README table and
//! the library builders agree. [`Config::from_args`] turns the raw strings into checked values and
//! reports the first problem as one human-readable line.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Default listen address.
pub const DEFAULT_BIND: &str = "127.0.0.1:8080";
/// Default database location (SQLite file in the working directory).
pub const DEFAULT_DATABASE_URL: &str = "sqlite://redkit.db";
/// Default prefix of every Redis key redkit writes.
pub const DEFAULT_KEY_PREFIX: &str = "redkit:";
/// Default L1 (in-process) cache budget: 64 MiB.
pub const DEFAULT_L1_MAX_BYTES: u64 = 64 * 1024 * 1024;
/// Default upper bound on an L1 entry's lifetime, in seconds.
pub const DEFAULT_L1_TTL_SECS: u64 = 60;
/// Default TTL of `PUT /cache/{key}` without `?ttl=`, in seconds.
pub const DEFAULT_CACHE_TTL_SECS: u64 = 300;
/// Largest TTL accepted by `PUT /cache/{key}?ttl=`, in seconds (30 days).
pub const DEFAULT_CACHE_MAX_TTL_SECS: u64 = 30 * 24 * 3600;
/// Default TTL of negative ("absent") entries written by `remember`, in seconds.
pub const DEFAULT_NEGATIVE_TTL_SECS: u64 = 30;
/// Default TTL of a cached product, in seconds.
pub const DEFAULT_PRODUCT_TTL_SECS: u64 = 300;
/// Default TTL of the cached product list, in seconds.
pub const DEFAULT_PRODUCT_LIST_TTL_SECS: u64 = 600;
/// Default Redis response timeout, in milliseconds.
pub const DEFAULT_REDIS_TIMEOUT_MS: u64 = 1000;
/// Default Redis connect timeout, in milliseconds.
pub const DEFAULT_REDIS_CONNECT_TIMEOUT_MS: u64 = 1000;
/// Default request body limit: 1 MiB.
pub const DEFAULT_BODY_LIMIT: usize = 1024 * 1024;
/// Default graceful-shutdown deadline for in-flight requests, in seconds.
pub const DEFAULT_SHUTDOWN_TIMEOUT_SECS: u64 = 30;
/// Default write timeout, in seconds: how long a connection's sent data may stay unacknowledged
/// (a peer that stopped reading) before the connection is closed.
pub const DEFAULT_WRITE_TIMEOUT_SECS: u64 = 60;
/// Default number of events kept per channel's history.
pub const DEFAULT_EVENTS_HISTORY_LEN: usize = 1000;
/// Default TTL of a channel's history after its last publish, in seconds (one day).
pub const DEFAULT_EVENTS_TTL_SECS: u64 = 24 * 3600;
/// Default per-client queue of events before a slow consumer is cut.
pub const DEFAULT_EVENTS_QUEUE: usize = 256;
/// Default interval of SSE heartbeat comments, in milliseconds.
pub const DEFAULT_EVENTS_HEARTBEAT_MS: u64 = 15_000;
/// Default SSE `retry:` hint, in milliseconds.
pub const DEFAULT_EVENTS_RETRY_MS: u64 = 3_000;
/// Largest event data `POST /events/{channel}` accepts, in bytes of compact JSON (64 KiB).
pub const DEFAULT_MAX_EVENT_BYTES: usize = 64 * 1024;
/// Most events replayed to one client resuming with `Last-Event-ID`.
pub const DEFAULT_EVENTS_MAX_REPLAY: usize = 100;
/// Most SSE connections open at once per process.
pub const DEFAULT_SSE_MAX_CONNECTIONS: usize = 10_000;
/// Most SSE connections open at once from one client address (IPv6: one /64 by default).
pub const DEFAULT_SSE_MAX_PER_IP: usize = 32;
/// Largest value `PUT /cache/{key}` accepts, in bytes (64 KiB).
pub const DEFAULT_CACHE_MAX_VALUE_BYTES: usize = 64 * 1024;

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
    /// Redis URL (`redis://`, `rediss://`, `unix://`). Unset: in-process memory backend,
    /// single-instance only.
    #[arg(long, env = "REDIS_URL", value_name = "URL")]
    pub redis_url: Option<String>,
    /// Redis Cluster seed nodes, comma-separated (`redis://host:port,rediss://host:port`).
    /// Excludes `--redis-url`.
    #[arg(long, env = "REDIS_CLUSTER_NODES", value_name = "URLS")]
    pub redis_cluster_nodes: Option<String>,
    /// Database URL: `sqlite://PATH` or `sqlite::memory:`.
    #[arg(long, env = "DATABASE_URL", default_value = DEFAULT_DATABASE_URL, value_name = "URL")]
    pub database_url: String,
    /// HTTP worker threads (default: one per CPU).
    #[arg(long, env = "WORKERS", value_name = "N")]
    pub workers: Option<usize>,
    /// Log format; the filter comes from `RUST_LOG` (default `info`).
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Prefix of every Redis key redkit writes.
    #[arg(long, env = "KEY_PREFIX", default_value = DEFAULT_KEY_PREFIX, value_name = "PREFIX")]
    pub key_prefix: String,
    /// L1 (in-process) cache budget in bytes; 0 turns L1 off.
    #[arg(long, env = "L1_MAX_BYTES", default_value_t = DEFAULT_L1_MAX_BYTES, value_name = "BYTES")]
    pub l1_max_bytes: u64,
    /// Longest an entry may live in L1, in seconds (never longer than its L2 TTL).
    #[arg(long, env = "L1_TTL", default_value_t = DEFAULT_L1_TTL_SECS, value_name = "SECS")]
    pub l1_ttl: u64,
    /// TTL of `PUT /cache/{key}` without `?ttl=`, in seconds.
    #[arg(long, env = "CACHE_TTL", default_value_t = DEFAULT_CACHE_TTL_SECS, value_name = "SECS")]
    pub cache_ttl: u64,
    /// Largest TTL `PUT /cache/{key}?ttl=` accepts, in seconds.
    #[arg(long, env = "CACHE_MAX_TTL", default_value_t = DEFAULT_CACHE_MAX_TTL_SECS, value_name = "SECS")]
    pub cache_max_ttl: u64,
    /// TTL of negative ("absent") cache entries, in seconds.
    #[arg(long, env = "NEGATIVE_TTL", default_value_t = DEFAULT_NEGATIVE_TTL_SECS, value_name = "SECS")]
    pub negative_ttl: u64,
    /// TTL of a cached product, in seconds.
    #[arg(long, env = "PRODUCT_TTL", default_value_t = DEFAULT_PRODUCT_TTL_SECS, value_name = "SECS")]
    pub product_ttl: u64,
    /// TTL of the cached product list, in seconds.
    #[arg(long, env = "PRODUCT_LIST_TTL", default_value_t = DEFAULT_PRODUCT_LIST_TTL_SECS, value_name = "SECS")]
    pub product_list_ttl: u64,
    /// Redis response timeout, in milliseconds.
    #[arg(long, env = "REDIS_TIMEOUT_MS", default_value_t = DEFAULT_REDIS_TIMEOUT_MS, value_name = "MS")]
    pub redis_timeout_ms: u64,
    /// Redis connect timeout, in milliseconds.
    #[arg(long, env = "REDIS_CONNECT_TIMEOUT_MS", default_value_t = DEFAULT_REDIS_CONNECT_TIMEOUT_MS, value_name = "MS")]
    pub redis_connect_timeout_ms: u64,
    /// Largest accepted request body, in bytes.
    #[arg(long, env = "BODY_LIMIT", default_value_t = DEFAULT_BODY_LIMIT, value_name = "BYTES")]
    pub body_limit: usize,
    /// Seconds to let in-flight requests finish on SIGINT/SIGTERM.
    #[arg(long, env = "SHUTDOWN_TIMEOUT", default_value_t = DEFAULT_SHUTDOWN_TIMEOUT_SECS, value_name = "SECS")]
    pub shutdown_timeout: u64,
    /// Seconds a connection's sent data may stay unacknowledged (a client that stopped reading,
    /// such as a stalled SSE subscriber) before the connection is closed; 0 turns it off.
    /// Linux only (`TCP_USER_TIMEOUT`); ignored elsewhere.
    #[arg(long, env = "WRITE_TIMEOUT", default_value_t = DEFAULT_WRITE_TIMEOUT_SECS, value_name = "SECS")]
    pub write_timeout: u64,
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
    /// Access-token lifetime, in seconds.
    #[arg(long, env = "ACCESS_TOKEN_TTL", default_value_t = crate::auth::DEFAULT_ACCESS_TTL_SECS, value_name = "SECS")]
    pub access_token_ttl: u64,
    /// Refresh-token and session lifetime, in seconds.
    #[arg(long, env = "REFRESH_TOKEN_TTL", default_value_t = crate::auth::DEFAULT_REFRESH_TTL_SECS, value_name = "SECS")]
    pub refresh_token_ttl: u64,
    /// Clock-skew leeway for token times, in seconds (0 to 5).
    #[arg(long, env = "TOKEN_LEEWAY", default_value_t = crate::auth::DEFAULT_LEEWAY_SECS, value_name = "SECS")]
    pub token_leeway: u64,
    /// `iss` and `aud` of issued tokens (the only ones accepted).
    #[arg(long, env = "TOKEN_ISSUER", default_value = crate::auth::DEFAULT_ISSUER, value_name = "NAME")]
    pub token_issuer: String,
    /// Events kept per channel's history.
    #[arg(long, env = "EVENTS_HISTORY_LEN", default_value_t = DEFAULT_EVENTS_HISTORY_LEN, value_name = "N")]
    pub events_history_len: usize,
    /// TTL of a channel's history after its last publish, in seconds.
    #[arg(long, env = "EVENTS_TTL", default_value_t = DEFAULT_EVENTS_TTL_SECS, value_name = "SECS")]
    pub events_ttl: u64,
    /// Events queued per SSE client before it is cut as a slow consumer.
    #[arg(long, env = "EVENTS_QUEUE", default_value_t = DEFAULT_EVENTS_QUEUE, value_name = "N")]
    pub events_queue: usize,
    /// Interval of SSE heartbeat comments, in milliseconds.
    #[arg(long, env = "EVENTS_HEARTBEAT_MS", default_value_t = DEFAULT_EVENTS_HEARTBEAT_MS, value_name = "MS")]
    pub events_heartbeat_ms: u64,
    /// SSE `retry:` hint sent to clients, in milliseconds.
    #[arg(long, env = "EVENTS_RETRY_MS", default_value_t = DEFAULT_EVENTS_RETRY_MS, value_name = "MS")]
    pub events_retry_ms: u64,
    /// Largest event data `POST /events/{channel}` accepts (compact JSON), in bytes; 413 beyond.
    #[arg(long, env = "MAX_EVENT_BYTES", default_value_t = DEFAULT_MAX_EVENT_BYTES, value_name = "BYTES")]
    pub max_event_bytes: usize,
    /// Largest value `PUT /cache/{key}` accepts, in bytes; 413 beyond.
    #[arg(long, env = "CACHE_MAX_VALUE_BYTES", default_value_t = DEFAULT_CACHE_MAX_VALUE_BYTES, value_name = "BYTES")]
    pub cache_max_value_bytes: usize,
    /// Logins and registrations hashing a password or queued at once; beyond, 503 with
    /// `Retry-After` (each argon2 hash in flight holds 19 MiB).
    #[arg(long, env = "HASH_QUEUE", default_value_t = crate::auth::DEFAULT_HASH_QUEUE, value_name = "N")]
    pub hash_queue: usize,
    /// Live sessions one user may hold; a login beyond revokes the user's oldest sessions.
    #[arg(long, env = "MAX_SESSIONS_PER_USER", default_value_t = crate::auth::DEFAULT_MAX_SESSIONS_PER_USER, value_name = "N")]
    pub max_sessions_per_user: usize,
    /// IPv6 clients are rate-limited by their first this-many bits (0 to 128): one subscriber
    /// usually holds a whole /64.
    #[arg(long, env = "IPV6_PREFIX", default_value_t = crate::ratelimit::DEFAULT_IPV6_PREFIX, value_name = "BITS")]
    pub ipv6_prefix: u8,
    /// Most events replayed to a client resuming with `Last-Event-ID` (and at most 1 MiB); a
    /// client further behind gets `event: reset`.
    #[arg(long, env = "EVENTS_MAX_REPLAY", default_value_t = DEFAULT_EVENTS_MAX_REPLAY, value_name = "N")]
    pub events_max_replay: usize,
    /// Most SSE connections open at once in this process; beyond, 503 with `Retry-After`.
    #[arg(long, env = "SSE_MAX_CONNECTIONS", default_value_t = DEFAULT_SSE_MAX_CONNECTIONS, value_name = "N")]
    pub sse_max_connections: usize,
    /// Most SSE connections open at once from one client address (IPv6 grouped by
    /// `--ipv6-prefix`); beyond, 429.
    #[arg(long, env = "SSE_MAX_PER_IP", default_value_t = DEFAULT_SSE_MAX_PER_IP, value_name = "N")]
    pub sse_max_per_ip: usize,
    /// Always mark the access cookie `Secure`: set it behind a TLS-terminating proxy (without
    /// it, only requests seen as HTTPS, directly or by `X-Forwarded-Proto`/`Forwarded`, get it).
    #[arg(long, env = "SECURE_COOKIE")]
    pub secure_cookie: bool,
}

impl Default for ServeArgs {
    /// The documented defaults, without reading the environment.
    fn default() -> Self {
        Self {
            bind: DEFAULT_BIND.to_owned(),
            redis_url: None,
            redis_cluster_nodes: None,
            database_url: DEFAULT_DATABASE_URL.to_owned(),
            workers: None,
            log_format: LogFormat::Text,
            key_prefix: DEFAULT_KEY_PREFIX.to_owned(),
            l1_max_bytes: DEFAULT_L1_MAX_BYTES,
            l1_ttl: DEFAULT_L1_TTL_SECS,
            cache_ttl: DEFAULT_CACHE_TTL_SECS,
            cache_max_ttl: DEFAULT_CACHE_MAX_TTL_SECS,
            negative_ttl: DEFAULT_NEGATIVE_TTL_SECS,
            product_ttl: DEFAULT_PRODUCT_TTL_SECS,
            product_list_ttl: DEFAULT_PRODUCT_LIST_TTL_SECS,
            redis_timeout_ms: DEFAULT_REDIS_TIMEOUT_MS,
            redis_connect_timeout_ms: DEFAULT_REDIS_CONNECT_TIMEOUT_MS,
            body_limit: DEFAULT_BODY_LIMIT,
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT_SECS,
            write_timeout: DEFAULT_WRITE_TIMEOUT_SECS,
            rate_limit: Vec::new(),
            trusted_proxies: Vec::new(),
            secret_key: None,
            secret_key_file: None,
            access_token_ttl: crate::auth::DEFAULT_ACCESS_TTL_SECS,
            refresh_token_ttl: crate::auth::DEFAULT_REFRESH_TTL_SECS,
            token_leeway: crate::auth::DEFAULT_LEEWAY_SECS,
            token_issuer: crate::auth::DEFAULT_ISSUER.to_owned(),
            events_history_len: DEFAULT_EVENTS_HISTORY_LEN,
            events_ttl: DEFAULT_EVENTS_TTL_SECS,
            events_queue: DEFAULT_EVENTS_QUEUE,
            events_heartbeat_ms: DEFAULT_EVENTS_HEARTBEAT_MS,
            events_retry_ms: DEFAULT_EVENTS_RETRY_MS,
            max_event_bytes: DEFAULT_MAX_EVENT_BYTES,
            cache_max_value_bytes: DEFAULT_CACHE_MAX_VALUE_BYTES,
            hash_queue: crate::auth::DEFAULT_HASH_QUEUE,
            max_sessions_per_user: crate::auth::DEFAULT_MAX_SESSIONS_PER_USER,
            ipv6_prefix: crate::ratelimit::DEFAULT_IPV6_PREFIX,
            events_max_replay: DEFAULT_EVENTS_MAX_REPLAY,
            sse_max_connections: DEFAULT_SSE_MAX_CONNECTIONS,
            sse_max_per_ip: DEFAULT_SSE_MAX_PER_IP,
            secure_cookie: false,
        }
    }
}

impl Default for Config {
    /// The documented defaults (memory backend, `sqlite://redkit.db`), as `redkit` with no options.
    fn default() -> Self {
        // unwrap: the defaults are valid by construction (checked by the `defaults_are_valid` test).
        Self::from_args(&ServeArgs::default()).unwrap()
    }
}

/// Where the SQLite catalog lives.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DatabaseLocation {
    /// A file on disk.
    File(PathBuf),
    /// A private in-memory database (tests).
    Memory,
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
    /// Cache settings.
    pub cache: crate::cache::CacheConfig,
    /// TTL of a cached product.
    pub product_ttl: Duration,
    /// TTL of the cached product list.
    pub product_list_ttl: Duration,
    /// Default TTL of `PUT /cache/{key}`.
    pub cache_default_ttl: Duration,
    /// Largest TTL `PUT /cache/{key}` accepts.
    pub cache_max_ttl: Duration,
    /// Largest value `PUT /cache/{key}` accepts, in bytes.
    pub cache_max_value_bytes: usize,
    /// Largest accepted request body, in bytes.
    pub body_limit: usize,
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
}

impl RedisSettings {
    /// Settings for `url` with the default timeouts.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            cluster_nodes: Vec::new(),
            response_timeout: Duration::from_millis(DEFAULT_REDIS_TIMEOUT_MS),
            connect_timeout: Duration::from_millis(DEFAULT_REDIS_CONNECT_TIMEOUT_MS),
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

/// A configuration problem, reported as one line before start-up is abandoned.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

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
        let nodes: Vec<String> = args
            .redis_cluster_nodes
            .as_deref()
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(str::to_owned)
            .collect();
        let url = args.redis_url.as_deref().map(str::trim).unwrap_or_default();
        if !nodes.is_empty() && !url.is_empty() {
            return Err(ConfigError(
                "--redis-url/REDIS_URL and --redis-cluster-nodes/REDIS_CLUSTER_NODES exclude each other: give one".into(),
            ));
        }
        for node in &nodes {
            if !(node.starts_with("redis://") || node.starts_with("rediss://")) {
                return Err(ConfigError(format!(
                    "invalid --redis-cluster-nodes/REDIS_CLUSTER_NODES entry {node:?}: expected redis://HOST:PORT or rediss://HOST:PORT"
                )));
            }
            redis::Client::open(node.as_str()).map_err(|e| {
                ConfigError(format!(
                    "invalid --redis-cluster-nodes/REDIS_CLUSTER_NODES entry {node:?}: {}",
                    e.detail().unwrap_or("unparsable URL")
                ))
            })?;
        }
        let redis = match url {
            "" if !nodes.is_empty() => Some(RedisSettings {
                cluster_nodes: nodes,
                response_timeout: Duration::from_millis(args.redis_timeout_ms.max(1)),
                connect_timeout: Duration::from_millis(args.redis_connect_timeout_ms.max(1)),
                ..RedisSettings::new("")
            }),
            "" => None,
            url => {
                redis::Client::open(url).map_err(|e| {
                    ConfigError(format!(
                        "invalid --redis-url/REDIS_URL: {}",
                        e.detail().unwrap_or("unparsable URL")
                    ))
                })?;
                Some(RedisSettings {
                    url: url.to_owned(),
                    cluster_nodes: Vec::new(),
                    response_timeout: Duration::from_millis(args.redis_timeout_ms.max(1)),
                    connect_timeout: Duration::from_millis(args.redis_connect_timeout_ms.max(1)),
                })
            }
        };
        let database = parse_database_url(&args.database_url)?;
        if args.workers == Some(0) {
            return Err(ConfigError("--workers/WORKERS must be at least 1".into()));
        }
        if args.key_prefix.is_empty() || args.key_prefix.len() > 64 {
            return Err(ConfigError(
                "--key-prefix/KEY_PREFIX must be 1 to 64 bytes".into(),
            ));
        }
        for (name, value) in [
            ("--cache-ttl/CACHE_TTL", args.cache_ttl),
            ("--cache-max-ttl/CACHE_MAX_TTL", args.cache_max_ttl),
            ("--negative-ttl/NEGATIVE_TTL", args.negative_ttl),
            ("--product-ttl/PRODUCT_TTL", args.product_ttl),
            ("--product-list-ttl/PRODUCT_LIST_TTL", args.product_list_ttl),
            ("--l1-ttl/L1_TTL", args.l1_ttl),
        ] {
            if value == 0 {
                return Err(ConfigError(format!("{name} must be at least 1 second")));
            }
        }
        if args.cache_ttl > args.cache_max_ttl {
            return Err(ConfigError(
                "--cache-ttl must not exceed --cache-max-ttl".into(),
            ));
        }
        if args.body_limit == 0 {
            return Err(ConfigError(
                "--body-limit/BODY_LIMIT must be at least 1 byte".into(),
            ));
        }
        let auth = auth_config(args)?;
        for (name, value) in [
            (
                "--events-history-len/EVENTS_HISTORY_LEN",
                args.events_history_len,
            ),
            ("--events-queue/EVENTS_QUEUE", args.events_queue),
            ("--max-event-bytes/MAX_EVENT_BYTES", args.max_event_bytes),
            ("--hash-queue/HASH_QUEUE", args.hash_queue),
            (
                "--max-sessions-per-user/MAX_SESSIONS_PER_USER",
                args.max_sessions_per_user,
            ),
            (
                "--sse-max-connections/SSE_MAX_CONNECTIONS",
                args.sse_max_connections,
            ),
            ("--sse-max-per-ip/SSE_MAX_PER_IP", args.sse_max_per_ip),
            (
                "--cache-max-value-bytes/CACHE_MAX_VALUE_BYTES",
                args.cache_max_value_bytes,
            ),
        ] {
            if value == 0 {
                return Err(ConfigError(format!("{name} must be at least 1")));
            }
        }
        for (name, value) in [
            ("--events-ttl/EVENTS_TTL", args.events_ttl),
            (
                "--events-heartbeat-ms/EVENTS_HEARTBEAT_MS",
                args.events_heartbeat_ms,
            ),
        ] {
            if value == 0 {
                return Err(ConfigError(format!("{name} must be at least 1")));
            }
        }
        let mut events = crate::events::EventsConfig::default();
        events.key_prefix.clone_from(&args.key_prefix);
        events.history_len = args.events_history_len;
        events.stream_ttl = Duration::from_secs(args.events_ttl);
        events.queue_size = args.events_queue;
        events.heartbeat = Duration::from_millis(args.events_heartbeat_ms);
        events.retry = Duration::from_millis(args.events_retry_ms);
        events.max_event_bytes = args.max_event_bytes;
        events.max_replay = args.events_max_replay;
        events.max_connections = args.sse_max_connections;
        events.max_connections_per_ip = args.sse_max_per_ip;
        let cache = crate::cache::CacheConfig::builder()
            .key_prefix(&args.key_prefix)
            .l1_max_bytes(args.l1_max_bytes)
            .l1_ttl(Duration::from_secs(args.l1_ttl))
            .negative_ttl(Duration::from_secs(args.negative_ttl))
            .build()
            .map_err(|e| ConfigError(e.to_string()))?;
        let mut rate_limit =
            crate::ratelimit::RateLimitConfig::parse(&args.rate_limit, &args.trusted_proxies)
                .map_err(ConfigError)?;
        rate_limit.key_prefix.clone_from(&args.key_prefix);
        if args.ipv6_prefix > 128 {
            return Err(ConfigError(
                "--ipv6-prefix/IPV6_PREFIX must be 0 to 128 bits".into(),
            ));
        }
        rate_limit.ipv6_prefix = args.ipv6_prefix;
        Ok(Self {
            bind,
            redis,
            database,
            workers: args.workers.unwrap_or_else(|| {
                std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get)
            }),
            log_format: args.log_format,
            cache,
            product_ttl: Duration::from_secs(args.product_ttl),
            product_list_ttl: Duration::from_secs(args.product_list_ttl),
            cache_default_ttl: Duration::from_secs(args.cache_ttl),
            cache_max_ttl: Duration::from_secs(args.cache_max_ttl),
            cache_max_value_bytes: args.cache_max_value_bytes,
            body_limit: args.body_limit,
            shutdown_timeout: Duration::from_secs(args.shutdown_timeout),
            write_timeout: (args.write_timeout > 0)
                .then(|| Duration::from_secs(args.write_timeout)),
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

fn auth_config(args: &ServeArgs) -> Result<crate::auth::AuthConfig, ConfigError> {
    use crate::auth::{AuthConfig, MAX_LEEWAY_SECS, SecretKey};
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
    if args.access_token_ttl == 0 || args.refresh_token_ttl == 0 {
        return Err(ConfigError(
            "--access-token-ttl and --refresh-token-ttl must be at least 1 second".into(),
        ));
    }
    if args.access_token_ttl > args.refresh_token_ttl {
        // Revocations (logout, logout-all) are kept for the refresh TTL: an access token living
        // longer would outlive its own revocation.
        return Err(ConfigError(
            "--access-token-ttl must not exceed --refresh-token-ttl".into(),
        ));
    }
    if args.token_leeway > MAX_LEEWAY_SECS {
        return Err(ConfigError(format!(
            "--token-leeway/TOKEN_LEEWAY must be at most {MAX_LEEWAY_SECS} seconds"
        )));
    }
    if args.token_issuer.is_empty() {
        return Err(ConfigError(
            "--token-issuer/TOKEN_ISSUER must not be empty".into(),
        ));
    }
    let mut auth = AuthConfig::new(secret);
    auth.access_ttl = Duration::from_secs(args.access_token_ttl);
    auth.refresh_ttl = Duration::from_secs(args.refresh_token_ttl);
    auth.leeway = Duration::from_secs(args.token_leeway);
    auth.issuer.clone_from(&args.token_issuer);
    auth.audience.clone_from(&args.token_issuer);
    auth.key_prefix.clone_from(&args.key_prefix);
    auth.hash_queue = args.hash_queue;
    auth.max_sessions_per_user = args.max_sessions_per_user;
    auth.secure_cookie = args.secure_cookie;
    Ok(auth)
}

/// Parses `--database-url` into a location.
///
/// # Errors
/// A one-line message for anything but `sqlite://PATH` or `sqlite::memory:`.
pub fn parse_database_url(url: &str) -> Result<DatabaseLocation, ConfigError> {
    if url == "sqlite::memory:" {
        return Ok(DatabaseLocation::Memory);
    }
    match url.strip_prefix("sqlite://") {
        Some(path) if !path.is_empty() => Ok(DatabaseLocation::File(PathBuf::from(path))),
        _ => Err(ConfigError(format!(
            "invalid --database-url/DATABASE_URL {url:?}: expected sqlite://PATH or sqlite::memory:"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The defaults parse into a valid configuration.
    #[test]
    fn defaults_are_valid() {
        let config = Config::from_args(&ServeArgs::default()).unwrap();
        assert_eq!(config.bind, "127.0.0.1:8080".parse().unwrap());
        assert!(config.redis.is_none());
        assert_eq!(config.database, DatabaseLocation::File("redkit.db".into()));
        assert_eq!(config.cache.l1_max_bytes(), DEFAULT_L1_MAX_BYTES);
        assert_eq!(config.write_timeout, Some(Duration::from_secs(60)));
        let off = ServeArgs {
            write_timeout: 0,
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
        let cases: [(&str, Mutate); 10] = [
            ("--access-token-ttl", |a| {
                a.access_token_ttl = a.refresh_token_ttl + 1;
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
            ("DATABASE_URL", |a| a.database_url = "postgres://x".into()),
            ("--workers", |a| a.workers = Some(0)),
            ("--cache-ttl", |a| a.cache_ttl = 0),
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
}
