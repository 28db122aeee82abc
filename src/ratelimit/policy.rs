//! Policies: what one limit counts, with which algorithm, and what it does when Redis cannot
//! be asked. Their configuration ([`RateLimitConfig`](super::RateLimitConfig)) is in `spec`.

use std::time::Duration;

use actix_web::http::Method;

/// Requests per window of the global policy unless configured otherwise.
pub const DEFAULT_GLOBAL_LIMIT: u64 = 100;
/// Window of the global policy unless configured otherwise, in seconds.
pub const DEFAULT_GLOBAL_WINDOW_SECS: u64 = 60;
/// Requests per window on `POST /expensive-operation` unless configured otherwise.
pub const DEFAULT_EXPENSIVE_LIMIT: u64 = 10;
/// Window of `POST /expensive-operation`, in seconds.
pub const DEFAULT_EXPENSIVE_WINDOW_SECS: u64 = 60;
/// Events per window on `POST /events/{channel}` (per user, or per address without a token)
/// unless configured otherwise.
pub const DEFAULT_PUBLISH_LIMIT: u64 = 60;
/// Window of `POST /events/{channel}`, in seconds.
pub const DEFAULT_PUBLISH_WINDOW_SECS: u64 = 60;
/// Failed logins allowed per (username, client IP) per window.
pub const DEFAULT_LOGIN_LIMIT: u64 = 5;
/// Window of the login-failure limiter, in seconds (15 minutes).
pub const DEFAULT_LOGIN_WINDOW_SECS: u64 = 15 * 60;
/// The algorithm of request policies (the shipped ones, and specs without `algorithm=`): GCRA,
/// one small value per identity, so that limiting every request stays cheap in Redis. The login
/// limiter and [`Policy::new`] keep the sliding log ([`Algorithm::default`]).
pub const DEFAULT_REQUEST_ALGORITHM: Algorithm = Algorithm::Gcra;
/// Largest accepted window (one week): keeps every timestamp well inside Lua's exact integers.
pub const MAX_WINDOW_SECS: u64 = 7 * 24 * 3600;
/// Largest accepted limit per window.
pub const MAX_LIMIT: u64 = 1_000_000_000;

/// How a policy counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Algorithm {
    /// Sliding-window log: one timestamp per admitted unit; exact, O(limit) memory.
    #[default]
    SlidingLog,
    /// Sliding-window counter: two fixed-window counts, the previous one weighted by overlap;
    /// O(1) memory, approximate at window boundaries.
    SlidingCounter,
    /// Generic cell rate algorithm: one "theoretical arrival time" (and the latest time it
    /// decided at); smooth, token-bucket
    /// equivalent with a burst of `limit`.
    Gcra,
}

impl Algorithm {
    /// The spec name: `log`, `counter` or `gcra`.
    pub fn name(self) -> &'static str {
        match self {
            Self::SlidingLog => "log",
            Self::SlidingCounter => "counter",
            Self::Gcra => "gcra",
        }
    }
}

/// What a policy does when Redis cannot be asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum FailMode {
    /// Decide with the in-process fallback limiter (same policy, per instance).
    #[default]
    Open,
    /// Answer 503 with `Retry-After`.
    Closed,
}

/// One rate-limit policy: `limit` units per sliding `window`, per identity.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Policy {
    /// Name reported in headers and problem bodies, and part of the storage key.
    pub name: String,
    /// Units allowed per window.
    pub limit: u64,
    /// The window.
    pub window: Duration,
    /// The counting algorithm.
    pub algorithm: Algorithm,
    /// Decide and count, but never reject.
    pub shadow: bool,
    /// Behaviour when Redis is unavailable.
    pub fail_mode: FailMode,
}

impl Policy {
    /// A sliding-log, enforcing, fail-open policy; `limit` is kept within 1..=[`MAX_LIMIT`] and
    /// `window` within 1 s..=[`MAX_WINDOW_SECS`], as in parsed specs.
    pub fn new(name: impl Into<String>, limit: u64, window: Duration) -> Self {
        Self {
            name: name.into(),
            limit,
            window,
            algorithm: Algorithm::default(),
            shadow: false,
            fail_mode: FailMode::default(),
        }
        .clamped()
    }

    /// This policy with its limit and window brought within their bounds, as [`Policy::new`]
    /// does. The limiter applies it to every policy it is given, so that a field set past its
    /// bound after `new` cannot overflow a window computation.
    #[must_use]
    pub fn clamped(mut self) -> Self {
        self.limit = self.limit.clamp(1, MAX_LIMIT);
        self.window = self
            .window
            .clamp(Duration::from_secs(1), Duration::from_secs(MAX_WINDOW_SECS));
        self
    }

    /// This policy with another algorithm.
    #[must_use]
    pub fn with_algorithm(mut self, algorithm: Algorithm) -> Self {
        self.algorithm = algorithm;
        self
    }

    /// This policy in shadow mode (`true`) or enforcing.
    #[must_use]
    pub fn with_shadow(mut self, shadow: bool) -> Self {
        self.shadow = shadow;
        self
    }

    /// This policy with another fail mode.
    #[must_use]
    pub fn with_fail_mode(mut self, fail_mode: FailMode) -> Self {
        self.fail_mode = fail_mode;
        self
    }

    /// The window in microseconds.
    pub(crate) fn window_us(&self) -> u64 {
        u64::try_from(self.window.as_micros()).unwrap_or(u64::MAX)
    }
}

/// A policy guarding one route: `METHOD PATH` (the literal path or the resource pattern).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RoutePolicy {
    /// The HTTP method.
    pub method: Method,
    /// The path, or the route pattern such as `/cache/{key}`.
    pub path: String,
    /// The policy.
    pub policy: Policy,
}

impl RoutePolicy {
    /// A route policy.
    pub fn new(method: Method, path: impl Into<String>, policy: Policy) -> Self {
        Self {
            method,
            path: path.into(),
            policy,
        }
    }

    /// Whether `path` is a pattern (needs the resource map) rather than a literal path.
    pub(crate) fn is_pattern(&self) -> bool {
        self.path.contains('{')
    }
}
