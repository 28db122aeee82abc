//! RFC 9457 problem details: the one shape of every error body redkit sends, and the helpers
//! that give every error response that shape.
//!
//! Bottom layer: every feature's error type maps itself to a [`Problem`]; the HTTP assembly
//! (`redkit::http`) re-exports all of this and adds nothing to it.

mod responses;

use actix_web::{
    HttpResponse, HttpResponseBuilder,
    http::{StatusCode, header},
};
use serde::Serialize;

pub use responses::{cross_origin_cookie, json_config, path_config, problem_errors, query_config};
#[cfg(feature = "server")]
pub(crate) use responses::{invalid_path_parameter, invalid_query};

/// Base of every problem `type` URI; the slug after it is stable and documented in the README.
pub const PROBLEM_BASE: &str = "https://redkit.dev/problems/";

/// The media type of problem bodies.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// An `application/problem+json` body (RFC 9457) with its status and optional headers.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[non_exhaustive]
pub struct Problem {
    /// A URI naming the kind of problem: [`PROBLEM_BASE`] + a stable slug.
    #[serde(rename = "type")]
    pub kind: String,
    /// Short, human-readable summary of the kind; the same for every occurrence.
    pub title: &'static str,
    /// The HTTP status code.
    pub status: u16,
    /// Human-readable explanation of this occurrence. Never holds internal error text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// `Retry-After` seconds, sent as a header (and echoed in the body).
    #[serde(rename = "retry_after", skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
}

impl Problem {
    /// A problem of kind `slug` with `status` and `title`.
    pub fn new(status: StatusCode, slug: &str, title: &'static str) -> Self {
        Self {
            kind: format!("{PROBLEM_BASE}{slug}"),
            title,
            status: status.as_u16(),
            detail: None,
            retry_after: None,
        }
    }

    /// Adds a human-readable explanation.
    #[must_use]
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// Adds a `Retry-After` header.
    #[must_use]
    pub fn with_retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds.max(1));
        self
    }

    /// 400 `bad-request`.
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad-request", "Bad request").with_detail(detail)
    }

    /// 404 `not-found`.
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not-found", "Not found").with_detail(detail)
    }

    /// 422 `validation-failed`.
    pub fn validation(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation-failed",
            "Validation failed",
        )
        .with_detail(detail)
    }

    /// 503 `unavailable` with `Retry-After: 1`.
    pub fn unavailable(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "Service unavailable",
        )
        .with_detail(detail)
        .with_retry_after(1)
    }

    /// 500 `internal`: the details are in the log, never in the body.
    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal server error",
        )
        .with_detail("The server failed to handle this request; it has been logged.")
    }

    /// The generic problem for a bare status (used for errors raised outside redkit's handlers).
    pub fn for_status(status: StatusCode) -> Self {
        match status.as_u16() {
            400 => Self::bad_request("The request could not be understood."),
            401 => Self::new(status, "unauthorized", "Unauthorized"),
            403 => Self::new(status, "forbidden", "Forbidden"),
            404 => Self::not_found("No resource at this path."),
            405 => Self::new(status, "method-not-allowed", "Method not allowed")
                .with_detail("This resource does not support this method."),
            406 => Self::new(status, "not-acceptable", "Not acceptable"),
            408 => Self::new(status, "request-timeout", "Request timeout"),
            413 => Self::new(status, "payload-too-large", "Payload too large")
                .with_detail("The request body is larger than the configured limit."),
            414 => Self::new(status, "uri-too-long", "URI too long"),
            415 => Self::new(status, "unsupported-media-type", "Unsupported media type")
                .with_detail("Send the body as application/json."),
            422 => Self::validation("The request body is not valid."),
            429 => Self::new(status, "quota-exceeded", "Too many requests"),
            431 => Self::new(
                status,
                "header-too-large",
                "Request header fields too large",
            ),
            503 => Self::unavailable("The service is temporarily unavailable."),
            _ if status.is_client_error() => Self::new(status, "client-error", "Client error"),
            _ => {
                let mut problem = Self::internal();
                problem.status = status.as_u16();
                problem
            }
        }
    }

    /// The status as a [`StatusCode`].
    pub fn status_code(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// Starts a response with this problem's status and headers; the caller adds the body.
    pub fn response_builder(&self) -> HttpResponseBuilder {
        let mut builder = HttpResponse::build(self.status_code());
        builder.insert_header((header::CONTENT_TYPE, PROBLEM_JSON));
        builder.insert_header((header::CACHE_CONTROL, "no-store"));
        if let Some(seconds) = self.retry_after {
            builder.insert_header((header::RETRY_AFTER, seconds.to_string()));
        }
        builder
    }

    /// The complete response.
    pub fn into_response(self) -> HttpResponse {
        // unwrap: a struct of strings and integers always serializes.
        let body = serde_json::to_vec(&self).unwrap();
        self.response_builder().body(body)
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status, self.title)?;
        if let Some(detail) = &self.detail {
            write!(f, ": {detail}")?;
        }
        Ok(())
    }
}

impl actix_web::ResponseError for Problem {
    fn status_code(&self) -> StatusCode {
        Problem::status_code(self)
    }

    fn error_response(&self) -> HttpResponse {
        self.clone().into_response()
    }
}
