//! Redis only: instances sharing a limit, round trips, leases, key hygiene, outages and spec
//! validation.

use super::*;

/// Two app instances on one redis-server share the limit exactly: 500 requests split between
/// them against a limit of 100 admit exactly 100, every algorithm, several rounds.
#[actix_web::test]
async fn two_instances_share_the_limit() {
    let backend = Backend::redis();
    for algorithm in ALGORITHMS {
        let spec = format!("POST /expensive-operation=100/60s,algorithm={algorithm}");
        let (config, clock) = setup(&backend, &route_only(&spec), &[]);
        let (one, two): (Services, Services) = (services(&config), services(&config));
        let (app1, app2) = (app(&one).await, app(&two).await);
        for round in 0..3 {
            let first = (0..250).map(|_| call(&app1, post("10.0.1.1")));
            let second = (0..250).map(|_| call(&app2, post("10.0.1.1")));
            let (a, b) = futures_util::future::join(join_all(first), join_all(second)).await;
            let replies: Vec<Reply> = a.into_iter().chain(b).collect();
            assert_eq!(statuses(&replies), (100, 400, 0), "{algorithm} {round}");
            clock.advance(Duration::from_secs(120));
        }
    }
}

/// A request under a route policy and the global one costs one Redis script call, not two, on
/// every algorithm: the keys of both share the identity's hash tag and are decided together.
#[actix_web::test]
async fn route_and_global_cost_one_round_trip() {
    let mut backend = Backend::redis();
    for algorithm in ALGORITHMS {
        let specs = vec![
            format!("default=100/60s,algorithm={algorithm}"),
            format!("POST /expensive-operation=10/60s,algorithm={algorithm}"),
        ];
        let (config, _clock) = setup(&backend, &specs, &[]);
        let services = services(&config);
        let app = app(&services).await;
        // Another client first: the script is loaded (`EVALSHA`, `NOSCRIPT`, `EVAL`) before counting.
        assert_eq!(call(&app, post("10.0.4.2")).await.status, 200);
        let before = backend.server().unwrap().command_calls();
        for k in 1..=4u64 {
            let reply = call(&app, post("10.0.4.1")).await;
            assert_eq!(reply.status, 200, "{algorithm}");
            assert_eq!(
                reply.header("x-ratelimit-remaining"),
                Some((10 - k).to_string().as_str()),
                "{algorithm}"
            );
        }
        let after = backend.server().unwrap().command_calls();
        let scripts = |calls: &std::collections::BTreeMap<String, u64>| {
            calls.get("evalsha").copied().unwrap_or(0) + calls.get("eval").copied().unwrap_or(0)
        };
        assert_eq!(scripts(&after) - scripts(&before), 4, "{algorithm}");
        assert_eq!(
            left(&services, "10.0.4.1", "default").await,
            96,
            "{algorithm}"
        );
        assert_eq!(
            left(&services, "10.0.4.1", EXPENSIVE).await,
            6,
            "{algorithm}"
        );
    }
}

/// Two instances, requests of several clients released together so that each instance decides
/// them in a few coalesced script calls: per client exactly the global limit (60 of 150) is
/// admitted, the route policy (limit 100) keeps only the units of admitted requests (a request the
/// global policy denied spends nothing on the route), and the calls were coalesced. With GCRA
/// and the counter each instance sees as spent the route units the other holds from a lease (at
/// most `k - 1` = 100 / 16 - 1 = 5): so 40 left less at most 5, where a denied request spending
/// would have left none; the log leases nothing: exactly 40.
#[actix_web::test]
async fn two_instances_exact_when_coalesced() {
    let mut backend = Backend::redis();
    for algorithm in ALGORITHMS {
        let specs = vec![
            format!("default=60/60s,algorithm={algorithm}"),
            format!("POST /expensive-operation=100/60s,algorithm={algorithm}"),
        ];
        let (config, clock) = setup(&backend, &specs, &[]);
        let (one, two): (Services, Services) = (services(&config), services(&config));
        let (app1, app2) = (app(&one).await, app(&two).await);
        let clients = ["10.0.5.1", "10.0.5.2", "10.0.5.3"];
        for round in 0..2 {
            let before = backend.server().unwrap().command_calls();
            let first = clients
                .iter()
                .flat_map(|ip| (0..75).map(move |_| *ip))
                .map(|ip| call(&app1, post(ip)));
            let second = clients
                .iter()
                .flat_map(|ip| (0..75).map(move |_| *ip))
                .map(|ip| call(&app2, post(ip)));
            let (a, b) = futures_util::future::join(join_all(first), join_all(second)).await;
            let after = backend.server().unwrap().command_calls();
            let replies: Vec<Reply> = a.into_iter().chain(b).collect();
            assert_eq!(statuses(&replies), (180, 270, 0), "{algorithm} {round}");
            for ip in clients {
                assert_eq!(left(&one, ip, "default").await, 0, "{algorithm} {ip}");
                for services in [&one, &two] {
                    let left = left(services, ip, EXPENSIVE).await;
                    let least = if algorithm == "log" { 40 } else { 35 };
                    assert!((least..=40).contains(&left), "{algorithm} {ip}: {left}");
                }
            }
            let scripts = after.get("evalsha").copied().unwrap_or(0)
                - before.get("evalsha").copied().unwrap_or(0);
            assert!(
                scripts <= 8,
                "{algorithm}: {scripts} script calls for 450 requests"
            );
            clock.advance(Duration::from_secs(120));
        }
        for services in [&one, &two] {
            let stats = services.ratelimit.stats();
            assert_eq!((stats.fallback_decisions, stats.store_errors), (0, 0));
        }
    }
}

