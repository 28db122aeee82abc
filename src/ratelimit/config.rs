//! The limiter's configuration check. Configured like every feature (see [`crate::settings`]):
//! [`RateLimitConfig`]'s public fields, its `Default` (from the `DEFAULT_*` constants of
//! `policy.rs` and `identity.rs`), and [`RateLimitConfig::validate`] here.
//! [`RateLimitConfig::parse`] reads the command line's policy specs on top of the defaults.

use super::{MAX_LIMIT, MAX_WINDOW_SECS, RateLimitConfig};
use crate::settings::{ConfigError, validate_key_prefix};

impl RateLimitConfig {
    /// Checks the key prefix, the IPv6 prefix length, and each policy's limit and window
    /// (`parse` and [`Policy::new`](super::Policy::new) keep them in bounds; a field set afterwards may not be).
    ///
    /// # Errors
    /// The first bad value, in one line naming its command-line option or policy.
    pub fn validate(&self) -> Result<(), ConfigError> {
        validate_key_prefix(&self.key_prefix)?;
        let policies = self
            .global
            .iter()
            .chain(self.routes.iter().map(|r| &r.policy));
        for policy in policies.chain([&self.login]) {
            if policy.clone().clamped() != *policy {
                return Err(ConfigError(format!(
                    "rate-limit policy {:?}: the limit must be 1 to {MAX_LIMIT} and the window 1s to {MAX_WINDOW_SECS}s",
                    policy.name
                )));
            }
        }
        if self.ipv6_prefix > 128 {
            return Err(ConfigError::new(
                "--ipv6-prefix/IPV6_PREFIX must be 0 to 128 bits",
            ));
        }
        Ok(())
    }
}
