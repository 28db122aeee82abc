use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

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
    pub(crate) l1_invalidations: AtomicU64,
    pub(crate) l1_feed_flushes: AtomicU64,
    pub(crate) fills_refused: AtomicU64,
    pub(crate) stale_served: AtomicU64,
    pub(crate) loader_failures: AtomicU64,
    pub(crate) loader_timeouts: AtomicU64,
    pub(crate) eager_refreshes: AtomicU64,
    /// [`L1Feed`] as a number (0 off, 1 down, 2 up).
    pub(crate) feed: AtomicU8,
}

/// The state of the invalidation feed that keeps this instance's L1 coherent with Redis.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum L1Feed {
    /// No feed: the memory backend (one instance), or L1 is off.
    Off,
    /// Lost or not yet armed: L1 is flushed and bypassed (every read goes to Redis).
    Down,
    /// Armed and shown alive: L1 serves.
    Up,
}

impl L1Feed {
    fn from_u8(value: u8) -> Self {
        match value {
            1 => Self::Down,
            2 => Self::Up,
            _ => Self::Off,
        }
    }

    pub(crate) fn as_u8(self) -> u8 {
        match self {
            Self::Off => 0,
            Self::Down => 1,
            Self::Up => 2,
        }
    }
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
    /// Invalidations L1 received from the feed (a key changed in Redis, by anyone, or a flush).
    pub l1_invalidations: u64,
    /// Times L1 was flushed and bypassed because the invalidation feed was lost.
    pub l1_feed_flushes: u64,
    /// Loaded values not written to L2 because the key changed while they loaded.
    pub fills_refused: u64,
    /// The invalidation feed's state.
    pub l1_feed: L1Feed,
    /// Answers served past their TTL because the loader failed or was too slow (fail-safe).
    pub stale_served: u64,
    /// Loader runs that failed (an error, or the hard timeout).
    pub loader_failures: u64,
    /// Loader runs that passed the soft or hard timeout.
    pub loader_timeouts: u64,
    /// Background reloads started by a hit past the eager refresh point.
    pub eager_refreshes: u64,
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
            l1_invalidations: get(&self.l1_invalidations),
            l1_feed_flushes: get(&self.l1_feed_flushes),
            fills_refused: get(&self.fills_refused),
            l1_feed: L1Feed::from_u8(self.feed.load(Ordering::Relaxed)),
            stale_served: get(&self.stale_served),
            loader_failures: get(&self.loader_failures),
            loader_timeouts: get(&self.loader_timeouts),
            eager_refreshes: get(&self.eager_refreshes),
        }
    }

    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}
