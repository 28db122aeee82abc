//! Auth settings: the signing secret, token lifetimes, issuer/audience, and the clock, with
//! their defaults. Configured like every feature (see [`crate::settings`]): public fields,
//! `Default`, and [`AuthConfig::validate`].

use std::{sync::Arc, time::Duration};

use crate::{
    clock::{Clock, SystemClock},
    settings::{ConfigError, DEFAULT_KEY_PREFIX, validate_duration, validate_key_prefix},
};

/// Shortest accepted signing secret, in bytes (HS256 wants at least its output size).
pub const MIN_SECRET_LEN: usize = 32;
/// Default access-token lifetime, in seconds (30 minutes).
pub const DEFAULT_ACCESS_TTL_SECS: u64 = 30 * 60;
/// Default refresh-token (and session) lifetime, in seconds (7 days).
pub const DEFAULT_REFRESH_TTL_SECS: u64 = 7 * 24 * 3600;
/// Default clock-skew leeway for `exp`/`nbf`/`iat`, in seconds.
pub const DEFAULT_LEEWAY_SECS: u64 = 5;
/// Largest accepted leeway, in seconds.
pub const MAX_LEEWAY_SECS: u64 = 5;
/// Default `iss` and `aud` of issued tokens.
pub const DEFAULT_ISSUER: &str = "redkit";
/// Logins and registrations hashing or waiting to hash at once; more are refused with a 503
/// (each argon2 hash in flight holds 19 MiB and tens of milliseconds of CPU).
pub const DEFAULT_HASH_QUEUE: usize = 8;
/// Live sessions one user may hold; a login beyond revokes the oldest.
pub const DEFAULT_MAX_SESSIONS_PER_USER: usize = 100;
/// Whether revocations, refresh rotations and logins wait for a replica by default.
pub const DEFAULT_DURABLE_WRITES: bool = false;
/// Default reuse grace window of a spent refresh token, in seconds.
pub const DEFAULT_REFRESH_REUSE_GRACE_SECS: u64 = 30;
/// Longest username a login is checked for, in bytes (registration allows 32 characters of
/// ASCII): a longer one is refused before any limiter, store or hash sees it.
pub const MAX_LOGIN_USERNAME_BYTES: usize = 32;
/// Name of the cookie `?cookie=true` sets and the extractor reads.
pub const ACCESS_COOKIE: &str = "redkit_access";

/// The HS256 signing secret.
#[derive(Clone)]
#[non_exhaustive]
pub enum SecretKey {
    /// Given by the operator (`SECRET_KEY` or `--secret-key-file`).
    Given(Arc<[u8]>),
    /// Generated at start because none was given: tokens die with the process.
    Generated(Arc<[u8]>),
}

impl SecretKey {
    /// A checked operator-supplied secret.
    ///
    /// # Errors
    /// A one-line message when it is shorter than [`MIN_SECRET_LEN`] bytes.
    pub fn given(bytes: &[u8]) -> Result<Self, ConfigError> {
        if bytes.len() < MIN_SECRET_LEN {
            return Err(ConfigError(format!(
                "the secret key is {} bytes; at least {MIN_SECRET_LEN} are required (set SECRET_KEY or --secret-key-file to a longer random value)",
                bytes.len()
            )));
        }
        Ok(Self::Given(bytes.into()))
    }

    /// 32 random bytes from the operating system.
    pub fn generate() -> Self {
        Self::Generated(super::tokens::random_bytes::<32>().to_vec().into())
    }

    /// The key bytes.
    pub fn bytes(&self) -> &[u8] {
        match self {
            Self::Given(b) | Self::Generated(b) => b,
        }
    }

    /// Whether the key was generated at start.
    pub fn is_generated(&self) -> bool {
        matches!(self, Self::Generated(_))
    }
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = if self.is_generated() {
            "Generated"
        } else {
            "Given"
        };
        write!(
            f,
            "SecretKey::{kind}(<{} bytes redacted>)",
            self.bytes().len()
        )
    }
}

/// What a login beyond [`AuthConfig::max_sessions_per_user`] does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum SessionLimitPolicy {
    /// Revokes the user's oldest sessions (by login order): the new login always survives.
    #[default]
    EvictOldest,
    /// Refuses the login with 409 `session-limit` and revokes nothing.
    RejectNew,
}

impl SessionLimitPolicy {
    /// The policy named `evict-oldest` or `reject-new`.
    ///
    /// # Errors
    /// A one-line message naming the option for any other name.
    pub fn parse(name: &str) -> Result<Self, ConfigError> {
        match name {
            "evict-oldest" => Ok(Self::EvictOldest),
            "reject-new" => Ok(Self::RejectNew),
            other => Err(ConfigError(format!(
                "--session-limit-policy/SESSION_LIMIT_POLICY must be evict-oldest or reject-new, not {other:?}"
            ))),
        }
    }
}

