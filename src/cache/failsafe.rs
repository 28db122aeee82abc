//! The fail-safe's memory of failing loaders: per key whose loader failed, until when it is not
//! called again (the throttle), and the stale value last answered for it (its copy).
//!
//! The copy lets the answers that follow a failure skip L2: while the key's L1 stripe has seen
//! no invalidation since the value was read (the feed is up and reported no change to it, so L2
//! still holds that value) and the throttle lasts, a stale answer is a map lookup, cheaper than
//! the L2 read it replaces (`benches/http.rs`, case 4). When L2 cannot answer and the loader
//! fails too, the copy is what is served, for as long as the fail-safe window lasts.
//!
//! Bounded: at most [`MAX_KEYS`] keys and [`MAX_COPY_BYTES`] of copies; beyond, a failure is
//! not recorded or a copy not kept (the loader is called again sooner, or L2 read again: never
//! more memory held).

use std::{
    collections::HashMap,
    sync::{
        Mutex, PoisonError,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;

use super::l1::{Ticket, Window};

/// Keys remembered at most (expired ones are swept first, at half of it).
const MAX_KEYS: usize = 8192;

/// Bytes of stale copies kept at most, all keys together (16 MiB).
pub(crate) const MAX_COPY_BYTES: usize = 16 << 20;

/// A stale value as answered at `at`, `age` past its TTL then, read from L2 under `ticket`.
#[derive(Clone)]
pub(crate) struct Copy {
    pub(crate) value: Bytes,
    age: Duration,
    at: Instant,
    /// End of the fail-safe window.
    until: Instant,
    pub(crate) ticket: Ticket,
}

impl Copy {
    /// The value, and where it stands now: its age, and how long its window still lasts.
    pub(crate) fn now(&self, now: Instant) -> (Bytes, Window) {
        let window = Window {
            loaded_ago: self.age + now.saturating_duration_since(self.at),
            left: self.until.saturating_duration_since(now),
        };
        (self.value.clone(), window)
    }
}

struct Entry {
    /// The loader is not called again before.
    throttled_until: Instant,
    copy: Option<Copy>,
}

impl Entry {
    fn live(&self, now: Instant) -> bool {
        now < self.throttled_until || self.copy.as_ref().is_some_and(|c| now < c.until)
    }
}

#[derive(Default)]
struct Map {
    entries: HashMap<String, Entry>,
    copy_bytes: usize,
}

impl Map {
    fn remove(&mut self, key: &str) {
        if let Some(entry) = self.entries.remove(key) {
            self.copy_bytes -= entry.copy.map_or(0, |c| c.value.len());
        }
    }

    fn sweep(&mut self, now: Instant) {
        let mut freed = 0;
        self.entries.retain(|_, entry| {
            let live = entry.live(now);
            if !live {
                freed += entry.copy.as_ref().map_or(0, |c| c.value.len());
            }
            live
        });
        self.copy_bytes -= freed;
    }
}

/// Failing loaders and their stale copies (see the module docs).
#[derive(Default)]
pub(crate) struct Throttles {
    map: Mutex<Map>,
    /// Entries held: the read paths skip the lock while it is zero (no loader failing).
    len: AtomicUsize,
}

impl Throttles {
    fn with<T>(&self, f: impl FnOnce(&mut Map) -> T) -> T {
        // Each closure leaves the map consistent: a poisoned lock is still usable.
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        let out = f(&mut map);
        self.len.store(map.entries.len(), Ordering::Relaxed);
        out
    }

    /// Whether `key`'s loader failed less than its throttle period ago.
    pub(crate) fn throttled(&self, key: &str) -> bool {
        self.len.load(Ordering::Relaxed) > 0
            && self.with(|map| {
                map.entries
                    .get(key)
                    .is_some_and(|e| Instant::now() < e.throttled_until)
            })
    }

    /// Records a failure of `key`'s loader: not called again for `period` (a copy it has is
    /// kept).
    pub(crate) fn throttle(&self, key: &str, period: Duration) {
        let now = Instant::now();
        let Some(until) = now.checked_add(period) else {
            return;
        };
        self.with(|map| {
            if map.entries.len() >= MAX_KEYS / 2 {
                map.sweep(now);
            }
            let len = map.entries.len();
            match map.entries.get_mut(key) {
                Some(entry) => entry.throttled_until = until,
                None if len < MAX_KEYS => {
                    map.entries.insert(
                        key.to_owned(),
                        Entry {
                            throttled_until: until,
                            copy: None,
                        },
                    );
                }
                None => {}
            }
        });
    }

    /// Forgets `key` (its loader answered, or it was written).
    pub(crate) fn forget(&self, key: &str) {
        if self.len.load(Ordering::Relaxed) > 0 {
            self.with(|map| map.remove(key));
        }
    }

    /// Keeps `value`, answered stale as `window` says (loaded that long ago, servable that much
    /// longer), read under `ticket`, as `key`'s copy until its fail-safe window ends; only for a
    /// key whose loader is failing, and within the byte budget.
    pub(crate) fn keep(&self, key: &str, (value, window): (&Bytes, Window), ticket: Ticket) {
        let now = Instant::now();
        let age = window.loaded_ago;
        let Some(until) = now.checked_add(window.left) else {
            return;
        };
        self.with(|map| {
            let Map {
                entries,
                copy_bytes,
            } = map;
            let Some(entry) = entries.get_mut(key) else {
                return;
            };
            let old = entry.copy.as_ref().map_or(0, |c| c.value.len());
            if *copy_bytes - old + value.len() > MAX_COPY_BYTES {
                return;
            }
            *copy_bytes = *copy_bytes - old + value.len();
            entry.copy = Some(Copy {
                value: value.clone(),
                age,
                at: now,
                until,
                ticket,
            });
        });
    }

    /// `key`'s copy while the fail-safe window lasts; with `throttled`, only while its loader
    /// is throttled too.
    pub(crate) fn copy(&self, key: &str, throttled: bool) -> Option<Copy> {
        if self.len.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let now = Instant::now();
        self.with(|map| {
            let entry = map.entries.get(key)?;
            if throttled && now >= entry.throttled_until {
                return None;
            }
            entry.copy.clone().filter(|c| now < c.until)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A value loaded `ago` seconds ago, with a TTL of 0 and a 60 s window.
    fn window(ago: u64) -> Window {
        Window {
            loaded_ago: Duration::from_secs(ago),
            left: Duration::from_secs(60u64.saturating_sub(ago)),
        }
    }

    fn ticket() -> Ticket {
        super::super::l1::L1::new(0, Duration::from_secs(1), Default::default()).ticket("k")
    }

    /// Copies stay within their byte budget; forgetting a key frees its bytes.
    #[test]
    fn copies_are_bounded_by_bytes() {
        let throttles = Throttles::default();
        let big = Bytes::from(vec![b'x'; MAX_COPY_BYTES / 4 + 1]);
        for i in 0..8 {
            let key = format!("k{i}");
            throttles.throttle(&key, Duration::from_secs(30));
            throttles.keep(&key, (&big, window(0)), ticket());
        }
        let kept = (0..8)
            .filter(|i| throttles.copy(&format!("k{i}"), true).is_some())
            .count();
        assert_eq!(kept, 3);
        throttles.forget("k0");
        throttles.throttle("k7", Duration::from_secs(30));
        throttles.keep("k7", (&big, window(0)), ticket());
        assert!(throttles.copy("k7", true).is_some());
    }

    /// A copy is not kept for a key whose loader is not failing, and not served past the
    /// fail-safe window.
    #[test]
    fn copies_follow_failures_and_the_window() {
        let throttles = Throttles::default();
        let value = Bytes::from_static(b"1");
        throttles.keep("k", (&value, window(0)), ticket());
        assert!(throttles.copy("k", false).is_none());
        throttles.throttle("k", Duration::from_secs(30));
        // Already 60 s past its TTL: the window is over.
        throttles.keep("k", (&value, window(60)), ticket());
        assert!(throttles.copy("k", false).is_none());
        throttles.keep("k", (&value, window(1)), ticket());
        let copy = throttles.copy("k", true).unwrap();
        assert_eq!(copy.now(Instant::now()).0, value);
        throttles.forget("k");
        assert!(throttles.copy("k", false).is_none());
    }
}
