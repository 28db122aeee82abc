//! `GET /` (the demo page, embedded in the binary: no external assets, no build step) and the
//! stats it shows: `GET /stats` (a JSON snapshot) and `GET /stats/stream` (the same, as SSE, each
//! second).
//!
//! The page draws the stream as live charts with uPlot (1.6.32, MIT, from the npm registry:
//! `npm pack uplot@1.6.32`), compiled in from `assets/uplot/` and served at
//! `/demo/uplot.iife.min.js` and `/demo/uplot.min.css`: nothing is fetched from a CDN. The
//! snapshot holds cumulative counters; the page turns them into rates.
//!
//! `/stats/stream` costs one snapshot per second per instance however many pages watch: a ticker
//! reads and encodes it once and every stream sends that text ([`StatsFeed`]). The ticker runs
//! only while someone watches.

use std::{
    sync::{Arc, LazyLock, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use actix_web::{HttpResponse, Responder, web};
use actix_web_lab::sse;
use serde::Serialize;
use tokio::sync::watch;

use super::Services;
use crate::{cache::CacheStats, metrics::HttpOutcomes};

/// The page, with the asset URLs' version filled in once.
static PAGE: LazyLock<String> =
    LazyLock::new(|| include_str!("demo.html").replace("{UPLOT_VERSION}", UPLOT_VERSION));

/// uPlot's version, part of the asset URLs so that an upgrade busts caches.
const UPLOT_VERSION: &str = "1.6.32";
const UPLOT_JS: &[u8] = include_bytes!("../../../assets/uplot/uPlot.iife.min.js");
const UPLOT_CSS: &[u8] = include_bytes!("../../../assets/uplot/uPlot.min.css");

/// How often `/stats/stream` sends a snapshot.
const STATS_PERIOD: Duration = Duration::from_secs(1);

pub(super) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/")
            .route(web::get().to(page))
            .route(web::head().to(page)),
    )
    .service(web::resource("/stats").route(web::get().to(stats)))
    .service(web::resource("/stats/stream").route(web::get().to(stats_stream)))
    .service(web::resource("/demo/uplot.iife.min.js").route(web::get().to(uplot_js)))
    .service(web::resource("/demo/uplot.min.css").route(web::get().to(uplot_css)));
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
            "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; connect-src 'self'",
        ))
        .body(PAGE.as_str())
}

/// The chart library the demo page draws with (uPlot 1.6.32, MIT).
#[utoipa::path(
    get,
    path = "/demo/uplot.iife.min.js",
    operation_id = "demo_uplot_js",
    tag = "demo",
    responses((status = 200, description = "The script (cacheable for a year).",
        content_type = "text/javascript; charset=utf-8", body = String))
)]
async fn uplot_js() -> HttpResponse {
    super::docs::asset("text/javascript; charset=utf-8", UPLOT_JS)
}

/// uPlot's stylesheet.
#[utoipa::path(
    get,
    path = "/demo/uplot.min.css",
    operation_id = "demo_uplot_css",
    tag = "demo",
    responses((status = 200, description = "The stylesheet (cacheable for a year).",
        content_type = "text/css; charset=utf-8", body = String))
)]
async fn uplot_css() -> HttpResponse {
    super::docs::asset("text/css; charset=utf-8", UPLOT_CSS)
}

/// A point-in-time view of what redkit is doing.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[non_exhaustive]
pub struct StatsSnapshot {
    /// When the snapshot was taken, in milliseconds since the Unix epoch (rates are counter
    /// differences over differences of this).
    pub time_ms: u64,
    /// `"redis"` or `"memory"`.
    pub backend: &'static str,
    /// Whether Redis answered last (always false on the memory backend).
    pub redis_up: bool,
    /// Round trip of the last successful watchdog `PING`, in microseconds (null on the memory
    /// backend).
    pub redis_latency_us: Option<u64>,
    /// HTTP requests answered since start, by status class.
    pub http: HttpOutcomes,
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
        let redis = services.redis.as_ref().map(|r| r.status());
        Self {
            time_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            backend: services.settings.backend,
            redis_up: redis.is_some_and(|r| r.up),
            redis_latency_us: redis.map(|r| r.latency_us),
            http: services.metrics.http_outcomes(),
            cache: services.cache.stats(),
            ratelimit: services.ratelimit.stats(),
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
    responses(
        (status = 200, description = "An endless stream of `stats` events whose `data` is a \
        `StatsSnapshot` JSON object: one at once, then one per second (the same one for every \
        client of the instance).", content_type = "text/event-stream", body = String),
        (status = 429, description = "This address holds as many streams (events and stats) as \
            it may (`too-many-streams`).", body = crate::http::Problem, content_type = "application/problem+json"),
        (status = 503, description = "The instance serves as many streams as it may \
            (`Retry-After`).", body = crate::http::Problem, content_type = "application/problem+json"),
    )
)]
async fn stats_stream(
    req: actix_web::HttpRequest,
    services: web::Data<Services>,
) -> Result<impl Responder, crate::events::EventsError> {
    // An endless stream like the event streams: it takes one of their connection slots (global
    // and per address), held by the stream until it ends.
    let slot = services
        .events
        .take_slot(crate::server::routes::events::stream_client(
            &req,
            Some(&services.ratelimit),
        ))?;
    let services = services.into_inner();
    let ticks = services.stats_feed.subscribe(&services);
    // The first snapshot is read for this client: the feed's last one may be old (no watcher).
    let first = serde_json::to_string(&StatsSnapshot::read(&services)).ok();
    let events = futures_util::stream::unfold(
        (first, ticks, services, slot),
        |(first, mut ticks, services, slot)| async move {
            let json = match first {
                Some(json) => json,
                None => loop {
                    // Shutdown ends this stream like the event streams, so it cannot hold the
                    // server up; the timeout notices it (and restarts a ticker that died with
                    // its worker) even when no tick comes.
                    let ticked = tokio::time::timeout(2 * STATS_PERIOD, ticks.changed()).await;
                    if services.events.is_shut_down() {
                        return None;
                    }
                    match ticked {
                        Ok(Ok(())) => break ticks.borrow_and_update().clone(),
                        Ok(Err(_)) => return None,
                        Err(_) => services.stats_feed.ensure_ticker(&services),
                    }
                },
            };
            let event = sse::Event::Data(sse::Data::new(json).event("stats"));
            Some((event, (None, ticks, services, slot)))
        },
    );
    Ok(sse::Sse::from_infallible_stream(events)
        .with_retry_duration(Duration::from_secs(2))
        .customize()
        .insert_header(("X-Accel-Buffering", "no")))
}

