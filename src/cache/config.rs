//! Cache settings and their defaults. Configured like every feature (see [`crate::settings`]):
//! public fields, `Default`, and [`CacheConfig::validate`]; [`CacheConfig::builder`] is the same
//! thing as chained setters.

use std::time::Duration;

use crate::settings::{ConfigError, DEFAULT_KEY_PREFIX, validate_key_prefix};

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

/// Settings of the two-tier cache and of its HTTP API (`/cache`).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct CacheConfig {
    /// Prefix of every Redis key (cache keys live under `<prefix>cache:`).
    pub key_prefix: String,
    /// L1 budget in bytes; 0 turns L1 off.
    pub l1_max_bytes: u64,
    /// Upper bound of an L1 entry's lifetime.
    pub l1_ttl: Duration,
    /// Lifetime of negative entries written by `remember`.
    pub negative_ttl: Duration,
    /// Budget of the memory backend's L2 store, in bytes.
    pub memory_l2_max_bytes: u64,
    /// TTL of `PUT /cache/{key}` without `?ttl=`.
    pub default_ttl: Duration,
    /// Largest TTL `PUT /cache/{key}?ttl=` accepts.
    pub max_ttl: Duration,
    /// Largest value `PUT /cache/{key}` accepts, in bytes of JSON.
    pub max_value_bytes: usize,
    /// How long past its TTL a value `remember` loaded may still be served (`X-Cache: STALE`)
    /// when its loader fails or times out; zero turns fail-safe off.
    pub fail_safe_max: Duration,
    /// After a loader failed for a key, its stale value is served without calling the loader
    /// again for this long (per key and process).
    pub fail_safe_throttle: Duration,
    /// With a stale value at hand, answer it after the loader ran this long (the load goes on in
    /// the background where the loader allows it); zero: off.
    pub loader_soft_timeout: Duration,
    /// With nothing stale at hand, give up on a loader after this long
    /// ([`CacheError::LoaderTimeout`](super::CacheError::LoaderTimeout), HTTP 504); zero: off.
    pub loader_hard_timeout: Duration,
    /// A hit past this fraction of its entry's TTL starts one background reload (for loaders
    /// that allow it); 0 turns it off.
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
    /// A builder starting from the defaults.
    pub fn builder() -> CacheConfigBuilder {
        CacheConfigBuilder {
            config: Self::default(),
        }
    }

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

    /// Prefix of every Redis key (cache keys live under `<prefix>cache:`).
    pub fn key_prefix(&self) -> &str {
        &self.key_prefix
    }

    /// L1 budget in bytes; 0 means L1 is off.
    pub fn l1_max_bytes(&self) -> u64 {
        self.l1_max_bytes
    }

    /// Upper bound of an L1 entry's lifetime.
    pub fn l1_ttl(&self) -> Duration {
        self.l1_ttl
    }

    /// Lifetime of negative entries written by `remember`.
    pub fn negative_ttl(&self) -> Duration {
        self.negative_ttl
    }

    /// Budget of the memory backend's L2 store, in bytes.
    pub fn memory_l2_max_bytes(&self) -> u64 {
        self.memory_l2_max_bytes
    }

    /// How long past its TTL a loaded value may be served when its loader fails (zero: off).
    pub fn fail_safe_max(&self) -> Duration {
        self.fail_safe_max
    }

    /// The Redis key prefix of cache entries: `<prefix>cache:`.
    pub fn namespace(&self) -> String {
        format!("{}cache:", self.key_prefix)
    }
}

/// Chained setters over [`CacheConfig`]'s fields, ending in [`validate`](CacheConfig::validate).
#[derive(Debug, Clone)]
pub struct CacheConfigBuilder {
    config: CacheConfig,
}

impl CacheConfigBuilder {
    /// Sets the Redis key prefix.
    #[must_use]
    pub fn key_prefix(mut self, prefix: &str) -> Self {
        prefix.clone_into(&mut self.config.key_prefix);
        self
    }

    /// Sets the L1 budget in bytes (0 turns L1 off).
    #[must_use]
    pub fn l1_max_bytes(mut self, bytes: u64) -> Self {
        self.config.l1_max_bytes = bytes;
        self
    }

    /// Sets the upper bound of an L1 entry's lifetime.
    #[must_use]
    pub fn l1_ttl(mut self, ttl: Duration) -> Self {
        self.config.l1_ttl = ttl;
        self
    }

    /// Sets the lifetime of negative entries.
    #[must_use]
    pub fn negative_ttl(mut self, ttl: Duration) -> Self {
        self.config.negative_ttl = ttl;
        self
    }

    /// Sets the memory backend's L2 budget in bytes.
    #[must_use]
    pub fn memory_l2_max_bytes(mut self, bytes: u64) -> Self {
        self.config.memory_l2_max_bytes = bytes;
        self
    }

    /// Sets the fail-safe window (zero turns fail-safe off).
    #[must_use]
    pub fn fail_safe_max(mut self, window: Duration) -> Self {
        self.config.fail_safe_max = window;
        self
    }

    /// Sets how long a failing loader is left alone per key.
    #[must_use]
    pub fn fail_safe_throttle(mut self, pause: Duration) -> Self {
        self.config.fail_safe_throttle = pause;
        self
    }

    /// Sets the soft loader timeout (zero: off).
    #[must_use]
    pub fn loader_soft_timeout(mut self, timeout: Duration) -> Self {
        self.config.loader_soft_timeout = timeout;
        self
    }

    /// Sets the hard loader timeout (zero: off).
    #[must_use]
    pub fn loader_hard_timeout(mut self, timeout: Duration) -> Self {
        self.config.loader_hard_timeout = timeout;
        self
    }

    /// Sets the eager refresh fraction (0 turns it off).
    #[must_use]
    pub fn eager_refresh(mut self, fraction: f64) -> Self {
        self.config.eager_refresh = fraction;
        self
    }

    /// Checks and returns the configuration.
    ///
    /// # Errors
    /// What [`CacheConfig::validate`] reports.
    pub fn build(self) -> Result<CacheConfig, ConfigError> {
        self.config.validate()?;
        Ok(self.config)
    }
}
