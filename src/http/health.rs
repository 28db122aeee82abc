//! `GET /health` (readiness, with Redis' state) and `GET /health/live` (liveness).

use actix_web::{HttpResponse, http::StatusCode, web};
use serde_json::json;

use super::Services;

pub(super) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/health").route(web::get().to(health)))
        .service(web::resource("/health/live").route(web::get().to(live)));
}

/// 200 `healthy` when every configured backend answers; 503 `degraded` when Redis is configured
/// and does not answer a `PING` within the response timeout.
async fn health(services: web::Data<Services>) -> HttpResponse {
    let Some(redis) = &services.redis else {
        return HttpResponse::Ok()
            .insert_header(("Cache-Control", "no-store"))
            .json(json!({"status": "healthy", "backend": "memory"}));
    };
    let (status, body) = match redis.ping().await {
        Ok(rtt) => (
            StatusCode::OK,
            json!({
                "status": "healthy",
                "backend": "redis",
                "redis": {"status": "up", "latency_ms": rtt.as_secs_f64() * 1000.0},
            }),
        ),
        Err(err) => {
            tracing::debug!(error = %err, "health check: redis ping failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                json!({
                    "status": "degraded",
                    "backend": "redis",
                    "redis": {"status": "down", "errors": redis.status().errors},
                }),
            )
        }
    };
    HttpResponse::build(status)
        .insert_header(("Cache-Control", "no-store"))
        .json(body)
}

/// 200 whenever the process serves requests.
async fn live() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header(("Cache-Control", "no-store"))
        .json(json!({"status": "alive"}))
}
