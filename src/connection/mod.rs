//! The Redis connection layer: the only module that opens connections to Redis.
//!
//! [`RedisActor`] owns the process's command connection, a redis-rs
//! [`ConnectionManager`](redis::aio::ConnectionManager): one multiplexed connection that every
//! request shares, with explicit connect and response timeouts, lazy connect and automatic
//! reconnect with backoff. The actor watches the connection (a `PING` every second), logs every
//! change of state, and answers health questions.
//!
//! # Why a handle, not a message per command
//! Commands do not travel through the actor's mailbox: the actor hands out a cloneable
//! [`RedisHandle`] holding a clone of the manager, and callers send commands from their own task.
//! A message to an actor on another thread costs about a third of a cached request's throughput on
//! a 2-core machine (see `benches/http.rs`); the multiplexed connection is already safe to share,
//! so a per-command hop would buy nothing but latency. The actor keeps what needs one owner: the
//! connection's lifecycle and its health state.
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
//! # Push connections
//! [`RedisHandle::invalidation_feed`] opens the cache's invalidation feed (see [`feed`]): its own
//! RESP3 connection with redis-rs's reconnection, Redis's key tracking re-armed after every
//! reconnect, and a liveness check with a deadline.

mod actor;
mod error;
pub mod feed;
mod handle;
mod messages;
mod target;

pub use actor::RedisActor;
pub use error::RedisError;
pub use feed::{FeedEvent, InvalidationFeed};
pub use handle::{NodeState, RedisHandle, RedisStatus};
pub use messages::{GetStatus, Ping};
pub use target::Connection;