/// The snapshot `/stats/stream` sends, read and encoded once per second for all its clients.
///
/// A ticker task, started by the first client and stopped after a tick finds none left, publishes
/// the JSON text in a `watch` channel; each stream sends the latest text. Idle, it costs nothing.
#[derive(Clone, Debug)]
pub(crate) struct StatsFeed(Arc<FeedInner>);

#[derive(Debug)]
struct FeedInner {
    latest: watch::Sender<String>,
    /// Whether a ticker runs; read and written under this lock only, with the receiver count,
    /// so a client that arrives as the ticker stops starts the next one.
    ticking: Mutex<bool>,
}

impl Default for StatsFeed {
    fn default() -> Self {
        Self(Arc::new(FeedInner {
            latest: watch::Sender::new(String::new()),
            ticking: Mutex::new(false),
        }))
    }
}

impl StatsFeed {
    /// A receiver of the next snapshots; starts the ticker if none runs.
    fn subscribe(&self, services: &Arc<Services>) -> watch::Receiver<String> {
        let receiver = self.0.latest.subscribe();
        self.ensure_ticker(services);
        receiver
    }

    /// Starts the ticker on this thread's runtime unless one runs.
    fn ensure_ticker(&self, services: &Arc<Services>) {
        let Ok(mut ticking) = self.0.ticking.lock() else {
            return;
        };
        if *ticking {
            return;
        }
        *ticking = true;
        let feed = self.clone();
        let services = Arc::clone(services);
        actix_web::rt::spawn(async move {
            // Clears the flag however the task ends, its runtime's shutdown included.
            let mut guard = TickerGuard {
                feed: feed.clone(),
                cleared: false,
            };
            let mut interval = tokio::time::interval(STATS_PERIOD);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            interval.tick().await;
            loop {
                interval.tick().await;
                if let Ok(json) = serde_json::to_string(&StatsSnapshot::read(&services)) {
                    feed.0.latest.send_replace(json);
                }
                let Ok(mut ticking) = feed.0.ticking.lock() else {
                    return;
                };
                if feed.0.latest.receiver_count() == 0 || services.events.is_shut_down() {
                    *ticking = false;
                    // Under the lock: a ticker started from now on is not this one's to clear.
                    guard.cleared = true;
                    return;
                }
            }
        });
    }
}

/// Clears [`FeedInner::ticking`] when a ticker task is dropped without having cleared it.
struct TickerGuard {
    feed: StatsFeed,
    cleared: bool,
}

impl Drop for TickerGuard {
    fn drop(&mut self) {
        if !self.cleared
            && let Ok(mut ticking) = self.feed.0.ticking.lock()
        {
            *ticking = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl StatsFeed {
        fn ticking(&self) -> bool {
            *self.0.ticking.lock().unwrap()
        }
    }

    /// The ticker runs while a client listens, stops at its first tick after the last client
    /// left, and starts again with the next client.
    #[actix_web::test]
    async fn ticker_stops_with_the_last_client() {
        let services = Arc::new(Services::start(&crate::Config::for_tests()).unwrap());
        let feed = StatsFeed::default();
        assert!(!feed.ticking());
        let (first, second) = (feed.subscribe(&services), feed.subscribe(&services));
        assert!(feed.ticking());
        drop(first);
        // One client left: the ticker goes on past its ticks.
        tokio::time::sleep(STATS_PERIOD * 2 + STATS_PERIOD / 2).await;
        assert!(feed.ticking());
        drop(second);
        tokio::time::sleep(STATS_PERIOD * 2 + STATS_PERIOD / 2).await;
        assert!(!feed.ticking(), "the ticker outlived its last client");
        let _third = feed.subscribe(&services);
        assert!(feed.ticking());
    }
}
