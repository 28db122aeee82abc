//! The session store on Redis, one server or a cluster alike (every call stays in one slot):
//! the scripts that create a session and rotate its refresh token atomically in the user's
//! slot, and the two steps of every revocation.

use std::{collections::HashMap, time::Duration};

use super::{
    AuthFuture, Created, Principal, RejectReason, Rotation, Session, SessionStore, Times, UserId,
    in_login_order,
};
use crate::{
    auth::{
        AuthError,
        revocation::{self, Keys, Revocation, RevocationView},
    },
    connection::{RedisError, RedisHandle},
};

// Creates a session, with its login sequence number. KEYS: the new session, the user's index,
// the user's login counter, then the sessions the caller read from the index (all in the user's
// slot). ARGV: the sid, the key TTL (ms), the cap (0: no check), now (ms), the idle limit (ms,
// 0: none), the number n of sids read, those n sids, then the session's field/value pairs.
// With a cap, a session in the index that the caller did not read answers -1 (read again), and
// `cap` live sessions (not idle) answer 0; otherwise the new session's sequence number.
const CREATE: &str = r"
local n = tonumber(ARGV[6])
local cap = tonumber(ARGV[3])
if cap > 0 then
  local read = {}
  for i = 1, n do read[ARGV[6 + i]] = true end
  for _, sid in ipairs(redis.call('SMEMBERS', KEYS[2])) do
    if not read[sid] then return -1 end
  end
  local now, idle, live = tonumber(ARGV[4]), tonumber(ARGV[5]), 0
  for i = 4, #KEYS do
    local f = redis.call('HMGET', KEYS[i], 'last', 'created_at')
    local last = tonumber(f[1]) or (tonumber(f[2]) and tonumber(f[2]) * 1000)
    if last and (idle == 0 or now - last <= idle) then live = live + 1 end
  end
  if live >= cap then return 0 end
end
local seq = redis.call('INCR', KEYS[3])
redis.call('PEXPIRE', KEYS[3], ARGV[2])
local fields = {}
for i = 7 + n, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], 'seq', seq, unpack(fields))
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return seq
";

// Spends a refresh jti. KEYS: the session, the user's index (one slot). ARGV: the presented
// jti, now (ms), the grace window (ms), the idle limit (ms, 0: none), the successor jti, the
// successor's iat (s), the expiry (s) for a session stored without one, the TTL (ms) that
// such a session's keys get. Answers {1, fields} rotated, {2, fields} a replay of the spent
// jti within the window (the session's current jti is that jti's successor), {-1} a reuse,
// {-2} idle, {0} no session; the caller revokes on -1 and -2 (global record first, see
// `RedisStore::record`).
const ROTATE: &str = r"
local f = redis.call('HMGET', KEYS[1], 'rjti', 'pjti', 'pat', 'last', 'created_at', 'rexp')
if not f[1] then return {0, false} end
local now = tonumber(ARGV[2])
local last = tonumber(f[4]) or tonumber(f[5]) * 1000
local idle = tonumber(ARGV[4])
if idle > 0 and now - last > idle then return {-2, false} end
if f[1] == ARGV[1] then
  redis.call('HSET', KEYS[1], 'rjti', ARGV[5], 'pjti', ARGV[1], 'pat', ARGV[2], 'riat', ARGV[6])
  if now > last then redis.call('HSET', KEYS[1], 'last', ARGV[2]) end
  if not f[6] then
    redis.call('HSET', KEYS[1], 'rexp', ARGV[7])
    redis.call('PEXPIRE', KEYS[1], ARGV[8])
    redis.call('PEXPIRE', KEYS[2], ARGV[8])
  end
  return {1, redis.call('HGETALL', KEYS[1])}
end
if f[2] == ARGV[1] and now - tonumber(f[3]) < tonumber(ARGV[3]) then
  if now > last then redis.call('HSET', KEYS[1], 'last', ARGV[2]) end
  return {2, redis.call('HGETALL', KEYS[1])}
end
return {-1, false}
";

/// Sessions in Redis, shared by every instance; revocations in the global record.
#[derive(Clone, Debug)]
pub(crate) struct RedisStore {
    redis: RedisHandle,
    keys: Keys,
    create: redis::Script,
    rotate: redis::Script,
    /// With durable writes: how long a write waits for a replica's acknowledgement.
    durable: Option<Duration>,
}

impl RedisStore {
    pub(crate) fn new(redis: RedisHandle, keys: Keys, durable: Option<Duration>) -> Self {
        Self {
            redis,
            keys,
            create: redis::Script::new(CREATE),
            rotate: redis::Script::new(ROTATE),
            durable,
        }
    }

