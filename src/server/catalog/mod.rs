//! The product catalog: SQLite (rusqlite) owned by a [`CatalogActor`] on its own thread
//! (an actix `SyncArbiter`, since SQLite calls block), read through the two-tier cache.
//!
//! Reads are cached with `remember`: `GET /products/{id}` for the product TTL (absent products
//! as negative entries), `GET /products` for the list TTL (both in [`CatalogConfig`]). The
//! [`CatalogHandle`] holds the cache it reads through, so the routes need nothing else. Every write invalidates the product and
//! the list through the cache actor.

mod actor;
mod config;
mod error;
mod messages;
pub(crate) mod routes;

pub use actor::{CatalogActor, CatalogHandle};
pub use config::{CatalogConfig, DEFAULT_PRODUCT_LIST_TTL_SECS, DEFAULT_PRODUCT_TTL_SECS};
pub use error::CatalogError;

/// The cache tag of every catalog entry (each product, the list):
/// `cache.invalidate_tag(CATALOG_TAG)` drops them all, on every instance, in one command.
pub const CATALOG_TAG: &str = "catalog";
pub use messages::{
    CreateProduct, DeleteProduct, GetProduct, ListProducts, NewProduct, Product, ProductPatch,
    UpdateProduct,
};
