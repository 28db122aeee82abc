//! How to reach Redis: the one set of settings every connection the layer opens is made with.

use std::time::Duration;

/// Default Redis response timeout, in milliseconds.
pub const DEFAULT_REDIS_TIMEOUT_MS: u64 = 1000;
/// Default Redis connect timeout, in milliseconds.
pub const DEFAULT_REDIS_CONNECT_TIMEOUT_MS: u64 = 1000;

/// How to reach Redis.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RedisSettings {
    /// The parsed connection target.
    pub url: String,
    /// Per-command response timeout.
    pub response_timeout: Duration,
    /// Connect timeout.
    pub connect_timeout: Duration,
}

impl RedisSettings {
    /// Settings for `url` with the default timeouts.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            response_timeout: Duration::from_millis(DEFAULT_REDIS_TIMEOUT_MS),
            connect_timeout: Duration::from_millis(DEFAULT_REDIS_CONNECT_TIMEOUT_MS),
        }
    }
}
