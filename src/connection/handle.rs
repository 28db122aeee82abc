use std::{
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use redis::{Cmd, FromRedisValue, Pipeline, aio::ConnectionManager};
use serde::Serialize;

use super::{
    RedisError,
    feed::{self, FeedEvent, FeedTarget, InvalidationFeed},
};

/// A cloneable handle to the process's Redis connection, handed out by
/// [`RedisActor`](super::RedisActor). Cheap to clone; every clone shares one multiplexed
/// connection and one health state.
#[derive(Clone)]
pub struct RedisHandle {
    conn: ConnectionManager,
    timeout: Duration,
    shared: Arc<Shared>,
}

#[derive(Debug)]
pub(super) struct Shared {
    up: AtomicBool,
    latency_us: AtomicU64,
    errors: AtomicU64,
    reconnects: AtomicU64,
    latency: prometheus_client::metrics::histogram::Histogram,
    feed: FeedTarget,
}

impl std::fmt::Debug for FeedTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FeedTarget")
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

/// What is known about the Redis connection, without asking Redis.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[non_exhaustive]
pub struct RedisStatus {
    /// Whether the last command or watchdog ping succeeded.
    pub up: bool,
    /// Round-trip time of the last successful watchdog ping, in microseconds.
    pub latency_us: u64,
    /// Commands that failed because Redis was unreachable or slow, since start.
    pub errors: u64,
    /// Times the connection came back after being down, since start.
    pub reconnects: u64,
}

impl std::fmt::Debug for RedisHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisHandle")
            .field("timeout", &self.timeout)
            .field("status", &self.status())
            .finish()
    }
}

impl RedisHandle {
    pub(super) fn new(conn: ConnectionManager, timeout: Duration, feed: FeedTarget) -> Self {
        Self {
            conn,
            timeout,
            shared: Arc::new(Shared {
                // Optimistic until the first command says otherwise: reads try L2 at once.
                up: AtomicBool::new(true),
                latency_us: AtomicU64::new(0),
                errors: AtomicU64::new(0),
                reconnects: AtomicU64::new(0),
                latency: crate::latency::latency_histogram(),
                feed,
            }),
        }
    }

    /// Runs one command, bounded by the response timeout.
    ///
    /// # Errors
    /// [`RedisError`] classified by cause; unavailability also marks Redis down.
    pub async fn query<T: FromRedisValue>(&self, cmd: &Cmd) -> Result<T, RedisError> {
        let mut conn = self.conn.clone();
        self.bounded(async move { cmd.query_async(&mut conn).await })
            .await
    }

    /// Runs a pipeline (one round trip), bounded by the response timeout.
    ///
    /// # Errors
    /// As [`query`](Self::query).
    pub async fn query_pipe<T: FromRedisValue>(&self, pipe: &Pipeline) -> Result<T, RedisError> {
        let mut conn = self.conn.clone();
        self.bounded(async move { pipe.query_async(&mut conn).await })
            .await
    }

    /// Runs a Lua script invocation (`EVALSHA`, reloaded on `NOSCRIPT`), bounded by the timeout.
    ///
    /// # Errors
    /// As [`query`](Self::query).
    pub async fn invoke<T: FromRedisValue>(
        &self,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<T, RedisError> {
        let mut conn = self.conn.clone();
        self.bounded(async move { invocation.invoke_async(&mut conn).await })
            .await
    }

    /// Sends a `PING` and answers its round-trip time.
    ///
    /// # Errors
    /// As [`query`](Self::query).
    pub async fn ping(&self) -> Result<Duration, RedisError> {
        let started = Instant::now();
        let _: String = self.query(&redis::cmd("PING")).await?;
        let rtt = started.elapsed();
        self.shared.latency_us.store(
            u64::try_from(rtt.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        Ok(rtt)
    }

    /// Starts an [`InvalidationFeed`] on its own RESP3 connection (see [`feed`](super::feed)):
    /// `listener` hears about every change to a key under one of `prefixes`, made by any client,
    /// and whether the feed is up. Call from a Tokio runtime (an actix system). Does not wait for
    /// Redis: the listener hears [`FeedEvent::Up`] once tracking is armed.
    ///
    /// # Errors
    /// [`RedisError::Command`] when the connection cannot be configured (never for an
    /// unreachable server).
    pub fn invalidation_feed(
        &self,
        prefixes: Vec<String>,
        listener: impl Fn(FeedEvent) + Send + Sync + 'static,
    ) -> Result<InvalidationFeed, RedisError> {
        feed::start(&self.shared.feed, prefixes, Arc::new(listener))
    }

    /// A clone of the underlying manager, for commands this handle has no method for.
    /// Callers should bound their own calls with [`timeout`](Self::timeout).
    pub fn connection(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// The histogram of command round trips (every command through this handle).
    pub fn latency_histogram(&self) -> prometheus_client::metrics::histogram::Histogram {
        self.shared.latency.clone()
    }

    /// The response timeout every command is bounded by.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Whether Redis answered the last command or ping. Readers use this to skip a dead L2.
    pub fn is_up(&self) -> bool {
        self.shared.up.load(Ordering::Relaxed)
    }

    /// The last observed state.
    pub fn status(&self) -> RedisStatus {
        RedisStatus {
            up: self.is_up(),
            latency_us: self.shared.latency_us.load(Ordering::Relaxed),
            errors: self.shared.errors.load(Ordering::Relaxed),
            reconnects: self.shared.reconnects.load(Ordering::Relaxed),
        }
    }

    /// Records the watchdog's verdict; answers whether this was a change of state.
    pub(super) fn set_up(&self, up: bool) -> bool {
        let was = self.shared.up.swap(up, Ordering::Relaxed);
        if up && !was {
            self.shared.reconnects.fetch_add(1, Ordering::Relaxed);
        }
        was != up
    }

    async fn bounded<T>(
        &self,
        fut: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, RedisError> {
        let started = Instant::now();
        let outcome = tokio::time::timeout(self.timeout, fut).await;
        self.shared.latency.observe(started.elapsed().as_secs_f64());
        let result = match outcome {
            Ok(Ok(value)) => {
                // Any answer proves Redis is back; readers stop skipping L2 at once.
                if !self.is_up() && self.set_up(true) {
                    tracing::info!("redis connection is up");
                }
                return Ok(value);
            }

            Ok(Err(err)) => RedisError::classify(err),
            Err(_) => RedisError::Timeout(self.timeout),
        };
        if result.is_unavailable() {
            self.shared.errors.fetch_add(1, Ordering::Relaxed);
            if self.shared.up.swap(false, Ordering::Relaxed) {
                tracing::warn!(error = %result, "redis became unreachable; serving degraded");
            }
        }
        Err(result)
    }
}
