//! The observability middleware: request id, tracing span, metrics and access log in one pass.

use std::time::Instant;

use actix_web::{
    Error,
    body::MessageBody,
    dev::{ServiceRequest, ServiceResponse},
    http::header::{HeaderName, HeaderValue},
    middleware::Next,
    web,
};

use super::{HttpLabels, Metrics, REQUEST_ID_HEADER, RequestId, RouteLabels};

/// Mount with `actix_web::middleware::from_fn(redkit::metrics::observe)`.
///
/// Gives the request an id (`X-Request-Id`, echoed on the response), runs it inside a `request`
/// span carrying that id (so every log line of the request has it), counts it in
/// `http_requests_total` and `http_request_duration_seconds` by route pattern (bounded
/// cardinality: unmatched paths count as `unmatched`), and writes a `debug` access line under the
/// `redkit::access` target.
///
/// # Errors
/// Only the inner service's errors, unchanged.
pub async fn observe(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let started = Instant::now();
    let id = RequestId::from_header(
        req.headers()
            .get(REQUEST_ID_HEADER)
            .map(HeaderValue::as_bytes),
    );
    let header = HeaderValue::from_str(id.as_str()).ok();
    let metrics = req.app_data::<web::Data<Metrics>>().cloned();
    let method = req.method().clone();
    let mut res = super::request_id::scope(id.clone(), next.call(req)).await?;
    let route = res
        .request()
        .match_pattern()
        .unwrap_or_else(|| "unmatched".to_owned());
    let status = res.status().as_u16();
    if let Some(header) = header {
        res.headers_mut()
            .insert(HeaderName::from_static(REQUEST_ID_HEADER), header);
    }
    let elapsed = started.elapsed();
    if tracing::enabled!(target: "redkit::access", tracing::Level::DEBUG) {
        super::request_id::scope(id, async {
            tracing::debug!(
                target: "redkit::access",
                %method,
                route,
                status,
                micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
                "request"
            );
        })
        .await;
    }
    if let Some(metrics) = metrics {
        let labels = RouteLabels {
            method: method_label(&method),
            route,
        };
        metrics
            .latency
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
        let RouteLabels { method, route } = labels;
        metrics
            .requests
            .get_or_create(&HttpLabels {
                method,
                route,
                status,
            })
            .inc();
    }
    Ok(res)
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
