//! Per-channel history: a Redis Stream per channel (or an in-process ring), appended to by every
//! publish and read back to resume a client or to catch up after a reconnect.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, LazyLock, Mutex, Weak},
    time::Duration,
};

use bytes::Bytes;
use redis::{FromRedisValue, Value, streams::StreamRangeReply};

use super::{
    EventsError,
    hub::Hub,
    wire::{EventId, encode_event},
};
use crate::connection::{RedisError, RedisHandle};

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

/// Reads the events after an id, paging through the stream inside Redis, and sends back only
/// what fits: the entries (oldest first) when at most `ARGV[2]` events of at most `ARGV[3]` bytes
/// follow, otherwise just the stream's newest id (a string: "reset"). So Redis never ships more
/// than the reader keeps. `ARGV[4]` is `1` when the id must itself be in history (a client's
/// `Last-Event-ID`); otherwise history need only reach back to it (a catch-up after an
/// outage, from the last id delivered or a baseline): nothing after it was trimmed away.
/// `ARGV[5]` is `1` for one page of a longer read: the events that fit (at least one), and no
/// reset for what does not. Sizes count ids and field values plus 32 bytes per entry (the SSE
/// framing), as encoded.
const READ_AFTER_LUA: &str = r"
local key, after = KEYS[1], ARGV[1]
local max_n, max_bytes = tonumber(ARGV[2]), tonumber(ARGV[3])
local page_only = ARGV[5] == '1'
local function newest()
  local last = redis.call('XREVRANGE', key, '+', '-', 'COUNT', 1)
  if #last == 0 then return '0-0' end
  return last[1][1]
end
local function parse(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
if ARGV[4] == '1' then
  if #redis.call('XRANGE', key, after, after) == 0 then return newest() end
else
  local first = redis.call('XRANGE', key, '-', '+', 'COUNT', 1)
  if #first > 0 then
    local am, as = parse(after)
    local fm, fs = parse(first[1][1])
    if am < fm or (am == fm and as < fs) then
      local info = redis.call('XINFO', 'STREAM', key)
      local length, added = 0, 0
      for i = 1, #info, 2 do
        if info[i] == 'length' then length = info[i + 1] end
        if info[i] == 'entries-added' then added = info[i + 1] end
      end
      if added > length then return newest() end
    end
  end
end
local out, bytes, start = {}, 0, '(' .. after
while true do
  local page = redis.call('XRANGE', key, start, '+', 'COUNT', 16)
  for i = 1, #page do
    local entry = page[i]
    if #out == max_n then
      if page_only then return out end
      return newest()
    end
    local size = 32 + #entry[1]
    for j = 1, #entry[2] do size = size + #entry[2][j] end
    bytes = bytes + size
    if bytes > max_bytes then
      if page_only and #out > 0 then return out end
      if not page_only then return newest() end
    end
    out[#out + 1] = entry
  end
  if #page < 16 then return out end
  start = '(' .. page[#page][1]
end
";

static READ_AFTER: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(READ_AFTER_LUA));

/// The id of a stream's newest entry (`0-0` when there is none), without the entry itself.
const NEWEST_LUA: &str = r"
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
if #last == 0 then return '0-0' end
return last[1][1]
";

static NEWEST: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(NEWEST_LUA));

/// The id of `channel`'s newest event ([`EventId::ZERO`] without one): Redis sends the id only.
pub(crate) async fn newest_id(
    redis: &RedisHandle,
    prefix: &str,
    channel: &str,
) -> Result<EventId, RedisError> {
    let id: String = redis
        .invoke(&NEWEST.key(stream_key(prefix, channel)))
        .await?;
    id.parse().map_err(|()| {
        RedisError::Command(redis::RedisError::from((
            redis::ErrorKind::Parse,
            "the newest-id script answered no stream id",
        )))
    })
}

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
    bytes: usize,
}

impl Replayed {
    fn new(events: Vec<(EventId, Bytes)>) -> Self {
        let bytes = events.iter().map(|(_, b)| b.len()).sum();
        Self { events, bytes }
    }
}

