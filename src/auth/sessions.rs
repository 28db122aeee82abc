//! Sessions (one per login) and revocation writes, in Redis or in process with the same rules.
//!
//! A session remembers its current refresh jti, and the one spent before it with when it was
//! spent: presenting the spent one again within the grace window answers the current one (its
//! successor, derived from it, so any instance answers the same token); later, or further back,
//! is a reuse. Sessions are ordered by a per-user login sequence, never by time: the cap revokes
//! the lowest, so the newest login always survives.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
};

use serde::Serialize;

pub(crate) use super::store_redis::RedisStore;
use super::{
    AuthError, Clock, UserId,
    revocation::{Revocation, RevocationView},
};

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
    /// Last login or refresh, Unix seconds.
    pub last_used_at: i64,
    /// Client address at login.
    pub ip: String,
    /// `User-Agent` at login.
    pub user_agent: String,
    /// The one refresh jti that may still be spent.
    #[serde(skip)]
    pub refresh_jti: String,
    /// Login order among the user's sessions (the cap revokes the lowest first).
    #[serde(skip)]
    pub(crate) seq: u64,
    /// Last login or refresh, Unix milliseconds (the idle limit's clock).
    #[serde(skip)]
    pub(crate) last_used_ms: i64,
    /// `iat` of the current refresh token, Unix seconds.
    #[serde(skip)]
    pub(crate) refresh_iat: i64,
    /// `exp` of every refresh token of the session (login + lifetime), Unix seconds.
    #[serde(skip)]
    pub(crate) refresh_exp: i64,
}

impl Session {
    /// Whether the session went unused past the idle limit of `t`.
    pub(crate) fn is_idle(&self, t: Times) -> bool {
        t.idle_ms > 0 && t.now_ms - self.last_used_ms > t.idle_ms
    }

    /// Marks the session used at `now_ms` (never backwards).
    fn touch(&mut self, now_ms: i64) {
        if now_ms > self.last_used_ms {
            self.last_used_ms = now_ms;
            self.last_used_at = now_ms.div_euclid(1000);
        }
    }
}

/// What presenting a refresh token did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Rotation {
    /// The presented jti was current; it is now spent and the session holds its successor.
    Rotated(Session),
    /// The presented jti was spent within the grace window: the session's current jti, its
    /// successor, is answered again (nothing else changes).
    Grace(Session),
    /// The jti was spent before the window, or two generations back: the session is now revoked.
    Reused,
    /// The session went unused past the idle limit: it is now revoked.
    IdleExpired,
    /// No such session (expired or revoked).
    Gone,
}

/// What storing a new session did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Created {
    /// Stored, with this login sequence number.
    Stored(u64),
    /// The cap's number of sessions are live: nothing stored.
    Full,
    /// The index changed since the caller read it (a concurrent login): read again.
    IndexChanged,
}

/// Session storage and revocation writes.
#[derive(Clone, Debug)]
pub(crate) enum Store {
    /// In process (single instance).
    Memory(Arc<Mutex<MemoryState>>),
    /// Redis (shared by instances).
    Redis(RedisStore),
}

/// A session in process, with what Redis keeps beside it.
#[derive(Debug)]
struct Stored {
    session: Session,
    expires_ms: i64,
    /// The spent jti a replay within the grace window may present, and when it was spent (ms).
    spent: Option<(String, i64)>,
}

#[derive(Debug, Default)]
pub(crate) struct MemoryState {
    sessions: HashMap<String, Stored>,
    by_user: HashMap<UserId, HashSet<String>>,
    last_seq: u64,
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
    /// Reuse grace window of a spent refresh jti, ms (0: strict rotation).
    pub grace_ms: i64,
    /// Idle limit, ms (0: none).
    pub idle_ms: i64,
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

