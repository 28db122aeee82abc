//! Where the server plugs auth into the other capabilities: the verified user for the rate
//! limiter, and token verification plus session watching for live events. Both are local (no
//! Redis round trip) while the revocation view is trusted; live events ask Redis when it is not.
//! The capabilities never import each other; this composition does.

use std::sync::Arc;

use crate::{
    auth::{ACCESS_COOKIE, AuthError, AuthHandle, Principal, PrincipalStatus},
    events,
    ratelimit::UserResolver,
};

/// Live events' view of auth: access tokens verified against the revocation view, or Redis
/// when the view is not trusted.
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

/// How often, and how far apart, an open private stream asks again whether its caller is
/// still valid before it gives up on an event (about a second in all).
const CONFIRM_TRIES: u32 = 5;
const CONFIRM_RETRY: std::time::Duration = std::time::Duration::from_millis(200);

fn principal_of(caller: &events::Caller) -> Option<Principal> {
    Some(Principal {
        user_id: caller.user_id.parse().ok()?,
        sid: caller.session_id.clone(),
        jti: caller.token_id.clone(),
        iat: caller.issued_at,
        exp: i64::try_from(caller.expires_at).unwrap_or(i64::MAX),
    })
}

impl events::EventsAuth for EventsBridge {
    fn verify<'a>(
        &'a self,
        token: &'a str,
    ) -> events::AuthFuture<'a, Result<events::Caller, events::Rejection>> {
        // Local when the view is trusted; otherwise Redis is asked, and an instance that cannot
        // know whether the token was revoked says so (503), never "no token" (401): a client
        // told 401 throws its tokens away.
        Box::pin(async move {
            let p = self
                .auth
                .authenticate(token)
                .await
                .map_err(|err| match err {
                    AuthError::Unauthorized(_) => events::Rejection::Invalid,
                    _ => events::Rejection::Unknown,
                })?;
            let expires_at = u64::try_from(p.exp).unwrap_or(0);
            Ok(
                events::Caller::new(p.user_id.to_string(), p.sid, expires_at)
                    .with_token(p.jti, p.iat),
            )
        })
    }

    fn still_valid(&self, caller: &events::Caller) -> bool {
        let Some(p) = principal_of(caller) else {
            return false;
        };
        match self.auth.principal_status(&p) {
            PrincipalStatus::Valid => true,
            PrincipalStatus::Expired | PrincipalStatus::Revoked => false,
            // The view cannot tell (rebuilding, or its feed is down): the stream stays open,
            // each event it is sent is confirmed first (`confirm`), and it closes on the first
            // sweep after the view knows of a revocation.
            PrincipalStatus::Unknown => true,
        }
    }

    fn confirm<'a>(&'a self, caller: &'a events::Caller) -> events::AuthFuture<'a, bool> {
        Box::pin(async move {
            let Some(p) = principal_of(caller) else {
                return false;
            };
            // Unknown (Redis cannot answer either) is asked again for a moment: an event can
            // arrive on a connection that came back before the command connection did. Then
            // the event is not sent; the stream ends and the client resumes once this instance
            // can check again.
            for _ in 0..CONFIRM_TRIES {
                match self.auth.confirm_principal(&p).await {
                    PrincipalStatus::Valid => return true,
                    PrincipalStatus::Expired | PrincipalStatus::Revoked => return false,
                    PrincipalStatus::Unknown => tokio::time::sleep(CONFIRM_RETRY).await,
                }
            }
            false
        })
    }

    fn cookie_name(&self) -> &str {
        ACCESS_COOKIE
    }
}

/// The rate limiter's identity hook: the user id of a request carrying a valid access token.
pub fn user_resolver(auth: AuthHandle) -> UserResolver {
    Arc::new(move |req| auth.verified_user(req).map(|id| id.to_string()))
}
