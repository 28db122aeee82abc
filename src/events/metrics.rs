//! Live events' counters in `GET /metrics`, read at scrape time.

use prometheus_client::{collector::Collector, encoding::DescriptorEncoder};

use super::EventsHandle;
use crate::metrics::{counter, gauge};

/// Live events' collector: register it with [`Metrics::register_collector`](crate::metrics::Metrics::register_collector).
#[derive(Debug)]
pub struct EventsCollector(pub EventsHandle);

impl Collector for EventsCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> std::fmt::Result {
        let e = self.0.stats();
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
        Ok(())
    }
}

/// A snapshot of the live-events counters.
#[derive(Debug, Clone, Copy, Default, serde::Serialize, PartialEq, Eq, utoipa::ToSchema)]
#[non_exhaustive]
pub struct EventsStats {
    /// SSE clients connected to this instance now.
    pub clients: u64,
    /// Events published through this instance.
    pub published: u64,
    /// Events handed to local clients' queues.
    pub deliveries: u64,
    /// Clients cut for not keeping up (sent `event: overflow`).
    pub slow_consumers: u64,
    /// Resubscribe-and-replay runs after the subscriber connection was lost.
    pub resyncs: u64,
}
