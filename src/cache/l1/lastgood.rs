//! The last good value of each key this instance read from L2 or loaded, for the fail-safe
//! when L2 itself cannot answer (see [`LastGood`]).

use std::{
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use bytes::Bytes;
use moka::sync::Cache;

use super::{AtDeadline, Deadline, L1, Ticket};
use crate::cache::{failsafe::MAX_COPY_BYTES, glob::Glob, store::weight};

/// The last good value of each key this instance read from L2 (fresh or stale) or loaded, kept
/// until the end of its fail-safe window, for the one case nothing else can answer: L2 cannot
/// be read (L1 is then flushed and bypassed) and the key's loader fails, times out or is
/// throttled. It is never read otherwise: while L2 answers, L2 is the truth.
///
/// - **Bounded** by bytes: [`MAX_COPY_BYTES`] of keys and values (moka's weigher, as L1's; like
///   L1, moka evicts on its housekeeping, so the budget holds once pending writes are applied).
///   Its values are the `Bytes` L1 holds, so it costs memory only for values L1 no longer holds
///   (evicted, expired, or flushed with Redis gone).
/// - **Fed off the hot path**: by an L2 read that answers a value written by `remember` (an
///   envelope: it says when the value was loaded and when it goes stale) and by a load's end;
///   never by an L1 hit (its value came from one of those). Plain values (`set`, other
///   programs) and negative entries are not kept: they have no fail-safe window.
/// - **Lives** until the value's TTL plus the fail-safe window, and never longer than L2 would
///   have kept it (its remaining Redis TTL at the read).
/// - **Coherent the safe way**: every invalidation this instance learns of drops it, as it
///   drops L1's entry (a local write, delete, pattern flush or tag drop; a change reported by
///   the feed; a flush of the database); so does the feed coming back up (changes made while it
///   was down were not reported). Not the feed going down: that is when it is needed. Like an
///   L1 fill, a keep carries the [`Ticket`] taken before its value was read and is taken back
///   out when an invalidation came since, so a deleted key never comes back as `STALE`.
#[derive(Clone)]
pub(crate) struct LastGood {
    cache: Cache<String, Good>,
}

/// A kept value.
#[derive(Clone)]
struct Good {
    value: Bytes,
    /// When it was loaded (its `Age` is counted from there).
    loaded_at: Instant,
    /// End of its fail-safe window.
    expires_at: Instant,
    /// The tags it was written with.
    tags: Option<Arc<[String]>>,
}

impl Deadline for Good {
    fn expires_at(&self) -> Instant {
        self.expires_at
    }
}

/// Where a kept value stands when it is kept: how long ago it was loaded, and how long it has
/// left to be served (the rest of its TTL plus the fail-safe window, at most its life in L2).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Window {
    pub(crate) loaded_ago: Duration,
    pub(crate) left: Duration,
}

impl LastGood {
    fn new(max_bytes: u64) -> Self {
        Self {
            cache: Cache::builder()
                .max_capacity(max_bytes)
                .weigher(|k: &String, v: &Good| weight(k.len(), v.value.len()))
                .expire_after(AtDeadline)
                .build(),
        }
    }

    /// Drops every value `doomed` picks by key and tags.
    fn drop_where(&self, doomed: impl Fn(&str, Option<&[String]>) -> bool) {
        let keys: Vec<_> = self
            .cache
            .iter()
            .filter(|(k, g)| doomed(k, g.tags.as_deref()))
            .map(|(k, _)| k)
            .collect();
        for key in &keys {
            self.cache.invalidate(key.as_str());
        }
    }
}

impl L1 {
    /// This L1 keeping the last good value of each key for `fail_safe_max` past its TTL (see
    /// [`LastGood`]); nothing kept when the window is zero or L1 is off.
    pub(crate) fn keeping_last_good(mut self, fail_safe_max: Duration) -> Self {
        if self.cache.is_some() && !fail_safe_max.is_zero() {
            self.last_good = Some(LastGood::new(MAX_COPY_BYTES as u64));
        }
        self
    }

    /// Keeps `value` as the last good value of `key`, read (or loaded) under `ticket`, unless an
    /// invalidation of its stripe came since.
    pub(crate) fn keep_good(
        &self,
        key: &str,
        value: &Bytes,
        (window, tags): (Window, Option<Arc<[String]>>),
        ticket: Ticket,
    ) {
        let Some(last_good) = &self.last_good else {
            return;
        };
        let now = Instant::now();
        let unchanged = || self.epochs[ticket.stripe].load(Ordering::SeqCst) == ticket.epoch;
        let Some(expires_at) = now.checked_add(window.left) else {
            return;
        };
        if window.left.is_zero() || !unchanged() {
            return;
        }
        last_good.cache.insert(
            key.to_owned(),
            Good {
                value: value.clone(),
                loaded_at: now.checked_sub(window.loaded_ago).unwrap_or(now),
                expires_at,
                tags,
            },
        );
        // As for an L1 fill: an invalidation that bumped the epoch before this check is seen
        // here; one that bumps it after drops the value itself.
        if !unchanged() {
            last_good.cache.invalidate(key);
        }
    }

