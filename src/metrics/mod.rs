//! Prometheus metrics (`GET /metrics`), with the `prometheus-client` crate.
//!
//! HTTP requests are counted by a middleware as they happen (route pattern, method, status, and a
//! latency histogram). Everything the actors already count in atomics (cache tiers, loads,
//! evictions, Redis errors and reconnects, ...) is read at scrape time by [`Collector`]s, so the
//! hot paths pay nothing extra for being observable.

mod middleware;
mod request_id;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

#[cfg(feature = "server")]
use actix_web::{HttpResponse, web};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric},
    metrics::{
        counter::{ConstCounter, Counter},
        family::Family,
        gauge::ConstGauge,
        histogram::Histogram,
    },
    registry::Registry,
};
use serde::Serialize;

pub use middleware::{Frame, Observe, ObserveFuture, ObserveMiddleware};
pub use request_id::{REQUEST_ID_HEADER, RequestId, current_request_id};

pub use crate::latency::latency_histogram;

#[cfg(feature = "cache")]
use crate::cache::CacheHandle;
use crate::{connection::RedisHandle, latency};

/// Labels of `http_requests_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct HttpLabels {
    pub(crate) method: &'static str,
    pub(crate) route: String,
    pub(crate) status: u16,
}

/// Labels of `http_request_duration_seconds`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RouteLabels {
    pub(crate) method: &'static str,
    pub(crate) route: String,
}

/// The process's metrics registry and the HTTP metrics the middleware records.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Mutex<Registry>>,
    /// Unique per registry for the process's life (an address could be reused by a later one).
    id: usize,
    pub(crate) requests: Family<HttpLabels, Counter>,
    pub(crate) latency: Family<RouteLabels, latency::LatencyHistogram>,
    /// Every counter of `requests`, by labels, so that [`Metrics::http_outcomes`] can sum them
    /// (a prometheus-client `Family` cannot be iterated). Filled when a thread first counts a
    /// `(route, method, status)`, never on the per-request path; as bounded as the family.
    request_counters: Arc<Mutex<HashMap<HttpLabels, Counter>>>,
}

/// HTTP requests answered since start, by status class (what the demo page charts).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[non_exhaustive]
pub struct HttpOutcomes {
    /// 2xx answers.
    pub status_2xx: u64,
    /// 4xx answers other than 429.
    pub status_4xx: u64,
    /// 429 answers (rate limited).
    pub status_429: u64,
    /// 5xx answers.
    pub status_5xx: u64,
    /// 1xx and 3xx answers.
    pub other: u64,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with the HTTP metrics registered.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<HttpLabels, Counter>::default();
        let latency = Family::<RouteLabels, latency::LatencyHistogram>::default();
        registry.register(
            "http_requests",
            "HTTP requests by route pattern, method and status",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by route pattern and method",
            latency.clone(),
        );
        static NEXT_ID: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(1);
        Self {
            registry: Arc::new(Mutex::new(registry)),
            id: NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            requests,
            latency,
            request_counters: Arc::default(),
        }
    }

    /// The `http_requests_total` counter of `labels` (created on first use).
    pub(crate) fn request_counter(&self, labels: HttpLabels) -> Counter {
        let counter = self.requests.get_or_create_owned(&labels);
        if let Ok(mut all) = self.request_counters.lock() {
            all.entry(labels).or_insert_with(|| counter.clone());
        }
        counter
    }

    /// `http_requests_total` summed by status class.
    pub fn http_outcomes(&self) -> HttpOutcomes {
        let mut out = HttpOutcomes::default();
        if let Ok(all) = self.request_counters.lock() {
            for (labels, counter) in all.iter() {
                let slot = match labels.status {
                    200..=299 => &mut out.status_2xx,
                    429 => &mut out.status_429,
                    400..=499 => &mut out.status_4xx,
                    500..=599 => &mut out.status_5xx,
                    _ => &mut out.other,
                };
                *slot += counter.get();
            }
        }
        out
    }

    /// Identifies this registry (shared by its clones, never reused), e.g. to key per-thread
    /// caches of its handles.
    pub(crate) fn id(&self) -> usize {
        self.id
    }

    /// Adds a collector read at every scrape (features register theirs at start-up).
    pub fn register_collector(&self, collector: impl Collector) {
        if let Ok(mut registry) = self.registry.lock() {
            registry.register_collector(Box::new(collector));
        }
    }

    /// Registers a histogram someone else records into (e.g. Redis command latency).
    pub fn register_histogram(&self, name: &str, help: &str, histogram: Histogram) {
        if let Ok(mut registry) = self.registry.lock() {
            registry.register(name, help, histogram);
        }
    }

    /// The exposition text.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        if let Ok(registry) = self.registry.lock() {
            // Writing into a String cannot fail.
            let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        }
        out
    }
}

