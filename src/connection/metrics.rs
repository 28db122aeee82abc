//! The Redis connection's state in `GET /metrics`, read at scrape time.

use prometheus_client::{collector::Collector, encoding::DescriptorEncoder};

use super::RedisHandle;
use crate::metrics::{counter, gauge};

/// The connection's collector: register it with [`Metrics::register_collector`](crate::metrics::Metrics::register_collector).
#[derive(Debug)]
pub struct RedisCollector(pub RedisHandle);

impl Collector for RedisCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> std::fmt::Result {
        let r = self.0.status();
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
        Ok(())
    }
}
