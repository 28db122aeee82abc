//! The L1 tier: a moka cache in this process, bounded by bytes, each entry with its own TTL.

use std::{
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use bytes::Bytes;
use moka::{Expiry, notification::RemovalCause, sync::Cache};

use super::{glob::glob_match, stats::Stats, store::weight};

/// An L1 entry: the JSON bytes, or `None` for a negative ("absent") entry.
#[derive(Clone, Debug)]
pub(crate) struct L1Entry {
    pub(crate) value: Option<Bytes>,
    ttl: Duration,
}

struct L1Expiry;

impl Expiry<String, L1Entry> for L1Expiry {
    fn expire_after_create(
        &self,
        _key: &String,
        value: &L1Entry,
        _now: Instant,
    ) -> Option<Duration> {
        Some(value.ttl)
    }

    fn expire_after_update(
        &self,
        _key: &String,
        value: &L1Entry,
        _now: Instant,
        _left: Option<Duration>,
    ) -> Option<Duration> {
        Some(value.ttl)
    }
}

/// The in-process tier; a no-op when its budget is 0.
#[derive(Clone)]
pub(crate) struct L1 {
    cache: Option<Cache<String, L1Entry>>,
    max_ttl: Duration,
}

impl L1 {
    pub(crate) fn new(max_bytes: u64, max_ttl: Duration, stats: Arc<Stats>) -> Self {
        let cache = (max_bytes > 0).then(|| {
            Cache::builder()
                .max_capacity(max_bytes)
                .weigher(|k: &String, v: &L1Entry| {
                    weight(k.len(), v.value.as_ref().map_or(0, Bytes::len))
                })
                .expire_after(L1Expiry)
                .eviction_listener(move |_key, _value, cause| {
                    if cause == RemovalCause::Size {
                        stats.evictions.fetch_add(1, Ordering::Relaxed);
                    }
                })
                .build()
        });
        Self { cache, max_ttl }
    }

    pub(crate) fn enabled(&self) -> bool {
        self.cache.is_some()
    }

    pub(crate) fn get(&self, key: &str) -> Option<L1Entry> {
        self.cache.as_ref()?.get(key)
    }

    /// Stores `value` for at most `ttl` (itself capped by the L1 TTL): L1 never outlives L2.
    pub(crate) fn insert(&self, key: &str, value: Option<Bytes>, ttl: Duration) {
        if let Some(cache) = &self.cache {
            let ttl = ttl.min(self.max_ttl);
            if !ttl.is_zero() {
                cache.insert(key.to_owned(), L1Entry { value, ttl });
            }
        }
    }

    pub(crate) fn remove(&self, key: &str) -> bool {
        self.cache.as_ref().is_some_and(|c| c.remove(key).is_some())
    }

    pub(crate) fn remove_matching(&self, glob: &str) -> u64 {
        let Some(cache) = &self.cache else { return 0 };
        let doomed: Vec<_> = cache
            .iter()
            .filter(|(k, _)| glob_match(glob.as_bytes(), k.as_bytes()))
            .map(|(k, _)| k)
            .collect();
        for key in &doomed {
            cache.invalidate(key.as_str());
        }
        doomed.len() as u64
    }

    /// Bytes currently held (after pending housekeeping).
    pub(crate) fn weighted_size(&self) -> u64 {
        self.cache.as_ref().map_or(0, |c| {
            c.run_pending_tasks();
            c.weighted_size()
        })
    }
}
