//! Request ids and `/metrics`, on both backends.

use actix_web::{App, HttpServer, test::TestRequest, web};

use crate::common::{Backend, app, call, http, services};

/// An incoming `X-Request-Id` is echoed; a missing or unsafe one is replaced by a fresh id.
async fn request_ids(backend: Backend) {
    let services = services(&backend.config());
    let app = app(&services).await;
    let echoed = call(
        &app,
        TestRequest::get()
            .uri("/health/live")
            .insert_header(("x-request-id", "abc-123.x:y")),
    )
    .await;
    assert_eq!(echoed.header("x-request-id"), Some("abc-123.x:y"));
    let minted = call(&app, TestRequest::get().uri("/health/live")).await;
    let id = minted.header("x-request-id").unwrap().to_owned();
    assert_eq!(id.len(), 24);
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
    let next = call(&app, TestRequest::get().uri("/health/live")).await;
    assert_ne!(next.header("x-request-id"), Some(id.as_str()));
    for unsafe_id in ["has space", "new\tline", &"x".repeat(129)] {
        let reply = call(
            &app,
            TestRequest::get()
                .uri("/health/live")
                .insert_header(("x-request-id", unsafe_id)),
        )
        .await;
        assert_eq!(
            reply.header("x-request-id").unwrap().len(),
            24,
            "{unsafe_id:?} replaced"
        );
    }
    // Errors carry it too.
    let missing = call(
        &app,
        TestRequest::get()
            .uri("/nowhere")
            .insert_header(("x-request-id", "err-1")),
    )
    .await;
    assert_eq!(
        (missing.status, missing.header("x-request-id")),
        (404, Some("err-1"))
    );
}

