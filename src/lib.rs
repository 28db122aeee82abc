//! redkit: Redis-backed caching, authentication, rate limiting and live events for actix-web
//! services, as a library of actors to embed in your own app and as a ready-to-run server.
//!
//! Each feature is an actor that owns its resources, reached through a cloneable handle whose
//! async methods run in the caller's task wherever the hot path allows it (a message to an actor
//! on another thread costs about a third of a trivial request's throughput).
//! [`Services::start`](http::Services::start) starts them all from one [`Config`]. Without Redis
//! (no `REDIS_URL`) every feature runs in process with the same semantics, for one instance.
//!
//! # Embedding
//! Start the actors once, then mount what you need in your existing `App`: the handles in your
//! own handlers, the rate-limit middleware on a scope, the [`AuthUser`](auth::AuthUser)
//! extractor, and, if you want them, redkit's own routes. `examples/embed.rs` is a complete
//! app built this way (`cargo run --example embed`).
//!
//! ```no_run
//! # #[cfg(feature = "server")] // the example uses every feature (`Services`)
//! # mod example {
//! use std::time::Duration;
//!
//! use actix_web::{App, HttpResponse, HttpServer, middleware::from_fn, web};
//! use redkit::{
//!     Config,
//!     auth::AuthUser,
//!     cache::{CacheError, CacheHandle},
//!     connection::RedisSettings,
//!     events::{EventsError, EventsHandle},
//!     http::Services,
//!     ratelimit::Policy,
//! };
//!
//! /// Computed once a minute, whichever instance asks.
//! async fn prices(cache: web::Data<CacheHandle>) -> Result<HttpResponse, CacheError> {
//!     let ttl = Duration::from_secs(60);
//!     let prices: Vec<u32> = redkit::cache::cached(&cache, "prices", &(), ttl, || async {
//!         Ok::<_, CacheError>(vec![3, 5, 8]) // a slow query in real life
//!     })
//!     .await?;
//!     Ok(HttpResponse::Ok().json(prices))
//! }
//!
//! /// Needs a valid access token (else 401 problem+json); tells every `orders` subscriber.
//! async fn order(
//!     user: AuthUser,
//!     events: web::Data<EventsHandle>,
//! ) -> Result<HttpResponse, EventsError> {
//!     let event = serde_json::json!({ "user": user.0.user_id });
//!     let id = events.publish("orders", &event).await?;
//!     Ok(HttpResponse::Accepted().json(serde_json::json!({ "event": id.to_string() })))
//! }
//!
//! #[actix_web::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let mut config = Config::default();
//!     config.redis = Some(RedisSettings::new("redis://127.0.0.1:6379"));
//!     // Starts every actor on this actix system; never waits for Redis.
//!     let services = Services::start(&config)?;
//!
//!     HttpServer::new(move || {
//!         // 10 orders a minute per verified user (else per client IP), on this scope only.
//!         let orders = Policy::new("orders", 10, Duration::from_secs(60));
//!         App::new()
//!             .app_data(web::Data::new(services.cache.clone()))
//!             .app_data(web::Data::new(services.auth.clone())) // what `AuthUser` verifies with
//!             .app_data(web::Data::new(services.events.clone()))
//!             .app_data(web::Data::new(services.metrics.clone())) // what `observe` counts into
//!             .route("/prices", web::get().to(prices))
//!             .service(
//!                 web::scope("/orders")
//!                     .wrap(services.ratelimit.middleware_for(orders))
//!                     .route("", web::post().to(order)),
//!             )
//!             // redkit's own routes (/auth/login, /events/{channel}, /metrics, ...) under /kit.
//!             .service(web::scope("/kit").configure(|cfg| services.configure(cfg)))
//!             // Request ids, metrics, errors and panics as application/problem+json.
//!             .wrap(from_fn(redkit::problem::problem_errors))
//!             .wrap(from_fn(redkit::metrics::observe))
//!     })
//!     // A client's FIN ends its connection, so a closed SSE stream frees its slot at once.
//!     .h1_allow_half_closed(false)
//!     .bind(("127.0.0.1", 8080))?
//!     .run()
//!     .await?;
//!     Ok(())
//! }
//! # }
//! # fn main() {}
//! ```
//!
//! # Features
//! - [`cache`]: a two-tier cache, moka in process (L1) in front of Redis (L2).
//!   [`CacheHandle`](cache::CacheHandle) has `get`/`set`/`delete`/`flush_pattern` and
//!   `remember` (runs a loader on a miss, once per process for concurrent cold calls, and caches
//!   "absent" as a short negative entry); [`cached`](cache::cached) is the decorator form. A
//!   cached `null` is a hit. Redis down: reads fall back to L1 and the loader, writes answer 503.
//! - [`auth`]: users in SQLite (argon2id), HS256 JWT access and refresh tokens (a refresh token
//!   is spent when used; reuse revokes its session), sessions in Redis, and revocation checked
//!   against a local view kept exact by pub/sub, so verifying a token needs no I/O.
//!   [`AuthUser`](auth::AuthUser) and [`OptionalAuthUser`](auth::OptionalAuthUser) are the
//!   extractors; [`AuthHandle`](auth::AuthHandle) registers, logs in, refreshes and revokes.
//! - [`ratelimit`]: sliding-window log (exact), sliding-window counter or GCRA, one atomic Lua
//!   call per decision, per verified user or client IP, with `X-RateLimit-*`/`RateLimit`
//!   headers and 429 problem bodies. [`RateLimitHandle::middleware`](ratelimit::RateLimitHandle::middleware)
//!   applies the configured global and per-route policies to a whole app;
//!   [`middleware_for`](ratelimit::RateLimitHandle::middleware_for) applies one policy to one
//!   scope. Redis down: fail open on an in-process limiter, or fail closed (503) per policy.
//! - [`events`]: Server-Sent Events fanned out from one Redis subscription per process to many
//!   clients, with per-channel history (Redis Streams) so a client resuming with
//!   `Last-Event-ID` misses nothing. [`EventsHandle`](events::EventsHandle) publishes
//!   (`publish`) and subscribes (`subscribe`, or `open` with access checks); `user:{id}`
//!   channels are private to their user.
//! - [`metrics`]: Prometheus text exposition. [`Metrics::render`](metrics::Metrics::render)
//!   reads every feature's counters at scrape time; the [`observe`](metrics::observe)
//!   middleware adds `X-Request-Id` and counts HTTP requests by route, status and latency.
//! - [`http`]: assembly. [`Services`](http::Services) holds every handle,
//!   [`Services::configure`](http::Services::configure) mounts redkit's routes in any `App` or
//!   scope, [`app`](http::app) is the complete server app, and [`Problem`](problem::Problem) with
//!   [`problem_errors`](problem::problem_errors) make every
//!   error `application/problem+json` (RFC 9457) without leaking internal details.
//! - Also: [`catalog`] (the sample SQLite product catalog, read through the cache) and [`config`]
//!   (every option, from the command line or the environment).
//!
//! # Cargo features
//! One per capability, all on by default. An embedder who wants only some of them turns the
//! defaults off, e.g. `redkit = { version = "0.1", default-features = false, features =
//! ["cache", "ratelimit"] }`: that build compiles neither SQLite, argon2, JWT, clap nor the
//! Swagger UI and demo assets.
//!
//! | Feature | What it gives | What it pulls in |
//! |---|---|---|
//! | `cache` | [`cache`]: `CacheHandle`, `cached`, `remember` | moka |
//! | `ratelimit` | [`ratelimit`]: policies, `RateLimitHandle`, the middleware, the login limiter | crc16, itoa |
//! | `auth` | [`auth`]: users, JWTs, sessions, revocation, `AuthUser` | argon2, jsonwebtoken, rusqlite (bundled SQLite), base64 |
//! | `events` | [`events`]: `EventsHandle`, history, SSE fan-out | nothing more |
//! | `tls` | `rediss://` URLs and seeds, [`RedisSettings::tls_root_certs`](connection::RedisSettings::tls_root_certs) | redis-rs's rustls support, rustls with `ring` |
//! | `server` (default) | [`server`]: every feature above composed, their HTTP routes, the sample [`catalog`], [`http`] (`Services`, `app()`, OpenAPI, Swagger UI, demo page), [`config`], [`run`], the `redkit` binary | all of the above, rusqlite, clap, tracing-subscriber, socket2, actix-web-lab |
//!
//! Always built, whatever the features: the shared layer below ([`problem`], [`clock`], [`db`],
//! [`settings`], [`latency`], [`client`], [`connection`], [`metrics`]). It costs actix-web,
//! redis-rs and prometheus-client, which every capability needs anyway.
//!
//! # Layers
//! Each module sits in one layer and imports only from its own layer or those below; the
//! capabilities import nothing of each other (`tests/layers.rs` checks both on the source):
//! - **Shared vocabulary**: [`problem`] (the problem body and the helpers that give every error
//!   response that shape), [`clock`] (the one clock, with a manual clock for tests), [`db`]
//!   (where the SQLite database lives), [`settings`] (the one configuration error and the
//!   key-prefix rule), [`latency`] (the latency buckets), [`client`] (the client-address rule
//!   and the bearer-token rule), [`connection`] (the Redis connection layer and its
//!   [`RedisSettings`](connection::RedisSettings)) and [`metrics`] (the registry each capability
//!   registers its own collector in, and the `observe` middleware).
//! - **Capabilities**, side by side: [`cache`], [`ratelimit`], [`auth`], [`events`]. Each owns
//!   its settings and their `DEFAULT_*` constants in its `config.rs`: a `#[non_exhaustive]`
//!   struct with public fields, `Default`, and `validate()` returning a
//!   [`settings::ConfigError`] (one way to build it; no builder). With `server`, the same struct
//!   derives `clap::Args`: each field carries its flag, variable, default and `--help` line. Where one needs another, a small trait in the one that receives
//!   the help says what it needs (`ratelimit::UserResolver`, `events::EventsAuth`).
//! - **The server** ([`server`], the `server` feature): every capability's routes, the sample
//!   [`catalog`], [`http`] (`Services`, `app()`, OpenAPI, docs, demo, health), [`config`] (the
//!   command line) and `server::bridge`, where auth is plugged into the limiter and live events.
//!
//! `ARCHITECTURE.md` draws the layers and follows three requests through the code.
//!
//! # Running the server
//! `redkit serve` (or [`run`] with a [`Config`]) serves all of the above: set `REDIS_URL` to
//! share state between instances; `redkit --help` lists every option and variable.

#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "auth")]
#[cfg_attr(docsrs, doc(cfg(feature = "auth")))]
pub mod auth;
#[cfg(feature = "cache")]
#[cfg_attr(docsrs, doc(cfg(feature = "cache")))]
pub mod cache;
pub mod client;
pub mod clock;
pub mod connection;
pub mod db;
#[cfg(feature = "events")]
#[cfg_attr(docsrs, doc(cfg(feature = "events")))]
pub mod events;
pub mod latency;
pub mod metrics;
pub mod problem;
#[cfg(feature = "ratelimit")]
#[cfg_attr(docsrs, doc(cfg(feature = "ratelimit")))]
pub mod ratelimit;
#[cfg(feature = "server")]
#[cfg_attr(docsrs, doc(cfg(feature = "server")))]
pub mod server;
pub mod settings;

#[cfg(feature = "server")]
pub use config::Config;
#[cfg(feature = "server")]
pub use server::{catalog, config, http, init_tracing, run};
