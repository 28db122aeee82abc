//! The auth handle: its shared state, start-up, registration and the helpers of the session
//! lifecycle (`lifecycle`) and token verification (`verify`).

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use actix::Addr;
use serde::Serialize;

use super::{
    AuthConfig, AuthError, CreateUser, GetUser, RejectReason, Session, SessionLimitPolicy,
    TokenType, User, UserId, UsersActor,
    revocation::{self, Keys, RevocationView, ViewState},
    sessions::{MemoryStore, RedisStore, SessionStore, Times},
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

/// Counts of what refreshes and logins did to sessions, since start (this instance).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SessionStats {
    /// Spent refresh tokens presented again within the grace window, answered with their
    /// successor.
    pub grace_answers: u64,
    /// Sessions revoked because a spent refresh token was presented after the window, or two
    /// generations back.
    pub reuse_revocations: u64,
    /// Sessions revoked because they went unused past the idle limit.
    pub idle_revocations: u64,
    /// Logins refused with 409 by the `reject-new` session cap.
    pub limit_rejections: u64,
}

#[derive(Debug, Default)]
pub(super) struct Counters {
    pub(super) grace_answers: AtomicU64,
    pub(super) reuse_revocations: AtomicU64,
    pub(super) idle_revocations: AtomicU64,
    pub(super) limit_rejections: AtomicU64,
}

impl Counters {
    pub(super) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
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
    pub(super) store: Arc<dyn SessionStore>,
    pub(super) users: Addr<UsersActor>,
    /// Bounds the argon2 work in flight or queued (see [`AuthConfig::hash_queue`]).
    pub(super) hashing: Arc<tokio::sync::Semaphore>,
    pub(super) secure_cookie: bool,
    /// [`AuthConfig::max_sessions_per_user`], at least 1.
    pub(super) max_sessions: usize,
    /// [`AuthConfig::session_limit_policy`].
    pub(super) limit_policy: SessionLimitPolicy,
    /// [`AuthConfig::refresh_reuse_grace`], ms.
    pub(super) grace_ms: i64,
    /// [`AuthConfig::session_idle_timeout`], ms (0: none).
    pub(super) idle_ms: i64,
    pub(super) counters: Counters,
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
    /// [`AuthError::Config`] when [`AuthConfig::validate`] refuses `config`,
    /// [`AuthError::Database`] when the users table cannot be opened.
    pub fn start(
        config: &AuthConfig,
        database: &DatabaseLocation,
        redis: Option<(&RedisHandle, &crate::connection::RedisSettings)>,
    ) -> Result<Self, AuthError> {
        config.validate()?;
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
        let (store, view): (Arc<dyn SessionStore>, _) = match redis {
            None => (
                Arc::new(MemoryStore::default()),
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
                    Arc::new(RedisStore::new(
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
                hashing: Arc::new(tokio::sync::Semaphore::new(config.hash_queue.max(1))),
                secure_cookie: config.secure_cookie,
                max_sessions: config.max_sessions_per_user.max(1),
                limit_policy: config.session_limit_policy,
                grace_ms: millis(config.refresh_reuse_grace),
                idle_ms: config.session_idle_timeout.map_or(0, millis),
                counters: Counters::default(),
            }),
        })
    }

    pub(super) fn times(&self) -> Times {
        let t = &self.inner.tokens;
        let mut times = super::sessions::times(&*t.clock, t.refresh_ttl, t.leeway);
        // A revocation lasts as long as the longest token it denies: an access token (the
        // sessions it revokes are deleted, so their refresh tokens rotate nothing).
        times.revoke_for_ms = (t.access_ttl + t.leeway).saturating_mul(1000);
        times.grace_ms = self.inner.grace_ms;
        times.idle_ms = self.inner.idle_ms;
        times
    }

    /// What refreshes and logins did to sessions on this instance since start.
    pub fn session_stats(&self) -> SessionStats {
        let c = &self.inner.counters;
        let read = |n: &AtomicU64| n.load(Ordering::Relaxed);
        SessionStats {
            grace_answers: read(&c.grace_answers),
            reuse_revocations: read(&c.reuse_revocations),
            idle_revocations: read(&c.idle_revocations),
            limit_rejections: read(&c.limit_rejections),
        }
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

    /// The pair answered for `session` at `now` (s): its current refresh token, rebuilt from
    /// what the session stores (the same bytes on every instance and at every replay), and a
    /// new access token that ends no later than the session.
    pub(super) fn pair_for(&self, session: &Session, now: i64) -> Result<TokenPair, AuthError> {
        let t = &self.inner.tokens;
        let (user, sid) = (session.user_id, session.sid.as_str());
        let refresh = t
            .sign(
                user,
                sid,
                TokenType::Refresh,
                &session.refresh_jti,
                session.refresh_iat,
                session.refresh_exp,
            )
            .map_err(AuthError::Internal)?;
        let access_exp = (now + t.access_ttl).min(session.refresh_exp).max(now);
        let access = t
            .sign(
                user,
                sid,
                TokenType::Access,
                &super::tokens::random_id(),
                now,
                access_exp,
            )
            .map_err(AuthError::Internal)?;
        Ok(TokenPair {
            access_token: access,
            refresh_token: refresh,
            token_type: "bearer",
            expires_in: access_exp - now,
        })
    }
}

fn millis(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 4)
}

pub(super) fn reject(reason: RejectReason) -> AuthError {
    AuthError::Unauthorized(reason)
}
