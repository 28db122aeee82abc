//! The three algorithms, in process. [`lua`](super::lua) holds the same arithmetic as a Redis
//! script; both take the same numbers ([`Args`]) and answer the same [`Raw`] numbers.

use std::{
    collections::{HashMap, VecDeque},
    hash::{BuildHasher, RandomState},
    sync::{Mutex, PoisonError},
    time::Duration,
};

use super::Algorithm;

/// What a decision asks of the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Decide and, when allowed, record the units.
    Consume,
    /// Decide without recording anything.
    Peek,
    /// Undo a `Consume` made with the same arguments (in process: a later policy of the request
    /// denied it; on every backend: a login whose password was right).
    Refund,
}

/// The inputs of one decision, all integers in microseconds.
#[derive(Debug, Clone)]
pub(crate) struct Args {
    pub(crate) algorithm: Algorithm,
    pub(crate) now: u64,
    pub(crate) window: u64,
    pub(crate) limit: u64,
    pub(crate) cost: u64,
    pub(crate) mode: Mode,
}

impl Args {
    /// GCRA's emission interval: the window shared equally by `limit` units, rounded up to a
    /// whole microsecond so that the bucket never refills faster than `limit` per `window`.
    pub(crate) fn interval(&self) -> u64 {
        self.window.div_ceil(self.limit.max(1)).max(1)
    }

    /// GCRA's burst tolerance: `limit` intervals (the window itself when `limit` divides it),
    /// so that a full bucket holds exactly `limit` units whatever the rounding of the interval.
    pub(crate) fn tolerance(&self) -> u64 {
        self.interval().saturating_mul(self.limit.max(1))
    }

    /// When the state written by this decision may be forgotten, in microseconds from `now`.
    /// The log and GCRA never outlive their window; the counter's current count still weighs on
    /// the next fixed window, so it lives until that one ends.
    pub(crate) fn counter_ttl(&self) -> u64 {
        (self.now / self.window + 2) * self.window - self.now
    }
}

/// The answer of one decision, as the Lua script returns it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Raw {
    pub(crate) allowed: bool,
    pub(crate) remaining: u64,
    pub(crate) reset_us: u64,
    pub(crate) retry_us: u64,
}

impl Raw {
    const REFUNDED: Self = Self {
        allowed: true,
        remaining: 0,
        reset_us: 0,
        retry_us: 0,
    };

    pub(crate) fn from_reply(reply: &[i64]) -> Option<Self> {
        let get = |i: usize| reply.get(i).map(|v| u64::try_from(*v).unwrap_or(0));
        Some(Self {
            allowed: get(0)? >= 1,
            remaining: get(1)?,
            reset_us: get(2)?,
            retry_us: get(3)?,
        })
    }
}

/// The outcome of one policy for one identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Decision {
    /// Whether the request may proceed (always true in effect for a shadow policy).
    pub allowed: bool,
    /// Units per window.
    pub limit: u64,
    /// Units left now (after this request when it was admitted).
    pub remaining: u64,
    /// Time until more quota becomes available.
    pub reset: Duration,
    /// When denied, the wait after which the same request is admitted; zero when allowed.
    pub retry_after: Duration,
}

impl Decision {
    pub(crate) fn from_raw(raw: Raw, limit: u64) -> Self {
        Self {
            allowed: raw.allowed,
            limit,
            remaining: raw.remaining.min(limit),
            reset: Duration::from_micros(raw.reset_us.max(raw.retry_us)),
            retry_after: if raw.allowed {
                Duration::ZERO
            } else {
                Duration::from_micros(raw.retry_us.max(1))
            },
        }
    }

    /// `Retry-After` in whole seconds, rounded up and at least 1.
    pub fn retry_after_secs(&self) -> u64 {
        ceil_secs(self.retry_after).max(1)
    }

    /// Seconds until more quota becomes available, rounded up.
    pub fn reset_secs(&self) -> u64 {
        ceil_secs(self.reset)
    }
}

pub(crate) fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

#[derive(Debug)]
enum State {
    Log(VecDeque<u64>),
    Counter { idx: u64, prev: u64, cur: u64 },
    Gcra(u64),
}

