//! One instance on every backend: exactness, windows, headers, identity and proxies, login and
//! publish limits.

use super::*;

/// 500 requests released together against a limit of 100 admit exactly 100 and deny 400, for
/// every algorithm, repeated over several windows.
async fn exact_under_concurrency(backend: Backend) {
    for algorithm in ALGORITHMS {
        let spec = format!("POST /expensive-operation=100/60s,algorithm={algorithm}");
        let (config, clock) = setup(&backend, &route_only(&spec), &[]);
        let services = services(&config);
        let app = app(&services).await;
        for round in 0..3 {
            let replies = join_all((0..500).map(|_| call(&app, post("10.0.0.1")))).await;
            assert_eq!(
                statuses(&replies),
                (100, 400, 0),
                "{algorithm} round {round}"
            );
            // Two windows: even the counter's previous window no longer weighs.
            clock.advance(Duration::from_secs(120));
        }
        // On Redis every decision was made there, not by the fallback.
        let stats = services.ratelimit.stats();
        assert_eq!((stats.fallback_decisions, stats.store_errors), (0, 0));
        assert_eq!(stats.allowed, 300);
    }
}

/// Limit 5 / 10 s: after 5 requests, one per second is denied until the algorithm's window
/// allows, then admitted at exactly that second, never later.
async fn no_self_lockout(backend: Backend) {
    // First admission after the burst: the log waits a whole window; the counter until the
    // previous window's weight fits (12 s); GCRA re-admits one every 10 s / 5 = 2 s.
    for (algorithm, first_ok) in [("log", 10), ("counter", 12), ("gcra", 2)] {
        let spec = format!("POST /expensive-operation=5/10s,algorithm={algorithm}");
        let (config, clock) = setup(&backend, &route_only(&spec), &[]);
        let services = services(&config);
        let app = app(&services).await;
        for _ in 0..5 {
            assert_eq!(
                call(&app, post("10.0.0.2")).await.status,
                200,
                "{algorithm}"
            );
        }
        for second in 1..=first_ok {
            clock.advance(Duration::from_secs(1));
            let reply = call(&app, post("10.0.0.2")).await;
            if second < first_ok {
                assert_eq!(reply.status, 429, "{algorithm} at {second}s");
                let retry: u64 = reply.header("retry-after").unwrap().parse().unwrap();
                assert_eq!(retry, first_ok - second, "{algorithm} at {second}s");
            } else {
                assert_eq!(reply.status, 200, "{algorithm} at {second}s");
            }
        }
    }
}

/// Headers count down exactly, report the most restrictive policy once, and the 429 carries
/// `Retry-After` after which the retry succeeds.
async fn headers_and_retry_after(backend: Backend) {
    // (algorithm, RateLimit t= after the k-th request, Retry-After of the 6th)
    type Reset = fn(u64) -> u64;
    let cases: [(&str, Reset, u64); 3] = [
        ("log", |_| 60, 60),
        ("counter", |_| 60, 72),
        ("gcra", |k| 12 * k, 12),
    ];
    for (algorithm, reset, retry) in cases {
        // Each algorithm's own global key: rounds share the Redis, and each round's clock
        // starts again at START_US.
        let specs = vec![
            format!("default=100/60s,algorithm={algorithm}"),
            format!("POST /expensive-operation=5/60s,algorithm={algorithm}"),
        ];
        let (config, clock) = setup(&backend, &specs, &[]);
        let services = services(&config);
        let app = app(&services).await;
        let name = "\"POST /expensive-operation\"";
        for k in 1..=5u64 {
            let reply = call(&app, post("10.0.0.3")).await;
            assert_eq!(reply.status, 200);
            assert_eq!(reply.json(), serde_json::json!({"ok": true}));
            assert_eq!(reply.header("x-ratelimit-limit"), Some("5"));
            assert_eq!(
                reply.header("x-ratelimit-remaining"),
                Some((5 - k).to_string().as_str())
            );
            let reset_at = START_US / 1_000_000 + reset(k);
            assert_eq!(
                reply.header("x-ratelimit-reset"),
                Some(reset_at.to_string().as_str())
            );
            assert_eq!(
                reply.header("ratelimit-policy"),
                Some(format!("{name};q=5;w=60").as_str())
            );
            assert_eq!(
                reply.header("ratelimit"),
                Some(format!("{name};r={};t={}", 5 - k, reset(k)).as_str()),
                "{algorithm}"
            );
            assert_eq!(reply.headers.get_all("ratelimit").count(), 1);
        }
        let denied = call(&app, post("10.0.0.3")).await;
        let body = denied.problem(429);
        assert_eq!(body["type"], "https://redkit.dev/problems/quota-exceeded");
        assert!(
            body["detail"]
                .as_str()
                .unwrap()
                .contains("POST /expensive-operation")
        );
        assert_eq!(
            denied.header("retry-after"),
            Some(retry.to_string().as_str()),
            "{algorithm}"
        );
        assert_eq!(denied.header("x-ratelimit-remaining"), Some("0"));
        clock.advance(Duration::from_secs(retry - 1));
        assert_eq!(call(&app, post("10.0.0.3")).await.status, 429);
        clock.advance(Duration::from_secs(1));
        assert_eq!(
            call(&app, post("10.0.0.3")).await.status,
            200,
            "{algorithm}"
        );
    }
}

