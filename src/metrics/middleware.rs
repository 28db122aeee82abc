//! The observability middleware: request id, log correlation, metrics and access line.
//!
//! A plain `from_fn` middleware, with the problem bodies and panic catching in a second one
//! ([`problem_errors`](crate::problem::problem_errors)). The two were one hand-written layer
//! with one unboxed future (`Frame`); side by side (`REDKIT_BENCH_MIDDLEWARE=frame
//! REDKIT_BENCH_ONLY=l1 cargo bench --bench http`, LTO, 2 runs each, L1-hit ratio to a static
//! handler) the fused layer measured 0.808 / 0.798 and these two 0.784 / 0.818 (+0.2 %; complete
//! app 0.779 / 0.784 against 0.765 / 0.778, +1.3 %): under the 5 % it needed to stay.

use std::{cell::RefCell, time::Instant};

use actix_web::{
    Error,
    body::MessageBody,
    dev::{ServiceRequest, ServiceResponse},
    error::InternalError,
    http::header::HeaderName,
    middleware::Next,
    web,
};
use prometheus_client::metrics::counter::Counter;

use super::{HttpLabels, Metrics, REQUEST_ID_HEADER, RequestId, RouteLabels, request_id::CURRENT};

/// Parsed once, at compile time (a `&str` name is parsed again on every lookup).
const X_REQUEST_ID: HeaderName = HeaderName::from_static(REQUEST_ID_HEADER);

