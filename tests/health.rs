//! `/health` and `/health/live` on both backends, and with Redis down.

mod common;

use actix_web::test::TestRequest;
use common::{Backend, app, call, services};

/// A healthy instance reports its backend, and Redis' latency when it has Redis.
async fn health_reports_backend(backend: Backend) {
    let services = services(&backend.config());
    let app = app(&services).await;
    let reply = call(&app, TestRequest::get().uri("/health")).await;
    assert_eq!(reply.status, 200);
    let body = reply.json();
    assert_eq!(body["status"], "healthy");
    if backend.is_redis() {
        assert_eq!(body["backend"], "redis");
        assert_eq!(body["redis"]["status"], "up");
        assert!(body["redis"]["latency_ms"].as_f64().unwrap() >= 0.0);
    } else {
        assert_eq!(body["backend"], "memory");
    }
    let live = call(&app, TestRequest::get().uri("/health/live")).await;
    assert_eq!(live.status, 200);
    assert_eq!(live.json()["status"], "alive");
}

backend_suite!(health_reports_backend);

/// With Redis configured but down, `/health` is 503 `degraded` and `/health/live` stays 200.
#[actix_web::test]
async fn health_degraded_when_redis_down() {
    let mut backend = Backend::redis();
    let config = backend.config();
    backend.server().unwrap().kill();
    let services = services(&config);
    let app = app(&services).await;
    let reply = call(&app, TestRequest::get().uri("/health")).await;
    assert_eq!(reply.status, 503);
    let body = reply.json();
    assert_eq!(body["status"], "degraded");
    assert_eq!(body["redis"]["status"], "down");
    assert_eq!(
        call(&app, TestRequest::get().uri("/health/live"))
            .await
            .status,
        200
    );
}
