use actix_web::{HttpResponse, ResponseError, http::StatusCode};

use crate::problem::Problem;

/// A failed catalog operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CatalogError {
    /// A field of the request is invalid (the text is safe to show).
    #[error("{0}")]
    Invalid(&'static str),
    /// No product with this id.
    #[error("no such product")]
    NotFound,
    /// The database failed.
    #[error("database error: {0}")]
    Database(#[from] rusqlite::Error),
    /// The database could not be opened at start-up.
    #[error("cannot open database {path}: {source}")]
    Open {
        /// Where.
        path: String,
        /// Why.
        source: rusqlite::Error,
    },
    /// The catalog actor is gone (shutting down).
    #[error("catalog unavailable")]
    ActorGone,
    /// The cache failed (a write's invalidation needs Redis).
    #[error(transparent)]
    Cache(#[from] crate::cache::CacheError),
}

impl ResponseError for CatalogError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::ActorGone => StatusCode::SERVICE_UNAVAILABLE,
            Self::Cache(err) => err.status_code(),
            Self::Database(_) | Self::Open { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            Self::Invalid(why) => Problem::validation(format!("{why}.")).into_response(),
            Self::NotFound => Problem::not_found("No product with this id.").into_response(),
            Self::ActorGone => Problem::unavailable("The server is shutting down.").into_response(),
            Self::Cache(err) => err.error_response(),
            Self::Database(_) | Self::Open { .. } => {
                tracing::error!(error = %self, "catalog database failure");
                Problem::internal().into_response()
            }
        }
    }
}
