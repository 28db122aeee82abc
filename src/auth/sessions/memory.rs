//! The in-process session store (one instance): the same rules as Redis, under one lock.

use std::{
    collections::{HashMap, HashSet},
    sync::{Mutex, MutexGuard, PoisonError},
};

use futures_util::future::ready;

use super::{
    AuthFuture, Created, Principal, RejectReason, Rotation, Session, SessionStore, Times, UserId,
    in_login_order,
};
use crate::auth::{
    AuthError,
    revocation::{Revocation, RevocationView},
};

/// A session in process, with what Redis keeps beside it.
#[derive(Debug)]
struct Stored {
    session: Session,
    expires_ms: i64,
    /// The spent jti a replay within the grace window may present, and when it was spent (ms).
    spent: Option<(String, i64)>,
}

#[derive(Debug, Default)]
struct MemoryState {
    sessions: HashMap<String, Stored>,
    by_user: HashMap<UserId, HashSet<String>>,
    last_seq: u64,
}

/// Sessions in process; revocations live in the view alone.
#[derive(Debug, Default)]
pub(crate) struct MemoryStore {
    state: Mutex<MemoryState>,
}

impl MemoryStore {
    fn lock(&self) -> MutexGuard<'_, MemoryState> {
        // Each call leaves the maps consistent: a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn create_now(&self, s: &Session, cap: Option<(usize, &[Session])>, t: Times) -> Created {
        let mut st = self.lock();
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
                return Created::Full;
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
        Created::Stored(*last_seq)
    }

    fn rotate_now(
        &self,
        uid: UserId,
        sid: &str,
        presented: &str,
        (new_jti, new_iat, _): (&str, i64, i64),
        t: Times,
        view: &RevocationView,
    ) -> Rotation {
        let mut st = self.lock();
        let Some(stored) = st.sessions.get_mut(sid) else {
            return Rotation::Gone;
        };
        if stored.expires_ms <= t.now_ms || stored.session.user_id != uid {
            return Rotation::Gone;
        }
        let s = &mut stored.session;
        let outcome = if s.is_idle(t) {
            Rotation::IdleExpired
        } else if s.refresh_jti == presented {
            stored.spent = Some((presented.to_owned(), t.now_ms));
            s.refresh_jti = new_jti.to_owned();
            s.refresh_iat = new_iat;
            s.touch(t.now_ms);
            return Rotation::Rotated(s.clone());
        } else if stored
            .spent
            .as_ref()
            .is_some_and(|(jti, at)| jti == presented && t.now_ms - at < t.grace_ms)
        {
            s.touch(t.now_ms);
            return Rotation::Grace(s.clone());
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
        outcome
    }
}

impl SessionStore for MemoryStore {
    fn ensure_up(&self) -> Result<(), AuthError> {
        Ok(())
    }

    fn create<'a>(
        &'a self,
        s: &'a Session,
        cap: Option<(usize, &'a [Session])>,
        t: Times,
    ) -> AuthFuture<'a, Created> {
        Box::pin(ready(Ok(self.create_now(s, cap, t))))
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
        let rotation = self.rotate_now(uid, sid, presented, successor, t, view);
        Box::pin(ready(Ok(rotation)))
    }

    fn get<'a>(
        &'a self,
        uid: UserId,
        sid: &'a str,
        now_ms: i64,
    ) -> AuthFuture<'a, Option<Session>> {
        let session = self
            .lock()
            .sessions
            .get(sid)
            .filter(|r| r.session.user_id == uid && r.expires_ms > now_ms)
            .map(|r| r.session.clone());
        Box::pin(ready(Ok(session)))
    }

    fn list(&self, uid: UserId, now_ms: i64, _prune: bool) -> AuthFuture<'_, Vec<Session>> {
        let st = self.lock();
        let sessions = st
            .by_user
            .get(&uid)
            .into_iter()
            .flatten()
            .filter_map(|sid| st.sessions.get(sid))
            .filter(|r| r.expires_ms > now_ms)
            .map(|r| r.session.clone())
            .collect();
        drop(st);
        Box::pin(ready(Ok(in_login_order(sessions))))
    }

    fn revoke_session<'a>(
        &'a self,
        uid: UserId,
        sid: &'a str,
        access: Option<(&'a str, i64)>,
        t: Times,
        view: &'a RevocationView,
    ) -> AuthFuture<'a, bool> {
        let existed = {
            let mut st = self.lock();
            let existed = st
                .sessions
                .get(sid)
                .is_some_and(|r| r.session.user_id == uid && r.expires_ms > t.now_ms);
            if !existed && access.is_none() {
                // Not the caller's session: nothing to revoke (and no touching others').
                return Box::pin(ready(Ok(false)));
            }
            st.sessions.remove(sid);
            if let Some(set) = st.by_user.get_mut(&uid) {
                set.remove(sid);
            }
            existed
        };
        let mut events = vec![Revocation::Session(
            sid.to_owned(),
            t.now_ms + t.revoke_for_ms,
        )];
        if let Some((jti, until)) = access {
            events.push(Revocation::Token(jti.to_owned(), until));
        }
        view.apply(events);
        Box::pin(ready(Ok(existed)))
    }

    fn revoke_user<'a>(
        &'a self,
        uid: UserId,
        before: i64,
        t: Times,
        view: &'a RevocationView,
    ) -> AuthFuture<'a, ()> {
        let sids: Vec<String> = {
            let mut st = self.lock();
            let sids: Vec<String> = st.by_user.remove(&uid).into_iter().flatten().collect();
            for sid in &sids {
                st.sessions.remove(sid);
            }
            sids
        };
        view.apply(super::revocations(uid, before, &sids, t));
        Box::pin(ready(Ok(())))
    }

    fn revoked<'a>(&'a self, _p: &'a Principal) -> AuthFuture<'a, Result<(), RejectReason>> {
        // The view is the whole record in process, and the caller has read it.
        Box::pin(ready(Ok(Ok(()))))
    }
}
