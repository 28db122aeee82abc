//! Live-events settings and their defaults. Configured like every feature (see
//! [`crate::settings`]): public fields, `Default`, and [`EventsConfig::validate`].

use std::{sync::Arc, time::Duration};

#[cfg(feature = "server")]
use crate::settings::{parse_millis, parse_secs};
use crate::{
    clock::{Clock, SystemClock},
    settings::{ConfigError, DEFAULT_KEY_PREFIX, validate_duration, validate_key_prefix},
};

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

/// Settings of live events, defaulting to the `DEFAULT_*` constants of this module. With the
/// `server` feature, also their command-line options (each field's doc line is its `--help`).
#[derive(Debug, Clone)]
#[cfg_attr(feature = "server", derive(clap::Args))]
#[non_exhaustive]
pub struct EventsConfig {
    /// Prefix of the Redis keys: streams are `<prefix>events:{channel}`; the server's
    /// `--key-prefix` sets it for every feature at once.
    #[cfg_attr(feature = "server", arg(skip = DEFAULT_KEY_PREFIX.to_owned()))]
    pub key_prefix: String,
    /// Events kept per channel's history (`XADD MAXLEN ~`; the memory ring keeps exactly this
    /// many).
    #[cfg_attr(feature = "server", arg(long = "events-history-len", env = "EVENTS_HISTORY_LEN",
        value_name = "N", default_value_t = DEFAULT_EVENTS_HISTORY_LEN))]
    pub history_len: usize,
    /// TTL of a channel's history after its last publish.
    #[cfg_attr(feature = "server", arg(long = "events-ttl", env = "EVENTS_TTL",
        value_name = "SECS", value_parser = parse_secs,
        default_value = DEFAULT_EVENTS_TTL_SECS.to_string()))]
    pub stream_ttl: Duration,
    /// Events queued per SSE client before it is cut as a slow consumer.
    #[cfg_attr(feature = "server", arg(long = "events-queue", env = "EVENTS_QUEUE",
        value_name = "N", default_value_t = DEFAULT_EVENTS_QUEUE))]
    pub queue_size: usize,
    /// Interval of SSE heartbeat comments.
    #[cfg_attr(feature = "server", arg(long = "events-heartbeat-ms", env = "EVENTS_HEARTBEAT_MS",
        value_name = "MS", value_parser = parse_millis,
        default_value = DEFAULT_EVENTS_HEARTBEAT_MS.to_string()))]
    pub heartbeat: Duration,
    /// SSE `retry:` hint sent first on every stream.
    #[cfg_attr(feature = "server", arg(long = "events-retry-ms", env = "EVENTS_RETRY_MS",
        value_name = "MS", value_parser = parse_millis,
        default_value = DEFAULT_EVENTS_RETRY_MS.to_string()))]
    pub retry: Duration,
    /// Largest event data `POST /events/{channel}` accepts (compact JSON), in bytes; 413 beyond.
    /// What history keeps is bounded by this times the history length per channel.
    #[cfg_attr(feature = "server", arg(long, env = "MAX_EVENT_BYTES", value_name = "BYTES",
        default_value_t = DEFAULT_MAX_EVENT_BYTES))]
    pub max_event_bytes: usize,
    /// Most events replayed to a client resuming with `Last-Event-ID` (and at most 1 MiB); a
    /// client further behind gets `event: reset`.
    #[cfg_attr(feature = "server", arg(long = "events-max-replay", env = "EVENTS_MAX_REPLAY",
        value_name = "N", default_value_t = DEFAULT_EVENTS_MAX_REPLAY))]
    pub max_replay: usize,
    /// Most SSE connections open at once in this process; beyond, 503 with `Retry-After`.
    #[cfg_attr(feature = "server", arg(long = "sse-max-connections", env = "SSE_MAX_CONNECTIONS",
        value_name = "N", default_value_t = DEFAULT_SSE_MAX_CONNECTIONS))]
    pub max_connections: usize,
    /// Most SSE connections open at once from one client address (IPv6 grouped by
    /// `--ipv6-prefix`); beyond, 429.
    #[cfg_attr(feature = "server", arg(long = "sse-max-per-ip", env = "SSE_MAX_PER_IP",
        value_name = "N", default_value_t = DEFAULT_SSE_MAX_PER_IP))]
    pub max_connections_per_ip: usize,
    /// Where "now" comes from: the ids the memory backend mints and a channel's join baseline.
    #[cfg_attr(feature = "server", arg(skip = Arc::new(SystemClock) as Arc<dyn Clock>))]
    pub clock: Arc<dyn Clock>,
}

impl Default for EventsConfig {
    fn default() -> Self {
        Self {
            key_prefix: DEFAULT_KEY_PREFIX.to_owned(),
            history_len: DEFAULT_EVENTS_HISTORY_LEN,
            stream_ttl: Duration::from_secs(DEFAULT_EVENTS_TTL_SECS),
            queue_size: DEFAULT_EVENTS_QUEUE,
            heartbeat: Duration::from_millis(DEFAULT_EVENTS_HEARTBEAT_MS),
            retry: Duration::from_millis(DEFAULT_EVENTS_RETRY_MS),
            max_event_bytes: DEFAULT_MAX_EVENT_BYTES,
            max_replay: DEFAULT_EVENTS_MAX_REPLAY,
            max_connections: DEFAULT_SSE_MAX_CONNECTIONS,
            max_connections_per_ip: DEFAULT_SSE_MAX_PER_IP,
            clock: Arc::new(SystemClock),
        }
    }
}

impl EventsConfig {
    /// Checks the settings.
    ///
    /// # Errors
    /// The first bad value, in one line naming its command-line option: a bad key prefix, or a
    /// zero history, queue, event size or connection cap, a TTL under a second, a zero heartbeat,
    /// or a duration over [`MAX_DURATION`](crate::settings::MAX_DURATION).
    pub fn validate(&self) -> Result<(), ConfigError> {
        validate_key_prefix(&self.key_prefix)?;
        for (name, value) in [
            ("--events-history-len/EVENTS_HISTORY_LEN", self.history_len),
            ("--events-queue/EVENTS_QUEUE", self.queue_size),
            ("--max-event-bytes/MAX_EVENT_BYTES", self.max_event_bytes),
            (
                "--sse-max-connections/SSE_MAX_CONNECTIONS",
                self.max_connections,
            ),
            (
                "--sse-max-per-ip/SSE_MAX_PER_IP",
                self.max_connections_per_ip,
            ),
        ] {
            if value == 0 {
                return Err(ConfigError(format!("{name} must be at least 1")));
            }
        }
        validate_duration(
            "--events-ttl/EVENTS_TTL",
            self.stream_ttl,
            Duration::from_secs(1),
        )?;
        validate_duration(
            "--events-heartbeat-ms/EVENTS_HEARTBEAT_MS",
            self.heartbeat,
            Duration::from_millis(1),
        )?;
        validate_duration("EventsConfig::retry", self.retry, Duration::ZERO)?;
        Ok(())
    }
}
