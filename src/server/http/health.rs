//! `GET /health` (readiness, with Redis' state) and `GET /health/live` (liveness).

use actix_web::{HttpResponse, http::StatusCode, web};
use serde::Serialize;
use utoipa::ToSchema;

use super::Services;

/// A Redis probe of `GET /health`: when, the round trip (`None`: Redis is down) and, on a
/// cluster, each node's state. Shared by every request for [`HEALTH_PROBE_EVERY`].
#[derive(Debug, Clone)]
pub(crate) struct Probe {
    at: std::time::Instant,
    rtt: Option<std::time::Duration>,
    nodes: Option<Vec<crate::connection::NodeState>>,
}

/// How long `GET /health` reuses its last Redis probe.
pub(crate) const HEALTH_PROBE_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

pub(super) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/health").route(web::get().to(health)))
        .service(web::resource("/health/live").route(web::get().to(live)));
}

/// The body of `GET /health`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Health {
    /// `healthy`, or `degraded` when Redis does not answer.
    #[schema(example = "healthy")]
    status: &'static str,
    /// `redis`, `redis-cluster` or `memory`.
    #[schema(example = "redis")]
    backend: &'static str,
    /// Redis' state; absent on the memory backend.
    #[serde(skip_serializing_if = "Option::is_none")]
    redis: Option<RedisHealth>,
    /// The cache's invalidation feed: `up` (L1 serves) or `down` (L1 flushed and bypassed,
    /// reads go to Redis); absent without one (memory backend, or L1 off).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, example = "up")]
    l1_feed: Option<crate::cache::L1Feed>,
}

/// Redis' state in `GET /health`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct RedisHealth {
    /// `up` or `down`.
    status: &'static str,
    /// Round trip of the `PING`, in milliseconds (when up).
    #[serde(skip_serializing_if = "Option::is_none")]
    latency_ms: Option<f64>,
    /// Redis errors seen since start (when down).
    #[serde(skip_serializing_if = "Option::is_none")]
    errors: Option<u64>,
    /// On a cluster, each node: address, role (`primary`/`replica`) and `up`/`down`; only with
    /// `--health-nodes` (the addresses are internal).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<Object>>)]
    nodes: Option<Vec<crate::connection::NodeState>>,
}

/// The body of `GET /health/live`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Live {
    /// Always `alive`.
    #[schema(example = "alive")]
    status: &'static str,
}

/// Readiness: 200 `healthy` when every configured backend answers; 503 `degraded` when Redis is
/// configured and does not answer a `PING` within the response timeout.
#[utoipa::path(
    get,
    path = "/health",
    operation_id = "health",
    tag = "health",
    responses(
        (status = 200, description = "Every configured backend answers.", body = Health),
        (status = 503, description = "Redis is configured and does not answer (a JSON health \
            body, not a problem).", body = Health),
    )
)]
async fn health(services: web::Data<Services>) -> HttpResponse {
    let Some(redis) = &services.redis else {
        return HttpResponse::Ok()
            .insert_header(("Cache-Control", "no-store"))
            .json(Health {
                status: "healthy",
                backend: "memory",
                redis: None,
                l1_feed: None,
            });
    };
    let l1_feed = Some(services.cache.feed()).filter(|f| *f != crate::cache::L1Feed::Off);
    let probe = {
        // One probe at a time; the others wait for it and share its answer, node states
        // included: no request rate makes this route cost more than one probe a second.
        let mut last = services.health_probe.lock().await;
        match &*last {
            Some(probe) if probe.at.elapsed() < HEALTH_PROBE_EVERY => probe.clone(),
            _ => {
                let rtt = match redis.ping().await {
                    Ok(rtt) => Some(rtt),
                    Err(err) => {
                        tracing::debug!(error = %err, "health check: redis ping failed");
                        None
                    }
                };
                let nodes = if services.settings.health_nodes {
                    redis.nodes().await
                } else {
                    None
                };
                let probe = Probe {
                    at: std::time::Instant::now(),
                    rtt,
                    nodes,
                };
                *last = Some(probe.clone());
                probe
            }
        }
    };
    let backend = redis.backend_name();
    let nodes = probe.nodes;
    let (status, body) = match probe.rtt {
        Some(rtt) => (
            StatusCode::OK,
            Health {
                status: "healthy",
                backend,
                redis: Some(RedisHealth {
                    status: "up",
                    latency_ms: Some(rtt.as_secs_f64() * 1000.0),
                    errors: None,
                    nodes,
                }),
                l1_feed,
            },
        ),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            Health {
                status: "degraded",
                backend,
                redis: Some(RedisHealth {
                    status: "down",
                    latency_ms: None,
                    errors: Some(redis.status().errors),
                    nodes,
                }),
                l1_feed,
            },
        ),
    };
    HttpResponse::build(status)
        .insert_header(("Cache-Control", "no-store"))
        .json(body)
}

/// Liveness: 200 whenever the process serves requests.
#[utoipa::path(
    get,
    path = "/health/live",
    operation_id = "live",
    tag = "health",
    responses((status = 200, description = "The process serves requests.", body = Live))
)]
async fn live() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header(("Cache-Control", "no-store"))
        .json(Live { status: "alive" })
}
