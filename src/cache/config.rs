//! Cache settings and their defaults. Configured like every feature (see [`crate::settings`]):
//! public fields, `Default`, and [`CacheConfig::validate`].

use std::time::Duration;

use crate::settings::{ConfigError, DEFAULT_KEY_PREFIX, validate_key_prefix};
#[cfg(feature = "server")]
use crate::settings::{parse_millis, parse_secs};

/// Default L1 (in-process) cache budget: 64 MiB.
pub const DEFAULT_L1_MAX_BYTES: u64 = 64 * 1024 * 1024;
/// Default upper bound on an L1 entry's lifetime, in seconds.
pub const DEFAULT_L1_TTL_SECS: u64 = 60;
/// Default TTL of negative ("absent") entries written by `remember`, in seconds.
pub const DEFAULT_NEGATIVE_TTL_SECS: u64 = 30;
/// Default budget of the memory backend's L2 store: 256 MiB.
pub const DEFAULT_MEMORY_L2_MAX_BYTES: u64 = 256 * 1024 * 1024;
/// Default TTL of `PUT /cache/{key}` without `?ttl=`, in seconds.
pub const DEFAULT_CACHE_TTL_SECS: u64 = 300;
/// Largest TTL accepted by `PUT /cache/{key}?ttl=`, in seconds (30 days).
pub const DEFAULT_CACHE_MAX_TTL_SECS: u64 = 30 * 24 * 3600;
/// Largest value `PUT /cache/{key}` accepts, in bytes (64 KiB).
pub const DEFAULT_CACHE_MAX_VALUE_BYTES: usize = 64 * 1024;
/// Default fail-safe window: how long past its TTL a loaded entry may still be served when its
/// loader fails, in seconds.
pub const DEFAULT_FAIL_SAFE_MAX_SECS: u64 = 3600;
/// Default pause between two calls of a failing loader for one key, in seconds.
pub const DEFAULT_FAIL_SAFE_THROTTLE_SECS: u64 = 30;
/// Default soft loader timeout, in milliseconds (0: off).
pub const DEFAULT_LOADER_SOFT_TIMEOUT_MS: u64 = 1000;
/// Default hard loader timeout, in milliseconds (0: off, wait for the loader).
pub const DEFAULT_LOADER_HARD_TIMEOUT_MS: u64 = 0;
/// Default eager refresh point, as a fraction of the TTL (0: off).
pub const DEFAULT_EAGER_REFRESH: f64 = 0.8;
/// Longest TTL the cache accepts anywhere (library calls included): 100 years. Longer ones are
/// refused ([`CacheError::InvalidTtl`](super::CacheError::InvalidTtl)): no expiry computed from
/// a TTL can overflow, in this process or in Redis.
pub const MAX_TTL: Duration = crate::settings::MAX_DURATION;

