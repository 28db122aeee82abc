//! The sweeper: forgets expired in-process state (the memory backend's counters, the fail-open
//! fallback, local blocks, leases) every 10 s, so memory stays bounded by the identities active
//! within a window. A task, not an actor: it owns nothing the handle does not also write, and
//! it ends with the last handle.

use std::{
    sync::{Arc, Weak},
    time::Duration,
};

use super::handle::Inner;

/// How often expired in-process state is forgotten.
const SWEEP_INTERVAL: Duration = Duration::from_secs(10);

/// Starts the sweeper of `inner` on the current actix system or tokio `LocalSet`.
pub(super) fn start_sweeper(inner: &Arc<Inner>) {
    let inner: Weak<Inner> = Arc::downgrade(inner);
    actix_web::rt::spawn(async move {
        let mut ticks = tokio::time::interval(SWEEP_INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        loop {
            ticks.tick().await;
            // The drop guard: the last handle gone, the sweeper goes too.
            let Some(inner) = inner.upgrade() else {
                break;
            };
            sweep(&inner);
        }
    });
}

/// Forgets what expired; answers how many entries went.
pub(super) fn sweep(inner: &Inner) -> usize {
    let now = inner.config.clock.now_us();
    let removed = inner.memory.sweep(now)
        + inner.fallback.sweep(now)
        + inner.blocked.retain(|until| *until > now)
        + inner.leases.sweep(now);
    if removed > 0 {
        tracing::debug!(removed, "rate-limit sweep");
    }
    removed
}