    /// With durable writes on, after a write through this store to the slot of `key`: waits
    /// until a replica of that slot's primary acknowledged every write of this connection
    /// (`WAIT 1`). The keyed read in front routes the pipeline, on a cluster, to the node
    /// serving `key` (`WAIT` alone goes to every primary). `WAIT` blocks the connection it
    /// runs on, which this process's other commands to that node share, for as long as it
    /// waits: a replica's acknowledgement usually takes one round trip.
    async fn replicated(&self, key: &str) -> Result<(), AuthError> {
        let Some(wait) = self.durable else {
            return Ok(());
        };
        let mut pipe = redis::pipe();
        pipe.cmd("PTTL")
            .arg(key)
            .ignore()
            .cmd("WAIT")
            .arg(1)
            .arg(u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1));
        let (acknowledged,): (i64,) = self.redis.query_pipe(&pipe).await?;
        if acknowledged < 1 {
            return Err(AuthError::NotReplicated);
        }
        Ok(())
    }

    /// Step one of every revocation: the global record, which every instance's view reads
    /// (events) and rebuilds from (zsets). One `MULTI` in the `{revocations}` slot: prunes
    /// what expired, adds `events` (a jti also to the denylist), keeps each zset's TTL past its
    /// entries, and `PUBLISH`es each event.
    ///
    /// It runs before step two ([`drop_sessions`](Self::drop_sessions)): once it succeeded no
    /// instance accepts the revoked tokens (the local view applies the events at once, the
    /// others as the events arrive, or from the zsets when they rebuild). A failure between
    /// the two steps leaves sessions that exist but are revoked: refresh checks the view
    /// first, so they are refused, and expire with their TTL (a retried logout-all deletes
    /// them). The reverse order would leave the access tokens of deleted sessions accepted.
    async fn record(&self, events: &[Revocation], t: Times) -> Result<(), AuthError> {
        let k = &self.keys;
        // Every entry ends within `revoke_for_ms` of its write (a session's and a user's by
        // definition, a jti at its token's `exp` + leeway, which is sooner), so a TTL restarted
        // at each write outlives every entry of the key.
        let ttl = t.revoke_for_ms;
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("ZREMRANGEBYSCORE")
            .arg(&k.sids)
            .arg("-inf")
            .arg(t.now_ms)
            .ignore()
            .cmd("ZREMRANGEBYSCORE")
            .arg(&k.jtis)
            .arg("-inf")
            .arg(t.now_ms)
            .ignore()
            .cmd("ZREMRANGEBYSCORE")
            .arg(&k.users)
            .arg("-inf")
            .arg((t.now_ms - ttl).div_euclid(1000))
            .ignore();
        for ev in events {
            match ev {
                Revocation::Session(sid, until) => {
                    pipe.zadd(&k.sids, sid, *until)
                        .ignore()
                        .pexpire(&k.sids, ttl)
                        .ignore();
                }
                Revocation::Token(jti, until) => {
                    let key = k.denylist(jti);
                    pipe.set(&key, 1)
                        .ignore()
                        .cmd("PEXPIREAT")
                        .arg(&key)
                        .arg(*until)
                        .ignore()
                        .zadd(&k.jtis, jti, *until)
                        .ignore()
                        .pexpire(&k.jtis, ttl)
                        .ignore();
                }
                Revocation::User(uid, before) => {
                    pipe.cmd("ZADD")
                        .arg(&k.users)
                        .arg("GT")
                        .arg(*before)
                        .arg(*uid)
                        .ignore()
                        .pexpire(&k.users, ttl)
                        .ignore();
                }
            }
            pipe.publish(&k.channel, ev.encode()).ignore();
        }
        self.redis.query_pipe::<()>(&pipe).await?;
        self.replicated(&k.sids).await
    }

    /// Step two of a revocation: deletes sessions of `uid` and drops them from the user's
    /// index, in one `MULTI` in the user's slot.
    ///
    /// A revocation record lives only as long as an access token (see `AuthHandle::times`):
    /// after that, a revoked session that still existed would rotate its refresh token again.
    /// So when this step fails it is retried in the background, every second, for as long as
    /// the record lives; the caller still gets the error.
    async fn drop_sessions(&self, uid: UserId, sids: &[String], t: Times) -> Result<(), AuthError> {
        let Err(err) = self.delete_sessions(uid, sids).await else {
            return Ok(());
        };
        let store = self.clone();
        let sids = sids.to_vec();
        let tries = u64::try_from(t.revoke_for_ms / 1000).unwrap_or(0).max(1);
        tokio::spawn(async move {
            for _ in 0..tries {
                tokio::time::sleep(Duration::from_secs(1)).await;
                if store.delete_sessions(uid, &sids).await.is_ok() {
                    return;
                }
            }
            tracing::error!(user = uid, "auth: revoked sessions could not be deleted");
        });
        Err(err)
    }

    async fn delete_sessions(&self, uid: UserId, sids: &[String]) -> Result<(), AuthError> {
        if sids.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        pipe.atomic();
        for sid in sids {
            pipe.del(self.keys.session(uid, sid)).ignore();
        }
        pipe.srem(self.keys.user_sessions(uid), sids).ignore();
        self.redis.query_pipe::<()>(&pipe).await?;
        self.replicated(&self.keys.user_sessions(uid)).await
    }
}

