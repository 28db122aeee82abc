//! A limiter-only app: redkit with `default-features = false, features = ["ratelimit"]`.
//! `POST /orders` admits 10 requests a minute per client address (429 problem+json with
//! `Retry-After` beyond), exact across instances when `REDIS_URL` is set.
//!
//! `cargo run --no-default-features --features ratelimit --example limiter_only`

use std::time::Duration;

use actix_web::{App, HttpResponse, HttpServer, web};
use redkit::{
    connection::{RedisHandle, RedisSettings},
    ratelimit::{Policy, RateLimitConfig, RateLimitHandle},
};

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let redis = std::env::var("REDIS_URL")
        .ok()
        .map(|url| RedisHandle::connect(&RedisSettings::new(url)))
        .transpose()
        .map_err(std::io::Error::other)?;
    // No global policy: only the scope below is limited.
    let config = RateLimitConfig::parse(&["default=off"], &[] as &[&str])
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let limiter = RateLimitHandle::start(config, redis);
    HttpServer::new(move || {
        let orders = Policy::new("orders", 10, Duration::from_secs(60));
        App::new().service(
            web::scope("/orders")
                .wrap(limiter.middleware_for(orders))
                .route(
                    "",
                    web::post().to(|| async { HttpResponse::Accepted().finish() }),
                ),
        )
    })
    .bind(("127.0.0.1", 8082))?
    .run()
    .await
}