/// Denied requests spend nothing: not on the denying policy, and units an earlier policy of
/// the same request spent are given back.
async fn denied_requests_do_not_consume(backend: Backend) {
    for algorithm in ALGORITHMS {
        // The route denies first: the global policy is never touched.
        let specs = vec![
            format!("default=5/60s,algorithm={algorithm}"),
            format!("POST /expensive-operation=3/60s,algorithm={algorithm}"),
        ];
        let (config, _clock) = setup(&backend, &specs, &[]);
        let services = services(&config);
        let app = app(&services).await;
        let replies = join_all((0..20).map(|_| call(&app, post("10.0.0.4")))).await;
        assert_eq!(statuses(&replies), (3, 17, 0));
        assert_eq!(
            left(&services, "10.0.0.4", "default").await,
            2,
            "{algorithm}"
        );
        assert_eq!(left(&services, "10.0.0.4", EXPENSIVE).await, 0);

        // The global policy denies after the route admitted: the route's unit is refunded.
        let specs = vec![
            format!("default=3/60s,algorithm={algorithm}"),
            format!("POST /expensive-operation=5/60s,algorithm={algorithm}"),
        ];
        let (config2, _clock) = setup(&backend, &specs, &[]);
        let services2 = common::services(&config2);
        let app2 = common::app(&services2).await;
        for _ in 0..3 {
            assert_eq!(call(&app2, post("10.0.0.5")).await.status, 200);
        }
        assert_eq!(call(&app2, post("10.0.0.5")).await.status, 429);
        // Now blocked on the global policy: later requests are denied before any store is
        // asked, so the route's unit is neither spent nor refunded (no Redis command at all).
        let before = backend.command_calls();
        for _ in 0..5 {
            assert_eq!(call(&app2, post("10.0.0.5")).await.status, 429);
        }
        if let (Some(before), Some(after)) = (before, backend.command_calls()) {
            let changed: Vec<_> = after
                .iter()
                .filter(|(k, v)| before.get(*k) != Some(*v) && *k != "ping" && *k != "info")
                .collect();
            assert!(changed.is_empty(), "{algorithm}: {changed:?}");
        }
        assert_eq!(left(&services2, "10.0.0.5", "default").await, 0);
        assert_eq!(
            left(&services2, "10.0.0.5", EXPENSIVE).await,
            2,
            "{algorithm}"
        );
    }
}

/// Weighted costs spend several units; a peek answers without spending.
async fn weighted_cost_and_peek(backend: Backend) {
    for algorithm in ALGORITHMS {
        let spec = format!("POST /expensive-operation=5/60s,algorithm={algorithm}");
        let (config, _clock) = setup(&backend, &route_only(&spec), &[]);
        let services = services(&config);
        let limiter = &services.ratelimit;
        let policy: Policy = config
            .rate_limit
            .routes
            .iter()
            .find(|r| r.path == "/expensive-operation")
            .unwrap()
            .policy
            .clone();
        let d = limiter.check(&policy, "ip:w", 3).await.unwrap();
        assert!(d.allowed);
        assert_eq!(d.remaining, 2, "{algorithm}");
        for _ in 0..3 {
            let peek = limiter.peek(&policy, "ip:w", 2).await.unwrap();
            assert!(peek.allowed, "{algorithm}");
            assert_eq!(peek.remaining, 2, "{algorithm}");
        }
        let peek = limiter.peek(&policy, "ip:w", 3).await.unwrap();
        assert!(!peek.allowed);
        let d = limiter.check(&policy, "ip:w", 2).await.unwrap();
        assert!(d.allowed);
        assert_eq!(d.remaining, 0, "{algorithm}");
    }
}

