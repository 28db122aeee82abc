//! The Redis side: one Lua script per algorithm, the same arithmetic as [`algo`](super::algo).
//!
//! Each decision is one `EVALSHA` (redis-rs reloads the script on `NOSCRIPT`), atomic on the
//! server, so concurrent requests from any number of instances see each other exactly.
//! Time is the caller's: `now` arrives as an argument (see the [module docs](super) for why).
//! Every script answers `{allowed, remaining, reset_us, retry_us}`. Numbers that must stay exact
//! (epoch microseconds, ~1.7e15) travel as strings and are written back with `%.0f`, never with
//! Lua's default 14-digit formatting.

use std::sync::LazyLock;

use redis::Script;

use super::{
    Algorithm,
    algo::{Args, Raw},
};
use crate::redis::{RedisError, RedisHandle};

/// Sliding-window log in a sorted set: score = time, member = unique per unit.
/// ARGV: now, window, limit, cost, mode, member prefix, cutoff (now - window), ttl ms.
const SLIDING_LOG: &str = r"
local key = KEYS[1]
local now = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
local cost = tonumber(ARGV[4])
local mode = ARGV[5]
local member = ARGV[6]
if mode == 'refund' then
  for i = 1, cost do redis.call('ZREM', key, member .. ':' .. i) end
  return {1, 0, 0, 0}
end
redis.call('ZREMRANGEBYSCORE', key, '-inf', ARGV[7])
local count = redis.call('ZCARD', key)
local function expires_in(i)
  local r = redis.call('ZRANGE', key, i, i, 'WITHSCORES')
  if r[2] == nil then return window end
  return tonumber(r[2]) + window - now
end
if count + cost <= limit then
  if mode == 'consume' then
    for i = 1, cost do redis.call('ZADD', key, ARGV[1], member .. ':' .. i) end
    redis.call('PEXPIRE', key, ARGV[8])
    count = count + cost
  end
  local reset = 0
  if count > 0 then reset = expires_in(0) end
  return {1, limit - count, reset, 0}
end
local retry = window
if cost <= limit then retry = expires_in(count + cost - limit - 1) end
local reset = 0
if count > 0 then reset = expires_in(0) end
return {0, math.max(limit - count, 0), reset, retry}
";

/// Sliding-window counter in a hash: `i` fixed-window index, `p` previous count, `c` current.
/// ARGV: now, window, limit, cost, mode, index (now / window), elapsed (now % window), ttl ms.
const SLIDING_COUNTER: &str = r"
local key = KEYS[1]
local window = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
local cost = tonumber(ARGV[4])
local mode = ARGV[5]
local idx = tonumber(ARGV[6])
local elapsed = tonumber(ARGV[7])
local s = redis.call('HMGET', key, 'i', 'p', 'c')
local sidx = tonumber(s[1]) or idx
local prev = tonumber(s[2]) or 0
local cur = tonumber(s[3]) or 0
if mode == 'refund' then
  if sidx == idx then
    redis.call('HSET', key, 'c', string.format('%.0f', math.max(cur - cost, 0)))
  elseif sidx == idx + 1 then
    redis.call('HSET', key, 'p', string.format('%.0f', math.max(prev - cost, 0)))
  end
  return {1, 0, 0, 0}
end
if sidx < idx then
  if sidx + 1 == idx then prev = cur else prev = 0 end
  cur = 0
end
local estimate = prev * ((window - elapsed) / window) + cur
local reset = window - elapsed
if estimate + cost <= limit then
  if mode == 'consume' then
    cur = cur + cost
    estimate = estimate + cost
    redis.call('HSET', key, 'i', string.format('%.0f', math.max(idx, sidx)),
      'p', string.format('%.0f', prev), 'c', string.format('%.0f', cur))
    redis.call('PEXPIRE', key, ARGV[8])
  end
  return {1, math.max(math.floor(limit - estimate), 0), reset, 0}
end
local retry = window
if cost <= limit then
  local avail = limit - cost - cur
  if avail >= 0 then
    retry = math.max(math.ceil(window - avail * window / prev) - elapsed, 1)
  else
    retry = reset + math.max(math.ceil(window - (limit - cost) * window / cur), 0)
  end
end
return {0, math.max(math.floor(limit - estimate), 0), reset, retry}
";

/// GCRA in a string: the theoretical arrival time.
/// ARGV: now, window, limit, cost, mode, emission interval.
const GCRA: &str = r"
local key = KEYS[1]
local now = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local cost = tonumber(ARGV[4])
local mode = ARGV[5]
local t = tonumber(ARGV[6])
local step = t * cost
local stored = tonumber(redis.call('GET', key))
if mode == 'refund' then
  if stored then
    local back = stored - step
    if back > now then
      redis.call('SET', key, string.format('%.0f', back), 'PX', string.format('%.0f', math.ceil((back - now) / 1000)))
    else
      redis.call('DEL', key)
    end
  end
  return {1, 0, 0, 0}
end
local tat = math.max(stored or now, now)
local new_tat = tat + step
if new_tat <= now + window then
  local used = tat
  if mode == 'consume' then
    used = new_tat
    redis.call('SET', key, string.format('%.0f', new_tat), 'PX', string.format('%.0f', math.ceil((new_tat - now) / 1000)))
  end
  return {1, math.floor((now + window - used) / t), used - now, 0}
end
local retry = window
if step <= window then retry = new_tat - window - now end
return {0, math.floor(math.max(now + window - tat, 0) / t), tat - now, retry}
";

static SCRIPTS: LazyLock<[Script; 3]> = LazyLock::new(|| {
    [
        Script::new(SLIDING_LOG),
        Script::new(SLIDING_COUNTER),
        Script::new(GCRA),
    ]
});

fn ttl_ms(us: u64) -> u64 {
    us.div_ceil(1000).max(1)
}

/// Runs one decision on Redis: exactly one `EVALSHA` (plus a `SCRIPT LOAD` after a restart).
pub(crate) async fn decide(redis: &RedisHandle, key: &str, a: &Args) -> Result<Raw, RedisError> {
    let (script, extra): (&Script, [u64; 3]) = match a.algorithm {
        Algorithm::SlidingCounter => (
            &SCRIPTS[1],
            [a.now / a.window, a.now % a.window, ttl_ms(a.counter_ttl())],
        ),
        Algorithm::Gcra => (&SCRIPTS[2], [a.interval(), 0, 0]),
        _ => (
            &SCRIPTS[0],
            [0, a.now.saturating_sub(a.window), ttl_ms(a.window)],
        ),
    };
    let mut invocation = script.key(key);
    invocation
        .arg(a.now)
        .arg(a.window)
        .arg(a.limit)
        .arg(a.cost)
        .arg(a.mode.as_str());
    match a.algorithm {
        Algorithm::SlidingCounter | Algorithm::Gcra => {
            invocation.arg(extra[0]).arg(extra[1]).arg(extra[2]);
        }
        _ => {
            invocation.arg(&a.member).arg(extra[1]).arg(extra[2]);
        }
    }
    let reply: Vec<i64> = redis.invoke(&invocation).await?;
    Raw::from_reply(&reply).ok_or_else(|| {
        RedisError::Command(redis::RedisError::from((
            redis::ErrorKind::Client,
            "unexpected rate-limit script reply",
        )))
    })
}
