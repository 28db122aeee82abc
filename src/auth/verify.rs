//! Token verification: local and synchronous while the revocation view is in sync, else asked
//! of Redis; and the principal a request verified earlier.

use std::sync::Arc;

use actix_web::{HttpMessage, HttpRequest};

use super::{
    AuthError, AuthHandle, Principal, PrincipalStatus, RejectReason, TokenType, UserId,
    handle::reject,
};

impl AuthHandle {
    /// Verifies an access token completely (signature, claims, revocation). Local and
    /// synchronous when the view is trusted; asks Redis otherwise.
    ///
    /// # Errors
    /// [`AuthError::Unauthorized`] with the reason (logged by the caller's extractor);
    /// [`AuthError::RevocationUnknown`] (503) when the view is not trusted and Redis is down.
    pub async fn authenticate(&self, token: &str) -> Result<Principal, AuthError> {
        match self.verify_local(token) {
            Ok(Some(p)) => Ok(p),
            Ok(None) => {
                let p = self
                    .inner
                    .tokens
                    .verify(token, TokenType::Access)
                    .map_err(reject)?;
                self.check_revoked(&p).await?;
                Ok(p)
            }
            Err(reason) => Err(reject(reason)),
        }
    }

    /// Verifies an access token without I/O: `Ok(None)` when the signature and claims are fine
    /// but the revocation view is not trusted right now.
    ///
    /// # Errors
    /// The reason the token is refused.
    pub fn verify_local(&self, token: &str) -> Result<Option<Principal>, RejectReason> {
        let p = self.inner.tokens.verify_access(token)?;
        // Revocations only ever add: what the view holds is revoked, whatever its state.
        self.inner.view.check(&p)?;
        if !self.inner.view.state().is_local() {
            return Ok(None);
        }
        Ok(Some(p))
    }

    pub(super) async fn check_revoked(&self, p: &Principal) -> Result<(), AuthError> {
        self.inner.view.check(p).map_err(reject)?;
        if self.inner.view.state().is_local() {
            return Ok(());
        }
        match self.inner.store.revoked(p).await {
            Ok(result) => result.map_err(reject),
            Err(err) => {
                tracing::warn!(error = %err, "auth: revocation view not in sync and redis unreachable; failing closed");
                Err(AuthError::RevocationUnknown)
            }
        }
    }

    /// For the rate limiter: the user id of a request's access token, only if it verifies
    /// locally (signature, claims, revocation view) — no Redis round trip. `None` for anonymous,
    /// invalid, or not locally verifiable requests. A verified principal is kept in the request's
    /// extensions, where [`AuthUser`](super::AuthUser) and
    /// [`OptionalAuthUser`](super::OptionalAuthUser) find it instead of verifying the token again.
    pub fn verified_user(&self, req: &HttpRequest) -> Option<UserId> {
        let token = super::extractor::token_from(req)?;
        // A second limiter on the same request (a scope's own) reads the first one's result.
        if let Some(principal) = self.verified_before(req, &token) {
            return Some(principal.user_id);
        }
        let principal = self.verify_local(&token).ok().flatten()?;
        let user = principal.user_id;
        // `AuthUser` later in the same request reads this instead of verifying again.
        req.extensions_mut().insert(super::extractor::Verified {
            by: self.identity(),
            token,
            principal,
        });
        Some(user)
    }

    /// The principal this handle verified for `token` earlier in this request, if any.
    pub(crate) fn verified_before(&self, req: &HttpRequest, token: &str) -> Option<Principal> {
        let extensions = req.extensions();
        let verified = extensions.get::<super::extractor::Verified>()?;
        (verified.by == self.identity() && *verified.token == *token)
            .then(|| verified.principal.clone())
    }

    /// Tells this handle (and its clones) from another one.
    fn identity(&self) -> usize {
        Arc::as_ptr(&self.inner) as usize
    }

    /// For long-lived connections (live events): is `p`, verified earlier, still good?
    /// Local and cheap; [`PrincipalStatus::Unknown`] when the view is not trusted.
    pub fn principal_status(&self, p: &Principal) -> PrincipalStatus {
        if p.exp + self.inner.tokens.leeway <= self.inner.tokens.clock.now_secs() {
            return PrincipalStatus::Expired;
        }
        if self.inner.view.check(p).is_err() {
            return PrincipalStatus::Revoked;
        }
        if !self.inner.view.state().is_local() {
            return PrincipalStatus::Unknown;
        }
        PrincipalStatus::Valid
    }

    /// [`principal_status`](Self::principal_status), asking Redis when the local view cannot
    /// tell: `Unknown` only when Redis cannot answer either.
    pub async fn confirm_principal(&self, p: &Principal) -> PrincipalStatus {
        match self.principal_status(p) {
            PrincipalStatus::Unknown => match self.check_revoked(p).await {
                Ok(()) => PrincipalStatus::Valid,
                Err(AuthError::Unauthorized(_)) => PrincipalStatus::Revoked,
                Err(_) => PrincipalStatus::Unknown,
            },
            status => status,
        }
    }

    /// Revocation entries this instance holds in memory (revoked tokens, sessions and users'
    /// "revoked before" times), after dropping expired ones: each lives as long as an access
    /// token, so their count follows the revocation rate over that span.
    pub fn revocation_entries(&self) -> usize {
        self.inner.view.len()
    }
}