/// A spoofed `X-Forwarded-For` from an untrusted peer is ignored: the peer's bucket is used.
async fn spoofed_forwarded_for_ignored(backend: Backend) {
    let (config, _clock) = setup(
        &backend,
        &route_only("POST /expensive-operation=2/60s"),
        &[],
    );
    let services = services(&config);
    let app = app(&services).await;
    for (i, fake) in ["1.1.1.1", "2.2.2.2", "3.3.3.3"].iter().enumerate() {
        let req = post("10.0.0.6").insert_header(("X-Forwarded-For", *fake));
        let expected = if i < 2 { 200 } else { 429 };
        assert_eq!(call(&app, req).await.status, expected);
    }
    let req = status_req("10.0.0.6")
        .insert_header(("X-Forwarded-For", "1.1.1.1"))
        .insert_header(("Forwarded", "for=1.1.1.1"));
    assert_eq!(call(&app, req).await.json()["identity"], "ip:10.0.0.6");
}

/// Behind trusted proxies the client is the first untrusted hop from the right.
async fn trusted_proxy_uses_right_hop(backend: Backend) {
    let (config, _clock) = setup(
        &backend,
        &route_only("POST /expensive-operation=1/60s"),
        &["10.0.0.0/8", "192.168.0.0/16"],
    );
    let services = services(&config);
    let app = app(&services).await;
    let xff = "6.6.6.6, 203.0.113.7, 192.168.1.1";
    let req = status_req("10.0.0.7").insert_header(("X-Forwarded-For", xff));
    assert_eq!(call(&app, req).await.json()["identity"], "ip:203.0.113.7");
    let req = status_req("10.0.0.7").insert_header((
        "Forwarded",
        "for=6.6.6.6, for=\"[2001:db8::1]:443\";proto=https",
    ));
    // IPv6 clients are grouped by /64.
    assert_eq!(call(&app, req).await.json()["identity"], "ip:2001:db8::/64");
    // Two clients behind the same proxy have separate buckets; the spoofed left entry is ignored.
    let a = post("10.0.0.7").insert_header(("X-Forwarded-For", "9.9.9.9, 203.0.113.7"));
    let b = post("10.0.0.7").insert_header(("X-Forwarded-For", "203.0.113.8"));
    let a2 = post("10.0.0.8").insert_header(("X-Forwarded-For", "8.8.8.8, 203.0.113.7"));
    assert_eq!(call(&app, a).await.status, 200);
    assert_eq!(call(&app, b).await.status, 200);
    assert_eq!(call(&app, a2).await.status, 429);
}

/// Shadow policies decide and count but never reject; OPTIONS preflights are not counted.
async fn shadow_and_preflight(backend: Backend) {
    let (config, _clock) = setup(
        &backend,
        &route_only("POST /expensive-operation=2/60s,shadow"),
        &[],
    );
    let services = services(&config);
    let app = app(&services).await;
    for _ in 0..5 {
        let reply = call(&app, post("10.0.0.9")).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.header("ratelimit"), None);
    }
    let stats = services.ratelimit.stats();
    assert_eq!((stats.allowed, stats.shadow_denied), (2, 3));

    let (config2, _clock) = setup(&backend, &["default=1/60s".to_owned()], &[]);
    let services2 = common::services(&config2);
    let app2 = common::app(&services2).await;
    for _ in 0..3 {
        let req = TestRequest::default()
            .method(actix_web::http::Method::OPTIONS)
            .uri("/expensive-operation")
            .peer_addr(peer("10.0.0.10"));
        assert_ne!(call(&app2, req).await.status, 429);
    }
    assert_eq!(call(&app2, post("10.0.0.10")).await.status, 200);
    assert_eq!(call(&app2, post("10.0.0.10")).await.status, 429);
}

/// The shipped defaults: `POST /expensive-operation` answers `{"ok":true}` 10 times a minute.
async fn expensive_operation_defaults(backend: Backend) {
    let (config, _clock) = setup(&backend, &[] as &[String], &[]);
    let services = services(&config);
    let app = app(&services).await;
    for _ in 0..10 {
        let reply = call(&app, post("10.0.0.11")).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.json(), serde_json::json!({"ok": true}));
    }
    call(&app, post("10.0.0.11")).await.problem(429);
    let status = call(&app, status_req("10.0.0.11")).await.json();
    assert_eq!(status["policies"][0]["limit"], 100);
    // 10 admitted, the denied one spent nothing, and this status read counts.
    assert_eq!(status["policies"][0]["remaining"], 89);
    assert_eq!(status["policies"][1]["remaining"], 0);
}

