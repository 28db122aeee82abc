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

pub use middleware::observe;
pub use request_id::{REQUEST_ID_HEADER, RequestId, current_request_id};

pub use crate::latency::latency_histogram;

use crate::latency;

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
