//! The Redis side: one Lua script deciding many requests at once, with the same arithmetic as
//! [`algo`](super::algo).
//!
//! A call (`EVALSHA`, redis-rs reloads the script on `NOSCRIPT`) carries the decisions of several
//! requests ([`Ask`]s grouped per request, see [`batch`](super::batch)). The script decides them
//! one request after the other, atomically on the server, so concurrent requests from any number
//! of instances see each other exactly, as with one call per decision. A request's decisions
//! (its route policy, then the global one) are all-or-nothing: each is decided on the state left
//! by the earlier ones, and when an enforcing policy denies, nothing the request's earlier
//! decisions would have spent is written: a denied request costs nothing and needs no refund.
//!
//! Cost on the server: one `EVALSHA` per call whatever its size, one `MGET` for every GCRA key of
//! the call, then one `SET ... PX` per GCRA identity admitted (the sliding log and counter keep
//! their sorted set and hash, a few commands per decision). Time is the caller's: `now` arrives
//! as an argument (see the [module docs](super) for why). Numbers that must stay exact (epoch
//! microseconds, ~1.7e15) travel as strings and are written back with `%.0f`, never with Lua's
//! default 14-digit formatting.
//!
//! The script consumes or peeks; it never refunds (a denied request writes nothing). The one
//! refund there is, a successful login giving back the attempt it spent before its password was
//! verified, is a small single-key script of its own ([`refund`]).

use std::sync::LazyLock;

use redis::Script;

use super::{
    Algorithm, Decision,
    algo::{Ask, Mode},
};
use crate::connection::{RedisError, RedisHandle};

/// ARGV: now, member prefix, number of policies P, then P policies of 7 values (algorithm
/// 0 log / 1 counter / 2 GCRA, window, limit, shadow 0/1, and three per algorithm: log: cutoff,
/// ttl ms; counter: fixed-window index, elapsed, ttl ms; GCRA: emission interval, burst
/// tolerance), then one number per decision, `(((cost * 256 + policy index) * 2 + lease) * 2 +
/// more)`, negative to peek, where `more` is 1 when the next decision belongs to the same request (one `tonumber`
/// per decision: on the 2-core bench machine each costs ~0.4 µs of Redis CPU), and `lease` 1
/// makes `cost` the units wanted for a quota lease (see [`lease`](super::lease)): the decision
/// then spends `min(cost, available)` units, at least 1, and is denied only when not even 1 fits.
/// KEYS: one per decision, in the same order. Answers 4 integers per decision: the units spent
/// when allowed (its cost; a lease's grant; a peek's cost), 0 when denied, or -1 when not decided
/// because an earlier policy of its request denied; then remaining, reset_us, retry_us.
const DECIDE: &str = r"
local now = tonumber(ARGV[1])
local prefix = ARGV[2]
local pol = {}
local a = 4
local any_gcra = false
for i = 1, tonumber(ARGV[3]) do
  pol[i] = {tonumber(ARGV[a]), tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]), ARGV[a + 3] == '1',
    ARGV[a + 4], ARGV[a + 5], ARGV[a + 6]}
  if pol[i][1] == 2 then any_gcra = true end
  a = a + 7
end
local stored = {}
if any_gcra then stored = redis.call('MGET', unpack(KEYS)) end
-- GCRA: each key's arrival time and latest decision time after the requests decided so far
-- (written at the end).
local tat = {}
-- A request's pending writes (applied when no enforcing policy denies it), in reused arrays:
-- kind (0 log, 1 counter, 2 GCRA), key, and up to four values.
local wk, wkey, w1, w2, w3, w4 = {}, {}, {}, {}, {}, {}
local nw = 0

local function log(key, p, cost, consume, k, lease)
  local window, limit = p[2], p[3]
  redis.call('ZREMRANGEBYSCORE', key, '-inf', p[5])
  local count = redis.call('ZCARD', key)
  if lease then cost = math.max(math.min(cost, limit - count), 1) end
  local function expires_in(i)
    local r = redis.call('ZRANGE', key, i, i, 'WITHSCORES')
    if r[2] == nil then return window end
    return tonumber(r[2]) + window - now
  end
  if count + cost <= limit then
    if consume then
      count = count + cost
      nw = nw + 1
      wk[nw], wkey[nw], w1[nw], w2[nw], w3[nw] = 0, key, cost, k, p[6]
    end
    local reset = 0
    if count > 0 then reset = expires_in(0) end
    return cost, limit - count, reset, 0
  end
  local retry = window
  if cost <= limit then retry = expires_in(count + cost - limit - 1) end
  local reset = 0
  if count > 0 then reset = expires_in(0) end
  return 0, math.max(limit - count, 0), reset, retry
