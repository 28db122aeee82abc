//! Quota leases: an instance reserves several units of an identity's quota in one Redis decision
//! and spends them in process, with no Redis command, while they stay within the algorithm's own
//! bound.
//!
//! **When.** Only request policies decided on Redis with GCRA or the sliding counter whose limit
//! is at least [`MIN_LIMIT`] ([`leasable`]); never the sliding log (its promise is "at most
//! `limit` in any window": a unit reserved at one time and spent later would carry the
//! reservation's timestamp, and a log entry per reserved unit would make one request write many
//! entries), never shadow policies, never the login limiter or
//! [`check`](super::RateLimitHandle::check) (small limits stay exact per request). An
//! identity's Redis decision on this instance reserves [`k_first`] = `limit / 16` units, its
//! first one included; when the identity has spent every unit of a reservation here before it
//! lapsed, the next asks for twice as many, up to [`k_max`] = `limit / 8` (100 / 60 s: 6, then
//! 12); one that lapsed with units left starts again at `limit / 16`. At most one reservation per
//! key is in flight per instance (`pending`); the requests of that identity arriving meanwhile
//! ask for one unit each. Beyond [`MAX_KEYS_PER_SHARD`] remembered keys per shard, new
//! identities ask for one unit (no lease) until the periodic `sweep` frees lapsed entries: what a
//! caller with many identities can make this process hold is bounded.
//!
//! Why leases at all: the shipped policy's benchmark, 10,000 clients behind a proxy, spends one
//! Redis decision per request without them; each decision costs Redis ~10 µs of CPU on the 2-core
//! bench machine. `benches/ratelimit.rs` prints the share admitted from leases and Redis's CPU per
//! request.
//!
//! **Reservation.** The script grants `g = min(k, available)` units atomically (at least one when
//! the request is admitted, none when denied: a denied request never consumes), written as `g`
//! admissions in that algorithm's state at the time of the decision. One unit is the request's;
//! `g - 1` are held here.
//!
//! **How long a held unit lives** is what keeps the bounds, whatever the number of instances:
//! - *GCRA* gives every admitted unit its own slot of one emission interval `T` on the key's
//!   timeline (the slots of all decisions, leased or not, never overlap: each starts at or after
//!   the previous arrival time), and admits a unit at time `s` only if its slot lies within
//!   `[s, s + L·T]`. A direct decision always does; a held unit does while its slot has not
//!   started. So the `g - 1` held units are the reservation's last slots, the first spent first,
//!   and a unit lapses when its slot starts, i.e. when the store would have regained it: a lease
//!   of 6 units of 100 / 60 s made on a full bucket lapses one unit every 0.6 s. Every admission
//!   thus owns a distinct slot inside `[s, s + L·T]`, and any span `t` holds at most
//!   `(t + L·T) / T = L + t / T ≤ L + t·L/W` admissions: a burst at most `L`.
//! - *Sliding counter*: units reserved in a fixed window lapse at its end. Spends in a fixed window
//!   never exceed the reservations counted in it, so the counter's estimate over actual admissions
//!   (`previous · (W - elapsed) / W + current`) is at most its estimate over reservations, which
//!   the atomic check kept at most `L` at the last reservation and which only shrinks until the
//!   next one: at every admission the estimate stays at most `L`, as on one instance.
//!
//! Unspent units are not given back (a refund would cost the Redis command a lease saves): the
//! others may admit up to `(N - 1) · (k_max - 1)` fewer per identity while they are held (`N`
//! instances), never more. `tests/ratelimit/fleet.rs` holds the tests at the edges.

use super::{
    Algorithm, Decision,
    algo::{Ask, Sharded},
};

/// Policies with smaller limits are never leased: each request is decided on Redis.
pub(crate) const MIN_LIMIT: u64 = 32;
/// Keys remembered per process at most (16 shards of 8192): beyond, new keys are not leased.
const MAX_KEYS_PER_SHARD: usize = 8192;
const SHARDS: usize = 16;

/// Whether a policy's requests reserve leases: GCRA and the sliding counter, enforcing, limit at
/// least [`MIN_LIMIT`]. Never the sliding log.
pub(crate) fn leasable(algorithm: Algorithm, limit: u64, shadow: bool) -> bool {
    !shadow && limit >= MIN_LIMIT && algorithm != Algorithm::SlidingLog
}

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
    /// Units held (some may have lapsed: see [`live`](Self::live)).
    units: u64,
    /// Microsecond from which no held unit may be spent (0 before the first grant): the
    /// counter's fixed-window end; GCRA's end of the reservation's last slot.
    expires: u64,
    /// GCRA's emission interval: the held units are the last `units` slots before `expires`,
    /// each spendable until its slot starts. 0 for the counter (every unit until `expires`).
    interval: u64,
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

