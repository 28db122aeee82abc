//! redkit: Redis-backed caching (and, as it grows, sessions, rate limiting and live events) for
//! actix-web services, as a library of actors and a ready-to-run server.
//!
//! Dedicated actors own the resources: [`redis::RedisActor`] the Redis connection,
//! [`cache::CacheActor`] the two-tier cache's write path, [`catalog::CatalogActor`] the SQLite
//! catalog. Handlers and embedding apps talk to them through cloneable handles
//! ([`cache::CacheHandle`], [`catalog::CatalogHandle`], [`redis::RedisHandle`]).
//!
//! # Embedding
//! ```no_run
//! use actix_web::{App, HttpResponse, HttpServer, web};
//! use redkit::{Config, http::Services};
//!
//! #[actix_web::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let mut config = Config::default();
//!     config.redis = Some(redkit::config::RedisSettings::new("redis://127.0.0.1:6379"));
//!     // Starts the Redis, cache and catalog actors on this system; never waits for Redis.
//!     let services = Services::start(&config)?;
//!
//!     HttpServer::new(move || {
//!         let cache = services.cache.clone();
//!         App::new()
//!             // redkit's routes under /kit, problem+json errors included.
//!             .service(web::scope("/kit").configure(|cfg| services.configure(cfg)))
//!             // Your own routes use the cache handle directly.
//!             .route("/greeting", web::get().to(move || {
//!                 let cache = cache.clone();
//!                 async move {
//!                     let greeting: String = redkit::cache::cached(
//!                         &cache, "greeting", &(), std::time::Duration::from_secs(60),
//!                         || async { Ok::<_, redkit::cache::CacheError>("hello".to_owned()) },
//!                     ).await?;
//!                     Ok::<_, redkit::cache::CacheError>(HttpResponse::Ok().body(greeting))
//!                 }
//!             }))
//!             .wrap(redkit::http::problem_errors())
//!     })
//!     .bind(("127.0.0.1", 8080))?
//!     .run()
//!     .await?;
//!     Ok(())
//! }
//! ```

#![forbid(unsafe_code)]

pub mod auth;
pub mod cache;
pub mod catalog;
pub mod config;
pub mod events;
pub mod http;
pub mod metrics;
pub mod ratelimit;
pub mod redis;
mod server;

pub use config::Config;
pub use server::{init_tracing, run};
