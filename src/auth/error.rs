use actix_web::{
    HttpResponse, ResponseError,
    http::{StatusCode, header},
};

use crate::{connection::RedisError, problem::Problem};

/// Why a token was refused. Logged (field `reason`), never sent to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RejectReason {
    /// No token in `Authorization: Bearer` nor in the cookie.
    Missing,
    /// Longer than the largest token this server issues.
    TooLong,
    /// Not three base64url segments with a JSON header.
    Malformed,
    /// The header names an algorithm other than the pinned HS256 (including `none`).
    WrongAlgorithm,
    /// The signature does not match.
    BadSignature,
    /// A claim has the wrong JSON type (e.g. `exp` as a string, float or negative number).
    MalformedClaims,
    /// A required claim is absent.
    MissingClaim(&'static str),
    /// `exp` is past, beyond the leeway.
    Expired,
    /// `nbf` (or `iat`) is in the future, beyond the leeway.
    NotYetValid,
    /// `exp - iat` is longer than this token type's configured lifetime.
    LifetimeTooLong,
    /// `iss` is not ours.
    WrongIssuer,
    /// `aud` is not ours.
    WrongAudience,
    /// A refresh token where an access token is expected, or the reverse.
    WrongType,
    /// The token's `jti` is on the denylist (its session was logged out).
    RevokedToken,
    /// The token's session was revoked.
    RevokedSession,
    /// Every session of the user was revoked after the token was issued.
    RevokedUser,
    /// The refresh token's session no longer exists (expired or revoked).
    SessionGone,
    /// A spent refresh token was presented again after the grace window, or two generations
    /// back; the session is now revoked.
    RefreshReused,
    /// The session went unused past the idle limit; it is now revoked.
    IdleExpired,
}

impl RejectReason {
    /// A stable slug for logs and tests.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::TooLong => "too-long",
            Self::Malformed => "malformed",
            Self::WrongAlgorithm => "wrong-algorithm",
            Self::BadSignature => "bad-signature",
            Self::MalformedClaims => "malformed-claims",
            Self::MissingClaim("exp") => "missing-claim:exp",
            Self::MissingClaim("jti") => "missing-claim:jti",
            Self::MissingClaim("typ") => "missing-claim:typ",
            Self::MissingClaim(_) => "missing-claim",
            Self::Expired => "expired",
            Self::NotYetValid => "not-yet-valid",
            Self::LifetimeTooLong => "lifetime-too-long",
            Self::WrongIssuer => "wrong-issuer",
            Self::WrongAudience => "wrong-audience",
            Self::WrongType => "wrong-type",
            Self::RevokedToken => "revoked-token",
            Self::RevokedSession => "revoked-session",
            Self::RevokedUser => "revoked-user",
            Self::SessionGone => "session-gone",
            Self::RefreshReused => "refresh-reused",
            Self::IdleExpired => "idle-expired",
        }
    }
}

impl std::fmt::Display for RejectReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed auth operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// The token was refused (401 with `WWW-Authenticate: Bearer`); the reason is only logged.
    #[error("token rejected: {0}")]
    Unauthorized(RejectReason),
    /// Unknown user or wrong password (401, one body for both).
    #[error("invalid credentials")]
    InvalidCredentials,
    /// The username is taken (409).
    #[error("username taken")]
    UsernameTaken,
    /// A field of a registration is invalid (422); the text is about the client's own input.
    #[error("invalid: {0}")]
    Invalid(&'static str),
    /// The user holds the most live sessions allowed and the policy is `reject-new` (409).
    #[error("session limit reached")]
    SessionLimit,
    /// No session with this id belongs to the caller (404).
    #[error("no such session")]
    NoSuchSession,
    /// Redis is unreachable, or revocation cannot be checked yet (503 with `Retry-After`).
    #[error(transparent)]
    Redis(#[from] RedisError),
    /// The revocation view is not in sync and Redis cannot be asked (503 with `Retry-After`).
    #[error("revocation state unknown")]
    RevocationUnknown,
    /// With durable writes on, no replica acknowledged the write within its wait (503 with
    /// `Retry-After`): it is on the primary, but a failover could still undo it.
    #[error("write not acknowledged by a replica")]
    NotReplicated,
    /// Too many logins and registrations are hashing or queued (503 with `Retry-After`).
    #[error("password hashing queue full")]
    Busy,
    /// The user database failed (500; logged).
    #[error("user database: {0}")]
    Database(#[from] rusqlite::Error),
    /// Hashing failed or the users actor is gone (500; logged).
    #[error("internal: {0}")]
    Internal(String),
    /// [`AuthHandle::start`](super::AuthHandle::start) was given settings
    /// [`AuthConfig::validate`](super::AuthConfig::validate) refuses (never answered to a request).
    #[error(transparent)]
    Config(#[from] crate::settings::ConfigError),
}

impl ResponseError for AuthError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::Unauthorized(_) | Self::InvalidCredentials => StatusCode::UNAUTHORIZED,
            Self::UsernameTaken | Self::SessionLimit => StatusCode::CONFLICT,
            Self::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::NoSuchSession => StatusCode::NOT_FOUND,
            Self::Redis(e) => e.status_code(),
            Self::RevocationUnknown | Self::NotReplicated | Self::Busy => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::Database(_) | Self::Internal(_) | Self::Config(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            Self::Unauthorized(reason) => {
                tracing::info!(reason = reason.as_str(), "auth: token rejected");
                let challenge = if *reason == RejectReason::Missing {
                    "Bearer"
                } else {
                    "Bearer error=\"invalid_token\""
                };
                let mut res =
                    Problem::new(StatusCode::UNAUTHORIZED, "unauthorized", "Unauthorized")
                        .with_detail("A valid access token is required.")
                        .into_response();
                res.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    header::HeaderValue::from_static(challenge),
                );
                res
            }
            Self::InvalidCredentials => Problem::new(
                StatusCode::UNAUTHORIZED,
                "invalid-credentials",
                "Invalid credentials",
            )
            .with_detail("The username or password is wrong.")
            .into_response(),
            Self::UsernameTaken => {
                Problem::new(StatusCode::CONFLICT, "username-taken", "Username taken")
                    .with_detail("Another account already uses this username.")
                    .into_response()
            }
            Self::SessionLimit => Problem::new(
                StatusCode::CONFLICT,
                "session-limit",
                "Session limit reached",
            )
            .with_detail(
                "This account already holds the most sessions allowed; log out of one of them first.",
            )
            .into_response(),
            Self::Invalid(what) => Problem::validation(*what).into_response(),
            Self::NoSuchSession => Problem::not_found("No such session.").into_response(),
            Self::Redis(e) => {
                tracing::warn!(error = %e, "auth: redis failed");
                e.error_response()
            }
            Self::RevocationUnknown => {
                Problem::unavailable("Token revocation cannot be checked right now; retry shortly.")
                    .into_response()
            }
            Self::NotReplicated => {
                tracing::warn!("auth: no replica acknowledged a write within its wait");
                Problem::unavailable(
                    "The change could not be made durable right now; retry shortly.",
                )
                .into_response()
            }
            Self::Busy => {
                Problem::unavailable("Too many logins are being checked right now; retry shortly.")
                    .into_response()
            }
            Self::Database(_) | Self::Internal(_) | Self::Config(_) => {
                tracing::error!(error = %self, "auth: internal failure");
                Problem::internal().into_response()
            }
        }
    }
}
