//! Quota leases: an instance reserves several units of an identity's quota in one Redis decision
//! and spends them in process, with no Redis command, until they run out or expire.
//!
//! **When.** Only request policies decided on Redis whose limit is at least [`MIN_LIMIT`], never
//! shadow policies, never the login limiter or [`check`](super::RateLimitHandle::check) (small
//! limits stay exact per request). An identity's Redis decision on this instance reserves
//! [`k_first`] = `limit / 16` units, its first one included; when the identity has spent every
//! unit of a reservation here before it lapsed, the next asks for twice as many, up to
//! [`k_max`] = `limit / 8` (100 / 60 s: 6, then 12); one that lapsed with units left starts again
//! at `limit / 16`. A client making *r* requests to one instance costs about *r* / 12 decisions
//! there, and one making a single request strands at most `limit / 16 - 1` units. At most one
//! reservation per key is in flight per instance (`pending`); the requests of that identity
//! arriving meanwhile ask for one unit each. Beyond [`MAX_KEYS_PER_SHARD`] remembered keys per
//! shard, new identities ask for one unit (no lease) until the periodic `sweep` frees lapsed
//! entries: what a caller with many identities can make this process hold is bounded.
//!
//! Why from the first request, and why growing (it used to be one unit on the first visit, then
//! `limit / 16`): the shipped policy's benchmark, 10,000 clients behind a proxy, spent one Redis
//! decision on most requests that way; each decision costs Redis ~10 µs of CPU on the 2-core
//! bench machine (a `SET ... PX` from Lua alone ~5), so the target of ≤ 3 µs per request needs
//! fewer than one decision in 6 requests. `benches/ratelimit.rs` prints the share admitted from
//! leases and Redis's CPU per request.
//!
//! **Reservation.** The script grants `g = min(k, available)` units atomically (at least one when
//! the request is admitted, none when denied: a denied request never consumes), written as `g`
//! admissions in that algorithm's state at the time of the decision. One unit is the request's;
//! `g - 1` are held here. Every instance reserves through the same atomic check, so the units
//! reserved in a window never exceed what the algorithm admits, and admitted requests never
//! exceed reserved units.
//!
//! **Expiry.** Held units are dropped (never spent) when the state that accounts for them can be
//! forgotten by Redis: sliding log and GCRA, one window after the reservation; sliding counter,
//! at the end of the fixed window the reservation was counted in. Unspent units are not given
//! back (a refund would cost the Redis command a lease saves); they return with the window.
//!
//! **Bounds**, with `k = limit / 8` (the largest reservation) and `N` instances (see the README and
//! `tests/ratelimit.rs::leases_*`):
//! - *More than the limit*: never within one window from a fresh start (every admission was
//!   reserved by the atomic check). Sliding counter: never at all (its estimate over spends is at
//!   most its estimate over reservations, each spend happening in the fixed window it was
//!   reserved in). Sliding log and GCRA: across windows, units reserved before an interval and
//!   spent in it add at most what was held at its start, `N · (k - 1)`, to the algorithm's own
//!   bound (log: `limit` per any window; GCRA: `limit + w / interval` in any span `w`).
//! - *Fewer than the limit*: units held unspent by other instances, at most `(N - 1) · (k - 1)`
//!   per identity at any time (for a counter until its fixed window ends; log and GCRA until the
//!   lease expires, GCRA regenerating them meanwhile at its rate).

use super::{Algorithm, algo::Sharded, lua::Ask};

/// Policies with smaller limits are never leased: each request is decided on Redis.
pub(crate) const MIN_LIMIT: u64 = 32;
/// Keys remembered per process at most (16 shards of 8192): beyond, new keys are not leased.
const MAX_KEYS_PER_SHARD: usize = 8192;
const SHARDS: usize = 16;

/// Units a key's first reservation asks for (and any after one that lapsed with units left):
/// `limit / 16`, or 1 below [`MIN_LIMIT`].
pub(crate) fn k_first(limit: u64) -> u64 {
    if limit < MIN_LIMIT { 1 } else { limit / 16 }
}

/// Units one reservation asks for at most: `limit / 8`, or 1 below [`MIN_LIMIT`].
pub(crate) fn k_max(limit: u64) -> u64 {
    if limit < MIN_LIMIT { 1 } else { limit / 8 }
}

#[derive(Debug)]
pub(crate) struct Lease {
    /// Units held, spendable until `expires`.
    units: u64,
    /// Microsecond at which the held units lapse (0 before the first grant).
    expires: u64,
    /// A reservation of several units for this key is in flight.
    pending: bool,
    /// `remaining` as Redis answered at the reservation (after it), for headers.
    remaining: u64,
    /// Microsecond of the reservation's `reset`.
    reset_at: u64,
    /// Units the last reservation asked for.
    asked: u64,
    /// Every unit of the last reservation was spent here before it lapsed: the next one asks
    /// for twice as many (up to [`k_max`]).
    spent_all: bool,
}