/// Settings of the auth feature.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct AuthConfig {
    /// HS256 signing secret.
    pub secret: SecretKey,
    /// Access-token lifetime.
    pub access_ttl: Duration,
    /// Refresh-token and session lifetime.
    pub refresh_ttl: Duration,
    /// Clock-skew leeway for `exp`, `nbf` and `iat` (at most [`MAX_LEEWAY_SECS`]).
    pub leeway: Duration,
    /// `iss` of issued tokens, and the only one accepted.
    pub issuer: String,
    /// `aud` of issued tokens, and the only one accepted.
    pub audience: String,
    /// Prefix of every Redis key and channel auth writes.
    pub key_prefix: String,
    /// Where "now" comes from.
    pub clock: Arc<dyn Clock>,
    /// Logins and registrations hashing or queued at once; beyond, 503 with `Retry-After`.
    pub hash_queue: usize,
    /// Always mark the access cookie `Secure` (behind a TLS-terminating proxy that does not
    /// say `X-Forwarded-Proto: https`); otherwise only requests seen as HTTPS get it.
    pub secure_cookie: bool,
    /// Live sessions one user may hold (at least 1): a login beyond it revokes the user's oldest
    /// sessions, so that logging in again and again cannot grow the store without bound.
    pub max_sessions_per_user: usize,
    /// With Redis: answer a revocation, a refresh rotation or a login only once a replica
    /// acknowledged it (`WAIT 1`, within half the Redis response timeout; 503 otherwise), so
    /// that a failover cannot undo it. For deployments with replicas (without one, every such
    /// write answers 503). Off by default ([`DEFAULT_DURABLE_WRITES`]).
    pub durable_writes: bool,
    /// What a login beyond [`max_sessions_per_user`](Self::max_sessions_per_user) does.
    pub session_limit_policy: SessionLimitPolicy,
    /// How long after a refresh token was first spent presenting it again still answers its
    /// one successor (a retried request, two tabs refreshing at once) instead of revoking the
    /// session as a reuse; zero is strict rotation. At most the refresh-token lifetime.
    pub refresh_reuse_grace: Duration,
    /// A session not refreshed for this long can no longer refresh and is revoked; `None`: no
    /// idle limit. The absolute limit stays [`refresh_ttl`](Self::refresh_ttl) from login.
    pub session_idle_timeout: Option<Duration>,
}

impl Default for AuthConfig {
    /// The defaults, with a secret generated for this process (tokens die with it).
    fn default() -> Self {
        Self {
            secret: SecretKey::generate(),
            access_ttl: Duration::from_secs(DEFAULT_ACCESS_TTL_SECS),
            refresh_ttl: Duration::from_secs(DEFAULT_REFRESH_TTL_SECS),
            leeway: Duration::from_secs(DEFAULT_LEEWAY_SECS),
            issuer: DEFAULT_ISSUER.to_owned(),
            audience: DEFAULT_ISSUER.to_owned(),
            key_prefix: DEFAULT_KEY_PREFIX.to_owned(),
            clock: Arc::new(SystemClock),
            hash_queue: DEFAULT_HASH_QUEUE,
            secure_cookie: false,
            max_sessions_per_user: DEFAULT_MAX_SESSIONS_PER_USER,
            durable_writes: DEFAULT_DURABLE_WRITES,
            session_limit_policy: SessionLimitPolicy::EvictOldest,
            refresh_reuse_grace: Duration::from_secs(DEFAULT_REFRESH_REUSE_GRACE_SECS),
            session_idle_timeout: None,
        }
    }
}

impl AuthConfig {
    /// Checks the settings.
    ///
    /// # Errors
    /// The first bad value, in one line naming its command-line option: a token lifetime or idle
    /// timeout under a second or over [`MAX_DURATION`](crate::settings::MAX_DURATION),
    /// an access token outliving the refresh token, a leeway above [`MAX_LEEWAY_SECS`], an empty
    /// issuer, a bad key prefix, a zero hash queue or session cap, or a reuse grace window
    /// longer than the refresh-token lifetime.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let second = Duration::from_secs(1);
        validate_duration("--access-token-ttl", self.access_ttl, second)?;
        validate_duration("--refresh-token-ttl", self.refresh_ttl, second)?;
        if let Some(idle) = self.session_idle_timeout {
            validate_duration("--session-idle-timeout", idle, second)?;
        }
        if self.access_ttl > self.refresh_ttl {
            // Revocations (logout, logout-all) are kept for the refresh TTL: an access token
            // living longer would outlive its own revocation.
            return Err(ConfigError::new(
                "--access-token-ttl must not exceed --refresh-token-ttl",
            ));
        }
        if self.leeway > Duration::from_secs(MAX_LEEWAY_SECS) {
            return Err(ConfigError(format!(
                "--token-leeway/TOKEN_LEEWAY must be at most {MAX_LEEWAY_SECS} seconds"
            )));
        }
        if self.issuer.is_empty() || self.audience.is_empty() {
            return Err(ConfigError::new(
                "--token-issuer/TOKEN_ISSUER must not be empty",
            ));
        }
        validate_key_prefix(&self.key_prefix)?;
        if self.refresh_reuse_grace > self.refresh_ttl {
            return Err(ConfigError::new(
                "--refresh-reuse-grace must not exceed --refresh-token-ttl",
            ));
        }
        for (name, value) in [
            ("--hash-queue/HASH_QUEUE", self.hash_queue),
            (
                "--max-sessions-per-user/MAX_SESSIONS_PER_USER",
                self.max_sessions_per_user,
            ),
        ] {
            if value == 0 {
                return Err(ConfigError(format!("{name} must be at least 1")));
            }
        }
        Ok(())
    }
}
