//! Rate limiting: exact across instances, at most one Redis round trip per request, shared with
//! the requests arriving at the same time (none while a client is blocked), standard headers,
//! and still working when Redis does not.
//!
//! - **Algorithms**, per policy: GCRA (smooth, one value per identity; the default of request
//!   policies, [`DEFAULT_REQUEST_ALGORITHM`]), sliding-window log (exact, one entry per admitted
//!   unit; the login limiter's and [`Policy::new`]'s), sliding-window counter (O(1) memory).
//!   Each answers a [`Decision`]: allowed, limit, remaining, reset and retry-after. Denials
//!   spend nothing; a weighted `cost` and a side-effect-free [`peek`](RateLimitHandle::peek) are
//!   supported.
//! - **Backends**: with Redis, decisions are made by one atomic Lua script; the decisions that
//!   arrive together (one turn of a worker's event loop) share one call (`EVALSHA`, reloaded on
//!   `NOSCRIPT`), see `batch`. Without Redis the same arithmetic runs in process. Keys are
//!   `rl:{identity}:algorithm:policy`: the identity is the hash tag, so a request's keys share
//!   a cluster slot. Log members are unique (per-process random prefix + call counter), a log
//!   never holds more than `limit` members, and every key expires within its window, except the
//!   counter's, which lives until the end of the next fixed window because its count still
//!   weighs there (at most two windows).
//! - **Bounds**, per identity and policy, on one instance or across any number of instances
//!   sharing a Redis (times are the deciding instances' clocks): the sliding log admits at most
//!   `limit` in any window of `window`; GCRA at most `limit` in a burst from a full bucket and at
//!   most `limit + t · limit / window` in any span `t` (its emission interval is the window over
//!   the limit rounded up to a microsecond, its burst tolerance `limit` intervals); the sliding
//!   counter keeps, at every admission, `previous · (window - elapsed) / window + current` at
//!   most `limit`, where `previous` and `current` are the admissions of the previous and the
//!   current fixed window (so at most `limit` per fixed window, and less than `2 · limit` in any
//!   window of `window`). `tests/ratelimit/fleet.rs` checks them with two and three instances, at
//!   a window's edge, after a refill, and over random schedules.
//! - **Quota leases** (see `lease`): with GCRA and the counter (never the log), an identity that
//!   comes back to an instance reserves `limit / 16` units (up to `limit / 8`) in its next
//!   (coalesced) Redis decision, and the instance spends them on its next requests with no Redis
//!   command, each only while the bound above still holds for it: GCRA's unit until the store
//!   would have regained it (one emission interval per unit), the counter's until the end of
//!   its fixed window. Policies with limits below 32, shadow policies and the login limiter stay
//!   exact per request. The price is on the other side: an instance's unspent units can make the
//!   others admit up to `(N - 1) · (limit / 8 - 1)` fewer per identity while they are held.
//! - **Time** is the caller's [`Clock`], passed to Redis as a script argument rather than read
//!   with `TIME` inside the script. Both backends thus behave identically and tests drive time
//!   with a [`ManualClock`](crate::clock::ManualClock) on either. The price: instances sharing a Redis must have synchronised
//!   clocks (NTP); a skew of *s* shifts windows by *s* for requests landing on the skewed instance.
//!   GCRA keeps, beside the arrival time, the latest time it decided at, and decides a call
//!   whose clock reads earlier (another instance's call, read later, reached Redis first) at
//!   that time: the order calls reach Redis in never costs a unit (`lua`). The counter decides
//!   a call from a fixed window before its key's at the start of the key's window. The
//!   in-process store keeps the same rules (`algo`), for workers that read the clock in one
//!   order and take the store's lock in the other.
//! - **Policies** ([`RateLimitConfig`]): a global one (100 / 60 s per identity) and per-route ones
//!   from `--rate-limit` / `RATE_LIMITS`; `shadow` policies decide and count but never reject.
//!   When a request matches both, the route policy is decided first, then the global one, in
//!   the same script call; when one denies, the other's units are not spent (in process: given
//!   back), so a denied request costs nothing anywhere.
//! - **Identity**: the verified user from a pluggable [`UserResolver`], else the client IP,
//!   with `X-Forwarded-For`/`Forwarded` believed only from `--trusted-proxies` ([`client_ip`]).
//! - **Redis down**: `fail_open` (default) decides with an in-process fallback limiter (same
//!   policy, per instance); `fail_closed` answers 503 with `Retry-After`. Both are counted in
//!   [`RateLimitStats`].
//! - **Login**: every rule of the login limit is in `login`: [`RateLimitHandle::limit_login`]
//!   spends one of 5 attempts per (username, client IP) per 15 minutes (a sliding log) before
//!   the password is verified and gives it back unless the password was wrong, in the store
//!   that spent it (on Redis a small refund script outside the batched one, see `lua`). Its
//!   parts ([`login_attempt`](RateLimitHandle::login_attempt),
//!   [`login_refund`](RateLimitHandle::login_refund), [`login_blocked`](RateLimitHandle::login_blocked),
//!   [`record_login_failure`](RateLimitHandle::record_login_failure)) remain for embedders who
//!   build their own flow. The server's `/auth/login` composes this limiter with auth: the
//!   limiter decides, auth verifies the password, neither imports the other.
//!
//! # Where the work happens
//! Decisions run in the caller's task, not in the actor's mailbox. A message per request to an
//! actor on another thread costs about a third of a trivial request's throughput on a 2-core
//! machine, which alone would break the target of 0.70 of an unlimited route
//! (`benches/ratelimit.rs`). The Redis calls are made by a flush task spawned on the caller's
//! own runtime thread, one per batch. The handle's shared state (memory backend, fallback limiter,
//! the local "blocked until" map, counters) is swept by a task that ends with the last handle,
//! and its counters are read directly ([`RateLimitHandle::stats`]). A client inside a retry-after it was given is denied from that
//! local map with zero Redis commands.

mod algo;
mod batch;
#[cfg(test)]
mod bounds;
mod config;
mod counters;
mod decide;
mod error;
mod handle;
mod identity;
mod lease;
mod login;
mod lua;
mod messages;
mod metrics;
mod middleware;
mod policy;
mod response;
mod spec;
mod sweeper;

/// The trusted proxies' networks, from the client-address rule of [`crate::client`].
pub use crate::client::IpNet;
pub use algo::Decision;
pub use error::RateLimitError;
pub use handle::RateLimitHandle;
pub use identity::{DEFAULT_IPV6_PREFIX, UserResolver, client_group, client_ip};
pub use login::LoginAttempt;
pub use messages::RateLimitStats;
pub use metrics::RateLimitCollector;
#[cfg(feature = "server")]
pub(crate) use middleware::EXEMPT;
pub use middleware::{RateLimit, RateLimitMiddleware};
pub use policy::{
    Algorithm, DEFAULT_EXPENSIVE_LIMIT, DEFAULT_EXPENSIVE_WINDOW_SECS, DEFAULT_GLOBAL_LIMIT,
    DEFAULT_GLOBAL_WINDOW_SECS, DEFAULT_LOGIN_LIMIT, DEFAULT_LOGIN_WINDOW_SECS,
    DEFAULT_REQUEST_ALGORITHM, FailMode, MAX_LIMIT, MAX_WINDOW_SECS, Policy, RoutePolicy,
};
pub use spec::RateLimitConfig;

use crate::clock::Clock;
