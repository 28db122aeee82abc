//! Where the SQLite database lives: the one location the catalog and the users table share.
//!
//! Bottom layer: features open it; the CLI parses it from `--database-url`.

use std::path::PathBuf;

use crate::settings::ConfigError;

/// Default database location (SQLite file in the working directory).
pub const DEFAULT_DATABASE_URL: &str = "sqlite://redkit.db";

/// Where the SQLite database lives.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DatabaseLocation {
    /// A file on disk.
    File(PathBuf),
    /// A private in-memory database (tests).
    Memory,
}

/// Parses `--database-url` into a location.
///
/// # Errors
/// A one-line message for anything but `sqlite://PATH` or `sqlite::memory:`.
pub fn parse_database_url(url: &str) -> Result<DatabaseLocation, ConfigError> {
    if url == "sqlite::memory:" {
        return Ok(DatabaseLocation::Memory);
    }
    match url.strip_prefix("sqlite://") {
        Some(path) if !path.is_empty() => Ok(DatabaseLocation::File(PathBuf::from(path))),
        _ => Err(ConfigError(format!(
            "invalid --database-url/DATABASE_URL {url:?}: expected sqlite://PATH or sqlite::memory:"
        ))),
    }
}
