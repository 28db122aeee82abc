//! The L1 tier: a moka cache in this process, bounded by bytes, each entry with its own TTL.
//!
//! In front of moka, each thread keeps the entries it read most recently ([`Front`]): a hit there
//! is a thread-local map lookup, with no shared state touched but one atomic load. moka's read
//! path (hashing, an epoch pin, recording the read for its eviction policy, housekeeping) costs
//! about 3.4 % of an L1 hit's throughput end to end (`benches/http.rs`: the figures are where
//! the front is declared, `l1/front.rs`). Consistency:
//! - every change to a key (insert, remove) bumps the generation counter of the key's stripe
//!   (one of [`STRIPES`], by a hash of the key; a flush bumps them all) *after* moka has the
//!   change; a front entry is served only while the generation it was read at is current, so no
//!   thread serves a value that was replaced or deleted before its read began, and a change to
//!   one key leaves the fronts of most others alone;
//! - a front entry is never served past its expiry (the moka entry's own, known at insert);
//! - every [`FRONT_TOUCH_EVERY`]th hit on a front entry goes to moka instead, which keeps moka's
//!   frequency sketch aware of hot keys and drops front entries moka has evicted;
//! - a front holds at most [`FRONT_MAX_ENTRIES`] entries of [`FRONT_MAX_VALUE`] bytes or less,
//!   [`FRONT_MAX_BYTES`] in all, and drops an entry to make room when full. Its values are
//!   shared with moka (`Bytes`), so it costs memory only for values moka no longer holds (evicted, replaced or
//!   removed, until the front entry is overwritten or dropped): at most `FRONT_MAX_BYTES` per
//!   worker thread beyond the L1 budget.
//!
//! Coherence across instances (see the cache's [module docs](super)):
//! - an invalidation (a remote change reported by the feed, a local write or delete) bumps the
//!   key's stripe *epoch* before it removes the key; a fill ([`L1::fill`]) carries the
//!   [`Ticket`] (stripe epoch) taken before its value was read, inserts, then checks the epoch
//!   again and takes its entry back out if it moved: whichever of the two comes second removes
//!   the value, so a load that an invalidation overtook never stays in L1;
//! - this instance's own writes (a `Set`, a load's L2 fill) come back through the feed as
//!   invalidations too (Redis merges the invalidations of one key within an event-loop turn, so
//!   an echo cannot be told from another client's change and is never skipped). A writer
//!   therefore waits for its write's echo ([`L1::echo`]) and then fills L1 from a fresh L2 read:
//!   its next read is an L1 hit, and the value is one no reported change has overtaken;
//! - while the feed is down, L1 is *bypassed*: reads miss (one relaxed atomic load on the hit
//!   path, no lock, no allocation) and fills are dropped; going down and coming back up both
//!   flush (every epoch and generation bumped, moka emptied).

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use moka::{Expiry, notification::RemovalCause, sync::Cache};
use tokio::sync::oneshot;

use self::front::FRONT;
pub(crate) use self::lastgood::Window;
use super::{glob::Glob, stats::Stats, store::weight};

mod front;
mod lastgood;

/// An L1 entry: the JSON bytes, or `None` for a negative ("absent") entry.
#[derive(Clone, Debug)]
pub(crate) struct L1Entry {
    pub(crate) value: Option<Bytes>,
    /// When moka drops it; fronts serve it until then at most.
    expires_at: Instant,
    /// From when a hit asks for an eager refresh (`None`: never).
    refresh_at: Option<Instant>,
    /// The tags it was written with (dropping one drops the entry).
    tags: Option<Arc<[String]>>,
}

impl Deadline for L1Entry {
    fn expires_at(&self) -> Instant {
        self.expires_at
    }
}

/// An entry that carries its own expiry instant.
pub(crate) trait Deadline {
    /// When moka drops the entry.
    fn expires_at(&self) -> Instant;
}

/// moka's expiry for entries that carry their own deadline (L1's and the memory L2's): each
/// lives until its instant, whether created or overwritten.
pub(crate) struct AtDeadline;

impl<V: Deadline> Expiry<String, V> for AtDeadline {
    fn expire_after_create(&self, _key: &String, value: &V, now: Instant) -> Option<Duration> {
        Some(value.expires_at().saturating_duration_since(now))
    }

