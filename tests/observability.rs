//! Request ids and `/metrics`, on both backends.

mod common;

use actix_web::test::TestRequest;
use common::{Backend, app, call, services};

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
        "ratelimit_decisions",
        "ratelimit_fail_open",
        "ratelimit_fail_closed",
        "sse_clients",
        "sse_deliveries",
        "sse_slow_consumer_drops",
        "sse_resubscribes",
        "auth_revocation_view_resyncs",
    ] {
        assert!(
            text.contains(&format!("# TYPE {family} ")),
            "{family} missing:\n{text}"
        );
    }
    assert!(text.ends_with("# EOF\n"));
}

backend_suite!(request_ids, metrics_exposition);