impl Leases {
    pub(crate) fn new() -> Self {
        Self(Sharded::new(SHARDS))
    }

    /// Takes one held unit of `key` (of a policy of `limit`), if any is live at `now`: the
    /// admission its request's headers report.
    pub(crate) fn take(&self, key: &str, now: u64, limit: u64) -> Option<Decision> {
        self.0.with(key, |map| {
            let lease = map.get_mut(key)?;
            let live = lease.live(now);
            if live == 0 {
                return None;
            }
            // Units whose slot has started are gone for good; the first live one is spent.
            lease.units = live - 1;
            lease.remaining = lease.remaining.saturating_sub(1);
            lease.spent_all = lease.units == 0;
            let reset_us = lease.reset_at.saturating_sub(now);
            Some(Decision::new(true, limit, lease.remaining, reset_us, 0))
        })
    }

    /// Gives back a unit [`take`](Self::take) answered (the request was denied by another
    /// policy): it is the first held one again, and lapses as it would have.
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
        self.0
            .with(key, |map| map.get(key).map_or(0, |lease| lease.live(now)))
    }

    /// How many units to ask Redis for `key` (limit `limit`), marked pending: [`k_first`], or
    /// twice the last reservation (up to [`k_max`]) when all of it was spent here; 1 while a
    /// reservation of several is in flight for it or when this process remembers too many keys.
    /// The caller asks only for [`leasable`] policies.
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
    /// Redis answered (GCRA: `reset_us` is the end of the reservation's last slot). Clears
    /// `pending`.
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
                let (expires, interval) = match ask.algorithm {
                    Algorithm::Gcra => (now + reset_us, ask.interval()),
                    _ => ((now / ask.window + 1) * ask.window, 0),
                };
                // Units still held here from an earlier reservation (a unit given back meanwhile)
                // keep their place only on the counter in the same fixed window; GCRA's sit in
                // earlier slots than the new ones and are dropped (never spent late).
                let keep = if interval == 0 && lease.expires == expires {
                    lease.live(now)
                } else {
                    0
                };
                lease.units = keep + granted - 1;
                lease.expires = expires;
                lease.interval = interval;
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
            interval: 0,
            pending: true,
            remaining: 0,
            reset_at: 0,
            asked,
            spent_all: false,
        }
    }

    /// Units spendable at `now`: none from `expires`; on GCRA only those whose slot has not
    /// started (the last `(expires - now) / interval` slots).
    fn live(&self, now: u64) -> u64 {
        if self.expires <= now {
            return 0;
        }
        // No interval (the counter): every unit lives until `expires`.
        (self.expires - now)
            .checked_div(self.interval)
            .map_or(self.units, |slots| self.units.min(slots))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ratelimit::algo::Mode;

    /// 100 / 60 s: GCRA's emission interval, 0.6 s.
    const T: u64 = 600_000;

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

    /// Settles a GCRA reservation of `granted` units made at `now` on a full bucket (Redis
    /// answers the end of its last slot, `granted` intervals on).
    fn grant(leases: &Leases, key: &str, asked: u64, granted: u64, now: u64) {
        let ask = ask(key, Algorithm::Gcra, 100, asked);
        leases.settle(&ask, now, granted, 100 - granted, granted * T);
    }

    /// A first visit reserves limit/16 (one reservation in flight per key); the granted units
    /// minus the request's are spent one by one, then none; small limits and the log never lease.
    #[test]
    fn reserves_then_spends() {
        let leases = Leases::new();
        let now = 1_000_000;
        assert_eq!(leases.want("k", 100), 6);
        assert_eq!(leases.want("k", 100), 1, "one reservation in flight");
        grant(&leases, "k", 1, 1, now);
        assert_eq!(
            leases.want("k", 100),
            1,
            "a one-unit answer settles nothing"
        );
        grant(&leases, "k", 6, 6, now);
        assert_eq!(leases.held("k", now), 5);
        let spent: Vec<u64> = (0..5)
            .map(|_| leases.take("k", now, 100).unwrap().remaining)
            .collect();
        assert_eq!(spent, [98, 97, 96, 95, 94]);
        assert!(leases.take("k", now, 100).is_none());
        assert_eq!(
            leases.want("k", 100),
            12,
            "the next reservation, twice as large"
        );
        assert_eq!(leases.want("small", 31), 1);
        assert_eq!(leases.want("small", 31), 1);
        assert_eq!(leases.held("small", now), 0);
        assert!(!leasable(Algorithm::SlidingLog, 1000, false));
        assert!(!leasable(Algorithm::Gcra, 1000, true));
        assert!(!leasable(Algorithm::Gcra, 31, false));
        assert!(leasable(Algorithm::Gcra, 32, false));
        assert!(leasable(Algorithm::SlidingCounter, 32, false));
    }

    /// A reservation spent in full doubles the next (6, 12, then 12: limit / 8 at most); one that
    /// lapsed with units left, or whose units a denied request gave back, starts again at 6.
    #[test]
    fn reservations_grow_while_spent_in_full() {
        let leases = Leases::new();
        let now = 1_000_000;
        let reserve = |now: u64| {
            let k = leases.want("k", 100);
            grant(&leases, "k", k, k, now);
            k
        };
        let spend_all = |now: u64| while leases.take("k", now, 100).is_some() {};
        assert_eq!(reserve(now), 6);
        spend_all(now);
        assert_eq!(reserve(now), 12);
        spend_all(now);
        assert_eq!(reserve(now), 12, "limit / 8 at most");
        assert_eq!(leases.held("k", now), 11);
        let later = now + 12 * T;
        assert_eq!(leases.held("k", later), 0, "lapsed with 11 left");
        assert_eq!(reserve(later), 6);
        spend_all(later);
        assert_eq!(reserve(later), 12);
        leases.take("k", later, 100).unwrap();
        leases.give_back("k");
        while leases.held("k", later) > 0 {
            leases.take("k", later, 100).unwrap();
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
            grant(&leases, key, 6, 6, now);
        }
        assert_eq!(leases.want(&keys[0], 100), 6, "a remembered key");
        grant(&leases, &keys[0], 6, 6, now);
        let fresh = "fresh".to_owned();
        assert_eq!(leases.want(&fresh, 100), 1);
        assert_eq!(leases.sweep(now + 6 * T), SHARDS * MAX_KEYS_PER_SHARD);
        assert_eq!(leases.want(&fresh, 100), 6);
    }

    /// GCRA's held units lapse one by one as their slots start (the store regains them): a
    /// reservation of 6 on a full bucket at `now` holds units whose slots start at now + T, ..,
    /// now + 5T, each spendable until then; one made on a bucket already drawn (its slots later)
    /// lives longer. A counter's units live until the end of their fixed window. A denied
    /// reservation holds nothing.
    #[test]
    fn units_lapse_when_the_store_regains_them() {
        let leases = Leases::new();
        let now = 60_000_000 * 10 + 59_000_000;
        assert_eq!(leases.want("g", 100), 6);
        grant(&leases, "g", 6, 6, now);
        let held: Vec<u64> = (0..=6).map(|j| leases.held("g", now + j * T)).collect();
        assert_eq!(held, [5, 5, 4, 3, 2, 1, 0]);
        assert_eq!(
            leases.held("g", now + T + 1),
            4,
            "the first slot has started"
        );
        // Spent at now + 2T + 1: units 1 and 2 have lapsed, unit 3 (slot at now + 3T) is spent,
        // units 4 and 5 stay.
        assert!(leases.take("g", now + 2 * T + 1, 100).is_some());
        assert_eq!(leases.held("g", now + 2 * T + 1), 2);
        assert_eq!(leases.held("g", now + 4 * T + 1), 1);
        assert_eq!(
            leases.held("g", now + 5 * T),
            1,
            "a slot starting now is still live"
        );
        assert_eq!(leases.held("g", now + 5 * T + 1), 0);

        // A bucket drawn 50 units ahead: the reservation's slots end 56 intervals on.
        assert_eq!(leases.want("late", 100), 6);
        leases.settle(&ask("late", Algorithm::Gcra, 100, 6), now, 6, 44, 56 * T);
        assert_eq!(leases.held("late", now + 50 * T), 5);
        assert_eq!(leases.held("late", now + 51 * T + 1), 4);

        let window_end = 60_000_000 * 11;
        assert_eq!(leases.want("c", 100), 6);
        leases.settle(&ask("c", Algorithm::SlidingCounter, 100, 6), now, 6, 93, 1);
        assert_eq!(leases.held("c", window_end - 1), 5);
        assert_eq!(leases.held("c", window_end), 0);
        assert!(leases.take("c", window_end, 100).is_none());

        assert_eq!(leases.want("d", 100), 6);
        leases.settle(&ask("d", Algorithm::Gcra, 100, 6), now, 0, 0, 0);
        assert_eq!(leases.held("d", now), 0);
        assert_eq!(leases.want("d", 100), 6, "no longer pending");
    }
}
