//! The limiter's counters in `GET /metrics`, read at scrape time.

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric},
    metrics::counter::ConstCounter,
};

use super::RateLimitHandle;
use crate::metrics::counter;

/// Labels of the rate-limit decision counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    policy: String,
    outcome: &'static str,
}

/// The limiter's collector: register it with [`Metrics::register_collector`](crate::metrics::Metrics::register_collector).
#[derive(Debug)]
pub struct RateLimitCollector(pub RateLimitHandle);

impl Collector for RateLimitCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> std::fmt::Result {
        {
            let mut family = encoder.encode_descriptor(
                "ratelimit_decisions",
                "Rate-limit decisions by policy and outcome",
                None,
                prometheus_client::metrics::MetricType::Counter,
            )?;
            for (policy, counts) in self.0.decisions_by_policy() {
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
        let r = self.0.stats();
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
        Ok(())
    }
}
