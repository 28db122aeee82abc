//! `POST /expensive-operation` (guarded by its route policy) and `GET /ratelimit/status`.

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Serialize;
use utoipa::ToSchema;

use crate::problem::Problem;
use crate::ratelimit::{RateLimitError, RateLimitHandle};

pub(crate) fn configure(cfg: &mut web::ServiceConfig) {
    // Resources, not bare routes: a wrong method is then a 405 (with `Allow`), not a 404.
    cfg.service(web::resource("/expensive-operation").route(web::post().to(expensive_operation)))
        .service(web::resource("/ratelimit/status").route(web::get().to(status)));
}

/// The body of `POST /expensive-operation`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Done {
    /// Always true.
    ok: bool,
}

/// The demo of a costly route: the middleware applies its policy (10 per 60 s by default).
#[utoipa::path(
    post,
    path = "/expensive-operation",
    operation_id = "expensive_operation",
    tag = "ratelimit",
    responses((status = 200, description = "Done (the route policy admitted it).", body = Done))
)]
async fn expensive_operation() -> HttpResponse {
    HttpResponse::Ok().json(Done { ok: true })
}

/// The body of `GET /ratelimit/status`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Status {
    /// What the caller is limited as: `user:<id>` (verified token) or `ip:<address>`.
    #[schema(example = "ip:127.0.0.1")]
    identity: String,
    /// One entry per configured policy.
    policies: Vec<PolicyStatus>,
}

/// One policy's state for the caller, in `GET /ratelimit/status`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct PolicyStatus {
    /// The policy's name.
    name: String,
    /// Requests allowed per window.
    limit: u64,
    /// The window, in seconds.
    window_secs: u64,
    /// `log`, `counter` or `gcra`.
    algorithm: &'static str,
    /// Whether the policy only reports (never denies).
    shadow: bool,
    /// Requests left in the window.
    remaining: u64,
    /// Seconds until the window has room again.
    reset_secs: u64,
    /// Whether the next request would be admitted.
    allowed: bool,
}

/// The caller's state for every configured policy. The request itself is counted by the global
/// policy (as any route is), so reading it is bounded like everything else.
#[utoipa::path(
    get,
    path = "/ratelimit/status",
    operation_id = "ratelimit_status",
    tag = "ratelimit",
    responses(
        (status = 200, description = "The caller's state, after this request was counted by the global policy (it spends nothing of the others).", body = Status),
        (status = 503, description = "Redis cannot be asked and a policy is fail-closed.",
            body = Problem, content_type = "application/problem+json"),
    )
)]
async fn status(
    req: HttpRequest,
    limiter: web::Data<RateLimitHandle>,
) -> Result<HttpResponse, RateLimitError> {
    let identity = limiter.identity(&req);
    let report = limiter.status(&identity).await?;
    let policies = report
        .iter()
        .map(|(policy, d)| PolicyStatus {
            name: policy.name.clone(),
            limit: policy.limit,
            window_secs: policy.window.as_secs(),
            algorithm: policy.algorithm.name(),
            shadow: policy.shadow,
            remaining: d.remaining,
            reset_secs: d.reset_secs(),
            allowed: d.allowed,
        })
        .collect();
    Ok(HttpResponse::Ok()
        .insert_header(("Cache-Control", "no-store"))
        .json(Status { identity, policies }))
}