    /// The last good value of `key`, its age (since it was loaded) and how long it may still be
    /// served, while its window lasts.
    pub(crate) fn last_good(&self, key: &str) -> Option<(Bytes, Window)> {
        let good = self.last_good.as_ref()?.cache.get(key)?;
        let now = Instant::now();
        let window = Window {
            loaded_ago: now.saturating_duration_since(good.loaded_at),
            left: good.expires_at.saturating_duration_since(now),
        };
        (now < good.expires_at).then_some((good.value, window))
    }

    /// Drops the last good value of `key` (called after its stripe's epoch was bumped).
    pub(super) fn forget_good(&self, key: &str) {
        if let Some(last_good) = &self.last_good {
            last_good.cache.invalidate(key);
        }
    }

    /// Drops every last good value (called after every epoch was bumped).
    pub(super) fn forget_all_good(&self) {
        if let Some(last_good) = &self.last_good {
            last_good.cache.invalidate_all();
        }
    }

    /// Drops the last good values written with `tag` (after every epoch was bumped).
    pub(super) fn forget_good_tagged(&self, tag: &str) {
        if let Some(last_good) = &self.last_good {
            last_good.drop_where(|_, tags| tags.is_some_and(|t| t.iter().any(|t| t == tag)));
        }
    }

    /// Drops the last good values whose key matches `glob` (after every epoch was bumped).
    pub(super) fn forget_good_matching(&self, glob: &Glob) {
        if let Some(last_good) = &self.last_good {
            last_good.drop_where(|key, _| glob.matches(key.as_bytes()));
        }
    }

    /// Bytes of last good values held (after pending housekeeping).
    #[cfg(test)]
    fn last_good_bytes(&self) -> u64 {
        self.last_good.as_ref().map_or(0, |g| {
            g.cache.run_pending_tasks();
            g.cache.weighted_size()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::stats::Stats;

    fn l1() -> L1 {
        L1::new(1 << 20, Duration::from_secs(60), Arc::new(Stats::default()))
            .keeping_last_good(Duration::from_secs(60))
    }

    fn window(loaded_ago: u64, left: u64) -> (Window, Option<Arc<[String]>>) {
        let window = Window {
            loaded_ago: Duration::from_secs(loaded_ago),
            left: Duration::from_secs(left),
        };
        (window, None)
    }

    /// However much is kept, the store holds at most its byte budget once moka has applied
    /// the writes, and still keeps values (the newest ones are admitted).
    #[test]
    fn last_good_values_are_bounded_by_bytes() {
        let l1 = l1();
        let big = Bytes::from(vec![b'x'; 1 << 20]);
        for i in 0..64 {
            let key = format!("k{i}");
            l1.keep_good(&key, &big, window(0, 60), l1.ticket(&key));
        }
        let held = l1.last_good_bytes();
        assert!(held <= MAX_COPY_BYTES as u64, "{held} bytes held");
        assert!(held >= (MAX_COPY_BYTES / 2) as u64, "{held} bytes held");
        let kept = (0..64)
            .filter(|i| l1.last_good(&format!("k{i}")).is_some())
            .count();
        assert!((8..16).contains(&kept), "{kept} kept");
    }

    /// A value is served with its age since it was loaded until its window ends; an
    /// invalidation (of the key, its tag, a matching pattern, all) drops it, and a keep read
    /// under a ticket an invalidation overtook is refused.
    #[test]
    fn last_good_values_follow_their_window_and_invalidations() {
        let l1 = l1();
        let value = Bytes::from_static(b"1");
        l1.keep_good("a", &value, window(5, 60), l1.ticket("a"));
        let (got, kept) = l1.last_good("a").unwrap();
        assert_eq!(
            (got, kept.loaded_ago.as_secs(), kept.left.as_secs()),
            (value.clone(), 5, 59)
        );
        // Its window is over: not kept.
        l1.keep_good("b", &value, window(5, 0), l1.ticket("b"));
        assert!(l1.last_good("b").is_none());
        // Overtaken by an invalidation of its key.
        let ticket = l1.ticket("c");
        l1.invalidate("c");
        l1.keep_good("c", &value, window(0, 60), ticket);
        assert!(l1.last_good("c").is_none());
        l1.invalidate("a");
        assert!(l1.last_good("a").is_none());
        let tagged = |tag: &str| {
            let (window, _) = window(0, 60);
            (window, Some(Arc::from(vec![tag.to_owned()])))
        };
        l1.keep_good("t1", &value, tagged("x"), l1.ticket("t1"));
        l1.keep_good("t2", &value, tagged("y"), l1.ticket("t2"));
        l1.drop_tag("x");
        assert!(l1.last_good("t1").is_none());
        assert!(l1.last_good("t2").is_some());
        l1.keep_good("p:1", &value, window(0, 60), l1.ticket("p:1"));
        l1.remove_matching("p:*");
        assert!(l1.last_good("p:1").is_none());
        assert!(l1.last_good("t2").is_some());
        // The feed going down keeps them; a reported flush, or the feed back up, drops them.
        l1.set_live(false);
        assert!(l1.last_good("t2").is_some());
        l1.set_live(true);
        assert!(l1.last_good("t2").is_none());
        l1.keep_good("d", &value, window(0, 60), l1.ticket("d"));
        l1.invalidate_all_reported();
        assert!(l1.last_good("d").is_none());
    }
}
