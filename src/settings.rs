//! What every feature's configuration shares: the one error type of a rejected setting, the
//! default Redis key prefix and its rule, and the parsers of the command line's durations.
//!
//! Bottom layer. Every feature configures itself the same way: a `#[non_exhaustive]` struct with
//! public fields, `Default` built from the feature's own `DEFAULT_*` constants (in its
//! `config.rs`), and a `validate()` that reports the first bad value as a [`ConfigError`]. With
//! the `server` feature the same struct derives `clap::Args`: each field's doc line is its
//! `--help` text, and its attribute names its flag, its environment variable and its default, so
//! an option is written once, next to the field it sets.

/// Default prefix of every Redis key redkit writes.
pub const DEFAULT_KEY_PREFIX: &str = "redkit:";

/// Longest duration any setting accepts (100 years): every instant, TTL and timestamp redkit
/// derives from one (`now` plus it, in micro- or milliseconds, in Redis's `PEXPIRE` and in Lua's
/// exact integers) stays far from overflow.
pub const MAX_DURATION: std::time::Duration = std::time::Duration::from_secs(100 * 365 * 24 * 3600);

/// Checks that the setting `name` lies within `min..=`[`MAX_DURATION`].
///
/// # Errors
/// A [`ConfigError`] naming `name` and both bounds.
pub fn validate_duration(
    name: &str,
    value: std::time::Duration,
    min: std::time::Duration,
) -> Result<(), ConfigError> {
    if value < min || value > MAX_DURATION {
        return Err(ConfigError(format!(
            "{name} must be between {min:?} and {} days",
            MAX_DURATION.as_secs() / 86_400
        )));
    }
    Ok(())
}

/// Longest key prefix, in bytes.
pub const MAX_KEY_PREFIX_BYTES: usize = 64;

/// A rejected setting, described in one human-readable line (no newline).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl ConfigError {
    /// An error saying `message`.
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

impl std::ops::Deref for ConfigError {
    type Target = str;

    /// The message.
    fn deref(&self) -> &str {
        &self.0
    }
}

/// Checks a Redis key prefix: 1 to [`MAX_KEY_PREFIX_BYTES`] bytes, without `{` or `}`.
///
/// Every key redkit writes carries a hash tag on the identity it belongs to (`{user:42}`), so
/// that the keys one script touches share a slot of a Redis Cluster. Redis hashes only the first
/// `{…}` of a key: a brace in the prefix would become the tag, or break it, and scatter one
/// script's keys over several slots (`CROSSSLOT`).
///
/// # Errors
/// A [`ConfigError`] naming `--key-prefix/KEY_PREFIX` when it is empty, too long or has a brace.
pub fn validate_key_prefix(prefix: &str) -> Result<(), ConfigError> {
    if prefix.is_empty() || prefix.len() > MAX_KEY_PREFIX_BYTES {
        return Err(ConfigError(format!(
            "--key-prefix/KEY_PREFIX must be 1 to {MAX_KEY_PREFIX_BYTES} bytes"
        )));
    }
    if prefix.contains(['{', '}']) {
        return Err(ConfigError::new(
            "--key-prefix/KEY_PREFIX must not contain `{` or `}` (Redis Cluster hash tags)",
        ));
    }
    Ok(())
}

/// Parses a command-line value in whole seconds (`SECS`).
#[cfg(feature = "server")]
pub(crate) fn parse_secs(value: &str) -> Result<std::time::Duration, std::num::ParseIntError> {
    value.parse().map(std::time::Duration::from_secs)
}

/// Parses a command-line value in whole milliseconds (`MS`).
#[cfg(feature = "server")]
pub(crate) fn parse_millis(value: &str) -> Result<std::time::Duration, std::num::ParseIntError> {
    value.parse().map(std::time::Duration::from_millis)
}

/// Parses a command-line value in whole seconds where `0` turns the limit off (`None`).
#[cfg(feature = "server")]
pub(crate) fn parse_secs_or_off(
    value: &str,
) -> Result<Option<std::time::Duration>, std::num::ParseIntError> {
    parse_secs(value).map(|d| (!d.is_zero()).then_some(d))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The prefix rule accepts 1 to 64 bytes without braces, and nothing else.
    #[test]
    fn key_prefix_bounds() {
        for braced in ["{app}:", "a{", "}b", "x{y}z:"] {
            let err = validate_key_prefix(braced).unwrap_err();
            assert!(err.contains("must not contain"), "{braced}: {err}");
        }
        assert!(validate_key_prefix("").is_err());
        assert!(validate_key_prefix("a").is_ok());
        assert!(validate_key_prefix(&"a".repeat(64)).is_ok());
        assert!(validate_key_prefix(&"a".repeat(65)).is_err());
    }
}
