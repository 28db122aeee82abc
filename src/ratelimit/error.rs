use actix_web::{HttpResponse, ResponseError, http::StatusCode};

use crate::problem::Problem;

/// A rate-limit decision that could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RateLimitError {
    /// Redis cannot be asked and the policy is `fail_closed`: HTTP 503 with `Retry-After`.
    #[error("rate limiting unavailable for policy {policy:?}")]
    Unavailable {
        /// The policy's name.
        policy: String,
    },
}

impl ResponseError for RateLimitError {
    fn status_code(&self) -> StatusCode {
        StatusCode::SERVICE_UNAVAILABLE
    }

    fn error_response(&self) -> HttpResponse {
        Problem::unavailable("Rate limiting is temporarily unavailable; retry shortly.")
            .into_response()
    }
}