impl SessionStore for RedisStore {
    fn ensure_up(&self) -> Result<(), AuthError> {
        if self.redis.is_up() {
            Ok(())
        } else {
            Err(AuthError::Redis(RedisError::Timeout(self.redis.timeout())))
        }
    }

    fn create<'a>(
        &'a self,
        s: &'a Session,
        cap: Option<(usize, &'a [Session])>,
        t: Times,
    ) -> AuthFuture<'a, Created> {
        Box::pin(async move {
            let k = &self.keys;
            let (limit, read) = cap.unwrap_or((0, &[]));
            let mut inv = self.create.prepare_invoke();
            inv.key(k.session(s.user_id, &s.sid))
                .key(k.user_sessions(s.user_id))
                .key(session_seq(k, s.user_id));
            for other in read {
                inv.key(k.session(s.user_id, &other.sid));
            }
            inv.arg(&s.sid)
                .arg(t.ttl_ms)
                .arg(limit)
                .arg(t.now_ms)
                .arg(t.idle_ms)
                .arg(read.len());
            for other in read {
                inv.arg(&other.sid);
            }
            for (field, value) in [
                ("uid", s.user_id.to_string()),
                ("username", s.username.clone()),
                ("email", s.email.clone()),
                ("created_at", s.created_at.to_string()),
                ("ip", s.ip.clone()),
                ("ua", s.user_agent.clone()),
                ("rjti", s.refresh_jti.clone()),
                ("riat", s.refresh_iat.to_string()),
                ("rexp", s.refresh_exp.to_string()),
                ("last", s.last_used_ms.to_string()),
            ] {
                inv.arg(field).arg(value);
            }
            let seq: i64 = self.redis.invoke(&inv).await?;
            Ok(match seq {
                -1 => Created::IndexChanged,
                0 => Created::Full,
                seq => {
                    self.replicated(&k.session(s.user_id, &s.sid)).await?;
                    Created::Stored(seq.unsigned_abs())
                }
            })
        })
    }

    fn rotate<'a>(
        &'a self,
        uid: UserId,
        sid: &'a str,
        presented: &'a str,
        successor: (&'a str, i64, i64),
        t: Times,
        view: &'a RevocationView,
    ) -> AuthFuture<'a, Rotation> {
        Box::pin(async move {
            let (new_jti, new_iat, legacy_exp) = successor;
            let mut inv = self.rotate.prepare_invoke();
            inv.key(self.keys.session(uid, sid))
                .key(self.keys.user_sessions(uid))
                .arg(presented)
                .arg(t.now_ms)
                .arg(t.grace_ms)
                .arg(t.idle_ms)
                .arg(new_jti)
                .arg(new_iat)
                .arg(legacy_exp)
                .arg(t.ttl_ms);
            let (code, fields): (i64, Option<HashMap<String, String>>) =
                self.redis.invoke(&inv).await?;
            let session = || fields.as_ref().and_then(|f| from_hash(sid, f));
            match code {
                1 => {
                    self.replicated(&self.keys.session(uid, sid)).await?;
                    Ok(session().map_or(Rotation::Gone, Rotation::Rotated))
                }
                2 => Ok(session().map_or(Rotation::Gone, Rotation::Grace)),
                -1 | -2 => {
                    // Revoked in the global record first, then deleted.
                    let events = [Revocation::Session(
                        sid.to_owned(),
                        t.now_ms + t.revoke_for_ms,
                    )];
                    self.record(&events, t).await?;
                    view.apply(events);
                    self.drop_sessions(uid, &[sid.to_owned()], t).await?;
                    Ok(if code == -1 {
                        Rotation::Reused
                    } else {
                        Rotation::IdleExpired
                    })
                }
                _ => Ok(Rotation::Gone),
            }
        })
    }

    fn get<'a>(
        &'a self,
        uid: UserId,
        sid: &'a str,
        _now_ms: i64,
    ) -> AuthFuture<'a, Option<Session>> {
        // A session's key expires with it.
        Box::pin(async move {
            let map: HashMap<String, String> = self
                .redis
                .query(redis::cmd("HGETALL").arg(self.keys.session(uid, sid)))
                .await?;
            Ok(from_hash(sid, &map))
        })
    }

    fn list(&self, uid: UserId, _now_ms: i64, prune: bool) -> AuthFuture<'_, Vec<Session>> {
        Box::pin(async move {
            let index = self.keys.user_sessions(uid);
            let sids: Vec<String> = self.redis.query(redis::cmd("SMEMBERS").arg(&index)).await?;
            if sids.is_empty() {
                return Ok(Vec::new());
            }
            let mut pipe = redis::pipe();
            for sid in &sids {
                pipe.hgetall(self.keys.session(uid, sid));
            }
            let maps: Vec<HashMap<String, String>> = self.redis.query_pipe(&pipe).await?;
            // An empty hash is a session key that expired: dropped from the index here, in the
            // user's slot, so no login needs a pass of its own to prune it.
            let dead: Vec<&String> = sids
                .iter()
                .zip(&maps)
                .filter_map(|(sid, map)| map.is_empty().then_some(sid))
                .collect();
            if prune && !dead.is_empty() {
                self.redis
                    .query::<i64>(redis::cmd("SREM").arg(&index).arg(&dead))
                    .await?;
            }
            Ok(in_login_order(
                sids.iter()
                    .zip(&maps)
                    .filter_map(|(sid, map)| from_hash(sid, map))
                    .collect(),
            ))
        })
    }

    fn revoke_session<'a>(
        &'a self,
        uid: UserId,
        sid: &'a str,
        access: Option<(&'a str, i64)>,
        t: Times,
        view: &'a RevocationView,
    ) -> AuthFuture<'a, bool> {
        Box::pin(async move {
            // The key names the user: only the caller's own session is found.
            let owner: Option<String> = self
                .redis
                .query(
                    redis::cmd("HGET")
                        .arg(self.keys.session(uid, sid))
                        .arg("uid"),
                )
                .await?;
            let existed = owner.as_deref() == Some(uid.to_string().as_str());
            if !existed && access.is_none() {
                // Not the caller's session: nothing to revoke (and no probing of others').
                return Ok(false);
            }
            let mut events = vec![Revocation::Session(
                sid.to_owned(),
                t.now_ms + t.revoke_for_ms,
            )];
            if let Some((jti, until)) = access {
                events.push(Revocation::Token(jti.to_owned(), until));
            }
            self.record(&events, t).await?;
            view.apply(events);
            if existed {
                self.drop_sessions(uid, &[sid.to_owned()], t).await?;
            }
            Ok(existed)
        })
    }

    fn revoke_user<'a>(
        &'a self,
        uid: UserId,
        before: i64,
        t: Times,
        view: &'a RevocationView,
    ) -> AuthFuture<'a, ()> {
        Box::pin(async move {
            // A session created after this read is newer than the logout-all.
            let sids: Vec<String> = self
                .redis
                .query(redis::cmd("SMEMBERS").arg(self.keys.user_sessions(uid)))
                .await?;
            let events = super::revocations(uid, before, &sids, t);
            self.record(&events, t).await?;
            view.apply(events);
            self.drop_sessions(uid, &sids, t).await
        })
    }

    fn revoked<'a>(&'a self, p: &'a Principal) -> AuthFuture<'a, Result<(), RejectReason>> {
        Box::pin(async move { Ok(revocation::check_remote(&self.redis, &self.keys, p).await?) })
    }
}

