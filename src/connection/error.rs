use actix_web::{HttpResponse, ResponseError, http::StatusCode};

use crate::problem::Problem;

/// A failed Redis operation, classified by what the caller can do about it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RedisError {
    /// Redis cannot be reached right now (refused, dropped, reconnecting, loading). Retry later.
    #[error("redis unavailable: {0}")]
    Unavailable(#[source] redis::RedisError),
    /// Redis did not answer within the response timeout.
    #[error("redis did not answer within {0:?}")]
    Timeout(std::time::Duration),
    /// Redis answered with an error or an unexpected reply: a bug or a misconfigured server.
    #[error("redis command failed: {0}")]
    Command(#[source] redis::RedisError),
}

impl RedisError {
    /// Classifies a redis-rs error.
    pub fn classify(err: redis::RedisError) -> Self {
        const TRANSIENT: [&str; 5] = ["LOADING", "BUSY", "MASTERDOWN", "TRYAGAIN", "READONLY"];
        if err.is_timeout() {
            // The manager's own response timeout fired.
            return Self::Unavailable(err);
        }
        if err.is_io_error()
            || err.is_connection_dropped()
            || err.is_connection_refusal()
            || err.is_unrecoverable_error()
            || err.code().is_some_and(|code| TRANSIENT.contains(&code))
            // A cluster in flux: MOVED/ASK left after the client's redirects (the slot's owner
            // died and no replica took over yet), CLUSTERDOWN, or no connection to the node
            // serving the slot.
            || err.is_cluster_error()
            || err.kind() == redis::ErrorKind::ClusterConnectionNotFound
        {
            return Self::Unavailable(err);
        }
        Self::Command(err)
    }

    /// Whether this error says Redis is unreachable (as opposed to a bad command).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable(_) | Self::Timeout(_))
    }
}

impl ResponseError for RedisError {
    fn status_code(&self) -> StatusCode {
        if self.is_unavailable() {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::INTERNAL_SERVER_ERROR
        }
    }

    fn error_response(&self) -> HttpResponse {
        if self.is_unavailable() {
            Problem::unavailable("The data store is unavailable; retry shortly.").into_response()
        } else {
            Problem::internal().into_response()
        }
    }
}