#[cfg(feature = "server")]
/// `GET /metrics` in the OpenMetrics/Prometheus text format.
#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "metrics",
    tag = "observability",
    responses((status = 200, description = "Every metric, in the OpenMetrics text format.",
        content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8", body = String))
)]
pub(crate) async fn metrics_route(metrics: web::Data<Metrics>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .insert_header(("Cache-Control", "no-store"))
        .body(metrics.render())
}

/// Writes one counter.
pub fn counter(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    value: u64,
) -> std::fmt::Result {
    let metric = ConstCounter::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

/// Writes one gauge.
pub fn gauge(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    value: i64,
) -> std::fmt::Result {
    let metric = ConstGauge::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

/// Labels of the cache lookup counter.
#[cfg(feature = "cache")]
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LookupLabels {
    tier: &'static str,
    result: &'static str,
}

/// Cache and Redis counters, read from the handles at scrape time (the cache's with the `cache`
/// feature).
#[derive(Debug)]
pub struct CoreCollector {
    /// The cache whose counters are exported.
    #[cfg(feature = "cache")]
    pub cache: CacheHandle,
    /// The Redis connection whose state is exported.
    pub redis: Option<RedisHandle>,
}

impl Collector for CoreCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> std::fmt::Result {
        #[cfg(feature = "cache")]
        {
            let s = self.cache.stats();
            {
                let mut family = encoder.encode_descriptor(
                    "cache_lookups",
                    "Cache lookups by tier and result",
                    None,
                    prometheus_client::metrics::MetricType::Counter,
                )?;
                for (tier, result, value) in [
                    ("l1", "hit", s.l1_hits),
                    ("l2", "hit", s.l2_hits),
                    ("any", "miss", s.misses),
                ] {
                    let labels = LookupLabels { tier, result };
                    ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
                }
            }
            counter(
                &mut encoder,
                "cache_loads",
                "Loader runs on cache misses",
                s.loads,
            )?;
            counter(
                &mut encoder,
                "cache_coalesced",
                "Calls that waited for another caller's load",
                s.coalesced,
            )?;
            counter(
                &mut encoder,
                "cache_l2_errors",
                "L2 operations that failed (degraded to L1 and loader)",
                s.l2_errors,
            )?;
            counter(
                &mut encoder,
                "cache_l1_evictions",
                "L1 entries evicted to stay within budget",
                s.evictions,
            )?;
            gauge(
                &mut encoder,
                "cache_l1_bytes",
                "Bytes held by L1",
                i64::try_from(s.l1_bytes).unwrap_or(i64::MAX),
            )?;
            // The L1 invalidation feed (issue 15); `dashboards/redkit.json` queries these names.
            counter(
                &mut encoder,
                "cache_l1_invalidations",
                "Invalidations L1 received from the feed (a key changed in Redis, or a flush)",
                s.l1_invalidations,
            )?;
            counter(
                &mut encoder,
                "cache_l1_feed_flushes",
                "L1 flushes because the invalidation feed was lost",
                s.l1_feed_flushes,
            )?;
            counter(
                &mut encoder,
                "cache_stale_served",
                "Answers served past their TTL because the loader failed or was too slow (fail-safe)",
                s.stale_served,
            )?;
            counter(
                &mut encoder,
                "cache_loader_failures",
                "Loader runs that failed or passed the hard timeout",
                s.loader_failures,
            )?;
            counter(
                &mut encoder,
                "cache_loader_timeouts",
                "Loader runs that passed the soft or hard timeout",
                s.loader_timeouts,
            )?;
            counter(
                &mut encoder,
                "cache_eager_refreshes",
                "Background reloads started by a hit past the eager refresh point",
                s.eager_refreshes,
            )?;
            if s.l1_feed != crate::cache::L1Feed::Off {
                gauge(
                    &mut encoder,
                    "cache_l1_feed_up",
                    "1 while the invalidation feed is armed and alive (L1 serves), 0 while L1 is bypassed",
                    i64::from(s.l1_feed == crate::cache::L1Feed::Up),
                )?;
            }
        }
        if let Some(redis) = &self.redis {
            let r = redis.status();
            gauge(
                &mut encoder,
                "redis_up",
                "1 when Redis answered the last command",
                i64::from(r.up),
            )?;
            counter(
                &mut encoder,
                "redis_errors",
                "Redis commands that failed for unavailability",
                r.errors,
            )?;
            counter(
                &mut encoder,
                "redis_reconnects",
                "Times Redis came back after being down",
                r.reconnects,
            )?;
            gauge(
                &mut encoder,
                "redis_ping_latency_microseconds",
                "Round trip of the last watchdog PING",
                i64::try_from(r.latency_us).unwrap_or(i64::MAX),
            )?;
        }
        Ok(())
    }
}

/// Labels of the rate-limit decision counter.
#[cfg(feature = "ratelimit")]
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    policy: String,
    outcome: &'static str,
}