#[derive(Debug)]
struct Slot {
    state: State,
    expires_at: u64,
}

/// A hash map split into locked shards, so concurrent callers rarely wait for each other.
#[derive(Debug)]
pub(crate) struct Sharded<V> {
    shards: Box<[Mutex<HashMap<String, V>>]>,
    hasher: RandomState,
}

impl<V> Sharded<V> {
    pub(crate) fn new(shards: usize) -> Self {
        Self {
            shards: (0..shards.max(1))
                .map(|_| Mutex::new(HashMap::new()))
                .collect(),
            hasher: RandomState::new(),
        }
    }

    pub(crate) fn with<R>(&self, key: &str, f: impl FnOnce(&mut HashMap<String, V>) -> R) -> R {
        let i = usize::try_from(self.hasher.hash_one(key)).unwrap_or(0) % self.shards.len();
        // A panic while holding a shard leaves plain numbers behind; they are still usable.
        let mut guard = self.shards[i]
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        f(&mut guard)
    }

    /// Drops entries `keep` rejects; answers how many.
    pub(crate) fn retain(&self, mut keep: impl FnMut(&V) -> bool) -> usize {
        let mut removed = 0;
        for shard in &self.shards {
            let mut guard = shard.lock().unwrap_or_else(PoisonError::into_inner);
            let before = guard.len();
            guard.retain(|_, v| keep(v));
            removed += before - guard.len();
        }
        removed
    }

    pub(crate) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
    }
}

/// The in-process store: every algorithm's state per key, with the same expiry as in Redis.
#[derive(Debug)]
pub(crate) struct MemoryCounters {
    slots: Sharded<Slot>,
}

impl MemoryCounters {
    pub(crate) fn new() -> Self {
        Self {
            slots: Sharded::new(16),
        }
    }

    pub(crate) fn decide(&self, key: &str, a: &Args) -> Raw {
        self.slots.with(key, |map| {
            if map.get(key).is_some_and(|s| s.expires_at <= a.now) {
                map.remove(key);
            }
            match map.get_mut(key) {
                Some(slot) => {
                    let (raw, expiry) = step(&mut slot.state, a);
                    if let Some(ttl) = expiry {
                        slot.expires_at = a.now + ttl;
                    }
                    raw
                }
                None => {
                    let mut state = match a.algorithm {
                        Algorithm::SlidingCounter => State::Counter {
                            idx: a.now / a.window,
                            prev: 0,
                            cur: 0,
                        },
                        Algorithm::Gcra => State::Gcra(0),
                        _ => State::Log(VecDeque::new()),
                    };
                    let (raw, expiry) = step(&mut state, a);
                    if let Some(ttl) = expiry {
                        map.insert(
                            key.to_owned(),
                            Slot {
                                state,
                                expires_at: a.now + ttl,
                            },
                        );
                    }
                    raw
                }
            }
        })
    }

    /// Forgets state whose expiry has passed; answers how many keys went.
    pub(crate) fn sweep(&self, now: u64) -> usize {
        self.slots.retain(|slot| slot.expires_at > now)
    }

    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }
}

/// Runs one decision on `state`; answers the result and, when state was written, its new TTL.
fn step(state: &mut State, a: &Args) -> (Raw, Option<u64>) {
    match state {
        State::Log(log) => sliding_log(log, a),
        State::Counter { idx, prev, cur } => sliding_counter(idx, prev, cur, a),
        State::Gcra(tat) => gcra(tat, a),
    }
}

