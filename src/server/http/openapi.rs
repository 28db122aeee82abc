//! `GET /openapi.json`: the OpenAPI 3.1 document of every route, generated from the code.
//!
//! Each handler carries its own `#[utoipa::path]` (path, parameters, body, statuses) next to its
//! code, and the body types derive `ToSchema`; [`ApiDoc`] only lists them. Responses that do not
//! come from a handler are added here once, by [`Conventions`], because they come from code
//! that is shared by every route:
//! - the global rate limiter: 429 `quota-exceeded` (with `Retry-After`) on every route but the
//!   exempt ones, and 503 when a fail-closed policy cannot reach Redis;
//! - the JSON extractor settings: 400 (`malformed-json`, `invalid-body`), 413 and 415 on every
//!   operation with a JSON body, 400 (`invalid-parameter`) on every operation with query
//!   parameters.
//!
//! A wrong method on a known path answers 405 `method-not-allowed` (with `Allow`), an unknown
//! path 404; both are described in the document's `info`.
//!
//! The document is built and serialized once, on its first request: no per-request work, and
//! nothing on other routes' path.

use std::sync::LazyLock;

use actix_web::{HttpResponse, http::header, web};
use utoipa::{
    Modify, OpenApi,
    openapi::{
        Content, HttpMethod, Ref, RefOr, Required, ResponseBuilder,
        header::HeaderBuilder,
        path::{Operation, ParameterIn},
        schema::{ObjectBuilder, Type},
        security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme},
    },
};

use super::{PROBLEM_JSON, Problem};

const DESCRIPTION: &str = "Redis-backed caching, sessions, rate limiting and live events for \
actix-web services.\n\n\
Every error body is `application/problem+json` (RFC 9457, schema `Problem`); its `type` is \
`https://redkit.dev/problems/<slug>`. A path that matches no route answers 404 `not-found`; a \
method a path does not support answers 405 `method-not-allowed` with `Allow`. Requests are \
rate-limited (429 with `Retry-After` and `RateLimit`/`X-RateLimit-*` headers) except \
`/health` and `/health/live`.\n\n\
Authenticated operations take the access token from `POST /auth/login` as \
`Authorization: Bearer <token>`, or from the `redkit_access` cookie (`?cookie=true` at login).";

/// The OpenAPI document: every route's operation, listed from its handler.
#[derive(OpenApi)]
#[openapi(
    info(title = "redkit", description = DESCRIPTION),
    paths(
        super::health::health,
        super::health::live,
        super::demo::page,
        super::demo::stats,
        super::demo::stats_stream,
        super::demo::uplot_js,
        super::demo::uplot_css,
        super::metrics_route,
        openapi_json,
        super::docs::page,
        super::docs::bundle,
        super::docs::css,
        super::docs::initializer,
        crate::server::routes::cache::flush,
        crate::server::routes::cache::get,
        crate::server::routes::cache::head,
        crate::server::routes::cache::put,
        crate::server::routes::cache::delete,
        crate::catalog::routes::list,
        crate::catalog::routes::create,
        crate::catalog::routes::get,
        crate::catalog::routes::update,
        crate::catalog::routes::delete,
        crate::server::routes::ratelimit::expensive_operation,
        crate::server::routes::ratelimit::status,
        crate::server::routes::auth::register,
        crate::server::routes::auth::login,
        crate::server::routes::auth::refresh,
        crate::server::routes::auth::logout,
        crate::server::routes::auth::logout_all,
        crate::server::routes::auth::me,
        crate::server::routes::auth::sessions,
        crate::server::routes::auth::delete_session,
        crate::server::routes::events::ticket,
        crate::server::routes::events::info,
        crate::server::routes::events::subscribe,
        crate::server::routes::events::subscribe_many,
        crate::server::routes::events::publish,
    ),
    components(schemas(Problem, crate::server::routes::cache::ApiTagParam)),
    modifiers(&Conventions),
    tags(
        (name = "health", description = "Readiness and liveness probes."),
        (name = "products", description = "The product catalog, read through the cache."),
        (name = "cache", description = "The two-tier cache (in-process L1, Redis L2)."),
        (name = "auth", description = "Accounts, JWT access/refresh tokens and sessions."),
        (name = "events", description = "Live events over Server-Sent Events."),
        (name = "ratelimit", description = "Rate limiting."),
        (name = "observability", description = "Metrics."),
        (name = "demo", description = "The demo page and the stats it shows."),
        (name = "docs", description = "This document and its interactive UI."),
    )
)]
pub struct ApiDoc;

/// Adds what every operation shares: security schemes, rate-limit answers and extractor errors.
/// See the [module docs](self).
#[derive(Debug)]
pub struct Conventions;

