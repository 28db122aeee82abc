//! The session lifecycle: login, refresh, logout and revocation of sessions.

use super::{
    AuthError, AuthHandle, ClientInfo, Principal, RejectReason, Session, SessionLimitPolicy,
    TokenPair, TokenType, UserId, VerifyCredentials,
    handle::{Counters, reject},
    sessions::{Created, Rotation, Times},
    users::MAX_PASSWORD_LEN,
};

impl AuthHandle {
    /// Checks credentials and opens a session.
    ///
    /// # Errors
    /// [`AuthError::InvalidCredentials`] (401, same work for unknown user and wrong password),
    /// [`AuthError::SessionLimit`] (409) with the `reject-new` policy when the user holds the
    /// most sessions allowed, [`AuthError::Redis`] (503) when sessions cannot be stored.
    pub async fn login(
        &self,
        username: String,
        password: String,
        client: ClientInfo,
    ) -> Result<TokenPair, AuthError> {
        self.inner.store.ensure_up()?;
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
        let t = self.times();
        let now = t.now_ms.div_euclid(1000);
        let session = Session {
            sid: super::tokens::random_id(),
            user_id: user.id,
            username: user.username,
            email: user.email,
            created_at: now,
            last_used_at: now,
            ip: client.ip,
            user_agent: client.user_agent,
            refresh_jti: super::tokens::random_id(),
            seq: 0,
            last_used_ms: t.now_ms,
            refresh_iat: now,
            // Every refresh token of the session ends here: the absolute lifetime.
            refresh_exp: now.saturating_add(self.inner.tokens.refresh_ttl),
        };
        let pair = self.pair_for(&session, now)?;
        match self.inner.limit_policy {
            SessionLimitPolicy::RejectNew => self.create_within_cap(&session, t).await?,
            SessionLimitPolicy::EvictOldest => {
                self.inner.store.create(&session, None, t).await?;
                self.trim_sessions(user.id, t).await?;
            }
        }
        Ok(pair)
    }

    /// `reject-new`: stores `session` only while fewer than the cap of its user's sessions are
    /// live (idle ones do not count, and are revoked here), else answers
    /// [`AuthError::SessionLimit`]. The check and the write are one script that refuses when a
    /// concurrent login changed the index since it was read: read again, a few times.
    async fn create_within_cap(&self, session: &Session, t: Times) -> Result<(), AuthError> {
        let user = session.user_id;
        for _ in 0..4 {
            let existing = self.inner.store.list(user, t.now_ms, true).await?;
            let created = self
                .inner
                .store
                .create(session, Some((self.inner.max_sessions, &existing)), t)
                .await?;
            let idle: Vec<&Session> = existing.iter().filter(|s| s.is_idle(t)).collect();
            match created {
                Created::IndexChanged => continue,
                Created::Stored(_) => {
                    self.revoke_sessions(user, &idle, t).await?;
                    return Ok(());
                }
                Created::Full => {
                    self.revoke_sessions(user, &idle, t).await?;
                    Counters::bump(&self.inner.counters.limit_rejections);
                    tracing::info!(user = %user, "auth: login refused (session limit)");
                    return Err(AuthError::SessionLimit);
                }
            }
        }
        tracing::warn!(user = %user, "auth: login kept racing other logins of the same user");
        Err(AuthError::Busy)
    }

    /// `evict-oldest`: revokes `user`'s oldest sessions beyond
    /// [`AuthConfig::max_sessions_per_user`](super::AuthConfig::max_sessions_per_user) and the
    /// idle ones, and drops expired ones from the user's index, from one read of it per login
    /// (logins already cost an argon2 hash): the store stays bounded however often one account
    /// logs in. "Oldest" is by login sequence, so every login agrees on which ones go, and the
    /// newest one never does.
    pub(super) async fn trim_sessions(&self, user: UserId, t: Times) -> Result<(), AuthError> {
        let listed = self.inner.store.list(user, t.now_ms, true).await?;
        let (idle, live): (Vec<&Session>, Vec<&Session>) =
            listed.iter().partition(|s| s.is_idle(t));
        let excess = live.len().saturating_sub(self.inner.max_sessions);
        // `list` answers in login order.
        self.revoke_sessions(user, &live[..excess], t).await?;
        self.revoke_sessions(user, &idle, t).await?;
        if excess > 0 {
            tracing::info!(user = %user, revoked = excess, "auth: oldest sessions revoked (per-user cap)");
        }
        Ok(())
    }

