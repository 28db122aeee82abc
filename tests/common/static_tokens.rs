//! A fixed table of events tokens, for tests and benchmarks whose subject is not auth (the
//! production verifier is `redkit::auth::EventsBridge`, which the auth tests drive with real
//! logins).
#![allow(dead_code, unreachable_pub)]

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, RwLock},
};

use redkit::{
    clock::{Clock, SystemClock},
    events::{AuthFuture, Caller, EventsAuth, Rejection},
};

/// Tokens mapped to callers, with session revocation; expiries read `clock`.
pub struct StaticTokens {
    tokens: RwLock<HashMap<String, Caller>>,
    revoked: RwLock<HashSet<String>>,
    clock: Arc<dyn Clock>,
}

impl Default for StaticTokens {
    fn default() -> Self {
        Self {
            tokens: RwLock::default(),
            revoked: RwLock::default(),
            clock: Arc::new(SystemClock),
        }
    }
}

impl StaticTokens {
    pub fn new() -> Self {
        Self::default()
    }

    /// Checks expiries against `clock` (the events config's, in a test driving time).
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Accepts `token` as `principal` from now on.
    pub fn insert(&self, token: impl Into<String>, principal: Caller) {
        self.tokens.write().unwrap().insert(token.into(), principal);
    }

    /// Revokes a session: its tokens stop verifying and its open private streams close.
    pub fn revoke_session(&self, session_id: &str) {
        self.revoked.write().unwrap().insert(session_id.to_owned());
    }
}

impl EventsAuth for StaticTokens {
    fn verify<'a>(&'a self, token: &'a str) -> AuthFuture<'a, Result<Caller, Rejection>> {
        let principal = self.tokens.read().unwrap().get(token).cloned();
        let now = u64::try_from(self.clock.now_secs()).unwrap_or(0);
        let answer = principal
            .filter(|p| p.expires_at > now && self.still_valid(p))
            .ok_or(Rejection::Invalid);
        Box::pin(std::future::ready(answer))
    }

    fn still_valid(&self, principal: &Caller) -> bool {
        !self.revoked.read().unwrap().contains(&principal.session_id)
    }
}