/// Failed logins: 5 per (username, IP) per 15 minutes; other IPs and users are unaffected.
async fn login_failures_limited(backend: Backend) {
    let (config, clock) = setup(&backend, &[] as &[String], &[]);
    let services = services(&config);
    let limiter = &services.ratelimit;
    let ip = "10.1.1.1".parse().unwrap();
    for i in 0..5 {
        assert!(
            limiter.login_blocked("Alice", ip).await.allowed,
            "before {i}"
        );
        limiter.record_login_failure("alice", ip).await;
    }
    let blocked = limiter.login_blocked("alice", ip).await;
    assert!(!blocked.allowed);
    assert_eq!(blocked.retry_after_secs(), 900);
    assert!(
        limiter
            .login_blocked("alice", "10.1.1.2".parse().unwrap())
            .await
            .allowed
    );
    assert!(limiter.login_blocked("bob", ip).await.allowed);
    clock.advance(Duration::from_secs(900));
    assert!(limiter.login_blocked("alice", ip).await.allowed);
}

/// Spends 10 login attempts that are refunded (right passwords), then 5 kept ones (wrong
/// passwords): all allowed; the sixth is refused. Without a refund reaching the store that spent
/// the unit, the sixth of the refunded attempts is already refused.
async fn refunded_then_five_failures(limiter: &RateLimitHandle, user: &str) {
    let ip = "10.1.4.1".parse().unwrap();
    for i in 0..10 {
        let attempt = limiter.login_attempt(user, ip).await;
        assert!(attempt.decision.allowed, "{user}: refunded attempt {i}");
        limiter.login_refund(attempt).await;
    }
    for i in 0..5 {
        let attempt = limiter.login_attempt(user, ip).await;
        assert!(attempt.decision.allowed, "{user}: kept attempt {i}");
        assert_eq!(
            attempt.decision.remaining,
            4 - i,
            "{user}: kept attempt {i}"
        );
    }
    let refused = limiter.login_attempt(user, ip).await;
    assert!(!refused.decision.allowed, "{user}: sixth kept attempt");
}

/// The login attempt spent before the password check is given back by `login_refund` on every
/// algorithm the login policy may use; on Redis (a refund script of its own, outside the
/// batched decisions) every key left behind still has a TTL.
async fn login_refund_every_algorithm(backend: Backend) {
    for algorithm in [
        Algorithm::SlidingLog,
        Algorithm::SlidingCounter,
        Algorithm::Gcra,
    ] {
        let (mut config, _clock) = setup(&backend, &[] as &[String], &[]);
        config.rate_limit.login = config.rate_limit.login.clone().with_algorithm(algorithm);
        let services = services(&config);
        refunded_then_five_failures(&services.ratelimit, &format!("{algorithm:?}")).await;
    }
    if let Some(keys) = backend.keys_with_ttl() {
        assert!(keys.iter().all(|(_, ttl)| *ttl > 0), "{keys:?}");
        let logins = keys
            .iter()
            .filter(|(key, _)| key.contains(":login"))
            .count();
        assert_eq!(logins, 3, "{keys:?}");
    }
}

/// Redis killed: the login limit falls back in process (fail-open) and a refund goes back to the
/// fallback that spent the unit.
#[actix_web::test]
async fn login_refund_on_the_fallback() {
    let mut backend = Backend::redis();
    let (config, _clock) = setup(&backend, &[] as &[String], &[]);
    let services = services(&config);
    backend.server().unwrap().kill();
    refunded_then_five_failures(&services.ratelimit, "alice").await;
    let stats = services.ratelimit.stats();
    assert_eq!(stats.fallback_decisions, 16, "{stats:?}");
}

