//! The Redis connection layer: the only module that opens connections to Redis.
//!
//! [`RedisHandle::connect`] makes the process's command connection, a redis-rs
//! [`ConnectionManager`](redis::aio::ConnectionManager): one multiplexed connection that every
//! request shares, with explicit connect and response timeouts, lazy connect and automatic
//! reconnect with backoff. A watchdog task (a `PING` every second, ending with the last handle)
//! watches it and logs every change of state.
//!
//! # Why a handle, not an actor
//! The connection's owner is redis-rs's manager, which reconnects by itself; the multiplexed
//! connection is safe to share, so callers send commands from their own task through a cloneable
//! [`RedisHandle`]. A message to an actor on another thread costs about a third of a cached
//! request's throughput on a 2-core machine (see `benches/http.rs`), and a mailbox would own
//! nothing the manager does not: the health state is a few atomics every clone shares.
//!
//! # Behavior
//! - Start-up never waits for Redis: the manager connects on first use. If Redis is down, the
//!   server starts and serves; `/health` says `degraded`.
//! - A command that fails with a connection error marks Redis *down* at once and makes the manager
//!   reconnect in the background. While down, the cache skips L2 reads (no time wasted on a dead
//!   connection) and writes fail fast with [`RedisError::Unavailable`] (HTTP 503).
//! - The watchdog `PING` notices recovery within a second and marks Redis *up* again; nothing needs
//!   a restart.
//! - Every command is bounded by the response timeout: a stalled Redis yields
//!   [`RedisError::Timeout`], never a hang.
//!
//! # Who opens what
//! Every connection comes from one [`RedisSettings`], through
//! `target.rs`: one Redis (redis-rs `ConnectionManager`s) or a Redis Cluster (redis-rs async
//! cluster connections, one multiplexed connection per node). [`Connection`] hides which; the
//! few commands whose meaning differs on a cluster are methods here ([`RedisHandle::scan`]
//! visits every primary, [`Subscriber::subscribe_sharded`] subscribes one slot at a time).
//! - the command connection ([`RedisHandle::connect`]; per node on a cluster);
//! - [`RedisHandle::invalidation_feed`]: the cache's invalidation feed (see [`feed`]), tracking
//!   armed on every node and re-armed after every reconnect;
//! - [`RedisHandle::subscriber`]: a subscriber connection for a feature (the events hub, the
//!   revocation view), with a liveness check (see [`push`]): a `PING` answered within the
//!   response timeout every 500 ms; a silent connection is replaced and its owner told
//!   ([`PushEvent::Lost`]) so that it resyncs.
//!
//! Per process: one command connection, the feed's, and one subscriber each for events and
//! revocations (per node on a cluster), whatever the number of clients.

mod error;
pub mod feed;
mod handle;
mod metrics;
pub mod push;
mod settings;
mod target;

pub use error::RedisError;
pub use feed::{FeedEvent, InvalidationFeed};
pub use handle::{NodeState, RedisHandle, RedisStatus};
pub use metrics::RedisCollector;
pub use push::{PushEvent, PushEvents, Subscriber};
pub use settings::{
    DEFAULT_REDIS_CONNECT_TIMEOUT_MS, DEFAULT_REDIS_TIMEOUT_MS, RedisSettings, TlsClientIdentity,
    redact_url,
};
pub use target::Connection;