/// The user's login counter, in the user's slot: it orders the user's sessions for the cap.
/// It outlives them all (its TTL restarts at every login, and no session outlives its login by
/// more than the session lifetime), so the order never restarts under a live session.
fn session_seq(keys: &Keys, uid: UserId) -> String {
    format!("{}session_seq:{{user:{uid}}}", keys.prefix)
}

fn from_hash(sid: &str, map: &HashMap<String, String>) -> Option<Session> {
    let num = |field: &str| map.get(field).and_then(|v| v.parse::<i64>().ok());
    let created_at = num("created_at")?;
    // Sessions stored by an earlier version lack the newer fields: they sort first by login
    // order, count as last used at login, and get an expiry at their next rotation.
    let last_used_ms = num("last").unwrap_or(created_at.saturating_mul(1000));
    Some(Session {
        sid: sid.to_owned(),
        user_id: map.get("uid")?.parse().ok()?,
        username: map.get("username")?.clone(),
        email: map.get("email")?.clone(),
        created_at,
        last_used_at: last_used_ms.div_euclid(1000),
        ip: map.get("ip").cloned().unwrap_or_default(),
        user_agent: map.get("ua").cloned().unwrap_or_default(),
        refresh_jti: map.get("rjti")?.clone(),
        seq: num("seq").unwrap_or(0).unsigned_abs(),
        last_used_ms,
        refresh_iat: num("riat").unwrap_or(created_at),
        refresh_exp: num("rexp").unwrap_or(0),
    })
}