/// What [`read_after`] found.
#[derive(Debug)]
pub(crate) enum After {
    /// Every event after the id, oldest first, within the bounds.
    Events(Vec<(EventId, Bytes)>),
    /// More than the bounds allow follow the id, or history does not reach back to it: the
    /// stream's newest id (`0-0` when it is empty).
    Reset(EventId),
}

/// How [`read_after`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Read {
    /// Every event after the id or a reset; the id must itself be in history.
    Resume,
    /// The first events after the id that fit (at least one), as a page of a longer read;
    /// a reset only when history does not reach back to the id.
    Page,
}

/// The events of `channel` after `after` (exclusive), at most `max_events` of at most
/// `max_bytes` encoded, read by [`READ_AFTER_LUA`] in one round trip that ships no more than
/// what is answered.
pub(crate) async fn read_after(
    redis: &RedisHandle,
    (prefix, channel): (&str, &str),
    after: EventId,
    (max_events, max_bytes): (usize, usize),
    read: Read,
) -> Result<After, RedisError> {
    let mut invocation = READ_AFTER.key(stream_key(prefix, channel));
    invocation
        .arg(after.to_string())
        .arg(max_events)
        .arg(max_bytes)
        .arg(u8::from(read == Read::Resume))
        .arg(u8::from(read == Read::Page));
    let reply: Value = redis.invoke(&invocation).await?;
    let unparsable = || {
        RedisError::Command(redis::RedisError::from((
            redis::ErrorKind::Parse,
            "the history script answered neither entries nor an id",
        )))
    };
    match reply {
        Value::BulkString(id) => std::str::from_utf8(&id)
            .ok()
            .and_then(|id| id.parse().ok())
            .map(After::Reset)
            .ok_or_else(unparsable),
        other => {
            let range = StreamRangeReply::from_redis_value(other).map_err(|_| unparsable())?;
            let events = parse_range(range);
            let bytes: usize = events.iter().map(|(_, b)| b.len()).sum();
            // The script counts sizes the way they are encoded; this holds the bound exactly
            // (a page may hold one event beyond the bytes, to make progress).
            if read != Read::Page && (events.len() > max_events || bytes > max_bytes) {
                let newest = events.last().map_or(after, |(id, _)| *id);
                return Ok(After::Reset(newest));
            }
            Ok(After::Events(events))
        }
    }
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
        /// Replays being sent, by channel and `Last-Event-ID`: resumes of one position share
        /// one copy of the events (and read from Redis only what was published since).
        replays: Mutex<HashMap<(String, EventId), Weak<ReplaySlot>>>,
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
    /// Redis sends only what is replayed (never a page beyond the bounds), and resumes of one
    /// position share one copy while any of them is sending it.
    pub(crate) async fn replay(
        &self,
        channel: &str,
        last: EventId,
        max_events: usize,
    ) -> Result<Replay, EventsError> {
        match self {
            Self::Redis {
                redis,
                prefix,
                replays,
                ..
            } => {
                let key = (channel.to_owned(), last);
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
                // Only what was published since the shared copy was read; all of it without one.
                let from = base.events.last().map_or(last, |(id, _)| *id);
                let bounds = (
                    max_events.saturating_sub(base.events.len()),
                    MAX_REPLAY_BYTES.saturating_sub(base.bytes),
                );
                let read = read_after(redis, (prefix, channel), from, bounds, Read::Resume).await?;
                let more = match read {
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
                // `last` itself, the events allowed, and one more to tell "exactly the cap"
                // from "more". The ring's frames are shared, not copied.
                let fetch = max_events.saturating_add(2);
                let events: Vec<(EventId, Bytes)> = {
                    let rings = lock(rings);
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
                };
                let bytes: usize = events.iter().map(|(_, b)| b.len()).sum();
                match events.first() {
                    Some((first, _))
                        if *first == last
                            && events.len() - 1 <= max_events
                            && bytes <= MAX_REPLAY_BYTES =>
                    {
                        Ok(Replay::Events(
                            Arc::new(Replayed::new(events[1..].to_vec())),
                            None,
                        ))
                    }
                    _ => Ok(Replay::Reset),
                }
            }
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