fn sliding_log(log: &mut VecDeque<u64>, a: &Args) -> (Raw, Option<u64>) {
    let cutoff = a.now.saturating_sub(a.window);
    while log.front().is_some_and(|t| *t <= cutoff) {
        log.pop_front();
    }
    if a.mode == Mode::Refund {
        for _ in 0..a.cost {
            if let Some(i) = log.iter().rposition(|t| *t == a.now) {
                log.remove(i);
            }
        }
        return (Raw::REFUNDED, None);
    }
    let mut count = log.len() as u64;
    let reset = |log: &VecDeque<u64>| log.front().map_or(0, |t| t + a.window - a.now);
    if count + a.cost <= a.limit {
        let mut expiry = None;
        if a.mode == Mode::Consume {
            let at = log.partition_point(|t| *t <= a.now);
            for _ in 0..a.cost {
                log.insert(at, a.now);
            }
            count += a.cost;
            expiry = Some(a.window);
        }
        let raw = Raw {
            allowed: true,
            remaining: a.limit - count,
            reset_us: reset(log),
            retry_us: 0,
        };
        return (raw, expiry);
    }
    let retry_us = if a.cost > a.limit {
        a.window
    } else {
        // The oldest entries leave one by one; wait until enough have left for `cost`.
        let need = usize::try_from(count + a.cost - a.limit).unwrap_or(usize::MAX);
        log.get(need - 1).map_or(a.window, |t| t + a.window - a.now)
    };
    let raw = Raw {
        allowed: false,
        remaining: a.limit.saturating_sub(count),
        reset_us: reset(log),
        retry_us,
    };
    (raw, None)
}

fn sliding_counter(idx: &mut u64, prev: &mut u64, cur: &mut u64, a: &Args) -> (Raw, Option<u64>) {
    let now_idx = a.now / a.window;
    let elapsed = a.now % a.window;
    if a.mode == Mode::Refund {
        if *idx == now_idx {
            *cur = cur.saturating_sub(a.cost);
        } else if *idx == now_idx + 1 {
            *prev = prev.saturating_sub(a.cost);
        }
        return (Raw::REFUNDED, None);
    }
    let (mut p, mut c) = (*prev, *cur);
    if *idx < now_idx {
        p = if *idx + 1 == now_idx { c } else { 0 };
        c = 0;
    }
    let window = a.window as f64;
    let (limit, cost) = (a.limit as f64, a.cost as f64);
    let mut estimate = p as f64 * ((window - elapsed as f64) / window) + c as f64;
    let reset_us = a.window - elapsed;
    if estimate + cost <= limit {
        let mut expiry = None;
        if a.mode == Mode::Consume {
            c += a.cost;
            estimate += cost;
            (*idx, *prev, *cur) = (now_idx.max(*idx), p, c);
            expiry = Some(a.counter_ttl());
        }
        let raw = Raw {
            allowed: true,
            remaining: (limit - estimate).floor().max(0.0) as u64,
            reset_us,
            retry_us: 0,
        };
        return (raw, expiry);
    }
    let retry_us = if a.cost > a.limit {
        a.window
    } else {
        let avail = limit - cost - c as f64;
        if avail >= 0.0 {
            // The previous window's weight shrinks linearly: wait until it fits.
            let need = (window - avail * window / p as f64).ceil();
            (need as u64).saturating_sub(elapsed).max(1)
        } else {
            // Only the next window helps: this window's count becomes its shrinking "previous".
            let need = (window - (limit - cost) * window / c as f64)
                .ceil()
                .max(0.0);
            reset_us + need as u64
        }
    };
    let raw = Raw {
        allowed: false,
        remaining: (limit - estimate).floor().max(0.0) as u64,
        reset_us,
        retry_us,
    };
    (raw, None)
}

fn gcra(stored: &mut u64, a: &Args) -> (Raw, Option<u64>) {
    let t = a.interval();
    let tolerance = a.tolerance();
    let step = t.saturating_mul(a.cost);
    if a.mode == Mode::Refund {
        *stored = stored.saturating_sub(step);
        return (Raw::REFUNDED, None);
    }
    let tat = (*stored).max(a.now);
    let new_tat = tat + step;
    if new_tat <= a.now + tolerance {
        let mut expiry = None;
        let used = if a.mode == Mode::Consume {
            *stored = new_tat;
            expiry = Some(new_tat - a.now);
            new_tat
        } else {
            tat
        };
        let raw = Raw {
            allowed: true,
            remaining: (a.now + tolerance - used) / t,
            reset_us: used - a.now,
            retry_us: 0,
        };
        return (raw, expiry);
    }
    let retry_us = if step > tolerance {
        a.window
    } else {
        new_tat - tolerance - a.now
    };
    let raw = Raw {
        allowed: false,
        remaining: (a.now + tolerance).saturating_sub(tat) / t,
        reset_us: tat - a.now,
        retry_us,
    };
    (raw, None)
}
