//! The limiter's counters: decisions by outcome and by policy, read for stats and metrics.

use std::{
    collections::HashMap,
    sync::{
        Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
};

use super::{RateLimitStats, batch::Coalescer, handle::Inner};

/// Counters behind [`RateLimitStats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) allowed: AtomicU64,
    pub(crate) denied: AtomicU64,
    pub(crate) shadow_denied: AtomicU64,
    pub(crate) blocked_locally: AtomicU64,
    pub(crate) fallback: AtomicU64,
    pub(crate) fail_closed: AtomicU64,
    /// Decisions per policy name: `[allowed, denied, shadow_denied]`.
    pub(crate) by_policy: Mutex<HashMap<String, [u64; 3]>>,
}

impl Inner {
    /// A snapshot of the counters and store sizes.
    pub(crate) fn stats(&self) -> RateLimitStats {
        let c = &self.counters;
        let get = |n: &AtomicU64| n.load(Ordering::Relaxed);
        RateLimitStats {
            allowed: get(&c.allowed),
            denied: get(&c.denied),
            shadow_denied: get(&c.shadow_denied),
            blocked_locally: get(&c.blocked_locally),
            fallback_decisions: get(&c.fallback),
            fail_closed: get(&c.fail_closed),
            store_errors: self.coalescer.as_ref().map_or(0, Coalescer::failed_calls),
            memory_keys: (self.memory.len() + self.fallback.len()) as u64,
            blocked_identities: self.blocked.len() as u64,
        }
    }
}

impl Counters {
    /// Counts one decision of `policy`: `outcome` 0 allowed, 1 denied, 2 shadow-denied.
    pub(super) fn count(&self, policy: &str, outcome: usize) {
        let mut map = self
            .by_policy
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match map.get_mut(policy) {
            Some(counts) => counts[outcome] += 1,
            None => {
                let mut counts = [0; 3];
                counts[outcome] = 1;
                map.insert(policy.to_owned(), counts);
            }
        }
    }

    /// Decisions per policy: `(name, allowed, denied, shadow_denied)`.
    pub(crate) fn per_policy(&self) -> Vec<(String, [u64; 3])> {
        let map = self
            .by_policy
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut all: Vec<_> = map.iter().map(|(k, v)| (k.clone(), *v)).collect();
        all.sort();
        all
    }
}

/// Adds one to `counter`.
pub(super) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}
