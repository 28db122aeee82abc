//! The command line of the `redkit` binary: clap's view of every option, with its
//! environment-variable fallback and its default (each feature's own `DEFAULT_*` constant).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use super::{
    DEFAULT_BIND, DEFAULT_BODY_LIMIT, DEFAULT_SHUTDOWN_TIMEOUT_SECS, DEFAULT_WRITE_TIMEOUT_SECS,
};
use crate::{
    cache::{
        DEFAULT_CACHE_MAX_TTL_SECS, DEFAULT_CACHE_MAX_VALUE_BYTES, DEFAULT_CACHE_TTL_SECS,
        DEFAULT_L1_MAX_BYTES, DEFAULT_L1_TTL_SECS, DEFAULT_NEGATIVE_TTL_SECS,
    },
    catalog::{DEFAULT_PRODUCT_LIST_TTL_SECS, DEFAULT_PRODUCT_TTL_SECS},
    connection::{DEFAULT_REDIS_CONNECT_TIMEOUT_MS, DEFAULT_REDIS_TIMEOUT_MS},
    db::DEFAULT_DATABASE_URL,
    events::{
        DEFAULT_EVENTS_HEARTBEAT_MS, DEFAULT_EVENTS_HISTORY_LEN, DEFAULT_EVENTS_MAX_REPLAY,
        DEFAULT_EVENTS_QUEUE, DEFAULT_EVENTS_RETRY_MS, DEFAULT_EVENTS_TTL_SECS,
        DEFAULT_MAX_EVENT_BYTES, DEFAULT_SSE_MAX_CONNECTIONS, DEFAULT_SSE_MAX_PER_IP,
    },
    settings::DEFAULT_KEY_PREFIX,
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
    pub redis_ca_cert: Option<std::path::PathBuf>,
    /// PEM file of the client certificate (chain) shown to a `rediss://` server that
    /// authenticates clients (`tls-auth-clients yes`). Goes with `--redis-client-key`.
    #[arg(long, env = "REDIS_CLIENT_CERT", value_name = "FILE")]
    pub redis_client_cert: Option<std::path::PathBuf>,
    /// PEM file of the private key of `--redis-client-cert`.
    #[arg(long, env = "REDIS_CLIENT_KEY", value_name = "FILE")]
    pub redis_client_key: Option<std::path::PathBuf>,
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
    /// List a Redis Cluster's nodes (internal addresses, roles, states) in `GET /health`; off,
    /// an unauthenticated caller learns only whether Redis answers.
    #[arg(long, env = "HEALTH_NODES")]
    pub health_nodes: bool,
    /// Answer a revocation, a refresh rotation or a login only once a replica has it (`WAIT 1`
    /// within half the Redis timeout; 503 otherwise): a failover cannot undo them. Needs a
    /// deployment with replicas.
    #[arg(long, env = "REDIS_DURABLE_WRITES")]
    pub redis_durable_writes: bool,
    /// Seconds after a refresh token was first spent during which presenting it again answers
    /// the same successor instead of revoking the session (`0`: strict rotation).
    #[arg(long, env = "REFRESH_REUSE_GRACE", default_value_t = crate::auth::DEFAULT_REFRESH_REUSE_GRACE_SECS, value_name = "SECS")]
    pub refresh_reuse_grace: u64,
    /// What a login beyond `--max-sessions-per-user` does: `evict-oldest` revokes the user's
    /// oldest sessions, `reject-new` refuses it with 409.
    #[arg(long, env = "SESSION_LIMIT_POLICY", default_value = "evict-oldest", value_parser = ["evict-oldest", "reject-new"], value_name = "POLICY")]
    pub session_limit_policy: String,
    /// Seconds a session may go without a refresh before it is revoked (`0`: no idle limit).
    #[arg(
        long,
        env = "SESSION_IDLE_TIMEOUT",
        default_value_t = 0,
        value_name = "SECS"
    )]
    pub session_idle_timeout: u64,
    /// How long past its TTL a loaded cache entry may still be served (`X-Cache: STALE`) when
    /// its loader fails or is too slow, in seconds; 0 turns fail-safe off.
    #[arg(long, env = "FAIL_SAFE_MAX", default_value_t = crate::cache::DEFAULT_FAIL_SAFE_MAX_SECS, value_name = "SECS")]
    pub fail_safe_max: u64,
    /// After a loader failed, how long its stale value is served without calling it again
    /// (per key and instance), in seconds.
    #[arg(long, env = "FAIL_SAFE_THROTTLE", default_value_t = crate::cache::DEFAULT_FAIL_SAFE_THROTTLE_SECS, value_name = "SECS")]
    pub fail_safe_throttle: u64,
    /// With a stale value at hand, answer it once the loader ran this long (the load finishes
    /// in the background), in milliseconds; 0: off.
    #[arg(long, env = "LOADER_SOFT_TIMEOUT_MS", default_value_t = crate::cache::DEFAULT_LOADER_SOFT_TIMEOUT_MS, value_name = "MS")]
    pub loader_soft_timeout_ms: u64,
    /// With nothing stale at hand, give up on a loader after this long (504), in milliseconds;
    /// 0: wait for it.
    #[arg(long, env = "LOADER_HARD_TIMEOUT_MS", default_value_t = crate::cache::DEFAULT_LOADER_HARD_TIMEOUT_MS, value_name = "MS")]
    pub loader_hard_timeout_ms: u64,
    /// A cache hit past this fraction of its entry's TTL starts one background reload
    /// (0 to below 1; 0: off).
    #[arg(long, env = "EAGER_REFRESH", default_value_t = crate::cache::DEFAULT_EAGER_REFRESH, value_name = "FRACTION")]
    pub eager_refresh: f64,
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
            health_nodes: false,
            redis_durable_writes: false,
            refresh_reuse_grace: crate::auth::DEFAULT_REFRESH_REUSE_GRACE_SECS,
            session_limit_policy: "evict-oldest".to_owned(),
            session_idle_timeout: 0,
            fail_safe_max: crate::cache::DEFAULT_FAIL_SAFE_MAX_SECS,
            fail_safe_throttle: crate::cache::DEFAULT_FAIL_SAFE_THROTTLE_SECS,
            loader_soft_timeout_ms: crate::cache::DEFAULT_LOADER_SOFT_TIMEOUT_MS,
            loader_hard_timeout_ms: crate::cache::DEFAULT_LOADER_HARD_TIMEOUT_MS,
            eager_refresh: crate::cache::DEFAULT_EAGER_REFRESH,
        }
    }
}
