use std::time::Duration;

use crate::config::{
    DEFAULT_KEY_PREFIX, DEFAULT_L1_MAX_BYTES, DEFAULT_L1_TTL_SECS, DEFAULT_NEGATIVE_TTL_SECS,
};

/// Default budget of the memory backend's L2 store: 256 MiB.
pub const DEFAULT_MEMORY_L2_MAX_BYTES: u64 = 256 * 1024 * 1024;

/// Settings of the two-tier cache. Build with [`CacheConfig::builder`].
#[derive(Debug, Clone)]
pub struct CacheConfig {
    key_prefix: String,
    l1_max_bytes: u64,
    l1_ttl: Duration,
    negative_ttl: Duration,
    memory_l2_max_bytes: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            key_prefix: DEFAULT_KEY_PREFIX.to_owned(),
            l1_max_bytes: DEFAULT_L1_MAX_BYTES,
            l1_ttl: Duration::from_secs(DEFAULT_L1_TTL_SECS),
            negative_ttl: Duration::from_secs(DEFAULT_NEGATIVE_TTL_SECS),
            memory_l2_max_bytes: DEFAULT_MEMORY_L2_MAX_BYTES,
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

    /// The Redis key prefix of cache entries: `<prefix>cache:`.
    pub fn namespace(&self) -> String {
        format!("{}cache:", self.key_prefix)
    }
}

/// Builder of [`CacheConfig`].
#[derive(Debug, Clone)]
pub struct CacheConfigBuilder {
    config: CacheConfig,
}

/// An invalid cache setting.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CacheConfigError {
    /// The key prefix is empty or longer than 64 bytes.
    #[error("cache key prefix must be 1 to 64 bytes")]
    Prefix,
    /// A TTL is zero.
    #[error("cache TTLs must be at least one second")]
    Ttl,
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

    /// Checks and returns the configuration.
    ///
    /// # Errors
    /// [`CacheConfigError`] for an empty or overlong prefix, or a zero TTL.
    pub fn build(self) -> Result<CacheConfig, CacheConfigError> {
        let c = self.config;
        if c.key_prefix.is_empty() || c.key_prefix.len() > 64 {
            return Err(CacheConfigError::Prefix);
        }
        if c.l1_ttl.is_zero() || c.negative_ttl.is_zero() {
            return Err(CacheConfigError::Ttl);
        }
        Ok(c)
    }
}