end

local function counter(key, p, cost, consume, lease)
  local window, limit = p[2], p[3]
  local idx, elapsed = tonumber(p[5]), tonumber(p[6])
  local s = redis.call('HMGET', key, 'i', 'p', 'c')
  local sidx = tonumber(s[1]) or idx
  local prev = tonumber(s[2]) or 0
  local cur = tonumber(s[3]) or 0
  -- A call whose clock reads in a fixed window before the one the key was last written in
  -- (another instance's call, read later, reached Redis first) is decided at that window's start.
  if sidx > idx then idx, elapsed = sidx, 0 end
  if sidx < idx then
    if sidx + 1 == idx then prev = cur else prev = 0 end
    cur = 0
  end
  local estimate = prev * ((window - elapsed) / window) + cur
  local reset = window - elapsed
  if lease then cost = math.max(math.min(cost, math.floor(limit - estimate)), 1) end
  if estimate + cost <= limit then
    if consume then
      cur = cur + cost
      estimate = estimate + cost
      nw = nw + 1
      wk[nw], wkey[nw], w1[nw], w2[nw], w3[nw], w4[nw] = 1, key, math.max(idx, sidx), prev, cur, p[7]
    end
    return cost, math.max(math.floor(limit - estimate), 0), reset, 0
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
  return 0, math.max(math.floor(limit - estimate), 0), reset, retry
end

local function gcra(key, k, p, cost, consume, lease)
  -- The burst tolerance (limit intervals) stands for the window: see `algo`.
  local window, t = tonumber(p[6]), tonumber(p[5])
  local st = tat[key]
  if st == nil then
    st = false
    local v = stored[k]
    if v then
      -- 'arrival:seen', or a bare arrival time (written before `seen` was kept).
      local a, b = string.match(v, '^(%d+):(%d+)$')
      if a then st = {tonumber(a), tonumber(b)} elseif tonumber(v) then st = {tonumber(v), 0} end
    end
  end
  -- A call whose instance read its clock before one already decided on this key (whose call
  -- reached Redis first) decides at that later time: order of arrival then never costs a unit.
  local at = now
  if st and st[2] > at then at = st[2] end
  local start = math.max(st and st[1] or at, at)
  if lease then cost = math.max(math.min(cost, math.floor((at + window - start) / t)), 1) end
  local step = t * cost
  local new_tat = start + step
  if new_tat <= at + window then
    local used = start
    if consume then
      used = new_tat
      nw = nw + 1
      wk[nw], wkey[nw], w1[nw], w2[nw] = 2, key, new_tat, at
    end
    return cost, math.floor((at + window - used) / t), used - at, 0
  end
  local retry = window
  if step <= window then retry = new_tat - window - at end
  return 0, math.floor(math.max(at + window - start, 0) / t), start - at, retry
end

local out = {}
local o = 0
local k = 0
local nargs = #ARGV
while a <= nargs do
  nw = 0
  local denied = false
  local more = 1
  while more == 1 do
    k = k + 1
    local code = tonumber(ARGV[a])
    a = a + 1
    local consume = code > 0
    if not consume then code = -code end
    more = code % 2
    code = (code - more) / 2
    local lease = code % 2 == 1
    code = (code - code % 2) / 2
    local p = pol[code % 256]
    local cost = (code - code % 256) / 256
    if denied then
      out[o + 1], out[o + 2], out[o + 3], out[o + 4] = -1, 0, 0, 0
    else
      local key = KEYS[k]
      local ok, remaining, reset, retry
      if p[1] == 2 then
        ok, remaining, reset, retry = gcra(key, k, p, cost, consume, lease)
      elseif p[1] == 1 then
        ok, remaining, reset, retry = counter(key, p, cost, consume, lease)
      else
        ok, remaining, reset, retry = log(key, p, cost, consume, k, lease)
      end
      out[o + 1], out[o + 2], out[o + 3], out[o + 4] = ok, remaining, reset, retry
      if ok == 0 and not p[4] then denied = true end
    end
    o = o + 4
  end
  if not denied then
    for i = 1, nw do
      local key, kind = wkey[i], wk[i]
      if kind == 2 then
        tat[key] = {w1[i], w2[i]}
      elseif kind == 1 then
        redis.call('HSET', key, 'i', string.format('%.0f', w1[i]),
          'p', string.format('%.0f', w2[i]), 'c', string.format('%.0f', w3[i]))
        redis.call('PEXPIRE', key, w4[i])
      else
        for j = 1, w1[i] do redis.call('ZADD', key, ARGV[1], prefix .. w2[i] .. ':' .. j) end
        redis.call('PEXPIRE', key, w3[i])
      end
    end
  end
end
for key, v in pairs(tat) do
  redis.call('SET', key, string.format('%.0f:%.0f', v[1], v[2]), 'PX', math.ceil((v[1] - now) / 1000))
end
return out
";

static SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(DECIDE));

