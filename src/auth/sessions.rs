//! Sessions (one per login) and revocation writes: one trait, [`SessionStore`], with its two
//! implementations, chosen once when auth starts: in process (`sessions/memory.rs`, one
//! instance) or Redis (`sessions/redis.rs`, one server or a cluster alike: every call stays in
//! one slot), with the same rules. Calls go through `Arc<dyn SessionStore>`, one boxed future
//! each: logins and refreshes, never a token check on the view.
//!
//! A session remembers its current refresh jti, and the one spent before it with when it was
//! spent: presenting the spent one again within the grace window answers the current one (its
//! successor, derived from it, so any instance answers the same token); later, or further back,
//! is a reuse. Sessions are ordered by a per-user login sequence, never by time: the cap revokes
//! the lowest, so the newest login always survives.

use futures_util::future::BoxFuture;
use serde::Serialize;

use super::{
    AuthError, Clock, Principal, RejectReason, UserId,
    revocation::{Revocation, RevocationView},
};

mod memory;
mod redis;

pub(crate) use self::{memory::MemoryStore, redis::RedisStore};

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

/// What a store call answers.
pub(crate) type AuthFuture<'a, T> = BoxFuture<'a, Result<T, AuthError>>;

/// Session storage and revocation writes. Every revocation is applied to the local
/// [`RevocationView`] as well, so this instance honours it at once.
pub(crate) trait SessionStore: Send + Sync + 'static {
    /// Whether the store can be written now (fails fast, without a round trip, while Redis is
    /// known to be down).
    fn ensure_up(&self) -> Result<(), AuthError>;

    /// Records a new session, numbered after every earlier login of its user. With `cap` (the
    /// limit, and the user's sessions the caller read), only while fewer than the limit are
    /// live and not idle. In memory, also drops the user's expired sessions; on Redis the
    /// login's [`list`](Self::list) with `prune` does (the index's own TTL restarts at every
    /// login, so without it the index would only ever grow, and `logout-all` would walk every
    /// session ever created).
    fn create<'a>(
        &'a self,
        s: &'a Session,
        cap: Option<(usize, &'a [Session])>,
        t: Times,
    ) -> AuthFuture<'a, Created>;

    /// Spends `presented` and makes `successor` (jti, iat) the session's current refresh jti,
    /// atomically; or answers the current one again for a replay of the spent jti within the
    /// grace window; or revokes the session (a reuse, or idle). The successor's third part is
    /// the expiry given to a session stored without one.
    fn rotate<'a>(
        &'a self,
        uid: UserId,
        sid: &'a str,
        presented: &'a str,
        successor: (&'a str, i64, i64),
        t: Times,
        view: &'a RevocationView,
    ) -> AuthFuture<'a, Rotation>;

    /// One session, if live.
    fn get<'a>(&'a self, uid: UserId, sid: &'a str, now_ms: i64)
    -> AuthFuture<'a, Option<Session>>;

    /// The user's sessions whose lifetime has not ended (idle ones too), in login order. With
    /// `prune`, on Redis, also drops from the user's index the sessions whose keys expired,
    /// from the same read (one `SMEMBERS`, one pipeline of `HGETALL`, and an `SREM` when some
    /// are gone): a login reads the index once.
    fn list(&self, uid: UserId, now_ms: i64, prune: bool) -> AuthFuture<'_, Vec<Session>>;

    /// Revokes session `sid` of `uid`, and denylists `access` (jti, exp ms) if given.
    /// Answers whether the session existed.
    fn revoke_session<'a>(
        &'a self,
        uid: UserId,
        sid: &'a str,
        access: Option<(&'a str, i64)>,
        t: Times,
        view: &'a RevocationView,
    ) -> AuthFuture<'a, bool>;

    /// Revokes every session of `uid` and every token issued before `before` (seconds).
    fn revoke_user<'a>(
        &'a self,
        uid: UserId,
        before: i64,
        t: Times,
        view: &'a RevocationView,
    ) -> AuthFuture<'a, ()>;

    /// Whether `p` is revoked, asked of the shared record itself: used while the local view is
    /// not trusted (in process it always is, and is the whole record).
    fn revoked<'a>(&'a self, p: &'a Principal) -> AuthFuture<'a, Result<(), RejectReason>>;
}

/// The revocations of a logout-all: each of `sids`, and the user's tokens issued before `before`.
fn revocations(uid: UserId, before: i64, sids: &[String], t: Times) -> Vec<Revocation> {
    let revoked_until = t.now_ms + t.revoke_for_ms;
    sids.iter()
        .map(|sid| Revocation::Session(sid.clone(), revoked_until))
        .chain([Revocation::User(uid, before)])
        .collect()
}

/// `sessions` in login order, not time: two logins within one clock tick are still ordered.
fn in_login_order(mut sessions: Vec<Session>) -> Vec<Session> {
    sessions.sort_by(|a, b| (a.seq, a.created_at, &a.sid).cmp(&(b.seq, b.created_at, &b.sid)));
    sessions
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