    /// Records a new session, numbered after every earlier login of its user. With `cap` (the
    /// limit, and the user's sessions the caller read), only while fewer than the limit are live
    /// and not idle. In memory, also drops the user's expired sessions; on Redis the login's
    /// [`list_pruning`](Self::list_pruning) does (the index's own TTL restarts at every login, so
    /// without it the index would only ever grow, and `logout-all` would walk every session ever
    /// created).
    pub async fn create(
        &self,
        s: &Session,
        cap: Option<(usize, &[Session])>,
        t: Times,
    ) -> Result<Created, AuthError> {
        match self {
            Self::Memory(state) => {
                let mut st = Self::lock(state);
                let MemoryState {
                    sessions,
                    by_user,
                    last_seq,
                } = &mut *st;
                let mine = by_user.entry(s.user_id).or_default();
                mine.retain(|sid| {
                    let live = sessions.get(sid).is_some_and(|r| r.expires_ms > t.now_ms);
                    if !live {
                        sessions.remove(sid);
                    }
                    live
                });
                if let Some((limit, _)) = cap {
                    let live = mine
                        .iter()
                        .filter_map(|sid| sessions.get(sid))
                        .filter(|r| !r.session.is_idle(t))
                        .count();
                    if live >= limit {
                        return Ok(Created::Full);
                    }
                }
                *last_seq += 1;
                let mut session = s.clone();
                session.seq = *last_seq;
                mine.insert(s.sid.clone());
                sessions.insert(
                    s.sid.clone(),
                    Stored {
                        session,
                        expires_ms: t.now_ms + t.ttl_ms,
                        spent: None,
                    },
                );
                Ok(Created::Stored(*last_seq))
            }
            Self::Redis(r) => r.create(s, cap, t).await,
        }
    }

    /// Spends `presented` and makes `successor` (jti, iat) the session's current refresh jti,
    /// atomically; or answers the current one again for a replay of the spent jti within the
    /// grace window; or revokes the session (a reuse, or idle). The successor's third part is
    /// the expiry given to a session stored without one.
    pub async fn rotate(
        &self,
        uid: UserId,
        sid: &str,
        presented: &str,
        successor: (&str, i64, i64),
        t: Times,
        view: &RevocationView,
    ) -> Result<Rotation, AuthError> {
        match self {
            Self::Memory(state) => {
                let mut st = Self::lock(state);
                let Some(stored) = st.sessions.get_mut(sid) else {
                    return Ok(Rotation::Gone);
                };
                if stored.expires_ms <= t.now_ms || stored.session.user_id != uid {
                    return Ok(Rotation::Gone);
                }
                let s = &mut stored.session;
                let outcome = if s.is_idle(t) {
                    Rotation::IdleExpired
                } else if s.refresh_jti == presented {
                    let (new_jti, new_iat, _) = successor;
                    stored.spent = Some((presented.to_owned(), t.now_ms));
                    s.refresh_jti = new_jti.to_owned();
                    s.refresh_iat = new_iat;
                    s.touch(t.now_ms);
                    return Ok(Rotation::Rotated(s.clone()));
                } else if stored
                    .spent
                    .as_ref()
                    .is_some_and(|(jti, at)| jti == presented && t.now_ms - at < t.grace_ms)
                {
                    s.touch(t.now_ms);
                    return Ok(Rotation::Grace(s.clone()));
                } else {
                    Rotation::Reused
                };
                st.sessions.remove(sid);
                if let Some(set) = st.by_user.get_mut(&uid) {
                    set.remove(sid);
                }
                view.apply([Revocation::Session(
                    sid.to_owned(),
                    t.now_ms + t.revoke_for_ms,
                )]);
                Ok(outcome)
            }
            Self::Redis(r) => r.rotate(uid, sid, presented, successor, t, view).await,
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
                .filter(|r| r.session.user_id == uid && r.expires_ms > now_ms)
                .map(|r| r.session.clone())),
            Self::Redis(r) => {
                let map: HashMap<String, String> = r
                    .redis
                    .query(redis::cmd("HGETALL").arg(r.keys.session(uid, sid)))
                    .await?;
                Ok(super::store_redis::from_hash(sid, &map))
            }
        }
    }

    /// The user's sessions whose lifetime has not ended (idle ones too), in login order.
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
                    .filter(|r| r.expires_ms > now_ms)
                    .map(|r| r.session.clone())
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
                    .filter_map(|(sid, map)| super::store_redis::from_hash(sid, map))
                    .collect()
            }
        };
        // Login order, not time: two logins within one clock tick are still ordered.
        out.sort_by(|a, b| (a.seq, a.created_at, &a.sid).cmp(&(b.seq, b.created_at, &b.sid)));
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
                    .is_some_and(|r| r.session.user_id == uid && r.expires_ms > t.now_ms);
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

/// Times for a store call, from the clock and lifetimes (no grace window, no idle limit).
pub(crate) fn times(clock: &dyn Clock, refresh_ttl_s: i64, leeway_s: i64) -> Times {
    Times {
        now_ms: clock.now_ms(),
        ttl_ms: refresh_ttl_s.saturating_mul(1000),
        revoke_for_ms: (refresh_ttl_s + leeway_s).saturating_mul(1000),
        grace_ms: 0,
        idle_ms: 0,
    }
}
