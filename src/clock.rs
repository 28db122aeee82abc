//! The one clock: wall-clock microseconds since the Unix epoch, read through a trait so that tests
//! own time.
//!
//! Bottom layer. Auth (token times, sessions, revocations), rate limiting (windows) and live
//! events (stream ids of the memory backend, the join baseline of a channel) all read "now" here,
//! each from the `clock` of its own config; a test that gives them a [`ManualClock`] moves TTLs,
//! windows and ids without sleeping. Timers that only wait (heartbeats, sweeps) use tokio's time;
//! code that decides on it takes the instant as a parameter, so that a test can pass a later one.

use std::{
    fmt::Debug,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

/// A source of wall-clock time. Every reader takes "now" once per decision and passes it along
/// (to Redis as a script argument when Redis needs it), so a test that owns the clock owns time.
pub trait Clock: Send + Sync + Debug {
    /// Microseconds since the Unix epoch, UTC.
    fn now_us(&self) -> u64;

    /// Milliseconds since the Unix epoch, UTC (signed, for arithmetic on expiries).
    fn now_ms(&self) -> i64 {
        i64::try_from(self.now_us() / 1_000).unwrap_or(i64::MAX)
    }

    /// Whole seconds since the Unix epoch, UTC (signed, as JWT times are).
    fn now_secs(&self) -> i64 {
        self.now_ms().div_euclid(1000)
    }
}

/// The system's wall clock (UTC, never local time).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_us(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
    }
}

/// A clock that moves only when told to: for tests and simulations. Clones share the time.
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<AtomicU64>);

impl ManualClock {
    /// A clock reading `start_us` microseconds since the epoch.
    pub fn new(start_us: u64) -> Self {
        Self(Arc::new(AtomicU64::new(start_us)))
    }

    /// A clock starting at the current system time, rounded down to a whole second.
    pub fn starting_now() -> Self {
        Self::new(SystemClock.now_us() / 1_000_000 * 1_000_000)
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        let us = u64::try_from(by.as_micros()).unwrap_or(u64::MAX);
        self.0.fetch_add(us, Ordering::SeqCst);
    }
}

impl Default for ManualClock {
    /// [`ManualClock::starting_now`].
    fn default() -> Self {
        Self::starting_now()
    }
}

impl Clock for ManualClock {
    fn now_us(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The derived units agree with the microseconds, and clones share one time.
    #[test]
    fn units_and_clones_agree() {
        let clock = ManualClock::new(1_700_000_000_123_456);
        let clone = clock.clone();
        assert_eq!(clock.now_ms(), 1_700_000_000_123);
        assert_eq!(clock.now_secs(), 1_700_000_000);
        clone.advance(Duration::from_millis(1_877));
        assert_eq!(clock.now_us(), 1_700_000_002_000_456);
        assert_eq!(clock.now_secs(), 1_700_000_002);
    }
}
