//! Extractor error handlers and the catch-all that gives every error response a problem body.

use std::panic::AssertUnwindSafe;

use actix_web::{
    Error, HttpResponse,
    body::{EitherBody, MessageBody},
    dev::{ServiceRequest, ServiceResponse},
    error::{InternalError, JsonPayloadError},
    http::header,
    middleware::Next,
    web,
};
use futures_util::FutureExt;

use super::{PROBLEM_JSON, Problem};

/// The 403 `cross-origin` problem for a cookie-authenticated state-changing request that does
/// not come from this site's own pages, or `None` when the request may go on.
///
/// A body-less `POST` needs no CORS preflight, so another site (a sibling subdomain included:
/// `SameSite` does not tell them apart) can make a browser send it with the cookie attached.
/// Such a request is let through only when its `Origin` is this server's own
/// (`scheme://host`). Requests with `Authorization` are not affected: browsers never add that
/// header on their own.
pub fn cross_origin_cookie(
    req: &actix_web::HttpRequest,
    cookie_name: &str,
) -> Option<super::Problem> {
    let headers = req.headers();
    if headers.contains_key(actix_web::http::header::AUTHORIZATION)
        || req.cookie(cookie_name).is_none()
    {
        return None;
    }
    let info = req.connection_info();
    let own = format!("{}://{}", info.scheme(), info.host());
    let origin = headers
        .get(actix_web::http::header::ORIGIN)
        .and_then(|v| v.to_str().ok());
    if origin == Some(own.as_str()) {
        return None;
    }
    Some(
        super::Problem::new(
            actix_web::http::StatusCode::FORBIDDEN,
            "cross-origin",
            "Cross-origin request",
        )
        .with_detail(
            "A request authenticated by cookie must come from this site's own pages (Origin).",
        ),
    )
}

/// JSON extractor settings: size limit, `application/json` (or `+json`) required, and problem
/// bodies for every failure (400 malformed, 413 too large, 415 wrong type, 422 wrong shape).
pub fn json_config(limit: usize) -> web::JsonConfig {
    web::JsonConfig::default()
        .limit(limit)
        .content_type_required(true)
        .error_handler(|err, _req| {
            let problem = match &err {
                JsonPayloadError::ContentType => {
                    Problem::for_status(actix_web::http::StatusCode::UNSUPPORTED_MEDIA_TYPE)
                }
                JsonPayloadError::Overflow { .. }
                | JsonPayloadError::OverflowKnownLength { .. } => {
                    Problem::for_status(actix_web::http::StatusCode::PAYLOAD_TOO_LARGE)
                }
                JsonPayloadError::Deserialize(e) if e.is_data() => {
                    // A 400, not a 422: serde reads left to right, so a body that is also
                    // malformed further on can fail here first. 422 is kept for values that
                    // parse but break a rule. serde's text names a field of the client's input.
                    Problem::new(
                        actix_web::http::StatusCode::BAD_REQUEST,
                        "invalid-body",
                        "Invalid request body",
                    )
                    .with_detail(format!(
                        "The JSON body does not have the expected shape: {e}."
                    ))
                }

                JsonPayloadError::Deserialize(_) => Problem::new(
                    actix_web::http::StatusCode::BAD_REQUEST,
                    "malformed-json",
                    "Malformed JSON",
                )
                .with_detail("The request body is not valid JSON."),
                _ => Problem::bad_request("The request body could not be read."),
            };
            InternalError::from_response(err, problem.into_response()).into()
        })
}

/// Path extractor settings: a path segment of the wrong type is a 400 problem.
pub fn path_config() -> web::PathConfig {
    web::PathConfig::default().error_handler(|err, _req| {
        InternalError::from_response(err, invalid_path_parameter().into_response()).into()
    })
}

/// The 400 `invalid-parameter` problem of a path parameter of the wrong type or range.
pub(crate) fn invalid_path_parameter() -> Problem {
    Problem::new(
        actix_web::http::StatusCode::BAD_REQUEST,
        "invalid-parameter",
        "Invalid path parameter",
    )
    .with_detail("A path parameter has the wrong type or range.")
}

/// Query extractor settings: a query parameter of the wrong type is a 400 problem.
pub fn query_config() -> web::QueryConfig {
    web::QueryConfig::default().error_handler(|err, _req| {
        let problem = invalid_query(&query_reason(&err));
        InternalError::from_response(err, problem.into_response()).into()
    })
}

/// The 400 `invalid-parameter` problem of a query parameter that is missing or of the wrong
/// type or range; `reason` is serde's text about the client's own input.
pub(crate) fn invalid_query(reason: &str) -> Problem {
    Problem::new(
        actix_web::http::StatusCode::BAD_REQUEST,
        "invalid-parameter",
        "Invalid query parameter",
    )
    .with_detail(format!(
        "A query parameter is missing or has the wrong type or range: {reason}."
    ))
}

