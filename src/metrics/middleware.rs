//! The observability middleware: request id, log correlation, metrics and access line in one
//! pass, written as a plain `Transform` (no per-request boxing beyond the one future).

use std::{
    cell::RefCell,
    future::{Ready, ready},
    time::Instant,
};

use actix_web::{
    Error,
    body::MessageBody,
    dev::{Service, ServiceRequest, ServiceResponse, Transform, forward_ready},
    http::header::{HeaderName, HeaderValue},
    web,
};
use futures_util::future::LocalBoxFuture;
use prometheus_client::metrics::{counter::Counter, histogram::Histogram};

use super::{HttpLabels, Metrics, REQUEST_ID_HEADER, RequestId, RouteLabels};

/// The observability middleware; `App::wrap(redkit::metrics::Observe)`.
///
/// Gives the request an id (`X-Request-Id`, honouring a sane incoming one, echoed on the
/// response), makes it the current request id while the request is served (every log line written
/// meanwhile carries it), counts the request in `http_requests_total` and
/// `http_request_duration_seconds` by route pattern (bounded cardinality: unmatched paths count as
/// `unmatched`), and writes a `debug` access line under the `redkit::access` target.
///
/// The metrics are read from the app's `web::Data<Metrics>`; without it only ids are handled.
#[derive(Debug, Clone, Copy, Default)]
pub struct Observe;

/// Parsed once, at compile time (a `&str` name is parsed again on every lookup).
const X_REQUEST_ID: HeaderName = HeaderName::from_static(REQUEST_ID_HEADER);

impl<S, B> Transform<S, ServiceRequest> for Observe
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<B>;
    type Error = Error;
    type Transform = ObserveMiddleware<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(ObserveMiddleware { service }))
    }
}

/// The service [`Observe`] wraps around the app.
pub struct ObserveMiddleware<S> {
    service: S,
}

impl<S, B> Service<ServiceRequest> for ObserveMiddleware<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<B>;
    type Error = Error;
    type Future = LocalBoxFuture<'static, Result<Self::Response, Self::Error>>;

    forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        let started = Instant::now();
        let incoming = req.headers().get(&X_REQUEST_ID);
        let id = RequestId::from_header(incoming.map(HeaderValue::as_bytes));
        // An accepted incoming id is echoed as it came (a reference count, not a copy).
        let header = match incoming {
            Some(value) if value.as_bytes() == id.as_str().as_bytes() => Some(value.clone()),
            _ => HeaderValue::from_str(id.as_str()).ok(),
        };
        let metrics = req.app_data::<web::Data<Metrics>>().cloned();
        let method = method_label(req.method());
        let fut = super::request_id::scope(id.clone(), self.service.call(req));
        Box::pin(async move {
            let mut res = fut.await?;
            let status = res.status().as_u16();
            if let Some(header) = header {
                res.headers_mut().insert(X_REQUEST_ID, header);
            }
            let elapsed = started.elapsed();
            if let Some(metrics) = metrics {
                record(
                    &metrics,
                    method,
                    res.request(),
                    status,
                    elapsed.as_secs_f64(),
                );
            }
            if tracing::enabled!(target: "redkit::access", tracing::Level::DEBUG) {
                let route = res.request().match_pattern();
                let route = route.as_deref().unwrap_or("unmatched");
                let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
                super::request_id::scope(id, async {
                    tracing::debug!(
                        target: "redkit::access",
                        method,
                        route,
                        status,
                        micros,
                        "request"
                    );
                })
                .await;
            }
            Ok(res)
        })
    }
}

/// This thread's handles to one route's metrics, so the hot path skips the families' shared
/// locks and label hashing (measured: about 3 % of an L1 cache hit's throughput).
struct RouteHandles {
    registry: usize,
    method: &'static str,
    route: Box<str>,
    latency: Histogram,
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
    /// Path → `(registry, method, index in routes)`.
    paths: std::collections::HashMap<Box<str>, Vec<(usize, &'static str, usize)>>,
}

thread_local! {
    static HANDLES: RefCell<Option<Handles>> = const { RefCell::new(None) };
}

fn record(
    metrics: &Metrics,
    method: &'static str,
    req: &actix_web::HttpRequest,
    status: u16,
    secs: f64,
) {
    let registry = metrics.id();
    let path = req.path();
    HANDLES.with(|cell| {
        let mut cell = cell.borrow_mut();
        let Handles { routes, paths } = cell.get_or_insert_with(Handles::default);
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
        let entry = &mut routes[index];
        entry.latency.observe(secs);
        let route = &entry.route;
        match entry.counts.iter().find(|(s, _)| *s == status) {
            Some((_, counter)) => {
                counter.inc();
            }
            None => {
                let labels = HttpLabels {
                    method,
                    route: route.to_string(),
                    status,
                };
                let counter = metrics.requests.get_or_create(&labels).clone();
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
