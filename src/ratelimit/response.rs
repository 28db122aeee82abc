//! What a decision looks like on the wire: the `X-RateLimit-*` and draft `RateLimit-Policy` /
//! `RateLimit` headers, and the 429 `quota-exceeded` problem.
//!
//! Rendered per response, plainly, not cached per (policy, thread): the headers are written
//! only on limited routes, whose decision (a shared script call on Redis) costs far more than
//! formatting a few short strings, and the `ratelimit` bench's rounds spread by tens of percent,
//! far more than that formatting could move.

use actix_web::{
    HttpResponse,
    http::{
        StatusCode,
        header::{self, HeaderMap, HeaderName, HeaderValue},
    },
};

use super::{Decision, Policy, algo::ceil_secs};
use crate::problem::Problem;

/// The 429 `quota-exceeded` problem naming the violated policy.
pub(crate) fn too_many_requests(policy: &Policy, decision: &Decision) -> HttpResponse {
    let retry = decision.retry_after_secs();
    let problem = Problem::new(
        StatusCode::TOO_MANY_REQUESTS,
        "quota-exceeded",
        "Too many requests",
    )
    .with_detail(format!(
        "Rate limit policy \"{}\" allows {} requests per {} seconds; retry after {retry} seconds.",
        policy.name,
        policy.limit,
        policy.window.as_secs()
    ))
    .with_retry_after(retry);
    // unwrap: a struct of strings and integers always serializes.
    let body = serde_json::to_vec(&problem).unwrap();
    HttpResponse::build(StatusCode::TOO_MANY_REQUESTS)
        .insert_header((
            header::CONTENT_TYPE,
            HeaderValue::from_static(crate::problem::PROBLEM_JSON),
        ))
        .insert_header((header::CACHE_CONTROL, HeaderValue::from_static("no-store")))
        .insert_header((header::RETRY_AFTER, HeaderValue::from(retry)))
        .body(body)
}

const X_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
const X_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
const X_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");
const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// `X-RateLimit-*` and the draft-ietf-httpapi-ratelimit-headers-11 `RateLimit-Policy` and
/// `RateLimit` fields for one policy's decision.
pub(crate) fn write_headers(headers: &mut HeaderMap, policy: &Policy, d: &Decision, now_us: u64) {
    let reset_at = ceil_secs(std::time::Duration::from_micros(now_us) + d.reset);
    let name = sf_string(&policy.name);
    let (limit, window) = (policy.limit, policy.window.as_secs());
    let policy_header = HeaderValue::try_from(format!("{name};q={limit};w={window}"))
        // sf_string keeps printable ASCII only, which is always a valid header value.
        .unwrap_or_else(|_| HeaderValue::from_static(""));
    headers.insert(X_LIMIT, HeaderValue::from(d.limit));
    headers.insert(X_REMAINING, HeaderValue::from(d.remaining));
    headers.insert(X_RESET, HeaderValue::from(reset_at));
    headers.insert(RATELIMIT_POLICY, policy_header);
    let ratelimit = format!("{name};r={};t={}", d.remaining, d.reset_secs());
    if let Ok(value) = HeaderValue::try_from(ratelimit) {
        headers.insert(RATELIMIT, value);
    }
}

/// A structured-field String (RFC 8941): quoted, `"` and `\` escaped, printable ASCII only.
fn sf_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars().filter(|c| (' '..='~').contains(c)) {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}
