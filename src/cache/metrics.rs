//! The cache's counters in `GET /metrics`, read from its atomics at scrape time.

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric},
    metrics::counter::ConstCounter,
};

use super::{CacheHandle, L1Feed};
use crate::metrics::{counter, gauge};

/// Labels of the cache lookup counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LookupLabels {
    tier: &'static str,
    result: &'static str,
}

/// The cache's collector: register it with [`Metrics::register_collector`](crate::metrics::Metrics::register_collector).
#[derive(Debug)]
pub struct CacheCollector(pub CacheHandle);

impl Collector for CacheCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> std::fmt::Result {
        let s = self.0.stats();
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
        // The L1 invalidation feed; `dashboards/redkit.json` queries these names.
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
        if s.l1_feed != L1Feed::Off {
            gauge(
                &mut encoder,
                "cache_l1_feed_up",
                "1 while the invalidation feed is armed and alive (L1 serves), 0 while L1 is bypassed",
                i64::from(s.l1_feed == L1Feed::Up),
            )?;
        }
        Ok(())
    }
}
