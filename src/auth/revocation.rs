//! The local, exact view of revocations; `revocation/sync.rs` keeps it in step with Redis.
//!
//! Revocations only ever add (a jti, a session, a user's "revoked before" time) and expire, so
//! the view merges: events and rebuilds may arrive in any order and the result is the same.

use std::{
    collections::HashMap,
    sync::{
        Arc, RwLock,
        atomic::{AtomicU8, AtomicU64, Ordering},
    },
    time::Duration,
};

use super::{Clock, Principal, RejectReason, UserId};

mod sync;

pub(crate) use sync::{Keys, check_remote, subscribe_loop};

/// How far the local view can be trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ViewState {
    /// Never synchronised (Redis not reached yet): verification asks Redis, and fails closed.
    Syncing,
    /// Subscribed and rebuilt: verification is local.
    InSync,
    /// Was in sync when the subscription dropped, less than the liveness deadline ago:
    /// verification stays local while the subscriber reconnects (a revocation made elsewhere
    /// in this span may be honoured here until it ends; see the module docs).
    Detached,
    /// Resubscribed after a drop, rebuilding: verification asks Redis until done.
    Rebuilding,
    /// The subscription has been down for longer than the liveness deadline: other instances
    /// may have revoked tokens this one never heard of (only this instance may be cut off), so
    /// verification asks Redis, and fails closed when Redis cannot answer, until the view is
    /// rebuilt.
    Stale,
}

impl ViewState {
    fn from_u8(v: u8) -> Self {
        match v {
            1 => Self::InSync,
            2 => Self::Detached,
            3 => Self::Rebuilding,
            4 => Self::Stale,
            _ => Self::Syncing,
        }
    }

    /// Whether tokens can be checked locally.
    pub fn is_local(self) -> bool {
        matches!(self, Self::InSync | Self::Detached)
    }
}

#[derive(Debug, Default)]
struct Sets {
    /// jti -> expiry (ms).
    jtis: HashMap<String, i64>,
    /// sid -> expiry (ms).
    sids: HashMap<String, i64>,
    /// user -> tokens issued before this second are revoked.
    users: HashMap<UserId, i64>,
    next_prune_ms: i64,
}

/// The revocation view shared by every worker: a read lock and hash lookups per request.
#[derive(Debug)]
pub(crate) struct RevocationView {
    state: AtomicU8,
    /// When the view became `Detached`, in ms since `started`.
    detached_at: AtomicU64,
    started: std::time::Instant,
    /// How long a `Detached` view stays trusted: the subscriber's liveness deadline.
    grace: Duration,
    resyncs: std::sync::atomic::AtomicU64,
    sets: RwLock<Sets>,
    clock: Arc<dyn Clock>,
    /// How long a user's "revoked before" entry matters (refresh lifetime + leeway), ms.
    horizon_ms: i64,
}

/// How often the view drops expired entries: each lives at most this much past its expiry.
const PRUNE_EVERY_MS: i64 = 5_000;

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// One revocation, as published on the channel (`j|s|u <id> <number>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Revocation {
    /// jti, expiry ms.
    Token(String, i64),
    /// sid, expiry ms.
    Session(String, i64),
    /// user, revoked-before seconds.
    User(UserId, i64),
}

impl Revocation {
    pub fn encode(&self) -> String {
        match self {
            Self::Token(jti, ms) => format!("j {jti} {ms}"),
            Self::Session(sid, ms) => format!("s {sid} {ms}"),
            Self::User(uid, before) => format!("u {uid} {before}"),
        }
    }

    pub fn decode(text: &str) -> Option<Self> {
        let mut parts = text.split(' ');
        let kind = parts.next()?;
        let id = parts.next()?;
        let n: i64 = parts.next()?.parse().ok()?;
        match kind {
            "j" => Some(Self::Token(id.to_owned(), n)),
            "s" => Some(Self::Session(id.to_owned(), n)),
            "u" => Some(Self::User(id.parse().ok()?, n)),
            _ => None,
        }
    }
}

impl RevocationView {
    pub fn new(
        clock: Arc<dyn Clock>,
        horizon: Duration,
        grace: Duration,
        state: ViewState,
    ) -> Self {
        Self {
            state: AtomicU8::new(state as u8),
            detached_at: AtomicU64::new(0),
            started: std::time::Instant::now(),
            grace,
            resyncs: std::sync::atomic::AtomicU64::new(0),
            sets: RwLock::new(Sets::default()),
            clock,
            horizon_ms: i64::try_from(horizon.as_millis()).unwrap_or(i64::MAX / 4),
        }
    }

    /// The state now: a `Detached` view turns `Stale` once the liveness deadline has passed
    /// (read here, so that no timer is needed).
    pub fn state(&self) -> ViewState {
        let state = ViewState::from_u8(self.state.load(Ordering::Acquire));
        if state == ViewState::Detached {
            let since = self.detached_at.load(Ordering::Acquire);
            if self.elapsed_ms().saturating_sub(since) > duration_ms(self.grace) {
                return ViewState::Stale;
            }
        }
        state
    }

    fn elapsed_ms(&self) -> u64 {
        duration_ms(self.started.elapsed())
    }

    pub fn set_state(&self, state: ViewState) {
        if state == ViewState::InSync {
            self.resyncs.fetch_add(1, Ordering::Relaxed);
        }
        if state == ViewState::Detached {
            self.detached_at.store(self.elapsed_ms(), Ordering::Release);
        }
        self.state.store(state as u8, Ordering::Release);
    }

