use actix_web::{HttpResponse, ResponseError, http::StatusCode};

use crate::{connection::RedisError, problem::Problem};

/// Largest cache key, in bytes.
pub const MAX_KEY_BYTES: usize = 512;

/// A failed cache operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CacheError {
    /// The key is empty, longer than 512 bytes, or holds a control character.
    #[error("invalid cache key: {0}")]
    InvalidKey(&'static str),
    /// The flush pattern is empty, longer than
    /// [`MAX_PATTERN_CHARS`](super::MAX_PATTERN_CHARS), or holds a control character.
    #[error("invalid cache pattern: {0}")]
    InvalidPattern(&'static str),
    /// A tag is empty, too long (64 characters over HTTP, 128 for the library) or holds a
    /// control character, or there are more than 8.
    #[error("invalid cache tag: {0}")]
    InvalidTag(&'static str),
    /// The value is not JSON.
    #[error("cache values must be JSON")]
    InvalidValue,
    /// The TTL is under one second or over [`MAX_TTL`](super::MAX_TTL) (100 years).
    #[error("cache TTL must be from one second to 100 years")]
    InvalidTtl,
    /// The loader ran past the hard timeout and nothing stale was at hand.
    #[error("the loader did not answer in time")]
    LoaderTimeout,
    /// L2 (Redis) is needed for this operation and cannot be reached.
    #[error(transparent)]
    Unavailable(#[from] RedisError),
    /// A value could not be (de)serialized as the requested type.
    #[error("cache value does not fit the requested type: {0}")]
    Serde(#[from] serde_json::Error),
    /// The cache actor is gone (the system is shutting down).
    #[error("cache actor unavailable")]
    ActorGone,
}

/// Checks a cache key: 1 to 512 bytes of printable UTF-8.
///
/// # Errors
/// [`CacheError::InvalidKey`] saying which rule the key breaks.
pub fn validate_key(key: &str) -> Result<(), CacheError> {
    if key.is_empty() {
        return Err(CacheError::InvalidKey("key is empty"));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(CacheError::InvalidKey("key is longer than 512 bytes"));
    }
    if key.chars().any(char::is_control) {
        return Err(CacheError::InvalidKey("key holds a control character"));
    }
    Ok(())
}

impl ResponseError for CacheError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::InvalidKey(_)
            | Self::InvalidPattern(_)
            | Self::InvalidTag(_)
            | Self::InvalidTtl => StatusCode::BAD_REQUEST,
            Self::InvalidValue => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Unavailable(err) => err.status_code(),
            Self::ActorGone => StatusCode::SERVICE_UNAVAILABLE,
            Self::LoaderTimeout => StatusCode::GATEWAY_TIMEOUT,
            Self::Serde(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            Self::InvalidKey(why) => {
                Problem::new(StatusCode::BAD_REQUEST, "invalid-key", "Invalid cache key")
                    .with_detail(format!(
                        "Cache keys are 1 to 512 bytes of printable UTF-8: {why}."
                    ))
                    .into_response()
            }
            Self::InvalidPattern(why) => Problem::new(
                StatusCode::BAD_REQUEST,
                "invalid-pattern",
                "Invalid cache pattern",
            )
            .with_detail(format!(
                "Cache patterns are 1 to 128 characters of printable UTF-8: {why}."
            ))
            .into_response(),
            Self::InvalidTag(why) => {
                Problem::new(StatusCode::BAD_REQUEST, "invalid-tag", "Invalid cache tag")
                    .with_detail(format!(
                        "At most 8 tags of 1 to 64 characters, none a control character: {why}."
                    ))
                    .into_response()
            }
            Self::InvalidTtl => {
                Problem::bad_request("ttl must be from 1 second to 100 years.").into_response()
            }
            Self::LoaderTimeout => Problem::for_status(StatusCode::GATEWAY_TIMEOUT)
                .with_detail("The data source did not answer in time.")
                .into_response(),
            Self::InvalidValue => Problem::validation("Cache values must be JSON.").into_response(),
            Self::Unavailable(err) => {
                tracing::warn!(error = %err, "cache operation needs redis");
                err.error_response()
            }
            Self::ActorGone => Problem::unavailable("The server is shutting down.").into_response(),
            Self::Serde(err) => {
                tracing::error!(error = %err, "cache value (de)serialization failed");
                Problem::internal().into_response()
            }
        }
    }
}
