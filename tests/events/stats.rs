//! `GET /stats` and `GET /stats/stream`, what the demo page's charts are drawn from: requests
//! counted by status class, and one snapshot a second shared by every stream client.

use std::{collections::BTreeSet, net::SocketAddr, time::Duration};

use actix_web::test::TestRequest;
use serde_json::Value;

use crate::common::{Backend, TestServer, app, call, services, sse::Sse};

/// Requests are counted by status class in `/stats` (`http`), exactly, the 5xx of a Redis that
/// went away included; the snapshot carries its time and the Redis state and latency.
async fn stats_count_requests_by_outcome(mut backend: Backend) {
    let mut config = backend.config();
    config.rate_limit = redkit::ratelimit::RateLimitConfig::parse(
        &["default=off", "POST /expensive-operation=1/60s"],
        &[] as &[&str],
    )
    .unwrap();
    let services = services(&config);
    let app = app(&services).await;
    let stats = |reply: crate::common::Reply| {
        assert_eq!(reply.status, 200);
        assert_eq!(reply.header("cache-control"), Some("no-store"));
        reply.json()
    };
    let before = stats(call(&app, TestRequest::get().uri("/stats")).await);
    let mut expected = [1, 0, 0, 0]; // 2xx (the first `/stats` itself), 4xx, 429, 5xx
    for (uri, status) in [
        ("/health/live", 200),
        ("/cache/absent", 404),
        ("/no/such", 404),
    ] {
        assert_eq!(call(&app, TestRequest::get().uri(uri)).await.status, status);
    }
    for status in [200, 429, 429] {
        let reply = call(&app, TestRequest::post().uri("/expensive-operation")).await;
        assert_eq!(reply.status, status);
    }
    expected[0] += 2;
    expected[1] += 2;
    expected[2] += 2;
    if backend.kill_redis() {
        let reply = call(&app, TestRequest::get().uri("/cache/absent-too")).await;
        assert_eq!(reply.status, 503);
        expected[3] += 1;
    }
    let after = stats(call(&app, TestRequest::get().uri("/stats")).await);
    let delta = |class: &str| {
        after["http"][class].as_u64().unwrap() - before["http"][class].as_u64().unwrap()
    };
    assert_eq!(
        [
            delta("status_2xx"),
            delta("status_4xx"),
            delta("status_429"),
            delta("status_5xx")
        ],
        expected,
        "{before} then {after}"
    );
    assert_eq!(delta("other"), 0);
    let (t0, t1) = (
        before["time_ms"].as_u64().unwrap(),
        after["time_ms"].as_u64().unwrap(),
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert!(
        t0 <= t1 && t1 <= now && now - t0 < 60_000,
        "{t0} {t1} {now}"
    );
    if backend.is_redis() {
        assert_eq!(before["redis_up"], true);
        assert!(before["redis_latency_us"].is_u64(), "{before}");
        assert_eq!(after["redis_up"], false, "{after}");
    } else {
        assert_eq!(after["redis_up"], false);
        assert_eq!(after["redis_latency_us"], Value::Null);
    }
}

backend_suite!(stats_count_requests_by_outcome);

/// A `/stats/stream` client reading JSON snapshots (`event: stats` frames).
struct StatsClient(Sse);

impl StatsClient {
    async fn connect(addr: SocketAddr) -> Self {
        let sse = Sse::open(addr, "/stats/stream", &[]).await;
        assert_eq!(sse.status, 200, "{}", sse.body);
        let kind = sse.header("content-type").unwrap_or_default();
        assert!(kind.starts_with("text/event-stream"), "{kind}");
        Self(sse)
    }

    /// The next snapshot (within 5 s).
    async fn next(&mut self) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let frame = self.0.next_within(left).await.expect("stream ended");
            if frame.event.as_deref() == Some("stats") {
                return serde_json::from_str(&frame.data()).unwrap();
            }
        }
    }

    /// The `time_ms` of the next `n` snapshots.
    async fn times(&mut self, n: usize) -> Vec<u64> {
        let mut times = Vec::new();
        for _ in 0..n {
            times.push(self.next().await["time_ms"].as_u64().unwrap());
        }
        times
    }
}

/// Every client gets the same snapshot each second (one read and encoding per second for them
/// all, not one per client), its first one at once; the ticker stops with the last client and
/// starts again with the next.
#[actix_web::test]
async fn stats_stream_shares_one_snapshot_per_second() {
    let server = TestServer::start(services(&Backend::memory().config()), 2);
    let mut first = StatsClient::connect(server.addr).await;
    first.next().await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let mut second = StatsClient::connect(server.addr).await;
    let mut third = StatsClient::connect(server.addr).await;
    // Their own first snapshots, read when they connected.
    let (own_second, own_third) = (second.next().await, third.next().await);
    let ticks: Vec<u64> = first.times(4).await;
    let shared_second: BTreeSet<u64> = second.times(3).await.into_iter().collect();
    let shared_third: BTreeSet<u64> = third.times(3).await.into_iter().collect();
    let ticks_set: BTreeSet<u64> = ticks.iter().copied().collect();
    assert!(
        shared_second.is_subset(&ticks_set),
        "{ticks:?} {shared_second:?}"
    );
    assert!(
        shared_third.is_subset(&ticks_set),
        "{ticks:?} {shared_third:?}"
    );
    assert!(!ticks_set.contains(&own_second["time_ms"].as_u64().unwrap()));
    assert!(!ticks_set.contains(&own_third["time_ms"].as_u64().unwrap()));
    for pair in ticks.windows(2) {
        assert!((700..=2_000).contains(&(pair[1] - pair[0])), "{ticks:?}");
    }
    drop((first, second, third));
    // No client: the ticker ends at its next tick. A new client starts another.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let mut again = StatsClient::connect(server.addr).await;
    let times = again.times(3).await;
    assert!(times[1] > times[0] && times[2] > times[1], "{times:?}");
    server.stop().await;
}

/// The page loads its chart library from this server, versioned and cacheable, byte for byte the
/// vendored files; its Content-Security-Policy admits scripts from this origin.
#[actix_web::test]
async fn demo_page_serves_its_chart_library() {
    let services = services(&Backend::memory().config());
    let app = app(&services).await;
    let page = call(&app, TestRequest::get().uri("/")).await;
    assert_eq!(page.status, 200);
    let html = String::from_utf8(page.body.to_vec()).unwrap();
    assert!(html.contains(r#"<script src="demo/uplot.iife.min.js?v=1.6.32"></script>"#));
    assert!(html.contains(r#"href="demo/uplot.min.css?v=1.6.32""#));
    let csp = page.header("content-security-policy").unwrap();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    for (uri, file, kind) in [
        (
            "/demo/uplot.iife.min.js?v=1.6.32",
            "uPlot.iife.min.js",
            "text/javascript; charset=utf-8",
        ),
        (
            "/demo/uplot.min.css?v=1.6.32",
            "uPlot.min.css",
            "text/css; charset=utf-8",
        ),
    ] {
        let reply = call(&app, TestRequest::get().uri(uri)).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.header("content-type"), Some(kind));
        assert_eq!(
            reply.header("cache-control"),
            Some("public, max-age=31536000, immutable")
        );
        assert_eq!(reply.header("x-content-type-options"), Some("nosniff"));
        let vendored = std::fs::read(format!(
            "{}/assets/uplot/{file}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap();
        assert_eq!(reply.body, vendored);
    }
}