/// Gives back what one `Consume` decision spent on one key (a login whose password was right),
/// the inverse of [`DECIDE`]'s write for that algorithm. A separate script, not a third mode of
/// [`DECIDE`]: a refund is rare (one per successful login) and needs no batching, so the hot
/// path stays as benchmarked.
/// ARGV: algorithm (0 log / 1 counter / 2 GCRA), `now` of the consume, cost, and per algorithm:
/// GCRA: emission interval; counter: the consume's fixed-window index.
/// The log removes `cost` members scored `now` (members with one score are interchangeable: the
/// count and the expiry only read scores). Nothing is written to a key that has gone: a refund
/// never makes a key without a TTL. Answers 1.
const REFUND: &str = r"
local key = KEYS[1]
local kind = tonumber(ARGV[1])
local now = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
if kind == 2 then
  local v = redis.call('GET', key)
  local stored, seen = false, 0
  if v then
    local a, b = string.match(v, '^(%d+):(%d+)$')
    if a then stored, seen = tonumber(a), tonumber(b) else stored = tonumber(v) end
  end
  if stored then
    local back = stored - tonumber(ARGV[4]) * cost
    if back > now then
      redis.call('SET', key, string.format('%.0f:%.0f', back, seen), 'PX', math.ceil((back - now) / 1000))
    else
      redis.call('DEL', key)
    end
  end
elseif kind == 1 then
  local s = redis.call('HMGET', key, 'i', 'p', 'c')
  local sidx = tonumber(s[1])
  local idx = tonumber(ARGV[4])
  if sidx == idx then
    redis.call('HSET', key, 'c', string.format('%.0f', math.max((tonumber(s[3]) or 0) - cost, 0)))
  elseif sidx == idx + 1 then
    redis.call('HSET', key, 'p', string.format('%.0f', math.max((tonumber(s[2]) or 0) - cost, 0)))
  end
else
  local members = redis.call('ZRANGEBYSCORE', key, ARGV[2], ARGV[2], 'LIMIT', 0, cost)
  if #members > 0 then redis.call('ZREM', key, unpack(members)) end
end
return 1
";

static REFUND_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(REFUND));

/// Decisions per script call at most: bounds the script's work and the `MGET`'s arguments.
pub(crate) const MAX_DECISIONS: usize = 256;
/// Distinct policies per script call at most (a decision's policy index takes 8 bits).
pub(crate) const MAX_POLICIES: usize = 255;

fn ttl_ms(us: u64) -> u64 {
    us.div_ceil(1000).max(1)
}

