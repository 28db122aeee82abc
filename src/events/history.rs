//! Per-channel history: a Redis Stream per channel (or an in-process ring), appended to by every
//! publish and read back to resume a client or to catch up after a reconnect.

use std::{
    collections::{HashMap, VecDeque},
    sync::Mutex,
    time::Duration,
};

use bytes::Bytes;
use redis::streams::StreamRangeReply;

use super::{
    EventsError,
    hub::Hub,
    wire::{EventId, encode_event},
};
use crate::connection::RedisHandle;

/// XADD (trimmed) + PEXPIRE + SPUBLISH in one round trip; the published payload carries the new
/// id so that subscribers and history agree on it. The sharded channel is the stream's key: on a
/// cluster, the message stays on the stream's shard (Redis 7; a plain PUBLISH would cross the
/// whole cluster bus).
const PUBLISH_LUA: &str = r"
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'event', ARGV[2], 'data', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('SPUBLISH', KEYS[1], id .. '\n' .. ARGV[2] .. '\n' .. ARGV[3])
return id
";

/// What a resuming client gets from history.
/// Largest replay one resuming client is sent, in bytes of encoded events; beyond, `reset`.
pub const MAX_REPLAY_BYTES: usize = 1024 * 1024;

#[derive(Debug)]
pub(crate) enum Replay {
    /// The id is unknown or older than what history holds: the client must refetch state.
    Reset,
    /// The encoded events after the id, oldest first (possibly none).
    Events(Vec<(EventId, Bytes)>),
}

pub(crate) struct Ring {
    events: VecDeque<(EventId, Bytes)>,
    last: EventId,
    written: tokio::time::Instant,
}

/// The history backend.
pub(crate) enum History {
    Redis {
        redis: RedisHandle,
        script: redis::Script,
        prefix: String,
        max_len: usize,
        ttl: Duration,
    },
    Memory {
        rings: Mutex<Rings>,
        max_len: usize,
        ttl: Duration,
    },
}

/// The memory backend's histories, and when expired ones were last dropped.
pub(crate) struct Rings {
    map: HashMap<String, Ring>,
    swept: tokio::time::Instant,
}

impl Rings {
    /// Drops the histories idle for `ttl` (as Redis expires their keys): channels come and go
    /// (`user:{id}`), and a history nobody publishes to again would otherwise stay for the life of
    /// the process. Called on publish; it sweeps when `ttl` or a minute (the shorter) has passed
    /// since the last sweep.
    fn sweep(&mut self, now: tokio::time::Instant, ttl: Duration) {
        if now.duration_since(self.swept) < ttl.min(SWEEP_EVERY) {
            return;
        }
        self.swept = now;
        self.map
            .retain(|_, ring| now.duration_since(ring.written) < ttl);
    }
}

/// The longest time between two sweeps of the memory backend's expired histories.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// The Redis key (and pub/sub channel) of `channel`.
pub(crate) fn stream_key(prefix: &str, channel: &str) -> String {
    format!("{prefix}events:{channel}")
}

