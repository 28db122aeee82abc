//! `/health` and `/health/live` on both backends, and with Redis down.

use actix_web::test::TestRequest;

use crate::common::{Backend, app, call, services};

/// A healthy instance reports its backend, and Redis' latency when it has Redis; a cluster's
/// nodes only with `--health-nodes`.
async fn health_reports_backend(backend: Backend) {
    let running = services(&backend.config());
    let service = app(&running).await;
    let reply = call(&service, TestRequest::get().uri("/health")).await;
    assert_eq!(reply.status, 200);
    let body = reply.json();
    assert_eq!(body["status"], "healthy");
    assert!(body["redis"].get("nodes").is_none(), "{body}");
    if let Backend::Cluster(cluster) = &backend {
        let mut config = backend.config();
        config.health_nodes = true;
        let running = services(&config);
        let service = app(&running).await;
        let reply = call(&service, TestRequest::get().uri("/health")).await;
        assert_eq!(reply.status, 200);
        let body = reply.json();
        assert_eq!(body["backend"], "redis-cluster");
        assert_eq!(body["redis"]["status"], "up");
        let mut nodes: Vec<(String, String, String)> = body["redis"]["nodes"]
            .as_array()
            .unwrap_or_else(|| panic!("no nodes: {body}"))
            .iter()
            .map(|n| {
                let field = |f: &str| n[f].as_str().unwrap().to_owned();
                (field("address"), field("role"), field("status"))
            })
            .collect();
        nodes.sort();
        let mut want: Vec<(String, String, String)> = cluster
            .nodes()
            .iter()
            .map(|n| {
                (
                    format!("127.0.0.1:{}", n.port()),
                    "primary".into(),
                    "up".into(),
                )
            })
            .collect();
        want.sort();
        assert_eq!(nodes, want, "{body}");
    } else if backend.is_redis() {
        assert_eq!(body["backend"], "redis");
        assert_eq!(body["redis"]["status"], "up");
        assert!(body["redis"]["latency_ms"].as_f64().unwrap() >= 0.0);
    } else {
        assert_eq!(body["backend"], "memory");
    }
    let live = call(&service, TestRequest::get().uri("/health/live")).await;
    assert_eq!(live.status, 200);
    assert_eq!(live.json()["status"], "alive");
}

backend_suite!(
    health_reports_backend,
    health_probes_redis_at_most_once_per_second
);

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

/// A known path with the wrong method is a 405 problem with `Allow`, on every feature's routes.
#[actix_web::test]
async fn wrong_method_is_405_everywhere() {
    let services = services(&Backend::memory().config());
    let app = app(&services).await;
    for (method, path, allow) in [
        ("POST", "/health", "GET"),
        ("DELETE", "/products", "GET, POST"),
        ("PATCH", "/cache/k", "GET, HEAD, PUT, DELETE"),
        ("GET", "/auth/login", "POST"),
        ("POST", "/auth/me", "GET"),
        ("GET", "/auth/sessions/abc", "DELETE"),
        ("PUT", "/events/demo", "GET, POST"),
        ("GET", "/events/ticket", "POST"),
        ("GET", "/expensive-operation", "POST"),
        ("POST", "/ratelimit/status", "GET"),
        ("POST", "/metrics", "GET"),
    ] {
        let req = TestRequest::default()
            .method(method.parse().unwrap())
            .uri(path);
        let reply = call(&app, req).await;
        assert_eq!(
            reply.problem(405)["type"],
            "https://redkit.dev/problems/method-not-allowed",
            "{method} {path}"
        );
        assert_eq!(reply.header("allow"), Some(allow), "{method} {path}");
    }
}

/// `/health` is exempt from rate limits, so its Redis cost is bounded instead: at most one
/// probe a second whatever the request rate, on every backend. 60 requests (30 concurrent) in
/// well under a second cost at most one probe of their own (`PING`, and on a cluster with
/// `--health-nodes` one `CLUSTER NODES` and a `PING` per node), plus one probe of the
/// connection's watchdog.
async fn health_probes_redis_at_most_once_per_second(backend: Backend) {
    let mut config = backend.config();
    config.health_nodes = true;
    let services = services(&config);
    let app = app(&services).await;
    let calls = |name: &str| {
        backend
            .command_calls()
            .map(|calls| calls.get(name).copied().unwrap_or(0))
    };
    assert_eq!(
        call(&app, TestRequest::get().uri("/health")).await.status,
        200
    );
    let (pings, topology) = (calls("ping"), calls("cluster|nodes"));
    let started = std::time::Instant::now();
    let replies = futures_util::future::join_all(
        (0..30).map(|_| call(&app, TestRequest::get().uri("/health"))),
    )
    .await;
    assert!(replies.iter().all(|r| r.status == 200));
    for _ in 0..30 {
        assert_eq!(
            call(&app, TestRequest::get().uri("/health")).await.status,
            200
        );
    }
    let elapsed = started.elapsed();
    let Some(pings) = calls("ping")
        .zip(pings)
        .map(|(after, before)| after - before)
    else {
        return; // memory: nothing to probe
    };
    // Two probes at most if the 60 requests straddled the end of the first probe's second.
    let probes = if elapsed < std::time::Duration::from_secs(1) {
        1
    } else {
        2
    };
    let nodes = match &backend {
        Backend::Cluster(cluster) => cluster.nodes().len() as u64,
        _ => 0,
    };
    // Each probe: one PING, plus a PING per node on a cluster; the watchdog adds one PING.
    assert!(
        pings <= probes * (1 + nodes) + 1,
        "{pings} PINGs for 60 health checks in {elapsed:?}"
    );
    let topology = calls("cluster|nodes").zip(topology).map(|(a, b)| a - b);
    assert!(
        topology.unwrap_or(0) <= probes,
        "{topology:?} CLUSTER NODES for 60 health checks in {elapsed:?}"
    );
}