impl Modify for Conventions {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some("The access token from `POST /auth/login`."))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "cookie",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                crate::auth::ACCESS_COOKIE,
                "The access token, set by `POST /auth/login?cookie=true` (HttpOnly).",
            ))),
        );
        for (path, item) in &mut openapi.paths.paths {
            // One handler serving GET and HEAD is one operation under both methods; operation
            // ids must be unique, so the HEAD copy gets its own.
            if let (Some(get), Some(head)) = (&item.get, &mut item.head)
                && head.operation_id.is_some()
                && head.operation_id == get.operation_id
            {
                head.operation_id = get.operation_id.as_ref().map(|id| format!("{id}_head"));
            }
            // `GET /events` needs at least one `channel` (its schema comes from a function, which
            // utoipa gives no `required`).
            if path == "/events"
                && let Some(get) = item.get.as_mut()
            {
                for param in get.parameters.iter_mut().flatten() {
                    if let RefOr::T(param) = param
                        && param.name == "channel"
                    {
                        param.required = utoipa::openapi::Required::True;
                    }
                }
            }
            let limited = !crate::ratelimit::EXEMPT.contains(&path.as_str());
            for method in [
                HttpMethod::Get,
                HttpMethod::Head,
                HttpMethod::Post,
                HttpMethod::Put,
                HttpMethod::Patch,
                HttpMethod::Delete,
            ] {
                if let Some(operation) = operation_mut(item, &method) {
                    add_shared_responses(operation, limited, method == HttpMethod::Head);
                    unschema_event_streams(operation);
                }
            }
        }
    }
}

/// A `text/event-stream` answer is a stream of SSE events, not one value: a schema there (a
/// string) would make every event "violate" it for a checker that parses events. The media type
/// and its description say what it is.
fn unschema_event_streams(operation: &mut Operation) {
    for response in operation.responses.responses.values_mut() {
        if let RefOr::T(response) = response
            && let Some(RefOr::T(content)) = response.content.get_mut("text/event-stream")
        {
            content.schema = None;
        }
    }
}

fn operation_mut<'a>(
    item: &'a mut utoipa::openapi::PathItem,
    method: &HttpMethod,
) -> Option<&'a mut Operation> {
    match method {
        HttpMethod::Get => item.get.as_mut(),
        HttpMethod::Head => item.head.as_mut(),
        HttpMethod::Post => item.post.as_mut(),
        HttpMethod::Put => item.put.as_mut(),
        HttpMethod::Patch => item.patch.as_mut(),
        HttpMethod::Delete => item.delete.as_mut(),
        _ => None,
    }
}

fn add_shared_responses(operation: &mut Operation, limited: bool, head: bool) {
    let has_body = operation.request_body.is_some();
    let has_query = operation.parameters.iter().flatten().any(|p| match p {
        RefOr::T(p) => p.parameter_in == ParameterIn::Query,
        RefOr::Ref(_) => false,
    });
    let retry_after = || {
        HeaderBuilder::new()
            .schema(Some(
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .minimum(Some(1)),
            ))
            .description(Some("Seconds to wait before retrying."))
            .build()
    };
    let mut extra = Vec::new();
    if limited {
        extra.push((
            "429",
            "Rate limit exceeded (`quota-exceeded`); see `Retry-After`.",
            true,
        ));
        extra.push((
            "503",
            "A fail-closed rate-limit policy cannot reach Redis (`Retry-After`).",
            true,
        ));
    }
    if has_body {
        extra.push((
            "400",
            "The body is not JSON (`malformed-json`) or not of the expected shape \
             (`invalid-body`).",
            false,
        ));
        extra.push((
            "413",
            "The body is larger than the configured limit (`payload-too-large`).",
            false,
        ));
        extra.push((
            "415",
            "The body is not sent as `application/json` (`unsupported-media-type`).",
            false,
        ));
    }
    if has_query {
        extra.push((
            "400",
            "A query parameter is missing or has the wrong type (`invalid-parameter`).",
            false,
        ));
    }
    // Any handler can fail unexpectedly (a caught panic, a database error): the body is an
    // opaque problem, the details are logged with the request id.
    extra.push((
        "500",
        "Unexpected server failure (`internal`); details are in the server log, not the body.",
        false,
    ));
    let responses = &mut operation.responses.responses;
    for (status, description, retry) in extra {
        if responses.contains_key(status) {
            continue;
        }
        let mut response = ResponseBuilder::new().description(description);
        // A HEAD answer has no body: only its status (and headers) are documented.
        if !head {
            response = response.content(
                PROBLEM_JSON,
                Content::new(Some(Ref::from_schema_name("Problem"))),
            );
        }
        if retry {
            response = response.header("Retry-After", retry_after());
        }
        responses.insert(status.to_owned(), RefOr::T(response.build()));
    }
    if has_body && let Some(RefOr::T(body)) = &mut operation.request_body {
        body.required = Some(Required::True);
    }
}

/// The document, serialized once.
static DOCUMENT: LazyLock<Vec<u8>> = LazyLock::new(|| {
    // unwrap: the document is plain data (strings, maps, numbers); serializing it cannot fail.
    ApiDoc::openapi().to_json().unwrap().into_bytes()
});

pub(super) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/openapi.json").route(web::get().to(openapi_json)));
}

/// This document: OpenAPI 3.1, generated from redkit's handlers.
#[utoipa::path(
    get,
    path = "/openapi.json",
    operation_id = "openapi",
    tag = "docs",
    responses((status = 200, description = "The OpenAPI 3.1 document.",
        content_type = "application/json", body = Object))
)]
async fn openapi_json() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(DOCUMENT.as_slice())
}
