//! The limiter's configuration check. Configured like every feature (see [`crate::settings`]):
//! [`RateLimitConfig`]'s public fields, its `Default` (from the `DEFAULT_*` constants of
//! `policy.rs` and `identity.rs`), and [`RateLimitConfig::validate`] here.
//! [`RateLimitConfig::parse`] reads the command line's policy specs on top of the defaults.

use super::RateLimitConfig;
use crate::settings::{ConfigError, validate_key_prefix};

impl RateLimitConfig {
    /// Checks the settings that `parse` does not: the key prefix and the IPv6 prefix length.
    ///
    /// # Errors
    /// The first bad value, in one line naming its command-line option.
    pub fn validate(&self) -> Result<(), ConfigError> {
        validate_key_prefix(&self.key_prefix)?;
        if self.ipv6_prefix > 128 {
            return Err(ConfigError::new(
                "--ipv6-prefix/IPV6_PREFIX must be 0 to 128 bits",
            ));
        }
        Ok(())
    }
}
