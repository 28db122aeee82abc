//! Reading a channel's history in Redis: scripts that page through the stream inside Redis and
//! send back only what the reader keeps.

use std::sync::LazyLock;

use bytes::Bytes;
use redis::{FromRedisValue, Value, streams::StreamRangeReply};

use super::{
    store::stream_key,
    wire::{EventId, encode_event},
};
use crate::connection::{RedisError, RedisHandle};

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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Read {
    /// Every event after the id or a reset; the id must itself be in history.
    Resume,
    /// Every event after the id or a reset; history need only reach back to the id (nothing
    /// after it trimmed away): a multi-channel stream's position may be a channel's start
    /// (`0-0`, or no event yet) rather than an event.
    Since,
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
