//! HTTP assembly: the [`Services`] a redkit app needs, the [`app`] factory, health routes and
//! the error plumbing that turns every failure into an `application/problem+json` body.

mod demo;
mod docs;
mod health;
pub mod openapi;

use std::sync::Arc;

use actix_web::{
    App, Error, HttpResponse,
    body::MessageBody,
    dev::{ServiceFactory, ServiceRequest, ServiceResponse},
    middleware::from_fn,
    web,
};

pub use demo::StatsSnapshot;
pub use openapi::ApiDoc;

pub use crate::problem::{
    PROBLEM_BASE, PROBLEM_JSON, Problem, cross_origin_cookie, json_config, path_config,
    problem_errors, query_config,
};

use crate::{
    auth::{AuthError, AuthHandle},
    cache::CacheHandle,
    catalog::{CatalogError, CatalogHandle},
    config::Config,
    connection::{RedisError, RedisHandle},
    events::{EventsError, EventsHandle},
};

/// Settings of the HTTP assembly itself (each feature's routes read their own settings from
/// their feature's handle).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RouteSettings {
    /// `"redis"` or `"memory"`.
    pub backend: &'static str,
    /// Largest request body.
    pub body_limit: usize,
    /// Whether `GET /health` lists a cluster's nodes (internal addresses and roles).
    pub health_nodes: bool,
}

/// The running parts of a redkit instance: cloneable handles to every actor.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Services {
    /// The Redis connection, when configured.
    pub redis: Option<RedisHandle>,
    /// The two-tier cache.
    pub cache: CacheHandle,
    /// The product catalog.
    pub catalog: CatalogHandle,
    /// The rate limiter.
    pub ratelimit: crate::ratelimit::RateLimitHandle,
    /// Users, tokens, sessions and revocation.
    pub auth: AuthHandle,
    /// Live events (SSE).
    pub events: EventsHandle,
    /// The last Redis probe of `GET /health`, reused for
    /// [`HEALTH_PROBE_EVERY`](health::HEALTH_PROBE_EVERY), so no request rate makes `/health`
    /// (exempt from rate limits) cost more than one probe per second.
    pub(crate) health_probe: Arc<tokio::sync::Mutex<Option<health::Probe>>>,
    /// Route settings.
    pub settings: Arc<RouteSettings>,
    /// The metrics registry behind `GET /metrics`.
    pub metrics: crate::metrics::Metrics,
    /// The snapshot `/stats/stream` shares among its clients.
    pub(crate) stats_feed: demo::StatsFeed,
}

