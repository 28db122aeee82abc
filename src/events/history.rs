//! Per-channel history: a Redis Stream per channel (or an in-process ring), appended to by every
//! publish and read back to resume a client or to catch up after a reconnect.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex, Weak},
    time::Duration,
};

use bytes::Bytes;

use super::{
    EventsError,
    hub::Hub,
    read::{After, Read, read_after},
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

/// Largest replay one resuming client is sent, in bytes of encoded events; beyond, `reset`.
/// The catch-up after an outage is bounded the same way.
pub const MAX_REPLAY_BYTES: usize = 1024 * 1024;

/// What a resuming client gets from history.
#[derive(Debug)]
pub(crate) enum Replay {
    /// The id is unknown or older than what history holds: the client must refetch state.
    Reset,
    /// The encoded events after the id, oldest first (possibly none), and on Redis the slot
    /// that shares them with every resume of the same position: hold it while sending them.
    Events(Arc<Replayed>, Option<Arc<ReplaySlot>>),
}

/// One position's replay (channel and `Last-Event-ID`) on Redis: the events read so far, behind
/// an async lock so that resumes arriving together wait for one read instead of each reading
/// (and holding) a copy.
pub(crate) type ReplaySlot = tokio::sync::Mutex<Option<Arc<Replayed>>>;

/// Encoded events of one replay, and their size.
#[derive(Debug, Default)]
pub(crate) struct Replayed {
    pub(crate) events: Vec<(EventId, Bytes)>,
    pub(crate) bytes: usize,
}

impl Replayed {
    fn new(events: Vec<(EventId, Bytes)>) -> Self {
        let bytes = events.iter().map(|(_, b)| b.len()).sum();
        Self { events, bytes }
    }
}

pub(crate) struct Ring {
    events: VecDeque<(EventId, Bytes)>,
    last: EventId,
    /// The newest id no longer held (trimmed or expired): history reaches back to any id not
    /// before it.
    dropped: EventId,
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
        /// Replays being sent, by channel and `Last-Event-ID`: resumes of one position share
        /// one copy of the events (and read from Redis only what was published since).
        replays: Mutex<HashMap<(String, EventId, Read), Weak<ReplaySlot>>>,
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

/// Locks `mutex`; every update under these locks is a single insert, remove or push, so a
/// poisoned lock still holds consistent data.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
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
            replays: Mutex::default(),
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
                ..
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
                    dropped: EventId::ZERO,
                    written: now,
                });
                if now.duration_since(ring.written) >= *ttl {
                    // Expired like the Redis key would have: history starts over.
                    ring.events.clear();
                    ring.dropped = ring.last;
                }
                let id = ring.last.next(hub.now_ms());
                let bytes = encode_event(id, kind, data);
                ring.last = id;
                ring.written = now;
                ring.events.push_back((id, bytes.clone()));
                while ring.events.len() > *max_len {
                    if let Some((id, _)) = ring.events.pop_front() {
                        ring.dropped = id;
                    }
                }
                hub.fan_out(channel, id, &bytes, false);
                Ok(id)
            }
        }
    }

    /// The events after `last` for a resuming client, or [`Replay::Reset`] if history does not
    /// reach back to `last` (`read`: [`Read::Resume`] wants `last` itself in history,
    /// [`Read::Since`] only nothing after it trimmed), or if more than `max_events` events (or
    /// more than `max_bytes`, at most [`MAX_REPLAY_BYTES`]) follow it: a client that far behind
    /// refetches its state rather than pinning a large replay. Redis sends only what is
    /// replayed (never a page beyond the bounds), and resumes of one position share one copy
    /// while any of them is sending it.
    pub(crate) async fn replay(
        &self,
        channel: &str,
        last: EventId,
        (max_events, max_bytes): (usize, usize),
        read: Read,
    ) -> Result<Replay, EventsError> {
        let max_bytes = max_bytes.min(MAX_REPLAY_BYTES);
        match self {
            Self::Redis {
                redis,
                prefix,
                replays,
                ..
            } => {
                let key = (channel.to_owned(), last, read);
                let slot = {
                    let mut replays = lock(replays);
                    match replays.get(&key).and_then(Weak::upgrade) {
                        Some(slot) => slot,
                        None => {
                            replays.retain(|_, w| w.strong_count() > 0);
                            let slot = Arc::new(ReplaySlot::default());
                            replays.insert(key, Arc::downgrade(&slot));
                            slot
                        }
                    }
                };
                // Held across one read, itself bounded by the response timeout.
                let mut shared = slot.lock().await;
                let base = shared.clone().unwrap_or_default();
                if base.events.len() > max_events || base.bytes > max_bytes {
                    return Ok(Replay::Reset);
                }
                // Only what was published since the shared copy was read; all of it without one.
                let (from, read) = match base.events.last() {
                    // From an event the shared copy holds: it is in history, or trimmed (reset).
                    Some((id, _)) => (*id, Read::Resume),
                    None => (last, read),
                };
                let bounds = (max_events - base.events.len(), max_bytes - base.bytes);
                let more = match read_after(redis, (prefix, channel), from, bounds, read).await? {
                    After::Reset(_) => return Ok(Replay::Reset),
                    After::Events(more) => more,
                };
                let replayed = if more.is_empty() && shared.is_some() {
                    base
                } else {
                    let mut events = base.events.clone();
                    events.extend(more);
                    Arc::new(Replayed::new(events))
                };
                *shared = Some(replayed.clone());
                drop(shared);
                Ok(Replay::Events(replayed, Some(slot)))
            }
            Self::Memory { rings, ttl, .. } => {
                // The events allowed and one more, to tell "exactly the cap" from "more". The
                // ring's frames are shared, not copied.
                let fetch = max_events.saturating_add(1);
                let found: Option<Vec<(EventId, Bytes)>> = {
                    let rings = lock(rings);
                    match rings.map.get(channel) {
                        Some(ring) if ring.written.elapsed() < *ttl => {
                            let reaches = match read {
                                Read::Resume => ring.events.iter().any(|(id, _)| *id == last),
                                Read::Since | Read::Page => last >= ring.dropped,
                            };
                            reaches.then(|| {
                                ring.events
                                    .iter()
                                    .filter(|(id, _)| *id > last)
                                    .take(fetch)
                                    .cloned()
                                    .collect()
                            })
                        }
                        // No history: nothing follows the start of a channel.
                        _ => (read == Read::Since && last == EventId::ZERO).then(Vec::new),
                    }
                };
                let Some(events) = found else {
                    return Ok(Replay::Reset);
                };
                let bytes: usize = events.iter().map(|(_, b)| b.len()).sum();
                if events.len() > max_events || bytes > max_bytes {
                    return Ok(Replay::Reset);
                }
                Ok(Replay::Events(Arc::new(Replayed::new(events)), None))
            }
        }
    }

    /// The newest id of `channel`'s history in this process (memory backend; `0-0` without
    /// one): where a multi-channel stream joining now starts. `None` on Redis, where live
    /// delivery's own position is the start.
    pub(crate) fn newest_local(&self, channel: &str) -> Option<EventId> {
        match self {
            Self::Redis { .. } => None,
            Self::Memory { rings, .. } => Some(
                lock(rings)
                    .map
                    .get(channel)
                    .map_or(EventId::ZERO, |ring| ring.last),
            ),
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