/// One process's leases (all workers share them: one lease per key and instance).
pub(crate) struct Leases(Sharded<Lease>);

/// A unit spent from a lease: what the request's headers report.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Spent {
    pub(crate) remaining: u64,
    pub(crate) reset_us: u64,
}

impl Leases {
    pub(crate) fn new() -> Self {
        Self(Sharded::new(SHARDS))
    }

    /// Takes one held unit of `key`, if any is live.
    pub(crate) fn take(&self, key: &str, now: u64) -> Option<Spent> {
        self.0.with(key, |map| {
            let lease = map.get_mut(key)?;
            if lease.units == 0 || lease.expires <= now {
                return None;
            }
            lease.units -= 1;
            lease.remaining = lease.remaining.saturating_sub(1);
            lease.spent_all = lease.units == 0;
            Some(Spent {
                remaining: lease.remaining,
                reset_us: lease.reset_at.saturating_sub(now),
            })
        })
    }

    /// Gives back a unit [`take`](Self::take) answered (the request was denied by another
    /// policy).
    pub(crate) fn give_back(&self, key: &str) {
        self.0.with(key, |map| {
            if let Some(lease) = map.get_mut(key) {
                lease.units += 1;
                lease.remaining += 1;
                lease.spent_all = false;
            }
        });
    }

    /// Units of `key` held and live now.
    pub(crate) fn held(&self, key: &str, now: u64) -> u64 {
        self.0.with(key, |map| {
            map.get(key)
                .filter(|lease| lease.expires > now)
                .map_or(0, |lease| lease.units)
        })
    }

    /// How many units to ask Redis for `key` (limit `limit`), marked pending: [`k_first`], or
    /// twice the last reservation (up to [`k_max`]) when all of it was spent here; 1 while a
    /// reservation of several is in flight for it or when this process remembers too many keys.
    pub(crate) fn want(&self, key: &str, limit: u64) -> u64 {
        let k = k_first(limit);
        if k <= 1 {
            return 1;
        }
        self.0.with(key, |map| {
            if let Some(lease) = map.get_mut(key) {
                if lease.pending {
                    return 1;
                }
                lease.pending = true;
                if lease.spent_all {
                    lease.asked = (lease.asked * 2).clamp(k, k_max(limit));
                } else {
                    lease.asked = k;
                }
                return lease.asked;
            }
            // A full shard takes no new key (a lease only saves Redis commands): scanning it here
            // would put up to 8192 entries of work on a request each time, for as long as many
            // identities stay live. The actor's periodic `sweep` frees lapsed entries.
            if map.len() >= MAX_KEYS_PER_SHARD {
                return 1;
            }
            map.insert(key.to_owned(), Lease::pending(k));
            k
        })
    }

    /// Settles a decision `ask` made on Redis at `now`: `granted` units when its request was
    /// admitted (one is the request's, the rest held), 0 when not; `remaining` and `reset_us` as
    /// Redis answered. Clears `pending`.
    pub(crate) fn settle(&self, ask: &Ask, now: u64, granted: u64, remaining: u64, reset_us: u64) {
        if ask.lease <= 1 {
            return;
        }
        self.0.with(&ask.key, |map| {
            let Some(lease) = map.get_mut(&ask.key) else {
                return;
            };
            lease.pending = false;
            lease.spent_all = false;
            if granted > 1 {
                let expires = expiry(ask.algorithm, ask.window, now);
                if lease.expires <= now || lease.units == 0 {
                    lease.units = 0;
                    lease.expires = expires;
                } else {
                    // Units still held lapse with their own reservation's state: never later.
                    lease.expires = lease.expires.min(expires);
                }
                lease.units += granted - 1;
                lease.remaining = remaining + lease.units;
                lease.reset_at = now + reset_us;
            }
        });
    }

    /// Forgets lapsed leases (none pending); answers how many.
    pub(crate) fn sweep(&self, now: u64) -> usize {
        self.0.retain(|lease| lease.expires > now || lease.pending)
    }
}

impl Lease {
    /// A key's entry while its first reservation (of `asked` units) is in flight.
    fn pending(asked: u64) -> Self {
        Self {
            units: 0,
            expires: 0,
            pending: true,
            remaining: 0,
            reset_at: 0,
            asked,
            spent_all: false,
        }
    }
}

