//! The auth handle: its shared state, start-up, registration and the helpers of the session
//! lifecycle (`lifecycle`) and token verification (`verify`).

use std::sync::Arc;

use actix::Addr;
use serde::Serialize;

use super::{
    AuthConfig, AuthError, CreateUser, GetUser, RejectReason, TokenType, User, UserId, UsersActor,
    revocation::{self, Keys, RevocationView, ViewState},
    sessions::{Store, Times},
    tokens::Tokens,
};
use crate::{connection::RedisHandle, db::DatabaseLocation};

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
    pub(super) inner: Arc<Inner>,
}

pub(super) struct Inner {
    pub(super) tokens: Tokens,
    pub(super) view: Arc<RevocationView>,
    pub(super) store: Store,
    pub(super) users: Addr<UsersActor>,
    pub(super) keys: Keys,
    pub(super) redis: Option<RedisHandle>,
    /// Bounds the argon2 work in flight or queued (see [`AuthConfig::hash_queue`]).
    pub(super) hashing: Arc<tokio::sync::Semaphore>,
    pub(super) secure_cookie: bool,
    /// [`AuthConfig::max_sessions_per_user`], at least 1.
    pub(super) max_sessions: usize,
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
        redis: Option<(&RedisHandle, &crate::connection::RedisSettings)>,
    ) -> Result<Self, AuthError> {
        if config.secret.is_generated() {
            tracing::warn!(
                "SECRET_KEY is not set: using a random token key; tokens die with this process, and instances sharing Redis must share a key"
            );
        }
        let tokens = Tokens::new(config);
        let keys = Keys::new(&config.key_prefix);
        // A revocation denies access tokens only (a revoked session is also deleted, so its
        // refresh token finds nothing to rotate): it lives as long as the longest of them.
        let horizon = config.access_ttl + config.leeway;
        let users = super::actor::start(database, config.clock.clone())?;
        let (store, view) = match redis {
            None => (
                Store::memory(),
                Arc::new(RevocationView::new(
                    config.clock.clone(),
                    horizon,
                    std::time::Duration::ZERO,
                    ViewState::InSync,
                )),
            ),
            Some((handle, settings)) => {
                // The subscriber's liveness deadline (see `connection::push`).
                let view = Arc::new(RevocationView::new(
                    config.clock.clone(),
                    horizon,
                    settings.response_timeout,
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
                        // Half the response timeout: the wait fits in the command's own.
                        config.durable_writes.then(|| settings.response_timeout / 2),
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

    pub(super) fn times(&self) -> Times {
        let t = &self.inner.tokens;
        let mut times = super::sessions::times(&*t.clock, t.refresh_ttl, t.leeway);
        // A revocation lasts as long as the longest token it denies: an access token (the
        // sessions it revokes are deleted, so their refresh tokens rotate nothing).
        times.revoke_for_ms = (t.access_ttl + t.leeway).saturating_mul(1000);
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
    pub(super) fn hash_permit(&self) -> Result<tokio::sync::SemaphorePermit<'_>, AuthError> {
        self.inner.hashing.try_acquire().map_err(|_| {
            tracing::warn!("auth: argon2 queue full; login or registration refused");
            AuthError::Busy
        })
    }

    pub(super) fn ensure_store_up(&self) -> Result<(), AuthError> {
        match &self.inner.redis {
            Some(redis) if !redis.is_up() => Err(AuthError::Redis(
                crate::connection::RedisError::Timeout(redis.timeout()),
            )),
            _ => Ok(()),
        }
    }

    pub(super) fn pair(&self, user: UserId, sid: &str) -> Result<(TokenPair, String), AuthError> {
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
}

pub(super) fn reject(reason: RejectReason) -> AuthError {
    AuthError::Unauthorized(reason)
}
