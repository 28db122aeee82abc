//! `GET /` (the demo page, embedded in the binary: no external assets, no build step) and the
//! stats it shows: `GET /stats` (a JSON snapshot) and `GET /stats/stream` (the same, as SSE, each
//! second).

use std::time::Duration;

use actix_web::{HttpResponse, Responder, web};
use actix_web_lab::sse;
use serde::Serialize;

use super::Services;
use crate::cache::CacheStats;

const PAGE: &str = include_str!("demo.html");

/// How often `/stats/stream` sends a snapshot.
const STATS_PERIOD: Duration = Duration::from_secs(1);

pub(super) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/")
            .route(web::get().to(page))
            .route(web::head().to(page)),
    )
    .service(web::resource("/stats").route(web::get().to(stats)))
    .service(web::resource("/stats/stream").route(web::get().to(stats_stream)));
}

/// The demo page: log in, subscribe to a channel, publish, and watch redkit's own stats.
#[utoipa::path(
    method(get, head),
    path = "/",
    operation_id = "demo_page",
    tag = "demo",
    responses((status = 200, description = "The demo page (self-contained HTML).",
        content_type = "text/html; charset=utf-8", body = String))
)]
async fn page() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header((
            "Content-Security-Policy",
            "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'",
        ))
        .body(PAGE)
}

/// A point-in-time view of what redkit is doing.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[non_exhaustive]
pub struct StatsSnapshot {
    /// `"redis"` or `"memory"`.
    pub backend: &'static str,
    /// Whether Redis answered last (always false on the memory backend).
    pub redis_up: bool,
    /// Cache counters.
    pub cache: CacheStats,
    /// Rate-limit counters.
    pub ratelimit: crate::ratelimit::RateLimitStats,
    /// Live-events counters.
    pub events: crate::events::EventsStats,
}

impl StatsSnapshot {
    /// Reads every counter from the services' handles (no I/O).
    pub fn read(services: &Services) -> Self {
        Self {
            backend: services.settings.backend,
            redis_up: services.redis.as_ref().is_some_and(|r| r.is_up()),
            cache: services.cache.stats(),
            ratelimit: services.ratelimit.stats_now(),
            events: services.events.stats(),
        }
    }
}

/// A snapshot of redkit's counters: cache, rate limiting, live events.
#[utoipa::path(
    get,
    path = "/stats",
    operation_id = "stats",
    tag = "demo",
    responses((status = 200, description = "The counters now.", body = StatsSnapshot))
)]
async fn stats(services: web::Data<Services>) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header(("Cache-Control", "no-store"))
        .json(StatsSnapshot::read(&services))
}

/// The same snapshot as `GET /stats`, as Server-Sent Events (`event: stats`, one per second).
#[utoipa::path(
    get,
    path = "/stats/stream",
    operation_id = "stats_stream",
    tag = "demo",
    responses((status = 200, description = "An endless stream of `stats` events whose `data` is a \
        `StatsSnapshot` JSON object.", content_type = "text/event-stream", body = String))
)]
async fn stats_stream(services: web::Data<Services>) -> impl Responder {
    let services = services.into_inner();
    let ticks = futures_util::stream::unfold(true, move |first| {
        let services = services.clone();
        async move {
            if !first {
                tokio::time::sleep(STATS_PERIOD).await;
            }
            // Shutdown ends this stream like the event streams, so it cannot hold the server up.
            if services.events.is_shut_down() {
                return None;
            }
            let data = sse::Data::new_json(StatsSnapshot::read(&services))
                .ok()?
                .event("stats");
            Some((sse::Event::Data(data), false))
        }
    });
    sse::Sse::from_infallible_stream(ticks)
        .with_retry_duration(Duration::from_secs(2))
        .customize()
        .insert_header(("X-Accel-Buffering", "no"))
}