    /// Entries held (revoked jtis, sessions and users), after pruning what expired.
    pub fn len(&self) -> usize {
        self.apply([]);
        let sets = self
            .sets
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        sets.jtis.len() + sets.sids.len() + sets.users.len()
    }

    /// Times the view was (re)built from Redis since start.
    pub fn resyncs(&self) -> u64 {
        self.resyncs.load(Ordering::Relaxed)
    }

    /// Checks `p` against the local view only.
    pub fn check(&self, p: &Principal) -> Result<(), RejectReason> {
        let now = self.clock.now_ms();
        // A poisoned lock only means a writer panicked mid-insert; the maps are still valid.
        let sets = self
            .sets
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if sets.jtis.get(&p.jti).is_some_and(|exp| *exp > now) {
            return Err(RejectReason::RevokedToken);
        }
        if sets.sids.get(&p.sid).is_some_and(|exp| *exp > now) {
            return Err(RejectReason::RevokedSession);
        }
        if sets
            .users
            .get(&p.user_id)
            .is_some_and(|before| p.iat < *before)
        {
            return Err(RejectReason::RevokedUser);
        }
        Ok(())
    }

    pub fn apply(&self, revocations: impl IntoIterator<Item = Revocation>) {
        let now = self.clock.now_ms();
        let mut sets = self
            .sets
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for r in revocations {
            match r {
                Revocation::Token(jti, exp) => {
                    let e = sets.jtis.entry(jti).or_insert(exp);
                    *e = (*e).max(exp);
                }
                Revocation::Session(sid, exp) => {
                    let e = sets.sids.entry(sid).or_insert(exp);
                    *e = (*e).max(exp);
                }
                Revocation::User(uid, before) => {
                    let e = sets.users.entry(uid).or_insert(before);
                    *e = (*e).max(before);
                }
            }
        }
        if now >= sets.next_prune_ms {
            let horizon = self.horizon_ms;
            sets.jtis.retain(|_, exp| *exp > now);
            sets.sids.retain(|_, exp| *exp > now);
            sets.users
                .retain(|_, before| before.saturating_mul(1000) + horizon > now);
            sets.next_prune_ms = now + PRUNE_EVERY_MS;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn principal(jti: &str, sid: &str, user: UserId, iat: i64) -> Principal {
        Principal {
            user_id: user,
            sid: sid.into(),
            jti: jti.into(),
            iat,
            exp: iat + 60,
        }
    }

    /// Events survive their wire encoding; garbage is refused.
    #[test]
    fn events_round_trip() {
        for r in [
            Revocation::Token("abc".into(), 17),
            Revocation::Session("s1".into(), 42),
            Revocation::User(7, 1_700_000_000),
        ] {
            assert_eq!(Revocation::decode(&r.encode()), Some(r));
        }
        for bad in ["", "x a 1", "j abc", "u notanumber 1", "s id notanumber"] {
            assert_eq!(Revocation::decode(bad), None, "{bad:?}");
        }
    }

    /// Each kind of entry revokes exactly what it names, until it expires.
    #[test]
    fn entries_revoke_until_expiry() {
        let clock = Arc::new(ManualClock::starting_now());
        let now = clock.now_ms();
        let view = RevocationView::new(
            clock.clone(),
            Duration::from_secs(60),
            Duration::ZERO,
            ViewState::InSync,
        );
        view.apply([
            Revocation::Token("j1".into(), now + 1000),
            Revocation::Session("s1".into(), now + 1000),
            Revocation::User(9, now / 1000),
        ]);
        let t = now / 1000;
        assert_eq!(
            view.check(&principal("j1", "s0", 1, t)),
            Err(RejectReason::RevokedToken)
        );
        assert_eq!(
            view.check(&principal("j0", "s1", 1, t)),
            Err(RejectReason::RevokedSession)
        );
        assert_eq!(
            view.check(&principal("j0", "s0", 9, t - 1)),
            Err(RejectReason::RevokedUser)
        );
        assert_eq!(view.check(&principal("j0", "s0", 9, t)), Ok(()));
        assert_eq!(view.check(&principal("j0", "s0", 1, t)), Ok(()));
        clock.advance(Duration::from_millis(1001));
        assert_eq!(view.check(&principal("j1", "s1", 1, t)), Ok(()));
    }

    /// A view whose feed dropped stays trusted for the liveness deadline, then is stale (not
    /// local) until it is rebuilt; what it holds stays revoked in every state.
    #[test]
    fn detached_turns_stale_after_the_deadline() {
        let clock = Arc::new(ManualClock::starting_now());
        let view = RevocationView::new(
            clock.clone(),
            Duration::from_secs(60),
            Duration::from_millis(50),
            ViewState::InSync,
        );
        view.apply([Revocation::Session("s1".into(), clock.now_ms() + 1000)]);
        view.set_state(ViewState::Detached);
        assert_eq!(view.state(), ViewState::Detached);
        assert!(view.state().is_local());
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(view.state(), ViewState::Stale);
        assert!(!view.state().is_local());
        assert_eq!(
            view.check(&principal("j0", "s1", 1, clock.now_secs())),
            Err(RejectReason::RevokedSession)
        );
        view.set_state(ViewState::Rebuilding);
        assert_eq!(view.state(), ViewState::Rebuilding);
        view.set_state(ViewState::InSync);
        assert_eq!(view.state(), ViewState::InSync);
    }
}
