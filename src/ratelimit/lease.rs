//! Quota leases: an instance reserves several units of a hot identity's quota in one Redis
//! decision and spends them in process, with no Redis command, until they run out or expire.
//!
//! **When.** Only request policies decided on Redis whose limit is at least [`MIN_LIMIT`], never
//! shadow policies, never the login limiter or [`check`](super::RateLimitHandle::check) (small
//! limits stay exact per request). Adaptive: an identity's first Redis decision on this instance
//! asks for one unit, as without leases, and its admission leaves a mark (lasting as a lease
//! would); an identity that comes back while the mark lives asks for [`k_max`] = `limit / 16`
//! units. At most one such ask per key is in flight per instance (`pending`); the requests
//! arriving meanwhile ask for one unit. Requests of one identity decided together (one burst,
//! before any answer) are one visit: none of them reserves.
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
//! **Bounds**, with `k = limit / 16` and `N` instances (see the README and
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

use super::{
    Algorithm,
    algo::{Mode, Sharded},
    lua::Ask,
};

/// Policies with smaller limits are never leased: each request is decided on Redis.
pub(crate) const MIN_LIMIT: u64 = 32;
/// Keys remembered per process at most (16 shards of 8192): beyond, new keys are not leased.
const MAX_KEYS_PER_SHARD: usize = 8192;
const SHARDS: usize = 16;

/// Units one reservation asks for at most: `limit / 16`, or 1 below [`MIN_LIMIT`].
pub(crate) fn k_max(limit: u64) -> u64 {
    if limit < MIN_LIMIT { 1 } else { limit / 16 }
}

#[derive(Debug)]
pub(crate) struct Lease {
    /// Units held, spendable until `expires`.
    units: u64,
    /// Microsecond at which the held units (and the mark) lapse.
    expires: u64,
    /// A reservation of several units for this key is in flight.
    pending: bool,
    /// `remaining` as Redis answered at the reservation (after it), for headers.
    remaining: u64,
    /// Microsecond of the reservation's `reset`.
    reset_at: u64,
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

    /// How many units to ask Redis for `key` (limit `limit`): 1 unless the identity came back
    /// (a mark of an admission decided on Redis for this instance lives) and no reservation of
    /// several is in flight; then [`k_max`], marked pending.
    pub(crate) fn want(&self, key: &str, limit: u64, now: u64) -> u64 {
        let k = k_max(limit);
        if k <= 1 {
            return 1;
        }
        self.0.with(key, |map| match map.get_mut(key) {
            Some(lease) if lease.expires > now && !lease.pending => {
                lease.pending = true;
                k
            }
            _ => 1,
        })
    }

    /// Settles a decision `ask` made on Redis at `now`: `granted` units when its request was
    /// admitted (one is the request's, the rest held), 0 when not; `remaining` and `reset_us` as
    /// Redis answered. Clears `pending`; an admission without a reservation leaves the mark
    /// that makes the identity's next decision a reservation (requests decided together, before
    /// any answer, are one visit).
    pub(crate) fn settle(&self, ask: &Ask, now: u64, granted: u64, remaining: u64, reset_us: u64) {
        if ask.lease <= 1 {
            if granted > 0 && ask.mode == Mode::Consume && !ask.shadow && k_max(ask.limit) > 1 {
                self.mark(&ask.key, expiry(ask.algorithm, ask.window, now), now);
            }
            return;
        }
        self.0.with(&ask.key, |map| {
            let Some(lease) = map.get_mut(&ask.key) else {
                return;
            };
            lease.pending = false;
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

    /// Leaves a mark for `key` lasting until `expires` (unless one lives), within the bound on
    /// keys.
    fn mark(&self, key: &str, expires: u64, now: u64) {
        self.0.with(key, |map| {
            if let Some(lease) = map.get_mut(key) {
                if lease.expires <= now && !lease.pending {
                    *lease = Lease::mark(expires);
                }
                return;
            }
            // A full shard takes no new mark (a mark only buys a later lease): scanning it here
            // would put up to 8192 entries of work on a request each time, for as long as many
            // identities stay live. The actor's periodic `sweep` frees lapsed entries.
            if map.len() < MAX_KEYS_PER_SHARD {
                map.insert(key.to_owned(), Lease::mark(expires));
            }
        });
    }

    /// Forgets lapsed leases and marks; answers how many.
    pub(crate) fn sweep(&self, now: u64) -> usize {
        self.0.retain(|lease| lease.expires > now || lease.pending)
    }
}

impl Lease {
    fn mark(expires: u64) -> Self {
        Self {
            units: 0,
            expires,
            pending: false,
            remaining: 0,
            reset_at: 0,
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

    /// A first visit asks 1 and leaves a mark; the next asks limit/16 (one at a time); the
    /// granted units minus the request's are spent one by one, then none; small limits never
    /// lease.
    #[test]
    fn marks_then_reserves_then_spends() {
        let leases = Leases::new();
        let now = 1_000_000;
        assert_eq!(leases.want("k", 100, now), 1);
        leases.settle(&ask("k", Algorithm::Gcra, 100, 1), now, 1, 99, 0);
        assert_eq!(leases.want("k", 100, now), 6);
        assert_eq!(leases.want("k", 100, now), 1, "one reservation in flight");
        leases.settle(&ask("k", Algorithm::Gcra, 100, 6), now, 6, 93, 0);
        assert_eq!(leases.held("k", now), 5);
        let spent: Vec<u64> = (0..5)
            .map(|_| leases.take("k", now).unwrap().remaining)
            .collect();
        assert_eq!(spent, [97, 96, 95, 94, 93]);
        assert!(leases.take("k", now).is_none());
        assert_eq!(leases.want("small", 31, now), 1);
        leases.settle(&ask("small", Algorithm::Gcra, 31, 1), now, 1, 30, 0);
        assert_eq!(leases.want("small", 31, now), 1);
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
            leases.settle(&ask(key, algorithm, 100, 1), now, 1, 99, 0);
            assert_eq!(leases.want(key, 100, now), 6);
            leases.settle(&ask(key, algorithm, 100, 6), now, 6, 93, 0);
            assert_eq!(leases.held(key, live_until - 1), 5, "{key}");
            assert_eq!(leases.held(key, live_until), 0, "{key}");
            assert!(leases.take(key, live_until).is_none(), "{key}");
        }
        leases.settle(&ask("d", Algorithm::Gcra, 100, 1), now, 1, 99, 0);
        assert_eq!(leases.want("d", 100, now), 6);
        leases.settle(&ask("d", Algorithm::Gcra, 100, 6), now, 0, 0, 0);
        assert_eq!(leases.held("d", now), 0);
        assert_eq!(leases.want("d", 100, now), 6, "no longer pending");
    }
}