/// Middleware that gives every 4xx/5xx response without a deliberate body (actix's own
/// 404/405/413, an error from another crate, an error an inner middleware returns) a problem
/// body for its status, and answers a handler that panics with a logged 500 problem (the worker
/// and its other connections carry on). Mount it with actix's `from_fn`:
/// `App::wrap(from_fn(problem_errors))`. Internal error text is logged, never sent. Wrap [`observe`](crate::metrics::observe)
/// outside it to count the final status and log with the request id.
pub async fn problem_errors<B: MessageBody>(
    req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<EitherBody<B>>, Error> {
    match AssertUnwindSafe(next.call(req)).catch_unwind().await {
        Ok(Ok(res)) => Ok(with_problem_body(res)),
        Ok(Err(err)) => {
            let mut response = err.error_response();
            if let Some(problem) = problem_replacing(response.head(), Some(&err), None) {
                response = problem;
            }
            Err(InternalError::from_response(err, response).into())
        }
        Err(panic) => {
            let message = panic
                .downcast_ref::<&str>()
                .copied()
                .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
                .unwrap_or("(not a string)");
            tracing::error!(panic = message, "a handler panicked: answered 500");
            let problem = Problem::internal();
            let response = problem.clone().into_response();
            Err(InternalError::from_response(problem, response).into())
        }
    }
}

/// Whether a response's body was chosen on purpose: problem+json, or JSON such as a degraded
/// `/health`. actix's plain-text and empty error bodies are not.
pub(crate) fn is_deliberate(headers: &actix_web::http::header::HeaderMap) -> bool {
    headers.get(header::CONTENT_TYPE).is_some_and(|v| {
        let v = v.as_bytes();
        v.starts_with(PROBLEM_JSON.as_bytes()) || v.starts_with(b"application/json")
    })
}

/// `res` as it is, unless it is an error response without a deliberate body: then the problem
/// for its status (keeping `Retry-After` and `Allow`), and a 5xx is logged with its cause.
pub(crate) fn with_problem_body<B: MessageBody>(
    res: ServiceResponse<B>,
) -> ServiceResponse<EitherBody<B>> {
    let cause = res.response().error().map(|e| e as &dyn std::fmt::Display);
    match problem_replacing(res.response().head(), cause, Some(res.request().path())) {
        Some(response) => {
            let (req, _) = res.into_parts();
            ServiceResponse::new(req, response).map_into_right_body()
        }
        None => res.map_into_left_body(),
    }
}

/// The problem response that replaces an error response's body, or `None` when it keeps its
/// own (not an error, or a body chosen on purpose). A replaced 5xx is logged with its cause.
pub(crate) fn problem_replacing(
    head: &actix_web::dev::ResponseHead,
    cause: Option<&dyn std::fmt::Display>,
    path: Option<&str>,
) -> Option<HttpResponse> {
    let status = head.status;
    if !(status.is_client_error() || status.is_server_error()) || is_deliberate(&head.headers) {
        return None;
    }
    if status.is_server_error() {
        match cause {
            Some(cause) => tracing::error!(%status, error = %cause, path, "request failed"),
            None => tracing::error!(%status, path, "request failed"),
        }
    }
    Some(problem_for(status, &head.headers))
}

/// The problem response for an error `status` whose own body is replaced, keeping every header
/// of the original but those describing its body (`Content-*`, `ETag`, `Last-Modified`):
/// `Allow`, `Retry-After`, `WWW-Authenticate`, rate-limit and CORS headers stay.
pub(crate) fn problem_for(
    status: actix_web::http::StatusCode,
    original: &actix_web::http::header::HeaderMap,
) -> HttpResponse {
    let mut problem = Problem::for_status(status);
    if let Some(retry) = original
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
    {
        problem.retry_after = retry.parse().ok();
    }
    let mut response: HttpResponse = problem.into_response();
    let describes_body = |name: &header::HeaderName| {
        name.as_str().starts_with("content-")
            || *name == header::ETAG
            || *name == header::LAST_MODIFIED
    };
    let headers = response.headers_mut();
    for name in original.keys().filter(|name| !describes_body(name)) {
        headers.remove(name);
    }
    for (name, value) in original.iter().filter(|(name, _)| !describes_body(name)) {
        headers.append(name.clone(), value.clone());
    }
    response
}

/// The client-facing part of a query error: serde's text about the client's own input.
fn query_reason(err: &actix_web::error::QueryPayloadError) -> String {
    match err {
        actix_web::error::QueryPayloadError::Deserialize(e) => e.to_string(),
        _ => "unreadable query string".to_owned(),
    }
}
