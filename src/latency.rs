//! Latency histograms: the buckets every redkit latency metric uses, and the HTTP one recorded
//! without a lock.
//!
//! Bottom layer: the Redis connection layer records its command round trips here and the metrics
//! feature its HTTP latencies, so neither imports the other.
//!
//! prometheus-client's `Histogram` takes a mutex and scans its bucket bounds on every
//! observation. `LatencyHistogram` has the same buckets ([`latency_histogram`]'s:
//! 100 µs doubling to about 3.3 s, then `+Inf`) and the same exposition, but an observation is an
//! integer bucket computation and two relaxed atomic adds on one allocation.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use prometheus_client::{
    encoding::{EncodeMetric, MetricEncoder, NoLabelSet},
    metrics::{
        MetricType, TypedMetric,
        histogram::{Histogram, exponential_buckets},
    },
};

/// The latency buckets used everywhere: 100 µs to ~3.3 s, doubling.
pub fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_1, 2.0, 16))
}

/// Finite buckets: upper bounds 100 µs × 2^k for k in 0..16.
const FINITE: usize = 16;
const FIRST_BOUND_NANOS: u64 = 100_000;

/// A cumulative latency histogram; clones share their counts.
#[derive(Clone, Debug, Default)]
pub(crate) struct LatencyHistogram(Arc<Cells>);

#[derive(Debug, Default)]
struct Cells {
    /// Per bucket (not cumulative), the last one `+Inf`.
    buckets: [AtomicU64; FINITE + 1],
    sum_nanos: AtomicU64,
}

/// The bucket of an observation of `nanos`: the first whose upper bound (inclusive) holds it.
fn bucket_index(nanos: u64) -> usize {
    // (100 µs·2^(k-1), 100 µs·2^k] → q in [2^(k-1), 2^k - 1] → k significant bits.
    let q = nanos.saturating_sub(1) / FIRST_BOUND_NANOS;
    // At most 64: the cast cannot truncate.
    ((u64::BITS - q.leading_zeros()) as usize).min(FINITE)
}

impl LatencyHistogram {
    pub(crate) fn observe(&self, elapsed: Duration) {
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.0.buckets[bucket_index(nanos)].fetch_add(1, Ordering::Relaxed);
        self.0.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }
}

impl TypedMetric for LatencyHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for LatencyHistogram {
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        let buckets: Vec<(f64, u64)> =
            exponential_buckets(1e-9 * FIRST_BOUND_NANOS as f64, 2.0, FINITE as u16)
                .chain(std::iter::once(f64::INFINITY))
                .zip(&self.0.buckets)
                .map(|(bound, count)| (bound, count.load(Ordering::Relaxed)))
                .collect();
        let count = buckets.iter().map(|(_, n)| n).sum();
        let sum = self.0.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::{encoding::text::encode, registry::Registry};

    use super::*;

    #[test]
    fn buckets_hold_their_inclusive_upper_bounds() {
        assert_eq!(bucket_index(0), 0);
        assert_eq!(bucket_index(100_000), 0);
        assert_eq!(bucket_index(100_001), 1);
        assert_eq!(bucket_index(200_000), 1);
        assert_eq!(bucket_index(200_001), 2);
        assert_eq!(bucket_index(100_000 << 15), 15);
        assert_eq!(bucket_index((100_000 << 15) + 1), 16);
        assert_eq!(bucket_index(u64::MAX), 16);
    }

    /// The exposition is prometheus-client's `Histogram`'s for the same observations.
    #[test]
    fn encodes_as_the_prometheus_client_histogram() {
        let ours = LatencyHistogram::default();
        let theirs = latency_histogram();
        for micros in [
            0, 50, 100, 150, 250, 1_000, 7_500, 90_000, 2_000_000, 9_000_000,
        ] {
            ours.observe(Duration::from_micros(micros));
            // Their bound check is `bound >= v` in seconds: observe just inside our bucket.
            theirs.observe(micros as f64 / 1e6);
        }
        let render = |metric: Box<dyn FnOnce(&mut Registry)>| {
            let mut registry = Registry::default();
            metric(&mut registry);
            let mut out = String::new();
            encode(&mut out, &registry).unwrap();
            out
        };
        let a = render(Box::new(move |r| r.register("latency", "help", ours)));
        let b = render(Box::new(move |r| r.register("latency", "help", theirs)));
        assert_eq!(a, b);
        assert!(a.contains("latency_count 10"), "{a}");
    }
}