/// When units reserved at `now` lapse: see the module docs.
fn expiry(algorithm: Algorithm, window: u64, now: u64) -> u64 {
    match algorithm {
        Algorithm::SlidingCounter => (now / window + 1) * window,
        _ => now + window,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ratelimit::algo::Mode;

    fn ask(key: &str, algorithm: Algorithm, limit: u64, lease: u64) -> Ask {
        Ask {
            key: key.to_owned(),
            algorithm,
            window: 60_000_000,
            limit,
            cost: 1,
            shadow: false,
            mode: Mode::Consume,
            lease,
        }
    }

    /// A first visit reserves limit/16 (one reservation in flight per key); the granted units
    /// minus the request's are spent one by one, then none; small limits never lease.
    #[test]
    fn reserves_then_spends() {
        let leases = Leases::new();
        let now = 1_000_000;
        assert_eq!(leases.want("k", 100), 6);
        assert_eq!(leases.want("k", 100), 1, "one reservation in flight");
        leases.settle(&ask("k", Algorithm::Gcra, 100, 1), now, 1, 99, 0);
        assert_eq!(
            leases.want("k", 100),
            1,
            "a one-unit answer settles nothing"
        );
        leases.settle(&ask("k", Algorithm::Gcra, 100, 6), now, 6, 93, 0);
        assert_eq!(leases.held("k", now), 5);
        let spent: Vec<u64> = (0..5)
            .map(|_| leases.take("k", now).unwrap().remaining)
            .collect();
        assert_eq!(spent, [97, 96, 95, 94, 93]);
        assert!(leases.take("k", now).is_none());
        assert_eq!(
            leases.want("k", 100),
            12,
            "the next reservation, twice as large"
        );
        assert_eq!(leases.want("small", 31), 1);
        assert_eq!(leases.want("small", 31), 1);
        assert_eq!(leases.held("small", now), 0);
    }

    /// A reservation spent in full doubles the next (6, 12, then 12: limit / 8 at most); one that
    /// lapsed with units left, or whose units a denied request gave back, starts again at 6.
    #[test]
    fn reservations_grow_while_spent_in_full() {
        let leases = Leases::new();
        let now = 1_000_000;
        let reserve = |now: u64| {
            let k = leases.want("k", 100);
            leases.settle(&ask("k", Algorithm::Gcra, 100, k), now, k, 50, 0);
            k
        };
        let spend_all = |now: u64| while leases.take("k", now).is_some() {};
        assert_eq!(reserve(now), 6);
        spend_all(now);
        assert_eq!(reserve(now), 12);
        spend_all(now);
        assert_eq!(reserve(now), 12, "limit / 8 at most");
        assert_eq!(leases.held("k", now), 11);
        let later = now + 60_000_000;
        assert_eq!(leases.held("k", later), 0, "lapsed with 11 left");
        assert_eq!(reserve(later), 6);
        spend_all(later);
        assert_eq!(reserve(later), 12);
        leases.take("k", later).unwrap();
        leases.give_back("k");
        while leases.held("k", later) > 0 {
            leases.take("k", later).unwrap();
        }
        assert_eq!(reserve(later), 12, "spent in full after the give-back");
        assert_eq!(leases.want("small", 31), 1, "never below MIN_LIMIT");
    }

    /// A shard holding its bound of keys reserves for no new key (asks one unit) until the sweep
    /// frees lapsed entries; keys it holds still reserve.
    #[test]
    fn full_shards_take_no_new_keys() {
        let leases = Leases::new();
        let now = 1_000_000;
        let keys: Vec<String> = (0..SHARDS * MAX_KEYS_PER_SHARD * 2)
            .map(|i| format!("k{i}"))
            .collect();
        let reserved = keys.iter().filter(|key| leases.want(key, 100) == 6).count();
        assert_eq!(reserved, SHARDS * MAX_KEYS_PER_SHARD);
        for key in &keys {
            leases.settle(&ask(key, Algorithm::Gcra, 100, 6), now, 6, 94, 0);
        }
        assert_eq!(leases.want(&keys[0], 100), 6, "a remembered key");
        leases.settle(&ask(&keys[0], Algorithm::Gcra, 100, 6), now, 6, 88, 0);
        let fresh = "fresh".to_owned();
        assert_eq!(leases.want(&fresh, 100), 1);
        assert_eq!(leases.sweep(now + 60_000_000), SHARDS * MAX_KEYS_PER_SHARD);
        assert_eq!(leases.want(&fresh, 100), 6);
    }

    /// Held units lapse one window after the reservation (log, GCRA) or at the end of the
    /// counter's fixed window; a denied reservation holds nothing.
    #[test]
    fn units_lapse_with_their_state() {
        let leases = Leases::new();
        let now = 60_000_000 * 10 + 59_000_000;
        for (key, algorithm, live_until) in [
            ("g", Algorithm::Gcra, now + 60_000_000),
            ("l", Algorithm::SlidingLog, now + 60_000_000),
            ("c", Algorithm::SlidingCounter, 60_000_000 * 11),
        ] {
            assert_eq!(leases.want(key, 100), 6);
            leases.settle(&ask(key, algorithm, 100, 6), now, 6, 93, 0);
            assert_eq!(leases.held(key, live_until - 1), 5, "{key}");
            assert_eq!(leases.held(key, live_until), 0, "{key}");
            assert!(leases.take(key, live_until).is_none(), "{key}");
        }
        assert_eq!(leases.want("d", 100), 6);
        leases.settle(&ask("d", Algorithm::Gcra, 100, 6), now, 0, 0, 0);
        assert_eq!(leases.held("d", now), 0);
        assert_eq!(leases.want("d", 100), 6, "no longer pending");
    }
}
