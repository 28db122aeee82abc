use std::{sync::Arc, time::Duration};

use actix::{Actor, AsyncContext, Context, Handler, MessageResult};

use super::{GetStats, Sweep, handle::Inner};

/// How often expired in-process state is forgotten.
const SWEEP_INTERVAL: Duration = Duration::from_secs(10);

/// Owns the limiter's in-process state: the memory backend's counters, the fail-open fallback
/// limiter, the local "blocked until" map and the metrics counters.
///
/// Decisions do not pass through its mailbox (see the [module docs](super)): the handle decides
/// in the caller's task on this shared state. The actor is the one place that sweeps it, so
/// memory stays bounded by the identities active within a window, and answers for the counters.
pub struct RateLimitActor {
    inner: Arc<Inner>,
}

impl RateLimitActor {
    pub(super) fn new(inner: Arc<Inner>) -> Self {
        Self { inner }
    }

    fn sweep(&self) -> usize {
        let now = self.inner.config.clock.now_us();
        let removed = self.inner.memory.sweep(now)
            + self.inner.fallback.sweep(now)
            + self.inner.blocked.retain(|until| *until > now)
            + self.inner.leases.sweep(now);
        if removed > 0 {
            tracing::debug!(removed, "rate-limit sweep");
        }
        removed
    }
}

impl Actor for RateLimitActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(SWEEP_INTERVAL, |actor, _| {
            actor.sweep();
        });
    }
}

impl Handler<Sweep> for RateLimitActor {
    type Result = usize;

    fn handle(&mut self, _msg: Sweep, _ctx: &mut Self::Context) -> usize {
        self.sweep()
    }
}

impl Handler<GetStats> for RateLimitActor {
    type Result = MessageResult<GetStats>;

    fn handle(&mut self, _msg: GetStats, _ctx: &mut Self::Context) -> Self::Result {
        MessageResult(self.inner.stats())
    }
}