/// Script calls (`EVALSHA`, and `EVAL` after a `NOSCRIPT`) counted by the server so far.
fn scripts(server: &common::RedisServer) -> u64 {
    let calls = server.command_calls();
    calls.get("evalsha").copied().unwrap_or(0) + calls.get("eval").copied().unwrap_or(0)
}

/// Leases (limit 160: `k` = 160 / 16 = 10): a client's first request reserves 10 units in one
/// script call and its next 9 requests are spent on this instance with no Redis command, then
/// the next reserves again; the headers and the status still count down by one. GCRA and the
/// counter; the log never leases (one script call per request).
#[actix_web::test]
async fn leases_spend_locally_from_the_first_request() {
    let mut backend = Backend::redis();
    for algorithm in ALGORITHMS {
        let spec = format!("POST /expensive-operation=160/60s,algorithm={algorithm}");
        let (config, _clock) = setup(&backend, &route_only(&spec), &[]);
        let services = services(&config);
        let app = app(&services).await;
        // Another client first: the script is loaded before counting.
        assert_eq!(call(&app, post("10.0.6.2")).await.status, 200);
        let leased = services.ratelimit.stats().leased;
        let server = backend.server().unwrap();
        let mut calls = Vec::new();
        for k in 1..=12u64 {
            let before = scripts(server);
            let reply = call(&app, post("10.0.6.1")).await;
            assert_eq!(reply.status, 200, "{algorithm} {k}");
            assert_eq!(
                reply.header("x-ratelimit-remaining"),
                Some((160 - k).to_string().as_str()),
                "{algorithm} {k}"
            );
            calls.push(scripts(server) - before);
        }
        // 1: the reservation of 10; 2..=10: its 9 units; 11: the next reservation; 12: its unit.
        let expected = if algorithm == "log" {
            [1; 12]
        } else {
            [1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0]
        };
        assert_eq!(calls, expected, "{algorithm}: script calls per request");
        assert_eq!(
            left(&services, "10.0.6.1", EXPENSIVE).await,
            148,
            "{algorithm}"
        );
        assert_eq!(
            services.ratelimit.stats().leased - leased,
            if algorithm == "log" { 0 } else { 10 },
            "{algorithm}"
        );
    }
}

/// Two instances holding leases share the limit exactly: each has reserved for the client
/// before, then 250 requests on each released together admit exactly 160 (the units an
/// instance holds go to its own requests, even those Redis denied in the same call), every
/// algorithm.
#[actix_web::test]
async fn leases_keep_two_instances_exact() {
    let backend = Backend::redis();
    for algorithm in ALGORITHMS {
        let spec = format!("POST /expensive-operation=160/60s,algorithm={algorithm}");
        let (config, clock) = setup(&backend, &route_only(&spec), &[]);
        let (one, two): (Services, Services) = (services(&config), services(&config));
        let (app1, app2) = (app(&one).await, app(&two).await);
        for round in 0..2 {
            // Both instances hold units of the client: 9 each, reserved by their first request.
            assert_eq!(call(&app1, post("10.0.7.1")).await.status, 200);
            assert_eq!(call(&app2, post("10.0.7.1")).await.status, 200);
            let first = (0..250).map(|_| call(&app1, post("10.0.7.1")));
            let second = (0..250).map(|_| call(&app2, post("10.0.7.1")));
            let (a, b) = futures_util::future::join(join_all(first), join_all(second)).await;
            let replies: Vec<Reply> = a.into_iter().chain(b).collect();
            assert_eq!(statuses(&replies), (158, 342, 0), "{algorithm} {round}");
            assert_eq!(left(&one, "10.0.7.1", EXPENSIVE).await, 0);
            assert_eq!(left(&two, "10.0.7.1", EXPENSIVE).await, 0);
            clock.advance(Duration::from_secs(120));
        }
        for services in [&one, &two] {
            let stats = services.ratelimit.stats();
            assert_eq!((stats.fallback_decisions, stats.store_errors), (0, 0));
        }
    }
}