/// Decides `requests` (each a list of [`Ask`]s, all-or-nothing) at `now` in one script call.
/// Answers, per request, the decisions made in order with the units each spent (a lease's
/// grant); a request's list stops at the first enforcing denial.
pub(crate) async fn decide<'a>(
    redis: &RedisHandle,
    now: u64,
    member_prefix: &str,
    requests: impl Iterator<Item = &'a [Ask]> + Clone,
) -> Result<Vec<Vec<(Decision, u64)>>, RedisError> {
    let mut policies: Vec<&Ask> = Vec::new();
    let mut index = Vec::new();
    for ask in requests.clone().flatten() {
        let i = match policies.iter().position(|p| p.policy() == ask.policy()) {
            Some(i) => i,
            None => {
                policies.push(ask);
                policies.len() - 1
            }
        };
        index.push(i + 1);
    }
    let mut invocation = SCRIPT.prepare_invoke();
    invocation.arg(now).arg(member_prefix).arg(policies.len());
    for a in &policies {
        let extra = match a.algorithm {
            Algorithm::SlidingCounter => {
                [now / a.window, now % a.window, ttl_ms(a.counter_ttl(now))]
            }
            Algorithm::Gcra => [a.interval(), a.tolerance(), 0],
            _ => [now.saturating_sub(a.window), ttl_ms(a.window), 0],
        };
        let code = match a.algorithm {
            Algorithm::SlidingCounter => 1,
            Algorithm::Gcra => 2,
            _ => 0,
        };
        invocation
            .arg(code)
            .arg(a.window)
            .arg(a.limit)
            .arg(u8::from(a.shadow))
            .arg(extra[0])
            .arg(extra[1])
            .arg(extra[2]);
    }
    let mut index = index.into_iter();
    let mut decisions = 0;
    for request in requests.clone() {
        for (j, ask) in request.iter().enumerate() {
            invocation.key(&ask.key);
            let more = i64::from(j + 1 < request.len());
            let leased = ask.lease > 1 && ask.mode == Mode::Consume;
            let cost = if leased { ask.lease } else { ask.cost };
            // cost <= MAX_LIMIT + 1 and index < 256: far inside Lua's exact integers.
            let cost = i64::try_from(cost).unwrap_or(i64::MAX);
            let code = ((cost * 256 + index.next().unwrap_or(1) as i64) * 2 + i64::from(leased))
                * 2
                + more;
            invocation.arg(if ask.mode == Mode::Peek { -code } else { code });
            decisions += 1;
        }
    }
    let reply: Vec<i64> = redis.invoke(&invocation).await?;
    if reply.len() != decisions * 4 {
        return Err(unexpected());
    }
    let mut chunks = reply.chunks_exact(4);
    let mut out = Vec::new();
    for request in requests {
        let mut raws = Vec::with_capacity(request.len());
        for ask in request {
            let chunk = chunks.next().ok_or_else(unexpected)?;
            if chunk[0] >= 0 {
                let granted = u64::try_from(chunk[0]).unwrap_or(0);
                let decision = Decision::from_reply(chunk, ask.limit).ok_or_else(unexpected)?;
                raws.push((decision, granted));
            }
        }
        out.push(raws);
    }
    Ok(out)
}

/// Gives back on Redis what `ask` spent at `now` (see [`REFUND`]).
pub(crate) async fn refund(redis: &RedisHandle, ask: &Ask, now: u64) -> Result<(), RedisError> {
    let (code, extra) = match ask.algorithm {
        Algorithm::SlidingCounter => (1, now / ask.window),
        Algorithm::Gcra => (2, ask.interval()),
        _ => (0, 0),
    };
    let mut invocation = REFUND_SCRIPT.prepare_invoke();
    invocation
        .key(&ask.key)
        .arg(code)
        .arg(now)
        .arg(ask.cost)
        .arg(extra);
    let _: i64 = redis.invoke(&invocation).await?;
    Ok(())
}

fn unexpected() -> RedisError {
    RedisError::Command(redis::RedisError::from((
        redis::ErrorKind::Client,
        "unexpected rate-limit script reply",
    )))
}

/// The Redis Cluster slot of `key`, computed as Redis does: CRC16 (XMODEM) of the hash tag (the
/// text between the first `{` and the next `}`, when not empty), else of the whole key, modulo
/// 16384.
pub(crate) fn slot(key: &str) -> u16 {
    let bytes = key.as_bytes();
    let tagged = bytes
        .iter()
        .position(|b| *b == b'{')
        .and_then(|open| {
            let rest = &bytes[open + 1..];
            let close = rest.iter().position(|b| *b == b'}')?;
            (close > 0).then(|| &rest[..close])
        })
        .unwrap_or(bytes);
    crc16::State::<crc16::XMODEM>::calculate(tagged) % 16384
}

#[cfg(test)]
mod tests {
    use super::slot;

    /// The slots Redis's `CLUSTER KEYSLOT` documentation gives, and its hash-tag rules.
    #[test]
    fn slots_match_redis() {
        assert_eq!(slot("somekey"), 11058);
        assert_eq!(slot("foo{hash_tag}"), 2515);
        assert_eq!(slot("bar{hash_tag}"), 2515);
        assert_eq!(slot("123456789"), 12739);
        // An empty tag hashes the whole key; only the first `{...}` counts.
        assert_eq!(slot("{}abc"), slot_of_whole("{}abc"));
        assert_eq!(slot("a{b}{c}"), slot("b"));
    }

    fn slot_of_whole(key: &str) -> u16 {
        crc16::State::<crc16::XMODEM>::calculate(key.as_bytes()) % 16384
    }
}
