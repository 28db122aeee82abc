//! Auth's counters in `GET /metrics`, read at scrape time.

use prometheus_client::{collector::Collector, encoding::DescriptorEncoder};

use super::AuthHandle;
use crate::metrics::{counter, gauge};

/// Auth's collector: register it with [`Metrics::register_collector`](crate::metrics::Metrics::register_collector).
#[derive(Debug)]
pub struct AuthCollector(pub AuthHandle);

impl Collector for AuthCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> std::fmt::Result {
        counter(
            &mut encoder,
            "auth_revocation_view_resyncs",
            "Times the local revocation view was (re)built from Redis",
            self.0.view_resyncs(),
        )?;
        gauge(
            &mut encoder,
            "auth_revocation_entries",
            "Revocation entries held by this instance (each lives one access-token lifetime)",
            i64::try_from(self.0.revocation_entries()).unwrap_or(i64::MAX),
        )?;
        let s = self.0.session_stats();
        for (name, help, value) in [
            (
                "auth_refresh_grace_answers",
                "Spent refresh tokens replayed within the grace window, answered their successor",
                s.grace_answers,
            ),
            (
                "auth_refresh_reuse_revocations",
                "Sessions revoked because a spent refresh token was reused",
                s.reuse_revocations,
            ),
            (
                "auth_session_idle_revocations",
                "Sessions revoked for going unused past the idle limit",
                s.idle_revocations,
            ),
            (
                "auth_session_limit_rejections",
                "Logins refused by the reject-new session cap",
                s.limit_rejections,
            ),
        ] {
            counter(&mut encoder, name, help, value)?;
        }
        Ok(())
    }
}
