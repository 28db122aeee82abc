use std::sync::Arc;

use actix::Addr;
use actix_web::{HttpMessage, HttpRequest};
use serde::Serialize;

use super::{
    AuthConfig, AuthError, CreateUser, GetUser, Principal, RejectReason, Session, TokenType, User,
    UserId, UsersActor, VerifyCredentials,
    revocation::{self, Keys, RevocationView, ViewState},
    sessions::{Rotation, Store, Times},
    tokens::Tokens,
    users::MAX_PASSWORD_LEN,
};
use crate::{config::DatabaseLocation, connection::RedisHandle};

/// A new access/refresh pair, as `/auth/login` and `/auth/refresh` answer it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[non_exhaustive]
pub struct TokenPair {
    /// Bearer token for requests.
    pub access_token: String,
    /// One-use token for `/auth/refresh`.
    pub refresh_token: String,
    /// Always `"bearer"`.
    pub token_type: &'static str,
    /// Access-token lifetime, in seconds.
    pub expires_in: i64,
}

/// Where a login came from, stored with its session.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct ClientInfo {
    /// Client address.
    pub ip: String,
    /// `User-Agent` header.
    pub user_agent: String,
}

impl ClientInfo {
    /// The peer address and user agent of `req`.
    pub fn of(req: &HttpRequest) -> Self {
        Self {
            ip: req
                .peer_addr()
                .map(|a| a.ip().to_string())
                .unwrap_or_default(),
            user_agent: req
                .headers()
                .get(actix_web::http::header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .chars()
                .take(256)
                .collect(),
        }
    }
}

/// Whether a principal verified earlier is still good, as far as the local view knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PrincipalStatus {
    /// Not expired, not revoked.
    Valid,
    /// Past `exp` (plus leeway).
    Expired,
    /// Revoked (token, session or user).
    Revoked,
    /// The local view is not trusted right now; ask [`AuthHandle::authenticate`] again.
    Unknown,
}

/// Cloneable handle to auth: issue, verify, refresh and revoke tokens; register users.
///
/// Verification is synchronous and local (signature + the revocation view) whenever the view
/// is in sync; see the [module docs](super).
#[derive(Clone)]
pub struct AuthHandle {
    inner: Arc<Inner>,
}

struct Inner {
    tokens: Tokens,
    view: Arc<RevocationView>,
    store: Store,
    users: Addr<UsersActor>,
    keys: Keys,
    redis: Option<RedisHandle>,
    /// Bounds the argon2 work in flight or queued (see [`AuthConfig::hash_queue`]).
    hashing: Arc<tokio::sync::Semaphore>,
    secure_cookie: bool,
    /// [`AuthConfig::max_sessions_per_user`], at least 1.
    max_sessions: usize,
}

impl std::fmt::Debug for AuthHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthHandle")
            .field("view", &self.inner.view.state())
            .finish_non_exhaustive()
    }
}

impl AuthHandle {
    /// Starts the users actor and, with Redis, the revocation subscriber (on the current
    /// actix system). Never waits for Redis.
    ///
    /// # Errors
    /// [`AuthError::Database`] when the users table cannot be opened.
    pub fn start(
        config: &AuthConfig,
        database: &DatabaseLocation,
        redis: Option<(&RedisHandle, &crate::config::RedisSettings)>,
    ) -> Result<Self, AuthError> {
        if config.secret.is_generated() {
            tracing::warn!(
                "SECRET_KEY is not set: using a random token key; tokens die with this process, and instances sharing Redis must share a key"
            );
        }
        let tokens = Tokens::new(config);
        let keys = Keys::new(&config.key_prefix);
        // Revocations must outlive every token they revoke: access tokens included, whatever
        // an embedder configured.
        let horizon = config.refresh_ttl.max(config.access_ttl) + config.leeway;
        let users = super::actor::start(database, config.clock.clone())?;
        let (store, view) = match redis {
            None => (
                Store::memory(),
                Arc::new(RevocationView::new(
                    config.clock.clone(),
                    horizon,
                    ViewState::InSync,
                )),
            ),
            Some((handle, _)) => {
                let view = Arc::new(RevocationView::new(
                    config.clock.clone(),
                    horizon,
                    ViewState::Syncing,
                ));
                let (subscriber, events) = handle
                    .subscriber("revocations")
                    .map_err(|e| AuthError::Internal(format!("redis subscriber: {e}")))?;
                actix_web::rt::spawn(revocation::subscribe_loop(
                    Arc::downgrade(&view),
                    subscriber,
                    events,
                    handle.clone(),
                    keys.clone(),
                ));
                (
                    Store::Redis(super::sessions::RedisStore::new(
                        handle.clone(),
                        keys.clone(),
                    )),
                    view,
                )
            }
        };
        Ok(Self {
            inner: Arc::new(Inner {
                tokens,
                view,
                store,
                users,
                keys,
                redis: redis.map(|(h, _)| h.clone()),
                hashing: Arc::new(tokio::sync::Semaphore::new(config.hash_queue.max(1))),
                secure_cookie: config.secure_cookie,
                max_sessions: config.max_sessions_per_user.max(1),
            }),
        })
    }