/// A start-up failure, reported as one line.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// Redis settings are unusable (not: Redis is down; that is survived).
    #[error("invalid Redis settings: {0}")]
    Redis(#[from] RedisError),
    /// The database cannot be opened.
    #[error(transparent)]
    Database(#[from] CatalogError),
    /// The users table cannot be opened.
    #[error("cannot start auth: {0}")]
    Auth(#[from] AuthError),
    /// The events subscriber cannot be set up (invalid settings, not: Redis is down).
    #[error("cannot start live events: {0}")]
    Events(#[from] EventsError),
    /// The listen address cannot be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The server failed while running.
    #[error("server error: {0}")]
    Server(#[source] std::io::Error),
}

impl Services {
    /// Starts every actor on the current actix system. Never waits for Redis.
    ///
    /// # Errors
    /// [`StartError`] when Redis settings are invalid or the database cannot be opened.
    pub fn start(config: &Config) -> Result<Self, StartError> {
        let redis = config
            .redis
            .as_ref()
            .map(RedisHandle::connect)
            .transpose()?;
        let cache = CacheHandle::start(config.cache.clone(), redis.clone());
        let catalog =
            CatalogHandle::start(&config.database, config.catalog.clone(), cache.clone())?;
        let metrics = crate::metrics::Metrics::new();
        metrics.register_collector(crate::cache::CacheCollector(cache.clone()));
        if let Some(redis) = &redis {
            metrics.register_collector(crate::connection::RedisCollector(redis.clone()));
            metrics.register_histogram(
                "redis_command_duration_seconds",
                "Redis command round trips, as seen by redkit",
                redis.latency_histogram(),
            );
        }
        let auth = AuthHandle::start(
            &config.auth,
            &config.database,
            redis.as_ref().zip(config.redis.as_ref()),
        )?;
        // The limiter keys requests by their verified user (never an unverified claim).
        let ratelimit =
            crate::ratelimit::RateLimitHandle::start(config.rate_limit.clone(), redis.clone())
                .with_user_resolver(crate::server::bridge::user_resolver(auth.clone()));
        let events = EventsHandle::start(&config.events, redis.clone())?;
        events.set_auth(Arc::new(crate::server::bridge::EventsBridge::new(
            auth.clone(),
        )));
        metrics.register_collector(crate::ratelimit::RateLimitCollector(ratelimit.clone()));
        metrics.register_collector(crate::events::EventsCollector(events.clone()));
        metrics.register_collector(crate::auth::AuthCollector(auth.clone()));
        Ok(Self {
            redis,
            cache,
            catalog,
            metrics,
            ratelimit,
            auth,
            events,
            stats_feed: demo::StatsFeed::default(),
            health_probe: Arc::default(),
            settings: Arc::new(RouteSettings {
                backend: config.backend_name(),
                body_limit: config.body_limit,
                health_nodes: config.health_nodes,
            }),
        })
    }

    /// Registers redkit's routes and their app data on `cfg`; mount it at the root or in a scope.
    pub fn configure(&self, cfg: &mut web::ServiceConfig) {
        cfg.app_data(web::Data::new(self.clone()))
            .app_data(web::Data::new(self.cache.clone()))
            .app_data(web::Data::new(self.catalog.clone()))
            .app_data(web::Data::new(self.metrics.clone()))
            .app_data(web::Data::new(self.ratelimit.clone()))
            .app_data(self.auth.clone())
            .app_data(web::Data::new(self.auth.clone()))
            .app_data(web::Data::new(self.events.clone()))
            .app_data(json_config(self.settings.body_limit))
            .app_data(web::PayloadConfig::new(self.settings.body_limit))
            .app_data(path_config())
            .app_data(query_config())
            // The router tries resources in order, with a regex per dynamic one: the hot cached
            // routes go first.
            .configure(crate::catalog::routes::configure)
            .configure(crate::server::routes::cache::configure)
            .configure(health::configure)
            .configure(demo::configure)
            .service(web::resource("/metrics").route(web::get().to(metrics_route)))
            .configure(crate::server::routes::ratelimit::configure)
            .configure(crate::server::routes::auth::configure)
            .configure(crate::server::routes::events::configure)
            .configure(openapi::configure)
            .configure(docs::configure);
    }
}

/// The complete redkit application: routes, the rate limiter, a problem+json 404 for unknown
/// paths, [`problem_errors`] (problem+json error bodies, panic catching) and
/// [`observe`](crate::metrics::observe) outermost (request ids, metrics).
pub fn app(
    services: Services,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = Error,
        InitError = (),
    >,
> {
    App::new()
        .configure(|cfg| services.configure(cfg))
        .default_service(web::to(not_found))
        .wrap(services.ratelimit.middleware())
        .wrap(from_fn(problem_errors))
        // Outermost: sees the final status of everything inside, panics included.
        .wrap(from_fn(crate::metrics::observe))
}

async fn not_found() -> HttpResponse {
    Problem::not_found("No resource at this path.").into_response()
}

/// `GET /metrics` in the OpenMetrics/Prometheus text format.
#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "metrics",
    tag = "observability",
    responses((status = 200, description = "Every metric, in the OpenMetrics text format.",
        content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8", body = String))
)]
pub(crate) async fn metrics_route(metrics: web::Data<crate::metrics::Metrics>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .insert_header(("Cache-Control", "no-store"))
        .body(metrics.render())
}
