//! The session lifecycle: login, refresh, logout and revocation of sessions.

use super::{
    AuthError, AuthHandle, ClientInfo, Principal, RejectReason, Session, TokenPair, TokenType,
    UserId, VerifyCredentials,
    handle::reject,
    sessions::{Rotation, Times},
    users::MAX_PASSWORD_LEN,
};

impl AuthHandle {
    /// Checks credentials and opens a session.
    ///
    /// # Errors
    /// [`AuthError::InvalidCredentials`] (401, same work for unknown user and wrong password),
    /// [`AuthError::Redis`] (503) when sessions cannot be stored.
    pub async fn login(
        &self,
        username: String,
        password: String,
        client: ClientInfo,
    ) -> Result<TokenPair, AuthError> {
        self.ensure_store_up()?;
        if password.len() > 4 * MAX_PASSWORD_LEN || username.len() > super::MAX_LOGIN_USERNAME_BYTES
        {
            tracing::info!(reason = "oversized-input", "auth: login refused");
            return Err(AuthError::InvalidCredentials);
        }
        let _permit = self.hash_permit()?;
        let user = self
            .inner
            .users
            .send(VerifyCredentials::new(username, password))
            .await
            .map_err(|_| AuthError::Internal("users actor gone".into()))??;
        let Some(user) = user else {
            tracing::info!(reason = "invalid-credentials", "auth: login refused");
            return Err(AuthError::InvalidCredentials);
        };
        let sid = super::tokens::random_id();
        let (pair, refresh_jti) = self.pair(user.id, &sid)?;
        let t = self.times();
        let session = Session {
            sid,
            user_id: user.id,
            username: user.username,
            email: user.email,
            created_at: t.now_ms.div_euclid(1000),
            ip: client.ip,
            user_agent: client.user_agent,
            refresh_jti,
        };
        self.inner.store.create(&session, t).await?;
        self.trim_sessions(user.id, t).await?;
        Ok(pair)
    }

    /// Revokes `user`'s oldest sessions beyond
    /// [`AuthConfig::max_sessions_per_user`](super::AuthConfig::max_sessions_per_user), and drops
    /// expired ones from the user's index, from one read of it per login (logins already cost an
    /// argon2 hash): the store stays bounded however often one account logs in.
    pub(super) async fn trim_sessions(&self, user: UserId, t: Times) -> Result<(), AuthError> {
        let max = self.inner.max_sessions;
        let live = self.inner.store.list_pruning(user, t.now_ms).await?;
        let excess = live.len().saturating_sub(max);
        // `list` answers oldest first.
        for old in &live[..excess] {
            self.inner
                .store
                .revoke_session(user, &old.sid, None, t, &self.inner.view)
                .await?;
        }
        if excess > 0 {
            tracing::info!(user = %user, revoked = excess, "auth: oldest sessions revoked (per-user cap)");
        }
        Ok(())
    }

    /// Spends `refresh_token` and answers a new pair. A spent token revokes its session.
    ///
    /// # Errors
    /// [`AuthError::Unauthorized`] (401) for any bad, spent or revoked token;
    /// [`AuthError::Redis`] (503).
    pub async fn refresh(&self, refresh_token: &str) -> Result<TokenPair, AuthError> {
        self.ensure_store_up()?;
        let p = self
            .inner
            .tokens
            .verify(refresh_token, TokenType::Refresh)
            .map_err(reject)?;
        self.check_revoked(&p).await?;
        let (pair, new_jti) = self.pair(p.user_id, &p.sid)?;
        let t = self.times();
        match self
            .inner
            .store
            .rotate(p.user_id, &p.sid, &p.jti, &new_jti, t, &self.inner.view)
            .await?
        {
            Rotation::Rotated(_) => Ok(pair),
            Rotation::Reused => {
                tracing::warn!(user = p.user_id, sid = %p.sid, "auth: refresh token reused; session revoked");
                Err(reject(RejectReason::RefreshReused))
            }
            Rotation::Gone => Err(reject(RejectReason::SessionGone)),
        }
    }

    /// Revokes the session of `p` and denylists its access token.
    ///
    /// # Errors
    /// [`AuthError::Redis`] (503).
    pub async fn logout(&self, p: &Principal) -> Result<(), AuthError> {
        self.ensure_store_up()?;
        let until = (p.exp + self.inner.tokens.leeway).saturating_mul(1000);
        self.inner
            .store
            .revoke_session(
                p.user_id,
                &p.sid,
                Some((&p.jti, until)),
                self.times(),
                &self.inner.view,
            )
            .await?;
        Ok(())
    }

    /// Revokes every session of the user of `p`.
    ///
    /// # Errors
    /// [`AuthError::Redis`] (503).
    pub async fn logout_all(&self, p: &Principal) -> Result<(), AuthError> {
        self.ensure_store_up()?;
        let t = self.times();
        self.inner
            .store
            .revoke_user(p.user_id, t.now_ms.div_euclid(1000), t, &self.inner.view)
            .await
    }

    /// Revokes one of the user's sessions.
    ///
    /// # Errors
    /// [`AuthError::NoSuchSession`] (404) when it is not a live session of this user;
    /// [`AuthError::Redis`] (503).
    pub async fn revoke_session(&self, user: UserId, sid: &str) -> Result<(), AuthError> {
        self.ensure_store_up()?;
        if self
            .inner
            .store
            .revoke_session(user, sid, None, self.times(), &self.inner.view)
            .await?
        {
            Ok(())
        } else {
            Err(AuthError::NoSuchSession)
        }
    }

    /// The session of `p`, if live.
    ///
    /// # Errors
    /// [`AuthError::Redis`] (503).
    pub async fn session(&self, p: &Principal) -> Result<Option<Session>, AuthError> {
        self.inner
            .store
            .get(p.user_id, &p.sid, self.inner.tokens.clock.now_ms())
            .await
    }

    /// The user's live sessions.
    ///
    /// # Errors
    /// [`AuthError::Redis`] (503).
    pub async fn sessions(&self, user: UserId) -> Result<Vec<Session>, AuthError> {
        self.inner
            .store
            .list(user, self.inner.tokens.clock.now_ms())
            .await
    }
}
