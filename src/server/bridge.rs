//! Where the server plugs auth into the other capabilities: the verified user for the rate
//! limiter, and token verification plus session watching for live events. Both are local (no
//! Redis round trip). The capabilities never import each other; this composition does.

use std::sync::Arc;

use crate::{
    auth::{ACCESS_COOKIE, AuthHandle, Principal, PrincipalStatus},
    events,
    ratelimit::UserResolver,
};

/// Live events' view of auth: access tokens verified against the local revocation view.
#[derive(Clone)]
pub struct EventsBridge {
    auth: AuthHandle,
}

impl EventsBridge {
    /// The bridge for `auth`.
    pub fn new(auth: AuthHandle) -> Self {
        Self { auth }
    }
}

impl events::EventsAuth for EventsBridge {
    fn verify(&self, token: &str) -> Option<events::Caller> {
        // `Ok(None)`: the view is not in sync; refuse rather than guess (fail closed).
        let p = self.auth.verify_local(token).ok()??;
        let expires_at = u64::try_from(p.exp).unwrap_or(0);
        Some(events::Caller::new(p.user_id.to_string(), p.sid, expires_at).with_token(p.jti, p.iat))
    }

    fn still_valid(&self, principal: &events::Caller) -> bool {
        let Ok(user_id) = principal.user_id.parse() else {
            return false;
        };
        let p = Principal {
            user_id,
            sid: principal.session_id.clone(),
            jti: principal.token_id.clone(),
            iat: principal.issued_at,
            exp: i64::try_from(principal.expires_at).unwrap_or(i64::MAX),
        };
        match self.auth.principal_status(&p) {
            PrincipalStatus::Valid => true,
            PrincipalStatus::Expired | PrincipalStatus::Revoked => false,
            // The view is rebuilding after a reconnect: an open stream keeps going and is
            // checked again on the next sweep, a second later.
            PrincipalStatus::Unknown => true,
        }
    }

    fn cookie_name(&self) -> &str {
        ACCESS_COOKIE
    }
}

/// The rate limiter's identity hook: the user id of a request carrying a valid access token.
pub fn user_resolver(auth: AuthHandle) -> UserResolver {
    Arc::new(move |req| auth.verified_user(req).map(|id| id.to_string()))
}