    async fn revoke_sessions(
        &self,
        user: UserId,
        sessions: &[&Session],
        t: Times,
    ) -> Result<(), AuthError> {
        for s in sessions {
            self.inner
                .store
                .revoke_session(user, &s.sid, None, t, &self.inner.view)
                .await?;
        }
        Ok(())
    }

    /// Spends `refresh_token` and answers a new pair. The same token presented again within the
    /// grace window answers the same successor; later, or once its successor was spent too, it
    /// revokes its session. A session unused past the idle limit is revoked.
    ///
    /// # Errors
    /// [`AuthError::Unauthorized`] (401) for any bad, spent, idle or revoked token;
    /// [`AuthError::Redis`] (503).
    pub async fn refresh(&self, refresh_token: &str) -> Result<TokenPair, AuthError> {
        self.inner.store.ensure_up()?;
        let p = self
            .inner
            .tokens
            .verify(refresh_token, TokenType::Refresh)
            .map_err(reject)?;
        self.check_revoked(&p).await?;
        let t = self.times();
        let now = t.now_ms.div_euclid(1000);
        let tokens = &self.inner.tokens;
        let successor = tokens
            .successor_jti(&p.sid, &p.jti)
            .map_err(AuthError::Internal)?;
        // A session stored without an expiry keeps the sliding one it was issued with, once.
        let legacy_exp = now.saturating_add(tokens.refresh_ttl);
        let rotation = self
            .inner
            .store
            .rotate(
                p.user_id,
                &p.sid,
                &p.jti,
                (&successor, now, legacy_exp),
                t,
                &self.inner.view,
            )
            .await?;
        let counters = &self.inner.counters;
        match rotation {
            Rotation::Rotated(session) => self.pair_for(&session, now),
            Rotation::Grace(session) => {
                Counters::bump(&counters.grace_answers);
                tracing::info!(user = p.user_id, sid = %p.sid, "auth: spent refresh token replayed within the grace window; successor answered again");
                self.pair_for(&session, now)
            }
            Rotation::Reused => {
                Counters::bump(&counters.reuse_revocations);
                tracing::warn!(user = p.user_id, sid = %p.sid, "auth: refresh token reused; session revoked");
                Err(reject(RejectReason::RefreshReused))
            }
            Rotation::IdleExpired => {
                Counters::bump(&counters.idle_revocations);
                tracing::info!(user = p.user_id, sid = %p.sid, "auth: session idle too long; revoked");
                Err(reject(RejectReason::IdleExpired))
            }
            Rotation::Gone => Err(reject(RejectReason::SessionGone)),
        }
    }

    /// Revokes the session of `p` and denylists its access token.
    ///
    /// # Errors
    /// [`AuthError::Redis`] (503).
    pub async fn logout(&self, p: &Principal) -> Result<(), AuthError> {
        self.inner.store.ensure_up()?;
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
        self.inner.store.ensure_up()?;
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
        self.inner.store.ensure_up()?;
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

    /// The user's live sessions (not idle), in login order.
    ///
    /// # Errors
    /// [`AuthError::Redis`] (503).
    pub async fn sessions(&self, user: UserId) -> Result<Vec<Session>, AuthError> {
        let t = self.times();
        let mut list = self.inner.store.list(user, t.now_ms, false).await?;
        list.retain(|s| !s.is_idle(t));
        Ok(list)
    }
}