    fn expire_after_update(
        &self,
        _key: &String,
        value: &V,
        now: Instant,
        _left: Option<Duration>,
    ) -> Option<Duration> {
        Some(value.expires_at().saturating_duration_since(now))
    }
}

/// The in-process tier; a no-op when its budget is 0.
#[derive(Clone)]
pub(crate) struct L1 {
    cache: Option<Cache<String, L1Entry>>,
    max_ttl: Duration,
    /// Tells this L1's front entries from other instances' (tests and embedders run several).
    id: u64,
    /// Per stripe of keys, bumped after every change to one of them; front entries of an older
    /// generation are not served.
    generations: Arc<[AtomicU64; STRIPES]>,
    /// Per stripe of keys, bumped before every invalidation of one of them; fills taken at an
    /// older epoch are taken back out.
    epochs: Arc<[AtomicU64; STRIPES]>,
    /// Whether L1 may serve and be filled (false while the invalidation feed is down).
    live: Arc<AtomicBool>,
    /// Writers waiting for the feed to report a change of their key; `None` without a feed.
    echoes: Option<Arc<Mutex<EchoWaiters>>>,
    /// The fail-safe's last good values (see [`lastgood::LastGood`]); `None`: not kept.
    last_good: Option<lastgood::LastGood>,
}

/// Per key, the writers waiting for the feed to report a change of it.
type EchoWaiters = HashMap<String, Vec<oneshot::Sender<()>>>;

/// Echo-waiter entries kept before the abandoned ones are swept. A write whose echo never comes
/// (it failed, or a fill found the key already set) leaves a closed sender behind once its writer
/// stops waiting; without the sweep, a healthy feed over many distinct keys would grow the map
/// for ever.
const ECHO_SWEEP_AT: usize = 1024;

/// The epoch of a key's stripe, taken before reading the value a [`L1::fill`] will insert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ticket {
    stripe: usize,
    epoch: u64,
}

/// Keys are spread over this many generation counters.
const STRIPES: usize = 64;

/// The stripe of `key`: a fixed hash (collisions only cost front misses).
fn stripe(key: &str) -> usize {
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
    // The modulo keeps it below STRIPES: the cast cannot truncate.
    (BuildHasherDefault::<DefaultHasher>::default().hash_one(key) % STRIPES as u64) as usize
}

impl L1 {
    pub(crate) fn new(max_bytes: u64, max_ttl: Duration, stats: Arc<Stats>) -> Self {
        let cache = (max_bytes > 0).then(|| {
            Cache::builder()
                .max_capacity(max_bytes)
                .weigher(|k: &String, v: &L1Entry| {
                    weight(k.len(), v.value.as_ref().map_or(0, Bytes::len))
                })
                .expire_after(AtDeadline)
                .eviction_listener(move |_key, _value, cause| {
                    if cause == RemovalCause::Size {
                        stats.evictions.fetch_add(1, Ordering::Relaxed);
                    }
                })
                .build()
        });
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        Self {
            cache,
            max_ttl,
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            generations: Arc::new(std::array::from_fn(|_| AtomicU64::new(0))),
            epochs: Arc::new(std::array::from_fn(|_| AtomicU64::new(0))),
            live: Arc::new(AtomicBool::new(true)),
            echoes: None,
            last_good: None,
        }
    }

    /// This L1 as kept coherent by an invalidation feed: bypassed until the feed is up, and
    /// expecting echoes of its own writes.
    pub(crate) fn fed(mut self) -> Self {
        self.echoes = Some(Arc::default());
        self.set_live(false);
        self
    }

    fn with_echoes<T>(&self, f: impl FnOnce(&mut EchoWaiters) -> T) -> Option<T> {
        let echoes = self.echoes.as_ref()?;
        // Each closure leaves the map consistent: a poisoned lock is still usable.
        let mut echoes = echoes.lock().unwrap_or_else(PoisonError::into_inner);
        Some(f(&mut echoes))
    }

    /// Resolves once the feed reports a change of `key` (or a flush, or the feed going down or
    /// up) after this call; `None` without a feed, or while it is down (no echo would come).
    /// Call before sending the write.
    pub(crate) fn echo(&self, key: &str) -> Option<oneshot::Receiver<()>> {
        if !self.is_live() {
            return None;
        }
        let (tx, rx) = oneshot::channel();
        self.with_echoes(|e| {
            if e.len() >= ECHO_SWEEP_AT {
                e.retain(|_, senders| {
                    senders.retain(|s| !s.is_closed());
                    !senders.is_empty()
                });
            }
            e.entry(key.to_owned()).or_default().push(tx);
        })?;
        Some(rx)
    }