/// Parses an `XRANGE` reply into encoded events.
pub(crate) fn parse_range(reply: StreamRangeReply) -> Vec<(EventId, Bytes)> {
    reply
        .ids
        .into_iter()
        .filter_map(|entry| {
            let id: EventId = entry.id.parse().ok()?;
            let kind: String = entry.get("event")?;
            let data: String = entry.get("data")?;
            Some((id, encode_event(id, &kind, &data)))
        })
        .collect()
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl History {
    pub(crate) fn redis(redis: RedisHandle, prefix: &str, max_len: usize, ttl: Duration) -> Self {
        Self::Redis {
            redis,
            script: redis::Script::new(PUBLISH_LUA),
            prefix: prefix.to_owned(),
            max_len,
            ttl,
        }
    }

    pub(crate) fn memory(max_len: usize, ttl: Duration) -> Self {
        Self::Memory {
            rings: Mutex::new(Rings {
                map: HashMap::new(),
                swept: tokio::time::Instant::now(),
            }),
            max_len,
            ttl,
        }
    }

    /// Appends an event and delivers it: published through Redis to every instance, or fanned
    /// out to `hub` directly (under the ring's lock, so local order is id order).
    pub(crate) async fn publish(
        &self,
        hub: &Hub,
        channel: &str,
        kind: &str,
        data: &str,
    ) -> Result<EventId, EventsError> {
        match self {
            Self::Redis {
                redis,
                script,
                prefix,
                max_len,
                ttl,
            } => {
                let mut invocation = script.key(stream_key(prefix, channel));
                invocation
                    .arg(*max_len)
                    .arg(kind)
                    .arg(data)
                    .arg(millis(*ttl).max(1));
                let id: String = redis.invoke(&invocation).await?;
                id.parse()
                    .map_err(|()| EventsError::Internal("redis returned an unparsable stream id"))
            }
            Self::Memory {
                rings,
                max_len,
                ttl,
            } => {
                let now = tokio::time::Instant::now();
                let mut rings = rings
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                rings.sweep(now, *ttl);
                let ring = rings.map.entry(channel.to_owned()).or_insert_with(|| Ring {
                    events: VecDeque::new(),
                    last: EventId::ZERO,
                    written: now,
                });
                if now.duration_since(ring.written) >= *ttl {
                    // Expired like the Redis key would have: history starts over.
                    ring.events.clear();
                }
                let id = ring.last.next(hub.now_ms());
                let bytes = encode_event(id, kind, data);
                ring.last = id;
                ring.written = now;
                ring.events.push_back((id, bytes.clone()));
                while ring.events.len() > *max_len {
                    ring.events.pop_front();
                }
                hub.fan_out(channel, id, &bytes, false);
                Ok(id)
            }
        }
    }

    /// The events after `last` for a resuming client, or [`Replay::Reset`] if `last` is not in
    /// history, or if more than `max_events` events (or more than [`MAX_REPLAY_BYTES`]) follow
    /// it: a client that far behind refetches its state rather than pinning a large replay.
    pub(crate) async fn replay(
        &self,
        channel: &str,
        last: EventId,
        max_events: usize,
    ) -> Result<Replay, EventsError> {
        // `last` itself, the events allowed, and one more to tell "exactly the cap" from "more".
        let fetch = max_events.saturating_add(2);
        let events = match self {
            Self::Redis { redis, prefix, .. } => {
                let mut cmd = redis::cmd("XRANGE");
                cmd.arg(stream_key(prefix, channel))
                    .arg(last.to_string())
                    .arg("+")
                    .arg("COUNT")
                    .arg(fetch);
                parse_range(redis.query(&cmd).await?)
            }
            Self::Memory { rings, ttl, .. } => {
                let rings = rings
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                match rings.map.get(channel) {
                    Some(ring) if ring.written.elapsed() < *ttl => ring
                        .events
                        .iter()
                        .filter(|(id, _)| *id >= last)
                        .take(fetch)
                        .cloned()
                        .collect(),
                    _ => Vec::new(),
                }
            }
        };
        let bytes: usize = events.iter().map(|(_, b)| b.len()).sum();
        match events.first() {
            Some((first, _))
                if *first == last
                    && events.len() - 1 <= max_events
                    && bytes <= MAX_REPLAY_BYTES =>
            {
                Ok(Replay::Events(events[1..].to_vec()))
            }
            _ => Ok(Replay::Reset),
        }
    }

    /// How many events history holds for `channel`.
    pub(crate) async fn len(&self, channel: &str) -> Result<u64, EventsError> {
        match self {
            Self::Redis { redis, prefix, .. } => {
                let mut cmd = redis::cmd("XLEN");
                cmd.arg(stream_key(prefix, channel));
                Ok(redis.query(&cmd).await?)
            }
            Self::Memory { rings, ttl, .. } => {
                let rings = rings
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                Ok(rings
                    .map
                    .get(channel)
                    .filter(|ring| ring.written.elapsed() < *ttl)
                    .map_or(0, |ring| ring.events.len() as u64))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn channels(history: &History) -> usize {
        match history {
            History::Memory { rings, .. } => rings.lock().unwrap().map.len(),
            History::Redis { .. } => unreachable!("a memory history"),
        }
    }

    /// Histories nobody publishes to again are dropped once expired, as Redis expires the keys.
    #[tokio::test(start_paused = true)]
    async fn memory_histories_of_idle_channels_are_dropped() {
        let hub = Hub::new(8, std::sync::Arc::new(crate::clock::SystemClock));
        let ttl = Duration::from_secs(30);
        let history = History::memory(10, ttl);
        for channel in ["a", "b", "c"] {
            history
                .publish(&hub, channel, "message", "{}")
                .await
                .unwrap();
        }
        assert_eq!(channels(&history), 3);
        tokio::time::advance(Duration::from_secs(20)).await;
        history.publish(&hub, "c", "message", "{}").await.unwrap();
        // Not idle for the TTL yet: kept.
        assert_eq!(channels(&history), 3);
        assert_eq!(history.len("a").await.unwrap(), 1);
        tokio::time::advance(Duration::from_secs(15)).await;
        history.publish(&hub, "d", "message", "{}").await.unwrap();
        // `a` and `b` idle for 35 s: dropped; `c` (written 15 s ago) and `d` stay.
        assert_eq!(channels(&history), 2);
        assert_eq!(history.len("a").await.unwrap(), 0);
        assert_eq!(history.len("c").await.unwrap(), 2);
    }
}
