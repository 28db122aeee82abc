use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

/// Counters kept by the cache (monotonic since start).
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub(crate) l1_hits: AtomicU64,
    pub(crate) l2_hits: AtomicU64,
    pub(crate) misses: AtomicU64,
    pub(crate) loads: AtomicU64,
    pub(crate) coalesced: AtomicU64,
    pub(crate) l2_errors: AtomicU64,
    pub(crate) evictions: AtomicU64,
}

/// A snapshot of the cache's counters.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq, utoipa::ToSchema)]
#[non_exhaustive]
pub struct CacheStats {
    /// Lookups answered by L1.
    pub l1_hits: u64,
    /// Lookups answered by L2.
    pub l2_hits: u64,
    /// Lookups neither tier could answer.
    pub misses: u64,
    /// Loader runs (`remember` misses that this process loaded).
    pub loads: u64,
    /// `remember` calls that waited for another caller's load instead of loading.
    pub coalesced: u64,
    /// L2 operations that failed (Redis down or slow); reads degraded to L1 and loader.
    pub l2_errors: u64,
    /// L1 entries evicted to stay within the byte budget.
    pub evictions: u64,
    /// Bytes held by L1.
    pub l1_bytes: u64,
}

impl Stats {
    pub(crate) fn snapshot(&self, l1_bytes: u64) -> CacheStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        CacheStats {
            l1_hits: get(&self.l1_hits),
            l2_hits: get(&self.l2_hits),
            misses: get(&self.misses),
            loads: get(&self.loads),
            coalesced: get(&self.coalesced),
            l2_errors: get(&self.l2_errors),
            evictions: get(&self.evictions),
            l1_bytes,
        }
    }

    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}