/// The bound on what a lease costs the others: instance one's first request reserves 10 units
/// (limit 160) and spends 1; instance two then admits exactly 160 - 1 - 9 = 150, i.e. `k - 1` =
/// 9 fewer than the 159 left, never more; instance one still spends its 9, so over both exactly
/// 160, GCRA and the counter. The log leases nothing: instance two admits the 159 left.
#[actix_web::test]
async fn leases_bound_what_other_instances_admit() {
    let backend = Backend::redis();
    for algorithm in ALGORITHMS {
        let spec = format!("POST /expensive-operation=160/60s,algorithm={algorithm}");
        let (config, _clock) = setup(&backend, &route_only(&spec), &[]);
        let (one, two): (Services, Services) = (services(&config), services(&config));
        let (app1, app2) = (app(&one).await, app(&two).await);
        assert_eq!(call(&app1, post("10.0.8.1")).await.status, 200);
        let held = if algorithm == "log" { 0 } else { 9 };
        let replies = join_all((0..300).map(|_| call(&app2, post("10.0.8.1")))).await;
        assert_eq!(
            statuses(&replies),
            (159 - held, 141 + held, 0),
            "{algorithm}"
        );
        let replies = join_all((0..20).map(|_| call(&app1, post("10.0.8.1")))).await;
        assert_eq!(statuses(&replies), (held, 20 - held, 0), "{algorithm}");
    }
}

/// Reservations grow while they are spent in full (limit 160: 10, then 20 = limit / 8) and the
/// bound grows with them: instance one spends a first reservation of 10, then its next request
/// reserves 20 and holds 19; instance two admits exactly 160 - 11 - 19 = 130, i.e. `k - 1` = 19
/// fewer than the 149 left, never more; instance one still spends its 19: over both exactly
/// 160, GCRA and the counter. The log leases nothing: instance two admits the 149 left.
#[actix_web::test]
async fn leases_grow_to_limit_over_8_and_bound_the_others_by_it() {
    let backend = Backend::redis();
    for algorithm in ALGORITHMS {
        let spec = format!("POST /expensive-operation=160/60s,algorithm={algorithm}");
        let (config, _clock) = setup(&backend, &route_only(&spec), &[]);
        let (one, two): (Services, Services) = (services(&config), services(&config));
        let (app1, app2) = (app(&one).await, app(&two).await);
        for k in 1..=11u64 {
            let reply = call(&app1, post("10.0.8.2")).await;
            assert_eq!(reply.status, 200, "{algorithm} {k}");
        }
        let held = if algorithm == "log" { 0 } else { 19 };
        let replies = join_all((0..300).map(|_| call(&app2, post("10.0.8.2")))).await;
        assert_eq!(
            statuses(&replies),
            (149 - held, 151 + held, 0),
            "{algorithm}"
        );
        let replies = join_all((0..25).map(|_| call(&app1, post("10.0.8.2")))).await;
        assert_eq!(statuses(&replies), (held, 25 - held, 0), "{algorithm}");
    }
}

/// Every key expires exactly when its state may be forgotten (log: one window after the last
/// entry; GCRA: at the arrival time, 5 intervals of 12 s on; counter: the end of the next fixed
/// window, two windows from the clock's start), less only the real time the test took, and
/// carries the client's identity as its hash tag; a log never holds more than `limit` members,
/// and members stay unique within one microsecond.
#[actix_web::test]
async fn keys_expire_and_logs_stay_bounded() {
    let backend = Backend::redis();
    let started = std::time::Instant::now();
    for algorithm in ALGORITHMS {
        let spec = format!("POST /expensive-operation=5/60s,algorithm={algorithm}");
        let (config, _clock) = setup(&backend, &route_only(&spec), &[]);
        let services = services(&config);
        let app = app(&services).await;
        let replies = join_all((0..8).map(|_| call(&app, post("10.0.2.1")))).await;
        assert_eq!(statuses(&replies), (5, 3, 0));
    }
    let server = match &backend {
        Backend::Redis(server) => server,
        _ => unreachable!(),
    };
    // The limiter's keys (each instance's cache feed keeps a sentinel key of its own).
    let keys: Vec<(String, i64)> = server
        .keys_with_ttl()
        .into_iter()
        .filter(|(key, _)| !key.contains("cache~feed:"))
        .collect();
    let taken = i64::try_from(started.elapsed().as_millis()).unwrap() + 1;
    assert_eq!(keys.len(), 3, "{keys:?}");
    let mut conn = server.conn();
    for (key, ttl) in keys {
        // The identity is the hash tag: every key of one client lands on one cluster slot.
        assert!(key.contains("rl:{ip:10.0.2.1}:"), "{key}");
        let kind: String = ::redis::cmd("TYPE").arg(&key).query(&mut conn).unwrap();
        let max = if kind == "hash" { 120_000 } else { 60_000 };
        assert!(
            (max - taken..=max).contains(&ttl),
            "{key} ({kind}) ttl {ttl}, expected {}..={max}",
            max - taken
        );
        if kind == "zset" {
            let members: u64 = ::redis::cmd("ZCARD").arg(&key).query(&mut conn).unwrap();
            assert_eq!(members, 5, "{key}");
        }
    }
}

