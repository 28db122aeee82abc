//! Running the server: actors, HTTP, signals.

use actix_web::HttpServer;
use tracing::{Event, Subscriber};
use tracing_subscriber::{
    EnvFilter, fmt,
    fmt::{
        FmtContext, FormatEvent, FormatFields,
        format::{Format, JsonFields, Writer},
    },
    registry::LookupSpan,
};

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
            .fmt_fields(JsonFields::new())
            .event_format(WithRequestId {
                inner: Format::default()
                    .json()
                    .flatten_event(true)
                    .with_span_list(false),
                json: true,
            })
            .try_init(),
        LogFormat::Text => builder
            .event_format(WithRequestId {
                inner: Format::default(),
                json: false,
            })
            .try_init(),
    };
}

/// Adds the current request's id to every event logged while serving it.
///
/// The id travels in a task-local set by [`observe`](crate::metrics::observe), not in a
/// per-request span: a span costs every request about 5 % of an L1 hit's throughput
/// (`benches/http.rs`), the task-local costs nothing measurable, and only requests that log pay
/// for formatting the id.
struct WithRequestId<F> {
    inner: F,
    json: bool,
}

impl<S, N, F> FormatEvent<S, N> for WithRequestId<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let Some(id) = crate::metrics::current_request_id() else {
            return self.inner.format_event(ctx, writer, event);
        };
        if !self.json {
            write!(writer, "request_id={id} ")?;
            return self.inner.format_event(ctx, writer, event);
        }
        let mut line = String::with_capacity(256);
        self.inner
            .format_event(ctx, Writer::new(&mut line), event)?;
        if line.starts_with('{') {
            // Ids are checked to be `[A-Za-z0-9._:-]`: nothing to escape.
            line.insert_str(1, &format!("\"request_id\":\"{id}\","));
        }
        writer.write_str(&line)
    }
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
    let write_timeout = config.write_timeout;
    let server = HttpServer::new(factory)
        .workers(config.workers)
        .shutdown_timeout(config.shutdown_timeout.as_secs())
        // A client's FIN ends its connection at once. An open SSE stream is a response that
        // never finishes, so with half-closed connections allowed (actix-web's default) a closed
        // tab held its stream and its per-address slot until the next heartbeat failed to write.
        .h1_allow_half_closed(false)
        // Before `listen`: the callback is captured when the listener is added.
        .on_connect(move |io, _| set_write_timeout(io, write_timeout))
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

/// Bounds how long a connection's sent data may stay unacknowledged: `TCP_USER_TIMEOUT`.
///
/// actix-http has no write timeout, and stops polling a response body while the socket cannot
/// be written, so a client that never reads (an SSE subscriber, a slow download) would hold its
/// connection, dispatcher and buffers forever. With this option the kernel closes the socket once
/// sent data stays unacknowledged, or the peer advertises a zero window, for longer than
/// `timeout`; the dispatcher then sees the error and drops the response (for SSE: the stream,
/// its hub registration and its connection slot). SSE heartbeats keep data pending, so a stalled
/// subscriber is cut within about one heartbeat plus `timeout` once its buffers are full.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn set_write_timeout(io: &dyn std::any::Any, timeout: Option<std::time::Duration>) {
    let Some(timeout) = timeout else {
        return;
    };
    let Some(stream) = io.downcast_ref::<actix_web::rt::net::TcpStream>() else {
        return;
    };
    if let Err(error) = socket2::SockRef::from(stream).set_tcp_user_timeout(Some(timeout)) {
        tracing::debug!(%error, "cannot set TCP_USER_TIMEOUT on a connection");
    }
}

/// Other platforms have no `TCP_USER_TIMEOUT`: the write timeout is not applied (documented for
/// `--write-timeout`).
#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn set_write_timeout(_io: &dyn std::any::Any, _timeout: Option<std::time::Duration>) {}

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
