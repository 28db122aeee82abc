//! The three algorithms, in process. [`lua`](super::lua) holds the same arithmetic as a Redis
//! script; both take the same [`Ask`] and answer the same [`Decision`].

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

/// One decision asked of a store, for one policy and one key: what the in-process stores take
/// and what the Redis script takes (see [`lua`](super::lua)), times in microseconds.
#[derive(Debug, Clone)]
pub(crate) struct Ask {
    /// The storage key (the identity is its hash tag).
    pub(crate) key: String,
    pub(crate) algorithm: Algorithm,
    /// Window in microseconds.
    pub(crate) window: u64,
    pub(crate) limit: u64,
    pub(crate) cost: u64,
    /// A shadow policy's denial does not stop the request.
    pub(crate) shadow: bool,
    /// Spend when allowed (`Consume`) or only look (`Peek`).
    pub(crate) mode: Mode,
    /// Units wanted for a quota lease (a `Consume` of cost 1); 1: no lease.
    pub(crate) lease: u64,
}

/// What the script needs of a decision's policy: two asks with the same share one entry.
pub(crate) type PolicyArgs = (Algorithm, u64, u64, bool);

impl Ask {
    /// The policy as the script sees it.
    pub(crate) fn policy(&self) -> PolicyArgs {
        (self.algorithm, self.window, self.limit, self.shadow)
    }

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

