use actix_web::{HttpResponse, ResponseError, http::StatusCode};

use super::wire::{MAX_CHANNEL_LEN, MAX_EVENT_TYPE_LEN};
use crate::{connection::RedisError, problem::Problem};

/// A failed events operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EventsError {
    /// The channel name is empty, too long, or has a character outside `[A-Za-z0-9:_.-]`.
    #[error("invalid channel name")]
    InvalidChannel,
    /// A multi-channel subscription names no channel, or more distinct channels than allowed
    /// (the most allowed).
    #[error("a stream follows 1 to {0} channels")]
    ChannelCount(usize),
    /// The event type is empty, too long, or has a character outside `[A-Za-z0-9_.-]`.
    #[error("invalid event type")]
    InvalidEventType,
    /// No valid access token (or ticket) came with a request that needs one.
    #[error("missing or invalid access token")]
    Unauthorized,
    /// Whether the token was revoked cannot be checked right now (503 with `Retry-After`,
    /// never 401: the client's tokens may well be valid).
    #[error("token revocation cannot be checked")]
    RevocationUnknown,
    /// The token is valid but belongs to someone else than the private channel's owner.
    #[error("private channel of another user")]
    Forbidden,
    /// The event's data (compact JSON) is longer than
    /// [`EventsConfig::max_event_bytes`](super::EventsConfig::max_event_bytes).
    #[error("event data longer than {0} bytes")]
    TooLarge(usize),
    /// This client address holds the most SSE connections allowed (429).
    #[error("too many event streams from this address (at most {0})")]
    TooManyConnections(usize),
    /// The server holds the most SSE connections allowed (503 with `Retry-After`).
    #[error("too many event streams")]
    ServerFull,
    /// Redis is needed (publish, ticket) and cannot be reached.
    #[error(transparent)]
    Unavailable(#[from] RedisError),
    /// The server is shutting down and accepts no new subscribers.
    #[error("shutting down")]
    ShuttingDown,
    /// Something that should not happen (an unparsable id from Redis, no randomness).
    #[error("internal events error: {0}")]
    Internal(&'static str),
    /// [`EventsHandle::start`](super::EventsHandle::start) was given settings
    /// [`EventsConfig::validate`](super::EventsConfig::validate) refuses (never answered to a
    /// request).
    #[error(transparent)]
    Config(#[from] crate::settings::ConfigError),
}

impl From<super::Rejection> for EventsError {
    fn from(rejection: super::Rejection) -> Self {
        match rejection {
            super::Rejection::Invalid => Self::Unauthorized,
            super::Rejection::Unknown => Self::RevocationUnknown,
        }
    }
}

impl ResponseError for EventsError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::InvalidChannel | Self::InvalidEventType | Self::ChannelCount(_) => {
                StatusCode::BAD_REQUEST
            }
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden => StatusCode::FORBIDDEN,
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::TooManyConnections(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::ServerFull | Self::RevocationUnknown => StatusCode::SERVICE_UNAVAILABLE,
            Self::Unavailable(err) => err.status_code(),
            Self::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) | Self::Config(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            Self::InvalidChannel => Problem::new(
                StatusCode::BAD_REQUEST,
                "invalid-channel",
                "Invalid channel name",
            )
            .with_detail(format!(
                "Channel names are 1 to {MAX_CHANNEL_LEN} characters of A-Z a-z 0-9 : _ . -"
            ))
            .into_response(),
            Self::ChannelCount(max) => Problem::new(
                StatusCode::BAD_REQUEST,
                "invalid-channel-list",
                "Invalid channel list",
            )
            .with_detail(format!(
                "A stream follows 1 to {max} distinct channels (?channel=a&channel=b)."
            ))
            .into_response(),
            Self::InvalidEventType => Problem::new(
                StatusCode::BAD_REQUEST,
                "invalid-event-type",
                "Invalid event type",
            )
            .with_detail(format!(
                "Event types are 1 to {MAX_EVENT_TYPE_LEN} characters of A-Z a-z 0-9 _ . -"
            ))
            .into_response(),
            Self::Unauthorized => {
                let mut response =
                    Problem::new(StatusCode::UNAUTHORIZED, "unauthorized", "Unauthorized")
                        .with_detail("A valid access token is required.")
                        .into_response();
                response.headers_mut().insert(
                    actix_web::http::header::WWW_AUTHENTICATE,
                    actix_web::http::header::HeaderValue::from_static("Bearer"),
                );
                response
            }
            Self::RevocationUnknown => Problem::unavailable(
                "Token revocation cannot be checked right now; retry shortly.",
            )
            .into_response(),
            Self::Forbidden => Problem::new(StatusCode::FORBIDDEN, "forbidden", "Forbidden")
                .with_detail("This private channel belongs to another user: only they may read it or publish to it.")
                .into_response(),
            Self::TooLarge(max) => Problem::for_status(StatusCode::PAYLOAD_TOO_LARGE)
                .with_detail(format!(
                    "An event's data is at most {max} bytes of compact JSON."
                ))
                .into_response(),
            Self::TooManyConnections(max) => Problem::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too-many-streams",
                "Too many event streams",
            )
            .with_detail(format!(
                "At most {max} event streams may be open from one address; close one first."
            ))
            .with_retry_after(1)
            .into_response(),
            Self::ServerFull => {
                Problem::unavailable("The server holds as many event streams as it allows.")
                    .into_response()
            }
            Self::Unavailable(err) => {
                tracing::warn!(error = %err, "events operation needs redis");
                err.error_response()
            }
            Self::ShuttingDown => {
                Problem::unavailable("The server is shutting down.").into_response()
            }
            Self::Internal(what) => {
                tracing::error!(error = what, "events operation failed");
                Problem::internal().into_response()
            }
            Self::Config(e) => {
                tracing::error!(error = %e, "events settings refused");
                Problem::internal().into_response()
            }
        }
    }
}
