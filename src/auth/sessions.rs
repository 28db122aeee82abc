//! Sessions (one per login) and revocation writes, in Redis or in process with the same rules.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
};

use serde::Serialize;

use super::{
    AuthError, Clock, UserId,
    revocation::{Keys, Revocation, RevocationView},
};
use crate::connection::RedisHandle;

/// A live session as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[non_exhaustive]
pub struct Session {
    /// Session id.
    pub sid: String,
    /// Owner.
    #[serde(skip)]
    pub user_id: UserId,
    /// Owner's username at login.
    #[serde(skip)]
    pub username: String,
    /// Owner's email at login.
    #[serde(skip)]
    pub email: String,
    /// Login time, Unix seconds.
    pub created_at: i64,
    /// Client address at login.
    pub ip: String,
    /// `User-Agent` at login.
    pub user_agent: String,
    /// The one refresh jti that may still be spent.
    #[serde(skip)]
    pub refresh_jti: String,
}

/// What presenting a refresh token did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Rotation {
    /// The presented jti was current; it is now spent and `new` is current.
    Rotated(Session),
    /// The jti was already spent: the session is now revoked.
    Reused,
    /// No such session (expired or revoked).
    Gone,
}

// Compare-and-swap of the session's current refresh jti. KEYS: the session, the user's index
// (both in the user's slot). A mismatch changes nothing here: the caller revokes the session,
// in the global record first, then deletes it (see `RedisStore::record`).
const ROTATE: &str = r"
local cur = redis.call('HGET', KEYS[1], 'rjti')
if not cur then return {0, false} end
if cur ~= ARGV[1] then return {-1, false} end
redis.call('HSET', KEYS[1], 'rjti', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return {1, redis.call('HGETALL', KEYS[1])}
";

/// Session storage and revocation writes.
#[derive(Clone, Debug)]
pub(crate) enum Store {
    /// In process (single instance).
    Memory(Arc<Mutex<MemoryState>>),
    /// Redis (shared by instances).
    Redis(RedisStore),
}

#[derive(Debug, Default)]
pub(crate) struct MemoryState {
    sessions: HashMap<String, (Session, i64)>,
    by_user: HashMap<UserId, HashSet<String>>,
}

impl RedisStore {
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
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
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

#[derive(Clone, Debug)]
pub(crate) struct RedisStore {
    pub redis: RedisHandle,
    pub keys: Keys,
    rotate: Arc<redis::Script>,
    /// With durable writes: how long a write waits for a replica's acknowledgement.
    durable: Option<std::time::Duration>,
}

impl RedisStore {
    pub fn new(redis: RedisHandle, keys: Keys, durable: Option<std::time::Duration>) -> Self {
        Self {
            redis,
            keys,
            rotate: Arc::new(redis::Script::new(ROTATE)),
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
}

fn from_hash(sid: &str, map: &HashMap<String, String>) -> Option<Session> {
    Some(Session {
        sid: sid.to_owned(),
        user_id: map.get("uid")?.parse().ok()?,
        username: map.get("username")?.clone(),
        email: map.get("email")?.clone(),
        created_at: map.get("created_at")?.parse().ok()?,
        ip: map.get("ip").cloned().unwrap_or_default(),
        user_agent: map.get("ua").cloned().unwrap_or_default(),
        refresh_jti: map.get("rjti")?.clone(),
    })
}

/// Times the store needs, all from the auth clock.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Times {
    pub now_ms: i64,
    /// Session lifetime (refresh TTL), ms.
    pub ttl_ms: i64,
    /// How long a revocation record lives: the longest token it denies (set by the handle to
    /// the access TTL + leeway), ms.
    pub revoke_for_ms: i64,
}

impl Store {
    pub fn memory() -> Self {
        Self::Memory(Arc::default())
    }

    fn lock(state: &Mutex<MemoryState>) -> std::sync::MutexGuard<'_, MemoryState> {
        state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records a new session. In memory, also drops the user's expired sessions; on Redis the
    /// login's [`list_pruning`](Self::list_pruning) right after does (the index's own TTL restarts
    /// at every login, so without it the index would only ever grow, and `logout-all` would walk
    /// every session ever created).
    pub async fn create(&self, s: &Session, t: Times) -> Result<(), AuthError> {
        match self {
            Self::Memory(state) => {
                let mut st = Self::lock(state);
                let MemoryState { sessions, by_user } = &mut *st;
                if let Some(sids) = by_user.get_mut(&s.user_id) {
                    sids.retain(|sid| {
                        let live = sessions.get(sid).is_some_and(|(_, exp)| *exp > t.now_ms);
                        if !live {
                            sessions.remove(sid);
                        }
                        live
                    });
                }
                st.sessions
                    .insert(s.sid.clone(), (s.clone(), t.now_ms + t.ttl_ms));
                st.by_user
                    .entry(s.user_id)
                    .or_default()
                    .insert(s.sid.clone());
                Ok(())
            }
            Self::Redis(r) => {
                let key = r.keys.session(s.user_id, &s.sid);
                let index = r.keys.user_sessions(s.user_id);
                let mut pipe = redis::pipe();
                pipe.atomic()
                    .hset_multiple(
                        &key,
                        &[
                            ("uid", s.user_id.to_string()),
                            ("username", s.username.clone()),
                            ("email", s.email.clone()),
                            ("created_at", s.created_at.to_string()),
                            ("ip", s.ip.clone()),
                            ("ua", s.user_agent.clone()),
                            ("rjti", s.refresh_jti.clone()),
                        ],
                    )
                    .ignore()
                    .pexpire(&key, t.ttl_ms)
                    .ignore()
                    .sadd(&index, &s.sid)
                    .ignore()
                    .pexpire(&index, t.ttl_ms)
                    .ignore();
                r.redis.query_pipe::<()>(&pipe).await?;
                r.replicated(&key).await
            }
        }
    }

    /// Spends `presented` and makes `new` the session's current refresh jti, atomically.
    pub async fn rotate(
        &self,
        uid: UserId,
        sid: &str,
        presented: &str,
        new: &str,
        t: Times,
        view: &RevocationView,
    ) -> Result<Rotation, AuthError> {
        match self {
            Self::Memory(state) => {
                let mut st = Self::lock(state);
                let Some((session, expires)) = st.sessions.get_mut(sid) else {
                    return Ok(Rotation::Gone);
                };
                if *expires <= t.now_ms {
                    return Ok(Rotation::Gone);
                }
                if session.refresh_jti != presented {
                    let uid = session.user_id;
                    st.sessions.remove(sid);
                    if let Some(set) = st.by_user.get_mut(&uid) {
                        set.remove(sid);
                    }
                    view.apply([Revocation::Session(
                        sid.to_owned(),
                        t.now_ms + t.revoke_for_ms,
                    )]);
                    return Ok(Rotation::Reused);
                }
                session.refresh_jti = new.to_owned();
                *expires = t.now_ms + t.ttl_ms;
                Ok(Rotation::Rotated(session.clone()))
            }
            Self::Redis(r) => {
                let mut inv = r.rotate.prepare_invoke();
                inv.key(r.keys.session(uid, sid))
                    .key(r.keys.user_sessions(uid))
                    .arg(presented)
                    .arg(new)
                    .arg(t.ttl_ms);
                let (code, fields): (i64, Option<HashMap<String, String>>) =
                    r.redis.invoke(&inv).await?;
                match code {
                    1 => {
                        r.replicated(&r.keys.session(uid, sid)).await?;
                        Ok(fields
                            .and_then(|f| from_hash(sid, &f))
                            .map_or(Rotation::Gone, Rotation::Rotated))
                    }
                    -1 => {
                        // Reused: revoked in the global record first, then deleted.
                        let events = [Revocation::Session(
                            sid.to_owned(),
                            t.now_ms + t.revoke_for_ms,
                        )];
                        r.record(&events, t).await?;
                        view.apply(events);
                        r.drop_sessions(uid, &[sid.to_owned()], t).await?;
                        Ok(Rotation::Reused)
                    }
                    _ => Ok(Rotation::Gone),
                }
            }
        }
    }

    /// One session, if live.
    pub async fn get(
        &self,
        uid: UserId,
        sid: &str,
        now_ms: i64,
    ) -> Result<Option<Session>, AuthError> {
        match self {
            Self::Memory(state) => Ok(Self::lock(state)
                .sessions
                .get(sid)
                .filter(|(s, exp)| s.user_id == uid && *exp > now_ms)
                .map(|(s, _)| s.clone())),
            Self::Redis(r) => {
                let map: HashMap<String, String> = r
                    .redis
                    .query(redis::cmd("HGETALL").arg(r.keys.session(uid, sid)))
                    .await?;
                Ok(from_hash(sid, &map))
            }
        }
    }

    /// The user's live sessions, oldest first.
    pub async fn list(&self, uid: UserId, now_ms: i64) -> Result<Vec<Session>, AuthError> {
        self.list_and_prune(uid, now_ms, false).await
    }

    /// [`list`](Self::list), and on Redis drops from the user's index the sessions whose keys
    /// expired, from the same read (one `SMEMBERS`, one pipeline of `HGETALL`, and an `SREM` when
    /// some are gone): a login reads the index once.
    pub async fn list_pruning(&self, uid: UserId, now_ms: i64) -> Result<Vec<Session>, AuthError> {
        self.list_and_prune(uid, now_ms, true).await
    }

    async fn list_and_prune(
        &self,
        uid: UserId,
        now_ms: i64,
        prune: bool,
    ) -> Result<Vec<Session>, AuthError> {
        let mut out = match self {
            Self::Memory(state) => {
                let st = Self::lock(state);
                st.by_user
                    .get(&uid)
                    .into_iter()
                    .flatten()
                    .filter_map(|sid| st.sessions.get(sid))
                    .filter(|(_, exp)| *exp > now_ms)
                    .map(|(s, _)| s.clone())
                    .collect::<Vec<_>>()
            }
            Self::Redis(r) => {
                let index = r.keys.user_sessions(uid);
                let sids: Vec<String> = r.redis.query(redis::cmd("SMEMBERS").arg(&index)).await?;
                if sids.is_empty() {
                    return Ok(Vec::new());
                }
                let mut pipe = redis::pipe();
                for sid in &sids {
                    pipe.hgetall(r.keys.session(uid, sid));
                }
                let maps: Vec<HashMap<String, String>> = r.redis.query_pipe(&pipe).await?;
                // An empty hash is a session key that expired: dropped from the index here, in
                // the user's slot, so no login needs a pass of its own to prune it.
                let dead: Vec<&String> = sids
                    .iter()
                    .zip(&maps)
                    .filter_map(|(sid, map)| map.is_empty().then_some(sid))
                    .collect();
                if prune && !dead.is_empty() {
                    r.redis
                        .query::<i64>(redis::cmd("SREM").arg(&index).arg(&dead))
                        .await?;
                }
                sids.iter()
                    .zip(&maps)
                    .filter_map(|(sid, map)| from_hash(sid, map))
                    .collect()
            }
        };
        out.sort_by(|a, b| (a.created_at, &a.sid).cmp(&(b.created_at, &b.sid)));
        Ok(out)
    }

    /// Revokes session `sid` of `uid`, and denylists `access` (jti, exp ms) if given.
    /// Answers whether the session existed.
    pub async fn revoke_session(
        &self,
        uid: UserId,
        sid: &str,
        access: Option<(&str, i64)>,
        t: Times,
        view: &RevocationView,
    ) -> Result<bool, AuthError> {
        let revoked_until = t.now_ms + t.revoke_for_ms;
        let mut events = vec![Revocation::Session(sid.to_owned(), revoked_until)];
        if let Some((jti, until)) = access {
            events.push(Revocation::Token(jti.to_owned(), until));
        }
        let existed = match self {
            Self::Memory(state) => {
                let mut st = Self::lock(state);
                let existed = st
                    .sessions
                    .get(sid)
                    .is_some_and(|(s, exp)| s.user_id == uid && *exp > t.now_ms);
                if !existed && access.is_none() {
                    // Not the caller's session: nothing to revoke (and no touching others').
                    return Ok(false);
                }
                st.sessions.remove(sid);
                if let Some(set) = st.by_user.get_mut(&uid) {
                    set.remove(sid);
                }
                existed
            }
            Self::Redis(r) => {
                // The key names the user: only the caller's own session is found.
                let owner: Option<String> = r
                    .redis
                    .query(redis::cmd("HGET").arg(r.keys.session(uid, sid)).arg("uid"))
                    .await?;
                let existed = owner.as_deref() == Some(uid.to_string().as_str());
                if !existed && access.is_none() {
                    // Not the caller's session: nothing to revoke (and no probing of others').
                    return Ok(false);
                }
                r.record(&events, t).await?;
                view.apply(events);
                if existed {
                    r.drop_sessions(uid, &[sid.to_owned()], t).await?;
                }
                return Ok(existed);
            }
        };
        view.apply(events);
        Ok(existed)
    }

    /// Revokes every session of `uid` and every token issued before `before` (seconds).
    pub async fn revoke_user(
        &self,
        uid: UserId,
        before: i64,
        t: Times,
        view: &RevocationView,
    ) -> Result<(), AuthError> {
        let revoked_until = t.now_ms + t.revoke_for_ms;
        let events = |sids: &[String]| -> Vec<Revocation> {
            sids.iter()
                .map(|sid| Revocation::Session(sid.clone(), revoked_until))
                .chain([Revocation::User(uid, before)])
                .collect()
        };
        match self {
            Self::Memory(state) => {
                let sids: Vec<String> = {
                    let mut st = Self::lock(state);
                    let sids: Vec<String> = st.by_user.remove(&uid).into_iter().flatten().collect();
                    for sid in &sids {
                        st.sessions.remove(sid);
                    }
                    sids
                };
                view.apply(events(&sids));
            }
            Self::Redis(r) => {
                // A session created after this read is newer than the logout-all.
                let sids: Vec<String> = r
                    .redis
                    .query(redis::cmd("SMEMBERS").arg(r.keys.user_sessions(uid)))
                    .await?;
                let events = events(&sids);
                r.record(&events, t).await?;
                view.apply(events);
                r.drop_sessions(uid, &sids, t).await?;
            }
        }
        Ok(())
    }
}

/// Times for a store call, from the clock and lifetimes.
pub(crate) fn times(clock: &dyn Clock, refresh_ttl_s: i64, leeway_s: i64) -> Times {
    Times {
        now_ms: clock.now_ms(),
        ttl_ms: refresh_ttl_s.saturating_mul(1000),
        revoke_for_ms: (refresh_ttl_s + leeway_s).saturating_mul(1000),
    }
}