/// Redis killed mid-test: fail-open policies keep limiting in process (same policy), fail-closed
/// ones answer 503 with `Retry-After`; never a 500; both are counted.
#[actix_web::test]
async fn redis_down_fail_open_and_closed() {
    let mut backend = Backend::redis();
    let specs = vec![
        "default=off".to_owned(),
        "POST /expensive-operation=3/60s".to_owned(),
        "DELETE /cache/{key:.+}=5/60s,fail_closed".to_owned(),
    ];
    let (config, _clock) = setup(&backend, &specs, &[]);
    let services = services(&config);
    let app = app(&services).await;
    assert_eq!(call(&app, post("10.0.3.1")).await.status, 200);
    backend.server().unwrap().kill();
    let replies = join_all((0..5).map(|_| call(&app, post("10.0.3.1")))).await;
    assert_eq!(statuses(&replies), (3, 2, 0));
    let del = TestRequest::delete()
        .uri("/cache/some-key")
        .peer_addr(peer("10.0.3.1"));
    let reply = call(&app, del).await;
    reply.problem(503);
    assert_eq!(reply.header("retry-after"), Some("1"));
    let stats = services.ratelimit.stats();
    // The five POSTs, each one decision of one policy in process (all five passed the local
    // block before the first denial); the DELETE was refused before deciding.
    assert_eq!(stats.fallback_decisions, 5, "{stats:?}");
    assert_eq!(stats.fail_closed, 1, "{stats:?}");
}

/// Bad `--rate-limit` and `--trusted-proxies` values stop start-up with a one-line message.
#[test]
fn bad_specs_stop_startup() {
    for spec in [
        "default=100",
        "POST=1/1s",
        "GET /x=5/60s,algorithm=magic",
        "default=1/0s",
    ] {
        let args = ServeArgs {
            rate_limit: vec![spec.into()],
            ..ServeArgs::default()
        };
        let err = Config::from_args(&args).unwrap_err().to_string();
        assert!(err.contains("--rate-limit/RATE_LIMITS"), "{err}");
        assert!(err.contains(spec), "{err}");
        assert!(!err.contains('\n'));
    }
    let args = ServeArgs {
        trusted_proxies: vec!["not-a-cidr".into()],
        ..ServeArgs::default()
    };
    let err = Config::from_args(&args).unwrap_err().to_string();
    assert!(err.contains("--trusted-proxies"), "{err}");
}

/// One limiter serves every worker, so a batch's flush can be spawned on a runtime that shuts
/// down before the flush first runs (a worker restarting): that must not freeze the limiter. On
/// the old code the batch stayed "scheduled" and every later request waited for ever.
#[actix_web::test]
async fn a_dropped_flush_does_not_freeze_the_limiter() {
    let backend = Backend::redis();
    let (config, _clock) = setup(
        &backend,
        &route_only("POST /expensive-operation=100/60s"),
        &[],
    );
    let services = services(&config);
    let app = app(&services).await;
    assert_eq!(call(&app, post("10.0.9.1")).await.status, 200);
    let limiter = services.ratelimit.clone();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let policy = limiter.config().routes[0].policy.clone();
            // Polled once: the check joins a batch and spawns its flush on this runtime, which
            // is dropped before the flush runs.
            assert!(
                futures_util::FutureExt::now_or_never(limiter.check(&policy, "ip:10.0.9.2", 1))
                    .is_none()
            );
        });
    })
    .join()
    .unwrap();
    let later = tokio::time::timeout(Duration::from_secs(5), call(&app, post("10.0.9.1"))).await;
    assert_eq!(later.expect("the limiter froze").status, 200);
}