    /// Applies an invalidation reported by the feed and wakes the writers waiting for it.
    pub(crate) fn invalidate_reported(&self, key: &str) {
        self.invalidate(key);
        // Dropping the senders wakes the receivers.
        self.with_echoes(|e| e.remove(key));
    }

    /// Whether L1 serves now (false while bypassed).
    pub(crate) fn is_live(&self) -> bool {
        self.live.load(Ordering::Acquire)
    }

    /// Empties L1 and bypasses it (`live: false`) or empties it and serves again (`live: true`).
    /// Going live flushes *before* serving: values filled while bypassed, or by loads that began
    /// before, are gone.
    pub(crate) fn set_live(&self, live: bool) {
        if !live {
            self.live.store(false, Ordering::SeqCst);
        }
        self.invalidate_all();
        if live {
            // Changes made while the feed was down were not reported.
            self.forget_all_good();
            self.live.store(true, Ordering::SeqCst);
        }
        // Writers waiting for an echo read L2 again (and find L1 bypassed while it is).
        self.with_echoes(HashMap::clear);
    }

    /// The ticket a fill of `key` must carry: take it before reading the value.
    pub(crate) fn ticket(&self, key: &str) -> Ticket {
        let stripe = stripe(key);
        Ticket {
            stripe,
            epoch: self.epochs[stripe].load(Ordering::SeqCst),
        }
    }

    /// Whether `ticket` is still current (no invalidation of its stripe since, L1 live).
    pub(crate) fn current(&self, ticket: Ticket) -> bool {
        self.is_live() && self.epochs[ticket.stripe].load(Ordering::SeqCst) == ticket.epoch
    }

    /// Stores `value` read under `ticket`, unless an invalidation of its stripe (or a flush, or
    /// the feed going down) came after the ticket; answers whether it stayed.
    #[cfg(test)]
    pub(crate) fn fill(
        &self,
        key: &str,
        value: Option<Bytes>,
        ttl: Duration,
        ticket: Ticket,
    ) -> bool {
        self.fill_refreshing(key, value, ttl, (None, None), ticket)
    }

    /// As [`fill`](Self::fill), for an entry due for an eager refresh in `refresh_in` and
    /// written with `tags`.
    pub(crate) fn fill_refreshing(
        &self,
        key: &str,
        value: Option<Bytes>,
        ttl: Duration,
        (refresh_in, tags): (Option<Duration>, Option<Arc<[String]>>),
        ticket: Ticket,
    ) -> bool {
        if self.cache.is_none() || !self.current(ticket) {
            return false;
        }
        self.insert(key, value, ttl, refresh_in, tags);
        // An invalidation that bumped the epoch before this check is seen here; one that bumps
        // it after removes the entry itself (it removes after bumping).
        if self.current(ticket) {
            return true;
        }
        self.discard(key);
        false
    }

    /// Drops `key` because a change to it was reported (or is being made): later fills that
    /// began before are refused.
    pub(crate) fn invalidate(&self, key: &str) -> bool {
        self.epochs[stripe(key)].fetch_add(1, Ordering::SeqCst);
        self.forget_good(key);
        self.discard(key)
    }

    /// Drops every entry as the feed asked (a flush): as [`invalidate_all`](Self::invalidate_all),
    /// and wakes every writer waiting for an echo.
    pub(crate) fn invalidate_all_reported(&self) {
        self.invalidate_all();
        self.forget_all_good();
        self.with_echoes(HashMap::clear);
    }

    /// Drops every entry; fills that began before are refused.
    pub(crate) fn invalidate_all(&self) {
        for epoch in self.epochs.iter() {
            epoch.fetch_add(1, Ordering::SeqCst);
        }
        if let Some(cache) = &self.cache {
            cache.invalidate_all();
        }
        self.changed(None);
    }

    pub(crate) fn enabled(&self) -> bool {
        self.cache.is_some()
    }

    /// The entry's value (`None` inside: a negative entry), from this thread's front or moka.
    pub(crate) fn get(&self, key: &str) -> Option<Option<Bytes>> {
        self.get_refreshing(key).map(|(value, _)| value)
    }