/// Settings of the two-tier cache and of its HTTP API (`/cache`). With the `server` feature,
/// also the cache's command-line options (each field's doc line is its `--help` text).
#[derive(Debug, Clone)]
#[cfg_attr(feature = "server", derive(clap::Args))]
#[non_exhaustive]
pub struct CacheConfig {
    /// Prefix of every Redis key (cache keys live under `<prefix>cache:`); the server's
    /// `--key-prefix` sets it for every feature at once.
    #[cfg_attr(feature = "server", arg(skip = DEFAULT_KEY_PREFIX.to_owned()))]
    pub key_prefix: String,
    /// L1 (in-process) cache budget in bytes; 0 turns L1 off.
    #[cfg_attr(feature = "server", arg(long, env = "L1_MAX_BYTES", value_name = "BYTES",
        default_value_t = DEFAULT_L1_MAX_BYTES))]
    pub l1_max_bytes: u64,
    /// Longest an entry may live in L1 (never longer than its L2 TTL).
    #[cfg_attr(feature = "server", arg(long, env = "L1_TTL", value_name = "SECS",
        value_parser = parse_secs, default_value = DEFAULT_L1_TTL_SECS.to_string()))]
    pub l1_ttl: Duration,
    /// TTL of negative ("absent") cache entries written by `remember`.
    #[cfg_attr(feature = "server", arg(long, env = "NEGATIVE_TTL", value_name = "SECS",
        value_parser = parse_secs, default_value = DEFAULT_NEGATIVE_TTL_SECS.to_string()))]
    pub negative_ttl: Duration,
    /// Budget of the memory backend's L2 store, in bytes.
    #[cfg_attr(feature = "server", arg(skip = DEFAULT_MEMORY_L2_MAX_BYTES))]
    pub memory_l2_max_bytes: u64,
    /// TTL of `PUT /cache/{key}` without `?ttl=`.
    #[cfg_attr(feature = "server", arg(long = "cache-ttl", env = "CACHE_TTL", value_name = "SECS",
        value_parser = parse_secs, default_value = DEFAULT_CACHE_TTL_SECS.to_string()))]
    pub default_ttl: Duration,
    /// Largest TTL `PUT /cache/{key}?ttl=` accepts.
    #[cfg_attr(feature = "server", arg(long = "cache-max-ttl", env = "CACHE_MAX_TTL",
        value_name = "SECS", value_parser = parse_secs,
        default_value = DEFAULT_CACHE_MAX_TTL_SECS.to_string()))]
    pub max_ttl: Duration,
    /// Largest value `PUT /cache/{key}` accepts, in bytes of JSON; 413 beyond.
    #[cfg_attr(feature = "server", arg(long = "cache-max-value-bytes",
        env = "CACHE_MAX_VALUE_BYTES", value_name = "BYTES",
        default_value_t = DEFAULT_CACHE_MAX_VALUE_BYTES))]
    pub max_value_bytes: usize,
    /// How long past its TTL a loaded cache entry may still be served (`X-Cache: STALE`) when
    /// its loader fails or is too slow; 0 turns fail-safe off.
    #[cfg_attr(feature = "server", arg(long, env = "FAIL_SAFE_MAX", value_name = "SECS",
        value_parser = parse_secs, default_value = DEFAULT_FAIL_SAFE_MAX_SECS.to_string()))]
    pub fail_safe_max: Duration,
    /// After a loader failed, how long its stale value is served without calling it again
    /// (per key and instance).
    #[cfg_attr(feature = "server", arg(long, env = "FAIL_SAFE_THROTTLE", value_name = "SECS",
        value_parser = parse_secs, default_value = DEFAULT_FAIL_SAFE_THROTTLE_SECS.to_string()))]
    pub fail_safe_throttle: Duration,
    /// With a stale value at hand, answer it once the loader ran this long (the load finishes
    /// in the background where the loader allows it); 0: off.
    #[cfg_attr(feature = "server", arg(long = "loader-soft-timeout-ms",
        env = "LOADER_SOFT_TIMEOUT_MS", value_name = "MS", value_parser = parse_millis,
        default_value = DEFAULT_LOADER_SOFT_TIMEOUT_MS.to_string()))]
    pub loader_soft_timeout: Duration,
    /// With nothing stale at hand, give up on a loader after this long (`LoaderTimeout`, HTTP
    /// 504); 0: wait for it.
    #[cfg_attr(feature = "server", arg(long = "loader-hard-timeout-ms",
        env = "LOADER_HARD_TIMEOUT_MS", value_name = "MS", value_parser = parse_millis,
        default_value = DEFAULT_LOADER_HARD_TIMEOUT_MS.to_string()))]
    pub loader_hard_timeout: Duration,
    /// A cache hit past this fraction of its entry's TTL starts one background reload (for
    /// loaders that allow it; 0 to below 1; 0: off).
    #[cfg_attr(feature = "server", arg(long, env = "EAGER_REFRESH", value_name = "FRACTION",
        default_value_t = DEFAULT_EAGER_REFRESH))]
    pub eager_refresh: f64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            key_prefix: DEFAULT_KEY_PREFIX.to_owned(),
            l1_max_bytes: DEFAULT_L1_MAX_BYTES,
            l1_ttl: Duration::from_secs(DEFAULT_L1_TTL_SECS),
            negative_ttl: Duration::from_secs(DEFAULT_NEGATIVE_TTL_SECS),
            memory_l2_max_bytes: DEFAULT_MEMORY_L2_MAX_BYTES,
            default_ttl: Duration::from_secs(DEFAULT_CACHE_TTL_SECS),
            max_ttl: Duration::from_secs(DEFAULT_CACHE_MAX_TTL_SECS),
            max_value_bytes: DEFAULT_CACHE_MAX_VALUE_BYTES,
            fail_safe_max: Duration::from_secs(DEFAULT_FAIL_SAFE_MAX_SECS),
            fail_safe_throttle: Duration::from_secs(DEFAULT_FAIL_SAFE_THROTTLE_SECS),
            loader_soft_timeout: Duration::from_millis(DEFAULT_LOADER_SOFT_TIMEOUT_MS),
            loader_hard_timeout: Duration::from_millis(DEFAULT_LOADER_HARD_TIMEOUT_MS),
            eager_refresh: DEFAULT_EAGER_REFRESH,
        }
    }
}

impl CacheConfig {
    /// Checks the settings.
    ///
    /// # Errors
    /// The first bad value, in one line naming its command-line option: a bad key prefix, a TTL
    /// under one second, a default TTL above the largest, or a zero value limit.
    pub fn validate(&self) -> Result<(), ConfigError> {
        validate_key_prefix(&self.key_prefix)?;
        for (name, value) in [
            ("--cache-ttl/CACHE_TTL", self.default_ttl),
            ("--cache-max-ttl/CACHE_MAX_TTL", self.max_ttl),
            ("--negative-ttl/NEGATIVE_TTL", self.negative_ttl),
            ("--l1-ttl/L1_TTL", self.l1_ttl),
        ] {
            if value.as_secs() == 0 {
                return Err(ConfigError(format!("{name} must be at least 1 second")));
            }
            if value > MAX_TTL {
                return Err(ConfigError(format!("{name} must be at most 100 years")));
            }
        }
        for (name, value) in [
            ("--fail-safe-max/FAIL_SAFE_MAX", self.fail_safe_max),
            (
                "--fail-safe-throttle/FAIL_SAFE_THROTTLE",
                self.fail_safe_throttle,
            ),
            (
                "--loader-soft-timeout-ms/LOADER_SOFT_TIMEOUT_MS",
                self.loader_soft_timeout,
            ),
            (
                "--loader-hard-timeout-ms/LOADER_HARD_TIMEOUT_MS",
                self.loader_hard_timeout,
            ),
        ] {
            if value > MAX_TTL {
                return Err(ConfigError(format!("{name} must be at most 100 years")));
            }
        }
        if !(0.0..1.0).contains(&self.eager_refresh) {
            return Err(ConfigError::new(
                "--eager-refresh/EAGER_REFRESH must be from 0 (off) to below 1",
            ));
        }
        if self.default_ttl > self.max_ttl {
            return Err(ConfigError::new(
                "--cache-ttl must not exceed --cache-max-ttl",
            ));
        }
        if self.max_value_bytes == 0 {
            return Err(ConfigError::new(
                "--cache-max-value-bytes/CACHE_MAX_VALUE_BYTES must be at least 1",
            ));
        }
        Ok(())
    }

    /// The Redis key prefix of cache entries: `<prefix>cache:`.
    pub fn namespace(&self) -> String {
        format!("{}cache:", self.key_prefix)
    }
}