/// The route policy applies to what the router matches: `/expensive%2Doperation`
/// reaches the same handler and counts against the same 10 / 60 s.
async fn percent_encoded_path_is_limited(backend: Backend) {
    let (config, _clock) = setup(
        &backend,
        &route_only("POST /expensive-operation=10/60s"),
        &[],
    );
    let services = services(&config);
    let app = app(&services).await;
    let mut replies = Vec::new();
    for i in 0..12 {
        let uri = if i % 2 == 0 {
            "/expensive%2Doperation"
        } else {
            "/expensive-operation"
        };
        replies.push(
            call(
                &app,
                TestRequest::post().uri(uri).peer_addr(peer("10.0.9.1")),
            )
            .await,
        );
    }
    assert_eq!(statuses(&replies), (10, 2, 0));
    assert_eq!(
        replies[11].problem(429)["type"],
        "https://redkit.dev/problems/quota-exceeded"
    );
}

/// Publishing has a per-user policy by default (60 / 60 s): the 61st publish of
/// one user is a 429, while another user from the same address still publishes.
async fn publish_is_limited_per_user_by_default(backend: Backend) {
    let (config, _clock) = setup(&backend, &["default=off".to_owned()], &[]);
    let services = services(&config);
    let app = app(&services).await;
    let (alice, _) = common::register_and_login(&app, "alice").await;
    let (bob, _) = common::register_and_login(&app, "bob").await;
    let publish = |token: &str| {
        TestRequest::post()
            .uri("/events/room")
            .peer_addr(peer("10.0.9.2"))
            .insert_header(common::bearer(token))
            .set_json(serde_json::json!({"n": 1}))
    };
    let mut replies = Vec::new();
    for _ in 0..61 {
        replies.push(call(&app, publish(&alice)).await);
    }
    let accepted = replies.iter().filter(|r| r.status == 202).count();
    assert_eq!(accepted, 60);
    replies[60].problem(429);
    assert_eq!(call(&app, publish(&bob)).await.status, 202);
}

/// IPv6 clients are limited per /64 by default: twelve addresses of one /64 share
/// the 10 / 60 s of `/expensive-operation`, another /64 has its own; with `ipv6_prefix = 128`
/// each address is its own client again.
async fn ipv6_grouped_by_64(backend: Backend) {
    let (config, _clock) = setup(
        &backend,
        &route_only("POST /expensive-operation=10/60s"),
        &[],
    );
    let services = services(&config);
    let app = app(&services).await;
    let mut replies = Vec::new();
    for i in 1..=12 {
        replies.push(call(&app, post(&format!("[2001:db8:1:2::{i:x}]"))).await);
    }
    assert_eq!(statuses(&replies), (10, 2, 0));
    assert_eq!(call(&app, post("[2001:db8:1:3::1]")).await.status, 200);

    let (mut config, _clock) = setup(
        &backend,
        &route_only("POST /expensive-operation=10/60s"),
        &[],
    );
    config.rate_limit.ipv6_prefix = 128;
    config.rate_limit.key_prefix = "v6-128:".into();
    let services = common::services(&config);
    let app = common::app(&services).await;
    let mut replies = Vec::new();
    for i in 1..=12 {
        replies.push(call(&app, post(&format!("[2001:db8:1:2::{i:x}]"))).await);
    }
    assert_eq!(statuses(&replies), (12, 0, 0));
}

/// `GET /ratelimit/status` asks the store once per policy, so it is counted by the global policy
/// like any route: under `default=5/60s` the sixth read is a 429, and the fifth reports 0 left.
async fn status_reads_are_counted(backend: Backend) {
    let (config, _clock) = setup(&backend, &["default=5/60s".to_owned()], &[]);
    let services = services(&config);
    let app = app(&services).await;
    let mut replies = Vec::new();
    for _ in 0..6 {
        replies.push(call(&app, status_req("10.0.0.9")).await);
    }
    assert_eq!(statuses(&replies), (5, 1, 0));
    let global = |reply: &Reply| {
        reply.json()["policies"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "default")
            .unwrap()["remaining"]
            .clone()
    };
    assert_eq!(global(&replies[0]), 4);
    assert_eq!(global(&replies[4]), 0);
    replies[5].problem(429);
}

backend_suite!(
    status_reads_are_counted,
    ipv6_grouped_by_64,
    percent_encoded_path_is_limited,
    publish_is_limited_per_user_by_default,
    exact_under_concurrency,
    no_self_lockout,
    headers_and_retry_after,
    denied_requests_do_not_consume,
    weighted_cost_and_peek,
    spoofed_forwarded_for_ignored,
    trusted_proxy_uses_right_hop,
    shadow_and_preflight,
    expensive_operation_defaults,
    login_failures_limited,
    login_refund_every_algorithm
);