/// Rate-limit, live-events and auth counters, read from the handles at scrape time (each with
/// its feature).
#[cfg(any(feature = "ratelimit", feature = "events", feature = "auth"))]
#[derive(Debug)]
pub struct FeatureCollector {
    /// The rate limiter.
    #[cfg(feature = "ratelimit")]
    pub ratelimit: crate::ratelimit::RateLimitHandle,
    /// Live events.
    #[cfg(feature = "events")]
    pub events: crate::events::EventsHandle,
    /// Auth (revocation view).
    #[cfg(feature = "auth")]
    pub auth: crate::auth::AuthHandle,
}

#[cfg(any(feature = "ratelimit", feature = "events", feature = "auth"))]
impl Collector for FeatureCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> std::fmt::Result {
        #[cfg(feature = "ratelimit")]
        {
            {
                let mut family = encoder.encode_descriptor(
                    "ratelimit_decisions",
                    "Rate-limit decisions by policy and outcome",
                    None,
                    prometheus_client::metrics::MetricType::Counter,
                )?;
                for (policy, counts) in self.ratelimit.decisions_by_policy() {
                    for (outcome, value) in [
                        ("allowed", counts[0]),
                        ("denied", counts[1]),
                        ("shadow_denied", counts[2]),
                    ] {
                        let labels = DecisionLabels {
                            policy: policy.clone(),
                            outcome,
                        };
                        ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
                    }
                }
            }
            let r = self.ratelimit.stats_now();
            counter(
                &mut encoder,
                "ratelimit_blocked_locally",
                "Denials answered from the local block, without the store",
                r.blocked_locally,
            )?;
            counter(
                &mut encoder,
                "ratelimit_leased",
                "Admissions spent from a quota lease, without the store",
                r.leased,
            )?;
            counter(
                &mut encoder,
                "ratelimit_fail_open",
                "Decisions made in process because Redis could not be asked (fail-open)",
                r.fallback_decisions,
            )?;
            counter(
                &mut encoder,
                "ratelimit_fail_closed",
                "Requests refused with 503 because Redis could not be asked (fail-closed)",
                r.fail_closed,
            )?;
            counter(
                &mut encoder,
                "ratelimit_store_errors",
                "Rate-limit store calls that failed",
                r.store_errors,
            )?;
        }
        #[cfg(feature = "events")]
        {
            let e = self.events.stats();
            gauge(
                &mut encoder,
                "sse_clients",
                "SSE clients connected to this instance",
                i64::try_from(e.clients).unwrap_or(i64::MAX),
            )?;
            counter(
                &mut encoder,
                "sse_published",
                "Events published through this instance",
                e.published,
            )?;
            counter(
                &mut encoder,
                "sse_deliveries",
                "Events handed to local SSE clients",
                e.deliveries,
            )?;
            counter(
                &mut encoder,
                "sse_slow_consumer_drops",
                "SSE clients cut for not keeping up",
                e.slow_consumers,
            )?;
            counter(
                &mut encoder,
                "sse_resubscribes",
                "Resubscribe-and-replay runs after the subscriber connection was lost",
                e.resyncs,
            )?;
        }
        #[cfg(feature = "auth")]
        counter(
            &mut encoder,
            "auth_revocation_view_resyncs",
            "Times the local revocation view was (re)built from Redis",
            self.auth.view_resyncs(),
        )?;
        Ok(())
    }
}