/// The observability middleware, mounted with actix's `from_fn` (the example below).
///
/// Gives the request an id (`X-Request-Id`, honouring a sane incoming one, echoed on the response),
/// makes it the current request id while the request is served (every log line written meanwhile
/// carries it), counts the request in `http_requests_total` and `http_request_duration_seconds` by
/// route pattern (bounded cardinality: unmatched paths count as `unmatched`), and writes a `debug`
/// access line under the `redkit::access` target. An error an inner middleware returns is
/// counted and carries the id too.
///
/// The metrics are read from `web::Data<Metrics>` in app data: register it on the `App` so that
/// every route is counted (data registered only in a scope counts that scope's completed
/// requests); without it only ids are handled. Wrap it outside
/// [`problem_errors`](crate::problem::problem_errors), so that it counts the final status and
/// a panic is logged with the id.
///
/// ```no_run
/// # use actix_web::{App, middleware::from_fn, web};
/// let app = App::new()
///     .route("/", web::get().to(|| async { "hello" }))
///     .wrap(from_fn(redkit::problem::problem_errors))
///     .wrap(from_fn(redkit::metrics::observe));
/// ```
pub async fn observe<B: MessageBody>(
    req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<B>, Error> {
    let started = Instant::now();
    let id = RequestId::from_header_value(req.headers().get(&X_REQUEST_ID));
    let method = method_label(req.method());
    // The route is resolved now, while the request is at hand: an error or a panic answered
    // further in comes back without it. It is resolved again at the end if an inner middleware
    // rewrote the path (NormalizePath), or if the metrics are only in a scope's data.
    let early = req
        .app_data::<web::Data<Metrics>>()
        .map(|metrics| route_slot(metrics, method, req.request()));
    let path = path_identity(req.path());
    // The id goes into the scope and is taken back out of it: a minted id cloned would be
    // copied into a shared allocation of its own.
    let mut scoped = std::pin::pin!(CURRENT.scope(id, next.call(req)));
    let result = scoped.as_mut().await;
    let elapsed = started.elapsed();
    // The scope ran to its end, so it still holds the id.
    let id = scoped.take_value().unwrap_or_else(RequestId::generate);
    let logged =
        tracing::enabled!(target: "redkit::access", tracing::Level::DEBUG).then(|| id.clone());
    let result: Result<_, Error> = match result {
        Ok(mut res) => {
            res.headers_mut()
                .insert(X_REQUEST_ID, id.into_header_value());
            Ok(res)
        }
        Err(err) => {
            // Answered here rather than by the dispatcher, so that it carries the id.
            let mut response = err.error_response();
            response
                .headers_mut()
                .insert(X_REQUEST_ID, id.into_header_value());
            Err(InternalError::from_response(err, response).into())
        }
    };
    let status = match &result {
        Ok(res) => res.status(),
        Err(err) => err.as_response_error().status_code(),
    };
    let route = match &result {
        Ok(res) if early.is_none() || path_identity(res.request().path()) != path => res
            .request()
            .app_data::<web::Data<Metrics>>()
            .map(|metrics| route_slot(metrics, method, res.request())),
        _ => early,
    };
    if let Some(route) = route {
        record(route, status.as_u16(), elapsed);
    }
    if let Some(id) = logged {
        let route = match &result {
            Ok(res) => res.request().match_pattern(),
            Err(_) => None,
        };
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        CURRENT.sync_scope(id, || {
            tracing::debug!(
                target: "redkit::access",
                method,
                route = route.as_deref().unwrap_or("unmatched"),
                status = status.as_u16(),
                micros,
                "request"
            );
        });
    }
    result
}

/// Where a path's text lives and how long it is: it changes only if the request's URI was
/// replaced, so comparing it tells a rewritten path without comparing text.
fn path_identity(path: &str) -> (usize, usize) {
    (path.as_ptr() as usize, path.len())
}

/// This thread's handles to one route's metrics, so the hot path skips the route-pattern walk,
/// the families' shared locks and label hashing (measured: 6–7 % of an L1 cache hit's
/// throughput: the figures are on `HANDLES`).
struct RouteHandles {
    registry: usize,
    method: &'static str,
    route: Box<str>,
    latency: super::latency::LatencyHistogram,
    /// The registry new status codes' counters come from.
    metrics: Metrics,
    counts: Vec<(u16, Counter)>,
}

/// Routes are patterns (bounded); the cap only guards against a misbehaving embedder.
const MAX_CACHED_ROUTES: usize = 512;

/// Request paths remembered per thread, each with the handles its route resolved to: a repeated
/// path (`/products/1`) skips actix's route-pattern walk and its `String`. Paths are bounded in
/// number and length, so distinct paths cannot grow it without limit.
const MAX_CACHED_PATHS: usize = 4096;
const MAX_CACHED_PATH_LEN: usize = 256;

#[derive(Default)]
struct Handles {
    routes: Vec<RouteHandles>,
    /// Bumped whenever `routes` is emptied: a slot of an older epoch points into the old list.
    epoch: u64,
    /// Path → `(registry, method, index in routes)`.
    paths: std::collections::HashMap<Box<str>, Vec<(usize, &'static str, usize)>>,
}

// Receipt: each worker thread keeps its own handles to the route metrics it served, found by
// request path, so a request skips actix's route-pattern walk (and the `String` it allocates),
// the metric families' shared `RwLock`s and their label hashing. Measured side by side against
// the plain version (the pattern resolved and both families' `get_or_create` on every request),
// `REDKIT_BENCH_ONLY=l1 cargo bench --bench http` (LTO, 2 runs each, alternated, L1-hit ratio to
// a static handler): with only the outer middleware (`REDKIT_BENCH_MIDDLEWARE=frame`) plain
// 0.808 / 0.798, these handles 0.862 / 0.838 (+5.8 %); with the complete app plain 0.779 /
// 0.784, these handles 0.812 / 0.861 in the same sitting (+7.0 %); and in this `from_fn` layer
// (complete app, a later sitting) plain 0.772 / 0.775, these handles 0.822 / 0.820 (+6.2 %).
// Over the 5 % a per-thread cache must buy: it stays (the fused middleware measured under it
// and went; the per-thread L1 front measured under it too, and stays only because the L1-hit
// GET cannot hold its 0.90 without it: see `cache/l1/front.rs`).
// Why it stays correct: a path is only a shortcut to the route its first request resolved to,
// and redkit's routes are told apart by path and method alone, so a path resolves the same way
// every time (an embedder's guard on something else, a header say, would count such requests on
// the first route seen for the path); entries are keyed by registry
// id (`Metrics::id`, process-unique, never an address) and method, so two apps or registries on
// one thread never share handles; the handles are the families' own (`get_or_create`), so
// `/metrics` sees every count; `MAX_CACHED_PATHS`, `MAX_CACHED_PATH_LEN` and `MAX_CACHED_ROUTES`
// bound it, and a reset bumps `epoch` so that no older slot counts into a reused index.
thread_local! {
    static HANDLES: RefCell<Option<Handles>> = const { RefCell::new(None) };
}

/// A request's place in this thread's [`Handles`], resolved when it arrives.
#[derive(Clone, Copy)]
struct RouteSlot {
    index: usize,
    epoch: u64,
}

/// Resolves the route handles of `(metrics, method, req's route pattern)`, creating them on first
/// sight.
fn route_slot(metrics: &Metrics, method: &'static str, req: &actix_web::HttpRequest) -> RouteSlot {
    let registry = metrics.id();
    let path = req.path();
    HANDLES.with(|cell| {
        let mut cell = cell.borrow_mut();
        let Handles {
            routes,
            epoch,
            paths,
        } = cell.get_or_insert_with(Handles::default);
        let cached = paths.get(path).and_then(|seen| {
            seen.iter()
                .find(|(r, m, _)| *r == registry && *m == method)
                .map(|(_, _, index)| *index)
        });
        let index = match cached {
            Some(index) => index,
            None => {
                let route = req.match_pattern();
                let route = route.as_deref().unwrap_or("unmatched");
                let before = routes.len();
                let index = route_index(routes, metrics, registry, method, route);
                if routes.len() < before {
                    // The routes were reset: the cached indices point into the old ones.
                    paths.clear();
                    *epoch += 1;
                }
                if path.len() <= MAX_CACHED_PATH_LEN {
                    if paths.len() >= MAX_CACHED_PATHS {
                        paths.clear();
                    }
                    paths
                        .entry(path.into())
                        .or_default()
                        .push((registry, method, index));
                }
                index
            }
        };
        RouteSlot {
            index,
            epoch: *epoch,
        }
    })
}

/// Counts a finished request on the route `slot` resolved to. A slot whose handles were dropped
/// meanwhile (more than [`MAX_CACHED_ROUTES`] routes seen on this thread) is not counted.
fn record(slot: RouteSlot, status: u16, elapsed: std::time::Duration) {
    HANDLES.with(|cell| {
        let mut cell = cell.borrow_mut();
        let Some(handles) = cell.as_mut() else { return };
        if handles.epoch != slot.epoch {
            return;
        }
        let Some(entry) = handles.routes.get_mut(slot.index) else {
            return;
        };
        entry.latency.observe(elapsed);
        match entry.counts.iter().find(|(s, _)| *s == status) {
            Some((_, counter)) => {
                counter.inc();
            }
            None => {
                let labels = HttpLabels {
                    method: entry.method,
                    route: entry.route.to_string(),
                    status,
                };
                let counter = entry.metrics.request_counter(labels);
                counter.inc();
                entry.counts.push((status, counter));
            }
        }
    });
}

/// The index in `handles` of `(registry, method, route)`, created on first sight (a full list is
/// emptied first).
fn route_index(
    handles: &mut Vec<RouteHandles>,
    metrics: &Metrics,
    registry: usize,
    method: &'static str,
    route: &str,
) -> usize {
    let found = handles
        .iter()
        .position(|h| h.registry == registry && h.method == method && &*h.route == route);
    if let Some(index) = found {
        return index;
    }
    if handles.len() >= MAX_CACHED_ROUTES {
        handles.clear();
    }
    let labels = RouteLabels {
        method,
        route: route.to_owned(),
    };
    let latency = metrics.latency.get_or_create(&labels).clone();
    handles.push(RouteHandles {
        registry,
        method,
        route: route.into(),
        latency,
        metrics: metrics.clone(),
        counts: Vec::new(),
    });
    handles.len() - 1
}

/// The method as a static label (no allocation per request); rare methods share `OTHER`.
fn method_label(method: &actix_web::http::Method) -> &'static str {
    use actix_web::http::Method;
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}