/// `/metrics` counts requests by route pattern and status, and exports cache and Redis state.
async fn metrics_exposition(backend: Backend) {
    let services = services(&backend.config());
    let app = app(&services).await;
    for _ in 0..3 {
        assert_eq!(
            call(&app, TestRequest::get().uri("/products/2"))
                .await
                .status,
            200
        );
    }
    call(&app, TestRequest::get().uri("/products/999"))
        .await
        .problem(404);
    call(&app, TestRequest::get().uri("/no/such/path"))
        .await
        .problem(404);
    let reply = call(&app, TestRequest::get().uri("/metrics")).await;
    assert_eq!(reply.status, 200);
    assert!(
        reply
            .header("content-type")
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let text = String::from_utf8(reply.body.to_vec()).unwrap();
    let has = |line: &str| text.lines().any(|l| l == line);
    assert!(
        has(r#"http_requests_total{method="GET",route="/products/{id}",status="200"} 3"#),
        "{text}"
    );
    assert!(
        has(r#"http_requests_total{method="GET",route="/products/{id}",status="404"} 1"#),
        "{text}"
    );
    assert!(
        has(r#"http_requests_total{method="GET",route="unmatched",status="404"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(
            r#"http_request_duration_seconds_count{method="GET",route="/products/{id}"} 4"#
        ),
        "{text}"
    );
    assert!(
        has(r#"cache_lookups_total{tier="l1",result="hit"} 2"#),
        "{text}"
    );
    assert!(has("cache_loads_total 2"), "{text}");
    if backend.is_redis() {
        assert!(has("redis_up 1"), "{text}");
        assert!(
            text.contains("redis_command_duration_seconds_count "),
            "{text}"
        );
    } else {
        assert!(!text.contains("redis_up"));
    }
    // Every family the operators' dashboards need is exported, whatever happened so far
    // (OpenMetrics names counter families without `_total`).
    for family in [
        "cache_l1_evictions",
        "cache_l1_bytes",
        "cache_l2_errors",
        "cache_stale_served",
        "cache_loader_failures",
        "cache_loader_timeouts",
        "cache_eager_refreshes",
        "ratelimit_decisions",
        "ratelimit_fail_open",
        "ratelimit_fail_closed",
        "sse_clients",
        "sse_deliveries",
        "sse_slow_consumer_drops",
        "sse_resubscribes",
        "auth_revocation_view_resyncs",
        "auth_revocation_entries",
    ] {
        assert!(
            text.contains(&format!("# TYPE {family} ")),
            "{family} missing:\n{text}"
        );
    }
    assert!(text.ends_with("# EOF\n"));
}

/// Behind [`redkit::problem::problem_errors`] and [`redkit::metrics::observe`], a handler that panics answers a 500 problem with the request's
/// id, is counted under its route, and the worker goes on serving; an error an inner middleware
/// returns gets a problem body, the id and a count too.
async fn panics_and_middleware_errors_are_problems(backend: Backend) {
    let services = services(&backend.config());
    let server = {
        let services = services.clone();
        HttpServer::new(move || {
            let services = services.clone();
            App::new()
                .configure(move |cfg| services.configure(cfg))
                .route(
                    "/boom",
                    web::get().to(|| async {
                        if true {
                            panic!("boom");
                        }
                        "unreachable"
                    }),
                )
                .route(
                    "/challenge",
                    web::get().to(|| async {
                        actix_web::HttpResponse::Unauthorized()
                            .insert_header(("WWW-Authenticate", "Bearer realm=\"x\""))
                            .insert_header(("Content-Encoding", "gzip"))
                            .insert_header(("ETag", "\"v1\""))
                            .finish()
                    }),
                )
                .service(
                    web::scope("/moved")
                        .wrap_fn(|_req, _srv| async {
                            Err::<actix_web::dev::ServiceResponse, _>(
                                actix_web::error::InternalError::from_response(
                                    "moved",
                                    actix_web::HttpResponse::Found()
                                        .insert_header(("Location", "/login"))
                                        .finish(),
                                )
                                .into(),
                            )
                        })
                        .route("/x", web::get().to(|| async { "never" })),
                )
                .service(
                    web::scope("/guarded")
                        .wrap_fn(|_req, _srv| async {
                            Err::<actix_web::dev::ServiceResponse, _>(
                                actix_web::error::ErrorForbidden("internal reason"),
                            )
                        })
                        .route("/x", web::get().to(|| async { "never" })),
                )
                // Inside `observe`: a request whose path it rewrites is counted under its route.
                .wrap(actix_web::middleware::NormalizePath::trim())
                .wrap(actix_web::middleware::from_fn(
                    redkit::problem::problem_errors,
                ))
                .wrap(actix_web::middleware::from_fn(redkit::metrics::observe))
        })
        // One worker: the request after the panic is served by the same one.
        .workers(1)
        .disable_signals()
        .bind("127.0.0.1:0")
        .unwrap()
    };
    let addr = server.addrs()[0];
    let handle = server.run();
    let stop = handle.handle();
    actix_web::rt::spawn(handle);

    let boom = http(addr, "GET", "/boom", &[("x-request-id", "panic-1")], b"").await;
    let body = boom.problem(500);
    assert_eq!(body["type"], "https://redkit.dev/problems/internal");
    assert_eq!(boom.header("x-request-id"), Some("panic-1"));
    assert!(!String::from_utf8_lossy(&boom.body).contains("boom"));
    let after = http(addr, "GET", "/products/1", &[], b"").await;
    assert_eq!(after.status, 200);

    let guarded = http(addr, "GET", "/guarded/x", &[("x-request-id", "mw-1")], b"").await;
    let body = guarded.problem(403);
    assert_eq!(body["type"], "https://redkit.dev/problems/forbidden");
    assert_eq!(guarded.header("x-request-id"), Some("mw-1"));
    assert!(!String::from_utf8_lossy(&guarded.body).contains("internal reason"));

    // A problem body replaces only the body: the challenge header stays.
    let challenge = http(addr, "GET", "/challenge", &[], b"").await;
    challenge.problem(401);
    assert_eq!(
        challenge.header("www-authenticate"),
        Some("Bearer realm=\"x\"")
    );
    // Headers that described the replaced body do not describe the problem.
    assert_eq!(
        (
            challenge.header("content-encoding"),
            challenge.header("etag")
        ),
        (None, None)
    );
    let trailing = http(addr, "GET", "/products/1/", &[], b"").await;
    assert_eq!(trailing.status, 200);
    // A redirect from a middleware is not an error: answered as it was, with the id.
    let moved = http(addr, "GET", "/moved/x", &[("x-request-id", "mv-1")], b"").await;
    assert_eq!(
        (
            moved.status,
            moved.header("location"),
            moved.header("x-request-id")
        ),
        (302, Some("/login"), Some("mv-1"))
    );
    assert!(moved.body.is_empty());

    let metrics = http(addr, "GET", "/metrics", &[], b"").await;
    let text = String::from_utf8(metrics.body.to_vec()).unwrap();
    let has = |line: &str| text.lines().any(|l| l == line);
    assert!(
        has(r#"http_requests_total{method="GET",route="/boom",status="500"} 1"#),
        "{text}"
    );
    assert!(
        has(r#"http_requests_total{method="GET",route="/guarded/x",status="403"} 1"#),
        "{text}"
    );
    assert!(
        has(r#"http_requests_total{method="GET",route="/products/{id}",status="200"} 2"#),
        "{text}"
    );
    stop.stop(true).await;
}

backend_suite!(
    request_ids,
    metrics_exposition,
    panics_and_middleware_errors_are_problems
);