    /// When the state a decision writes at `now` may be forgotten, in microseconds from `now`.
    /// The log and GCRA never outlive their window; the counter's current count still weighs on
    /// the next fixed window, so it lives until that one ends.
    pub(crate) fn counter_ttl(&self, now: u64) -> u64 {
        (now / self.window + 2) * self.window - now
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
    /// A store's answer, in microseconds: `reset_us` until more quota comes, `retry_us` until a
    /// denied request would be admitted.
    pub(crate) fn new(
        allowed: bool,
        limit: u64,
        remaining: u64,
        reset_us: u64,
        retry_us: u64,
    ) -> Self {
        Self {
            allowed,
            limit,
            remaining: remaining.min(limit),
            reset: Duration::from_micros(reset_us.max(retry_us)),
            retry_after: if allowed {
                Duration::ZERO
            } else {
                Duration::from_micros(retry_us.max(1))
            },
        }
    }

    /// The script's four numbers for one decision (see [`lua`](super::lua)).
    pub(crate) fn from_reply(reply: &[i64], limit: u64) -> Option<Self> {
        let get = |i: usize| reply.get(i).map(|v| u64::try_from(*v).unwrap_or(0));
        Some(Self::new(get(0)? >= 1, limit, get(1)?, get(2)?, get(3)?))
    }

    /// This decision as reported for a policy of `limit` (the store decided on the limit
    /// clamped to its bounds).
    pub(crate) fn shown(mut self, limit: u64) -> Self {
        self.limit = limit;
        self.remaining = self.remaining.min(limit);
        self
    }

    /// The reset in microseconds.
    pub(crate) fn reset_us(&self) -> u64 {
        u64::try_from(self.reset.as_micros()).unwrap_or(u64::MAX)
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
    Counter {
        idx: u64,
        prev: u64,
        cur: u64,
    },
    /// The arrival time, and the latest time a decision on it was made at (see `gcra`).
    Gcra {
        tat: u64,
        seen: u64,
    },
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

    /// Decides `ask` at `now` in `mode` (its own mode, or a refund of it).
    pub(crate) fn decide(&self, ask: &Ask, now: u64, mode: Mode) -> Decision {
        let a = &Step { ask, now, mode };
        let key = ask.key.as_str();
        self.slots.with(key, |map| {
            if map.get(key).is_some_and(|s| s.expires_at <= a.now) {
                map.remove(key);
            }
            match map.get_mut(key) {
                Some(slot) => {
                    let (decision, expiry) = step(&mut slot.state, a);
                    if let Some(ttl) = expiry {
                        slot.expires_at = a.now + ttl;
                    }
                    decision
                }
                None => {
                    let mut state = match a.ask.algorithm {
                        Algorithm::SlidingCounter => State::Counter {
                            idx: a.now / a.ask.window,
                            prev: 0,
                            cur: 0,
                        },
                        Algorithm::Gcra => State::Gcra { tat: 0, seen: 0 },
                        _ => State::Log(VecDeque::new()),
                    };
                    let (decision, expiry) = step(&mut state, a);
                    if let Some(ttl) = expiry {
                        map.insert(
                            key.to_owned(),
                            Slot {
                                state,
                                expires_at: a.now + ttl,
                            },
                        );
                    }
                    decision
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

/// One decision being made: the ask, the time and the mode.
struct Step<'a> {
    ask: &'a Ask,
    now: u64,
    mode: Mode,
}

/// Runs one decision on `state`; answers the result and, when state was written, its new TTL.
fn step(state: &mut State, a: &Step<'_>) -> (Decision, Option<u64>) {
    match state {
        State::Log(log) => sliding_log(log, a),
        State::Counter { idx, prev, cur } => sliding_counter(idx, prev, cur, a),
        State::Gcra { tat, seen } => gcra(tat, seen, a),
    }
}

fn sliding_log(log: &mut VecDeque<u64>, a: &Step<'_>) -> (Decision, Option<u64>) {
    let cutoff = a.now.saturating_sub(a.ask.window);
    while log.front().is_some_and(|t| *t <= cutoff) {
        log.pop_front();
    }
    if a.mode == Mode::Refund {
        for _ in 0..a.ask.cost {
            if let Some(i) = log.iter().rposition(|t| *t == a.now) {
                log.remove(i);
            }
        }
        return (Decision::new(true, a.ask.limit, 0, 0, 0), None);
    }
    let mut count = log.len() as u64;
    let reset = |log: &VecDeque<u64>| log.front().map_or(0, |t| t + a.ask.window - a.now);
    if count + a.ask.cost <= a.ask.limit {
        let mut expiry = None;
        if a.mode == Mode::Consume {
            let at = log.partition_point(|t| *t <= a.now);
            for _ in 0..a.ask.cost {
                log.insert(at, a.now);
            }
            count += a.ask.cost;
            expiry = Some(a.ask.window);
        }
        let decision = Decision::new(true, a.ask.limit, a.ask.limit - count, reset(log), 0);
        return (decision, expiry);
    }
    let retry_us = if a.ask.cost > a.ask.limit {
        a.ask.window
    } else {
        // The oldest entries leave one by one; wait until enough have left for `cost`.
        let need = usize::try_from(count + a.ask.cost - a.ask.limit).unwrap_or(usize::MAX);
        log.get(need - 1)
            .map_or(a.ask.window, |t| t + a.ask.window - a.now)
    };
    let decision = Decision::new(
        false,
        a.ask.limit,
        a.ask.limit.saturating_sub(count),
        reset(log),
        retry_us,
    );
    (decision, None)
}

fn sliding_counter(
    idx: &mut u64,
    prev: &mut u64,
    cur: &mut u64,
    a: &Step<'_>,
) -> (Decision, Option<u64>) {
    let now_idx = a.now / a.ask.window;
    let elapsed = a.now % a.ask.window;
    if a.mode == Mode::Refund {
        if *idx == now_idx {
            *cur = cur.saturating_sub(a.ask.cost);
        } else if *idx == now_idx + 1 {
            *prev = prev.saturating_sub(a.ask.cost);
        }
        return (Decision::new(true, a.ask.limit, 0, 0, 0), None);
    }
    // A decision whose time reads in a fixed window before the state's (a caller that read its
    // clock before one already decided) is made at the start of the state's window, as on Redis.
    let (now_idx, elapsed) = if *idx > now_idx {
        (*idx, 0)
    } else {
        (now_idx, elapsed)
    };
    let (mut p, mut c) = (*prev, *cur);
    if *idx < now_idx {
        p = if *idx + 1 == now_idx { c } else { 0 };
        c = 0;
    }
    let window = a.ask.window as f64;
    let (limit, cost) = (a.ask.limit as f64, a.ask.cost as f64);
    let mut estimate = p as f64 * ((window - elapsed as f64) / window) + c as f64;
    let reset_us = a.ask.window - elapsed;
    if estimate + cost <= limit {
        let mut expiry = None;
        if a.mode == Mode::Consume {
            c += a.ask.cost;
            estimate += cost;
            (*idx, *prev, *cur) = (now_idx.max(*idx), p, c);
            expiry = Some(a.ask.counter_ttl(a.now));
        }
        let decision = Decision::new(
            true,
            a.ask.limit,
            (limit - estimate).floor().max(0.0) as u64,
            reset_us,
            0,
        );
        return (decision, expiry);
    }
    let retry_us = if a.ask.cost > a.ask.limit {
        a.ask.window
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
    let decision = Decision::new(
        false,
        a.ask.limit,
        (limit - estimate).floor().max(0.0) as u64,
        reset_us,
        retry_us,
    );
    (decision, None)
}

/// GCRA on `stored` (the arrival time). A caller whose time reads before `seen` (it read its clock
/// before one already decided) is decided at `seen`, as on Redis: the order callers reach the
/// store in never costs a unit.
fn gcra(stored: &mut u64, seen: &mut u64, a: &Step<'_>) -> (Decision, Option<u64>) {
    let t = a.ask.interval();
    let tolerance = a.ask.tolerance();
    let step = t.saturating_mul(a.ask.cost);
    if a.mode == Mode::Refund {
        *stored = stored.saturating_sub(step);
        return (Decision::new(true, a.ask.limit, 0, 0, 0), None);
    }
    let now = a.now.max(*seen);
    let tat = (*stored).max(now);
    let new_tat = tat + step;
    if new_tat <= now + tolerance {
        let mut expiry = None;
        let used = if a.mode == Mode::Consume {
            *stored = new_tat;
            *seen = now;
            expiry = Some(new_tat - a.now);
            new_tat
        } else {
            tat
        };
        let decision = Decision::new(
            true,
            a.ask.limit,
            (now + tolerance - used) / t,
            used - now,
            0,
        );
        return (decision, expiry);
    }
    let retry_us = if step > tolerance {
        a.ask.window
    } else {
        new_tat - tolerance - now
    };
    let decision = Decision::new(
        false,
        a.ask.limit,
        (now + tolerance).saturating_sub(tat) / t,
        tat - now,
        retry_us,
    );
    (decision, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    const START: u64 = 1_700_000_040_000_000;
    const MS: u64 = 1_000;

    /// Admissions of `steps`, each `(now, requests)` decided one by one on one store.
    fn admitted(algorithm: Algorithm, window: u64, steps: &[(u64, u64)]) -> Vec<u64> {
        let store = MemoryCounters::new();
        let ask = Ask {
            key: "k".to_owned(),
            algorithm,
            window,
            limit: 20,
            cost: 1,
            shadow: false,
            mode: Mode::Consume,
            lease: 1,
        };
        steps
            .iter()
            .map(|&(now, n)| {
                (0..n)
                    .filter(|_| store.decide(&ask, now, Mode::Consume).allowed)
                    .count() as u64
            })
            .collect()
    }

    /// As on Redis (`tests/ratelimit/fleet.rs`, `a_late_clock_takes_the_last_unit`): a caller
    /// whose time reads 1 ms before the last decision's still gets GCRA's 20th unit. The old
    /// code answered [19, 0, 0, 1].
    #[test]
    fn gcra_decides_a_late_clock_at_the_latest_time() {
        let steps = [(START + MS, 19), (START, 1), (START, 1), (START + MS, 1)];
        assert_eq!(
            admitted(Algorithm::Gcra, 3_600_000_000, &steps),
            [19, 1, 0, 0]
        );
    }

    /// As on Redis (`a_late_clock_cannot_reopen_a_counter_window`): a caller whose time reads in
    /// the fixed window before the state's is decided at the start of the state's window. The old
    /// code answered [10, 10, 9, 0].
    #[test]
    fn counter_decides_a_late_clock_in_the_latest_window() {
        let edge = START + 20_000_000;
        let steps = [
            (edge - MS, 10),
            (edge + MS, 12),
            (edge - MS, 10),
            (edge + MS, 1),
        ];
        assert_eq!(
            admitted(Algorithm::SlidingCounter, 20_000_000, &steps),
            [10, 10, 0, 0]
        );
    }
}
