//! `POST /expensive-operation` (guarded by its route policy) and `GET /ratelimit/status`.

use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::json;

use super::{RateLimitError, RateLimitHandle};

pub(crate) fn configure(cfg: &mut web::ServiceConfig) {
    // Resources, not bare routes: a wrong method is then a 405 (with `Allow`), not a 404.
    cfg.service(web::resource("/expensive-operation").route(web::post().to(expensive_operation)))
        .service(web::resource("/ratelimit/status").route(web::get().to(status)));
}

/// The demo of a costly route: the middleware applies its policy (10 per 60 s by default).
async fn expensive_operation() -> HttpResponse {
    HttpResponse::Ok().json(json!({"ok": true}))
}

/// The caller's state for every configured policy, spending nothing.
async fn status(
    req: HttpRequest,
    limiter: web::Data<RateLimitHandle>,
) -> Result<HttpResponse, RateLimitError> {
    let identity = limiter.identity(&req);
    let report = limiter.status(&identity).await?;
    let policies: Vec<_> = report
        .iter()
        .map(|(policy, d)| {
            json!({
                "name": policy.name,
                "limit": policy.limit,
                "window_secs": policy.window.as_secs(),
                "algorithm": policy.algorithm.name(),
                "shadow": policy.shadow,
                "remaining": d.remaining,
                "reset_secs": d.reset_secs(),
                "allowed": d.allowed,
            })
        })
        .collect();
    Ok(HttpResponse::Ok()
        .insert_header(("Cache-Control", "no-store"))
        .json(json!({"identity": identity, "policies": policies})))
}
