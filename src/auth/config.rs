//! Auth settings: the signing secret, token lifetimes, issuer/audience, and the clock, with
//! their defaults. Configured like every feature (see [`crate::settings`]): public fields,
//! `Default`, and [`AuthConfig::validate`].

use std::{sync::Arc, time::Duration};

#[cfg(feature = "server")]
use crate::settings::{parse_secs, parse_secs_or_off};
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
#[cfg_attr(feature = "server", derive(clap::ValueEnum))]
#[non_exhaustive]
pub enum SessionLimitPolicy {
    /// Revokes the user's oldest sessions (by login order): the new login always survives.
    #[default]
    EvictOldest,
    /// Refuses the login with 409 `session-limit` and revokes nothing.
    RejectNew,
}

/// Settings of the auth feature. With the `server` feature, also its command-line options (each
/// field's doc line is its `--help` text).
#[derive(Debug, Clone)]
#[cfg_attr(feature = "server", derive(clap::Args))]
#[non_exhaustive]
pub struct AuthConfig {
    /// HS256 signing secret; the server reads it from `--secret-key` or `--secret-key-file`.
    #[cfg_attr(feature = "server", arg(skip = SecretKey::generate()))]
    pub secret: SecretKey,
    /// Access-token lifetime (at most the refresh-token lifetime).
    #[cfg_attr(feature = "server", arg(long = "access-token-ttl", env = "ACCESS_TOKEN_TTL",
        value_name = "SECS", value_parser = parse_secs,
        default_value = DEFAULT_ACCESS_TTL_SECS.to_string()))]
    pub access_ttl: Duration,
    /// Refresh-token and session lifetime.
    #[cfg_attr(feature = "server", arg(long = "refresh-token-ttl", env = "REFRESH_TOKEN_TTL",
        value_name = "SECS", value_parser = parse_secs,
        default_value = DEFAULT_REFRESH_TTL_SECS.to_string()))]
    pub refresh_ttl: Duration,
    /// Clock-skew leeway for token times (`exp`, `nbf`, `iat`), 0 to 5 seconds.
    #[cfg_attr(feature = "server", arg(long = "token-leeway", env = "TOKEN_LEEWAY",
        value_name = "SECS", value_parser = parse_secs,
        default_value = DEFAULT_LEEWAY_SECS.to_string()))]
    pub leeway: Duration,
    /// `iss` and `aud` of issued tokens (the only ones accepted).
    #[cfg_attr(feature = "server", arg(long = "token-issuer", env = "TOKEN_ISSUER",
        value_name = "NAME", default_value = DEFAULT_ISSUER))]
    pub issuer: String,
    /// `aud` of issued tokens, and the only one accepted; the server's `--token-issuer` sets it
    /// with the issuer.
    #[cfg_attr(feature = "server", arg(skip = DEFAULT_ISSUER.to_owned()))]
    pub audience: String,
    /// Prefix of every Redis key and channel auth writes; the server's `--key-prefix` sets it for
    /// every feature at once.
    #[cfg_attr(feature = "server", arg(skip = DEFAULT_KEY_PREFIX.to_owned()))]
    pub key_prefix: String,
    /// Where "now" comes from.
    #[cfg_attr(feature = "server", arg(skip = Arc::new(SystemClock) as Arc<dyn Clock>))]
    pub clock: Arc<dyn Clock>,
    /// Logins and registrations hashing a password or queued at once; beyond, 503 with
    /// `Retry-After` (each argon2 hash in flight holds 19 MiB).
    #[cfg_attr(feature = "server", arg(long, env = "HASH_QUEUE", value_name = "N",
        default_value_t = DEFAULT_HASH_QUEUE))]
    pub hash_queue: usize,
    /// Always mark the access cookie `Secure`: set it behind a TLS-terminating proxy (without
    /// it, only requests seen as HTTPS, directly or by `X-Forwarded-Proto`/`Forwarded`, get it).
    #[cfg_attr(feature = "server", arg(long, env = "SECURE_COOKIE"))]
    pub secure_cookie: bool,
    /// Live sessions one user may hold (at least 1); a login beyond revokes the user's oldest
    /// sessions, so that logging in again and again cannot grow the store without bound.
    #[cfg_attr(feature = "server", arg(long, env = "MAX_SESSIONS_PER_USER", value_name = "N",
        default_value_t = DEFAULT_MAX_SESSIONS_PER_USER))]
    pub max_sessions_per_user: usize,
    /// Answer a revocation, a refresh rotation or a login only once a replica has it (`WAIT 1`
    /// within half the Redis timeout; 503 otherwise): a failover cannot undo them. Needs a
    /// deployment with replicas (without one, every such write answers 503).
    #[cfg_attr(
        feature = "server",
        arg(long = "redis-durable-writes", env = "REDIS_DURABLE_WRITES")
    )]
    pub durable_writes: bool,
    /// What a login beyond `--max-sessions-per-user` does.
    #[cfg_attr(feature = "server", arg(long, env = "SESSION_LIMIT_POLICY", value_name = "POLICY",
        value_enum, default_value_t = SessionLimitPolicy::EvictOldest))]
    pub session_limit_policy: SessionLimitPolicy,
    /// How long after a refresh token was first spent presenting it again (a retried request,
    /// two tabs) still answers its one successor instead of revoking the session as a reuse;
    /// 0 is strict rotation. At most the refresh-token lifetime.
    #[cfg_attr(feature = "server", arg(long, env = "REFRESH_REUSE_GRACE", value_name = "SECS",
        value_parser = parse_secs, default_value = DEFAULT_REFRESH_REUSE_GRACE_SECS.to_string()))]
    pub refresh_reuse_grace: Duration,
    /// A session not refreshed for this long can no longer refresh and is revoked; 0: no idle
    /// limit. The absolute limit stays the refresh-token lifetime from login.
    // The path is spelled out so that clap takes the whole `Option` from the parser (0 is
    // `None`) instead of reading the option as one that may be left out.
    #[cfg_attr(feature = "server", arg(long, env = "SESSION_IDLE_TIMEOUT", value_name = "SECS",
        value_parser = parse_secs_or_off, default_value = "0"))]
    pub session_idle_timeout: ::std::option::Option<Duration>,
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
