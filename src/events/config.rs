use std::time::Duration;

use crate::config::{
    DEFAULT_EVENTS_HEARTBEAT_MS, DEFAULT_EVENTS_HISTORY_LEN, DEFAULT_EVENTS_MAX_REPLAY,
    DEFAULT_EVENTS_QUEUE, DEFAULT_EVENTS_RETRY_MS, DEFAULT_EVENTS_TTL_SECS, DEFAULT_KEY_PREFIX,
    DEFAULT_MAX_EVENT_BYTES, DEFAULT_SSE_MAX_CONNECTIONS, DEFAULT_SSE_MAX_PER_IP,
};

/// Settings of live events. Defaults come from the `DEFAULT_EVENTS_*` constants in
/// [`crate::config`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct EventsConfig {
    /// Prefix of the Redis keys: streams are `<prefix>events:{channel}`.
    pub key_prefix: String,
    /// Events kept per channel (`XADD MAXLEN ~`; the memory ring keeps exactly this many).
    pub history_len: usize,
    /// A channel's history expires this long after its last publish.
    pub stream_ttl: Duration,
    /// Events queued per client before it is cut as a slow consumer.
    pub queue_size: usize,
    /// Interval of heartbeat comments.
    pub heartbeat: Duration,
    /// The `retry:` hint sent first on every stream.
    pub retry: Duration,
    /// Largest event data accepted by `publish` (compact JSON bytes): what history keeps is
    /// bounded by this times `history_len` per channel.
    pub max_event_bytes: usize,
    /// Most events replayed to one resuming client (`Last-Event-ID`); a client further behind
    /// gets `event: reset`. Replays are also capped at 1 MiB.
    pub max_replay: usize,
    /// Most SSE connections open at once in this process (503 beyond).
    pub max_connections: usize,
    /// Most SSE connections open at once from one client address (429 beyond).
    pub max_connections_per_ip: usize,
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
        }
    }
}
