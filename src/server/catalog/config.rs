//! Catalog settings and their defaults. Configured like every feature (see
//! [`crate::settings`]): public fields, `Default`, and [`CatalogConfig::validate`].

use std::time::Duration;

use crate::settings::{ConfigError, parse_secs};

/// Default TTL of a cached product, in seconds.
pub const DEFAULT_PRODUCT_TTL_SECS: u64 = 300;
/// Default TTL of the cached product list, in seconds.
pub const DEFAULT_PRODUCT_LIST_TTL_SECS: u64 = 600;

/// Settings of the product catalog, and their command-line options.
#[derive(Debug, Clone, clap::Args)]
#[non_exhaustive]
pub struct CatalogConfig {
    /// TTL of a cached product (and of a cached "no such product").
    #[arg(long, env = "PRODUCT_TTL", value_name = "SECS", value_parser = parse_secs,
        default_value = DEFAULT_PRODUCT_TTL_SECS.to_string())]
    pub product_ttl: Duration,
    /// TTL of the cached product list.
    #[arg(long, env = "PRODUCT_LIST_TTL", value_name = "SECS", value_parser = parse_secs,
        default_value = DEFAULT_PRODUCT_LIST_TTL_SECS.to_string())]
    pub product_list_ttl: Duration,
}

impl Default for CatalogConfig {
    fn default() -> Self {
        Self {
            product_ttl: Duration::from_secs(DEFAULT_PRODUCT_TTL_SECS),
            product_list_ttl: Duration::from_secs(DEFAULT_PRODUCT_LIST_TTL_SECS),
        }
    }
}

impl CatalogConfig {
    /// Checks the settings.
    ///
    /// # Errors
    /// A TTL under one second, named by its command-line option.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (name, value) in [
            ("--product-ttl/PRODUCT_TTL", self.product_ttl),
            ("--product-list-ttl/PRODUCT_LIST_TTL", self.product_list_ttl),
        ] {
            if value.as_secs() == 0 {
                return Err(ConfigError(format!("{name} must be at least 1 second")));
            }
        }
        Ok(())
    }
}
