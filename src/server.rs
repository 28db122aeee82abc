//! Running the server: actors, HTTP, signals.

use actix_web::HttpServer;
use tracing_subscriber::{EnvFilter, fmt};

use crate::{
    config::{Config, LogFormat},
    http::{Services, StartError, app},
};

/// Installs the global `tracing` subscriber: `RUST_LOG` filter (default `info`), text or JSON.
pub fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = fmt().with_env_filter(filter).with_writer(std::io::stderr);
    // A second call (tests) keeps the first subscriber.
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// Starts every actor and serves HTTP until SIGINT/SIGTERM, then stops accepting, lets in-flight
/// requests finish (up to the shutdown timeout) and closes Redis.
///
/// # Errors
/// [`StartError`] when the database cannot be opened, the address cannot be bound, or the server
/// fails. An unreachable Redis is not an error: the server starts degraded and recovers.
pub async fn run(config: Config) -> Result<(), StartError> {
    // Bind first: a taken port is reported before anything else starts or logs.
    let listener = std::net::TcpListener::bind(config.bind).map_err(|source| StartError::Bind {
        addr: config.bind,
        source,
    })?;
    let services = Services::start(&config)?;
    if config.redis.is_none() {
        tracing::warn!(
            "REDIS_URL is not set: using in-process memory backends; this instance is single-instance (no shared cache between processes)"
        );
    }
    let factory = {
        let services = services.clone();
        move || app(services.clone())
    };
    let server = HttpServer::new(factory)
        .workers(config.workers)
        .shutdown_timeout(config.shutdown_timeout.as_secs())
        .listen(listener)
        .map_err(|source| StartError::Bind {
            addr: config.bind,
            source,
        })?;
    let addrs = server.addrs();
    {
        // Open SSE streams never finish by themselves: end them as soon as a shutdown signal
        // arrives, so that the server's graceful stop is not held up until its deadline.
        let events = services.events.clone();
        actix_web::rt::spawn(async move {
            shutdown_signal().await;
            events.shutdown();
        });
    }
    tracing::info!(
        addr = ?addrs,
        backend = config.backend_name(),
        workers = config.workers,
        "redkit listening"
    );
    server.run().await.map_err(StartError::Server)?;
    tracing::info!("redkit stopped: in-flight requests finished, connections closed");
    drop(services);
    Ok(())
}

/// Resolves on SIGINT or SIGTERM (the signals actix-web's server stops on).
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