    /// As [`get`](Self::get), and whether the entry is due for an eager refresh.
    pub(crate) fn get_refreshing(&self, key: &str) -> Option<(Option<Bytes>, bool)> {
        let cache = self.cache.as_ref()?;
        // Bypassed while the feed is down: one relaxed load of a flag that rarely changes (its
        // cache line stays shared across threads). A read racing the switch may serve what was
        // current when the feed went down.
        if !self.live.load(Ordering::Relaxed) {
            return None;
        }
        let now = Instant::now();
        if let Some(value) = FRONT.with(|front| front.borrow_mut().hit(self, key, now)) {
            return Some(value);
        }
        // Read before moka: a change that lands after this load bumps it past what the front
        // entry records.
        let stripe = stripe(key);
        let generation = self.generations[stripe].load(Ordering::Acquire);
        let Some(entry) = cache.get(key) else {
            FRONT.with(|front| front.borrow_mut().forget(key));
            return None;
        };
        if now < entry.expires_at {
            FRONT.with(|front| {
                front
                    .borrow_mut()
                    .fill(self.id, (stripe, generation), key, &entry);
            });
        }
        let due = entry.refresh_at.is_some_and(|at| now >= at);
        Some((entry.value, due))
    }

    /// Marks the front entries of `key` (of every key: `None`) stale; called after each change
    /// has reached moka.
    fn changed(&self, key: Option<&str>) {
        match key {
            Some(key) => {
                self.generations[stripe(key)].fetch_add(1, Ordering::Release);
            }
            None => {
                for generation in self.generations.iter() {
                    generation.fetch_add(1, Ordering::Release);
                }
            }
        }
    }

    /// Stores `value` for at most `ttl` (itself capped by the L1 TTL): L1 never outlives L2.
    /// Unchecked: callers that read the value from elsewhere use [`fill`](Self::fill).
    fn insert(
        &self,
        key: &str,
        value: Option<Bytes>,
        ttl: Duration,
        refresh_in: Option<Duration>,
        tags: Option<Arc<[String]>>,
    ) {
        if let Some(cache) = &self.cache {
            let ttl = ttl.min(self.max_ttl);
            if !ttl.is_zero() {
                let now = Instant::now();
                // An unrepresentable expiry (beyond any configurable TTL) is not cached.
                let expires_at = now.checked_add(ttl).unwrap_or(now);
                let refresh_at = refresh_in.and_then(|d| now.checked_add(d));
                cache.insert(
                    key.to_owned(),
                    L1Entry {
                        value,
                        expires_at,
                        refresh_at,
                        tags,
                    },
                );
                self.changed(Some(key));
            }
        }
    }

    fn discard(&self, key: &str) -> bool {
        let removed = self.cache.as_ref().is_some_and(|c| c.remove(key).is_some());
        self.changed(Some(key));
        removed
    }

    /// Drops every entry written with `tag`; fills that began before are refused.
    pub(crate) fn drop_tag(&self, tag: &str) {
        self.drop_where(|_, e| e.tags.as_ref().is_some_and(|t| t.iter().any(|t| t == tag)));
        self.forget_good_tagged(tag);
    }

    /// Drops every entry whose key matches the Redis glob `glob`; fills that began before are
    /// refused. Answers how many it dropped.
    pub(crate) fn remove_matching(&self, glob: &str) -> u64 {
        let glob = Glob::new(glob.as_bytes());
        let dropped = self.drop_where(|k, _| glob.matches(k.as_bytes()));
        self.forget_good_matching(&glob);
        dropped
    }

    /// Drops every entry `doomed` picks. Every stripe's fills that began before are refused: a
    /// load in flight of a dropped entry must not put it back. Answers how many it dropped.
    fn drop_where(&self, doomed: impl Fn(&str, &L1Entry) -> bool) -> u64 {
        let Some(cache) = &self.cache else { return 0 };
        let keys: Vec<_> = cache
            .iter()
            .filter(|(k, e)| doomed(k, e))
            .map(|(k, _)| k)
            .collect();
        for epoch in self.epochs.iter() {
            epoch.fetch_add(1, Ordering::SeqCst);
        }
        for key in &keys {
            cache.invalidate(key.as_str());
        }
        self.changed(None);
        keys.len() as u64
    }

    /// Bytes currently held (after pending housekeeping).
    pub(crate) fn weighted_size(&self) -> u64 {
        self.cache.as_ref().map_or(0, |c| {
            c.run_pending_tasks();
            c.weighted_size()
        })
    }
}

#[cfg(test)]
mod tests;
