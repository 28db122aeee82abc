//! A cache-only app: redkit as an embedder takes it, with `default-features = false, features =
//! ["cache"]` (no SQLite, argon2, JWT, clap or Swagger UI in the build). `GET /square/{n}` is
//! computed once a minute per `n`, whichever instance asks when `REDIS_URL` is set.
//!
//! `cargo run --no-default-features --features cache --example cache_only`

use std::time::Duration;

use actix_web::{App, HttpResponse, HttpServer, web};
use redkit::{
    cache::{CacheConfig, CacheError, CacheHandle},
    connection::{RedisHandle, RedisSettings},
};

/// `n²`, from the cache when some instance computed it within the minute.
async fn square(
    n: web::Path<u64>,
    cache: web::Data<CacheHandle>,
) -> Result<HttpResponse, CacheError> {
    let n = n.into_inner();
    let ttl = Duration::from_secs(60);
    let value: u64 = redkit::cache::cached(&cache, "square", &n, ttl, || async move {
        Ok::<_, CacheError>(n.saturating_mul(n)) // a slow computation in real life
    })
    .await?;
    Ok(HttpResponse::Ok().json(value))
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    // With `REDIS_URL`, L2 is Redis and every instance's L1 stays coherent; without, in process.
    let redis = std::env::var("REDIS_URL")
        .ok()
        .map(|url| {
            let settings = RedisSettings::new(url);
            settings.validate().map_err(std::io::Error::other)?;
            RedisHandle::connect(&settings).map_err(std::io::Error::other)
        })
        .transpose()?;
    // Settings are public fields on top of `Default`, checked by `validate()`.
    let mut config = CacheConfig::default();
    config.l1_ttl = std::time::Duration::from_secs(30);
    config.validate().map_err(std::io::Error::other)?;
    let cache = CacheHandle::start(config, redis);
    HttpServer::new(move || {
        App::new()
            .app_data(web::Data::new(cache.clone()))
            .route("/square/{n}", web::get().to(square))
    })
    .bind(("127.0.0.1", 8081))?
    .run()
    .await
}