    fn times(&self) -> Times {
        let t = &self.inner.tokens;
        let mut times = super::sessions::times(&*t.clock, t.refresh_ttl, t.leeway);
        // A revocation lasts as long as any token it revokes can: access tokens too.
        times.revoke_for_ms = times
            .revoke_for_ms
            .max((t.access_ttl + t.leeway).saturating_mul(1000));
        times
    }

    /// Times the local revocation view was (re)built from Redis since start.
    pub fn view_resyncs(&self) -> u64 {
        self.inner.view.resyncs()
    }

    /// How far the local revocation view is trusted right now.
    pub fn view_state(&self) -> ViewState {
        self.inner.view.state()
    }

    /// The users actor's address.
    pub fn users(&self) -> &Addr<UsersActor> {
        &self.inner.users
    }

    /// Registers a user (validation and argon2 on the users actor's thread).
    ///
    /// # Errors
    /// [`AuthError::Invalid`] (422), [`AuthError::UsernameTaken`] (409), or an internal failure.
    pub async fn register(
        &self,
        username: String,
        email: String,
        password: String,
    ) -> Result<User, AuthError> {
        super::users::validate_new_user(&username, &email, &password)?;
        let _permit = self.hash_permit()?;
        self.inner
            .users
            .send(CreateUser::new(username, email, password))
            .await
            .map_err(|_| AuthError::Internal("users actor gone".into()))?
    }

    /// One user by id.
    ///
    /// # Errors
    /// An internal failure.
    pub async fn user(&self, id: UserId) -> Result<Option<User>, AuthError> {
        self.inner
            .users
            .send(GetUser(id))
            .await
            .map_err(|_| AuthError::Internal("users actor gone".into()))?
    }

    /// Whether the access cookie is always `Secure` ([`AuthConfig::secure_cookie`]).
    pub fn secure_cookie(&self) -> bool {
        self.inner.secure_cookie
    }

    /// A place in the bounded argon2 queue, held until the users actor answers.
    fn hash_permit(&self) -> Result<tokio::sync::SemaphorePermit<'_>, AuthError> {
        self.inner.hashing.try_acquire().map_err(|_| {
            tracing::warn!("auth: argon2 queue full; login or registration refused");
            AuthError::Busy
        })
    }

    fn ensure_store_up(&self) -> Result<(), AuthError> {
        match &self.inner.redis {
            Some(redis) if !redis.is_up() => Err(AuthError::Redis(
                crate::connection::RedisError::Timeout(redis.timeout()),
            )),
            _ => Ok(()),
        }
    }

    fn pair(&self, user: UserId, sid: &str) -> Result<(TokenPair, String), AuthError> {
        let t = &self.inner.tokens;
        let access = t
            .issue(user, sid, TokenType::Access)
            .map_err(AuthError::Internal)?;
        let refresh = t
            .issue(user, sid, TokenType::Refresh)
            .map_err(AuthError::Internal)?;
        Ok((
            TokenPair {
                access_token: access.token,
                refresh_token: refresh.token,
                token_type: "bearer",
                expires_in: t.access_ttl,
            },
            refresh.jti,
        ))
    }

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

    /// Revokes `user`'s oldest sessions beyond [`AuthConfig::max_sessions_per_user`]: one more
    /// read per login (logins already cost an argon2 hash), and the store stays bounded however
    /// often one account logs in.
    async fn trim_sessions(&self, user: UserId, t: Times) -> Result<(), AuthError> {
        let max = self.inner.max_sessions;
        let live = self.inner.store.list(user, t.now_ms).await?;
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
        if !self.inner.view.state().is_local() {
            return Ok(None);
        }
        self.inner.view.check(&p)?;
        Ok(Some(p))
    }

    async fn check_revoked(&self, p: &Principal) -> Result<(), AuthError> {
        if self.inner.view.state().is_local() {
            return self.inner.view.check(p).map_err(reject);
        }
        let Some(redis) = &self.inner.redis else {
            return self.inner.view.check(p).map_err(reject);
        };
        match revocation::check_remote(redis, &self.inner.keys, p).await {
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
        let token = super::extractor::token_from(req.headers())?;
        // A second limiter on the same request (a scope's own) reads the first one's result.
        if let Some(principal) = self.verified_before(req, token) {
            return Some(principal.user_id);
        }
        let principal = self.verify_local(token).ok().flatten()?;
        let user = principal.user_id;
        // `AuthUser` later in the same request reads this instead of verifying again.
        req.extensions_mut().insert(super::extractor::Verified {
            by: self.identity(),
            token: token.into(),
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
        if !self.inner.view.state().is_local() {
            return PrincipalStatus::Unknown;
        }
        match self.inner.view.check(p) {
            Ok(()) => PrincipalStatus::Valid,
            Err(_) => PrincipalStatus::Revoked,
        }
    }
}

fn reject(reason: RejectReason) -> AuthError {
    AuthError::Unauthorized(reason)
}
