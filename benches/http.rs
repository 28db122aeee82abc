//! Foundation benchmark: redkit's cached read paths against minimal actix-web handlers doing the
//! same work, loaded side by side in one run on loopback, reported as ratios.
//!
//! Run: `cargo bench --bench http`
//!
//! Each comparison loads redkit and its baseline at the same time (`support::compare`), both
//! servers on CPU 0 and the load generator and redis-server on CPU 1: the servers share one core
//! and the machine's drifting speed, so their throughput ratio is their inverse cost ratio.
//!
//! 1. L1 hit: `GET /products/1` (warm) vs a handler returning the same bytes. Target ≥ 0.90.
//! 2. L2 read: `GET /cache/{key}` with L1 off vs a handler doing one Redis GET over a shared
//!    multiplexed connection. Target ≥ 0.85.
//! 3. No errors at 64 and 256 concurrent connections on both paths.
//! 4. Fail-safe: `GET /products/1` answered `STALE` (its TTL passed, its loader failing: the
//!    catalog's table dropped, retried once per throttle period) vs the L2 read of case 2.
//!    Target ≥ 1.0: a stale answer costs no more than an L2 hit.
//!
//! And what case 1 rests on: the L1 hits send no command to Redis. `INFO commandstats` totals
//! (every command, whatever its name) are read before and after the L1 rounds, and again over an
//! idle window of the same length with the same servers up (their background commands: watchdog
//! and liveness pings, the invalidation feed's checks); the rounds may exceed the idle window by
//! at most [`RECONNECT_ALLOWANCE`] commands.
//!
//! `REDKIT_BENCH_SMOKE=1` (CI, `cargo test --benches`): 1 round of 0.5 s per case, 0.3 s per
//! connection count; the same checks.

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use std::{net::SocketAddr, time::Duration};

use actix_web::{App, HttpResponse, web};
use common::RedisServer;
use redkit::{Config, config::RedisSettings, http::Services};
use support::{Comparison, compare, load};

fn rounds() -> usize {
    support::sized(8, 1)
}

/// Connections on each side of a comparison (8 in the smoke run).
fn connections() -> usize {
    support::sized(64, 8)
}

fn each() -> Duration {
    support::sized(Duration::from_secs(1), Duration::from_millis(500))
}

/// Commands the L1 rounds may send beyond the idle window's: a push connection (feed or
/// subscriber) re-opened by its liveness check when the server's CPU is saturated sends a few
/// (`HELLO`, its subscription); measured 2 re-opens per 8-s run. A command per request would be
/// one per L1 hit: hundreds of thousands in a full run, thousands in the smoke run.
const RECONNECT_ALLOWANCE: u64 = 12;

struct Addrs {
    l1: SocketAddr,
    l1_base: SocketAddr,
    l2: SocketAddr,
    l2_base: SocketAddr,
    stale: SocketAddr,
    product: bytes::Bytes,
}

fn serve_all(redis_url: String) -> Addrs {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let config = |l1_bytes: u64| {
                let mut config = Config::for_tests();
                config.redis = Some(RedisSettings::new(redis_url.clone()));
                config.cache.l1_max_bytes = l1_bytes;
                // This bench measures the cache path; `benches/ratelimit.rs` measures the limiter.
                config.rate_limit =
                    redkit::ratelimit::RateLimitConfig::parse(&["default=off"], &[] as &[&str])
                        .unwrap();
                config
            };
            let with_l1 = Services::start(&config(redkit::cache::DEFAULT_L1_MAX_BYTES)).unwrap();
            let without_l1 = Services::start(&config(0)).unwrap();
            // Warm: the product in L1 (and L2), a cache key in L2.
            let product = with_l1.catalog.get(1).await.unwrap().unwrap();
            let product = bytes::Bytes::from(serde_json::to_vec(&product).unwrap());
            without_l1
                .cache
                .set(
                    // The HTTP API's namespace (`GET /cache/bench` reads `api:bench`).
                    "api:bench",
                    &serde_json::json!({"hello": "world"}),
                    Duration::from_secs(3600),
                )
                .await
                .unwrap();

            // `REDKIT_BENCH_MIDDLEWARE=none|frame|ratelimit` serves the L1 route with only that
            // middleware of the complete app (a breakdown of the ratio; `frame`: the two outer
            // layers, `observe` and `problem_errors`); unset, the complete
            // `redkit::http::app`.
            let s = with_l1.clone();
            let l1 = match std::env::var("REDKIT_BENCH_MIDDLEWARE").as_deref() {
                Ok("none") => support::serve_one_worker!(move || {
                    let s = s.clone();
                    App::new().configure(move |cfg| s.configure(cfg))
                }),
                Ok("frame") => support::serve_one_worker!(move || {
                    let s = s.clone();
                    App::new()
                        .configure(move |cfg| s.configure(cfg))
                        .wrap(actix_web::middleware::from_fn(
                            redkit::problem::problem_errors,
                        ))
                        .wrap(actix_web::middleware::from_fn(redkit::metrics::observe))
                }),
                Ok("ratelimit") => support::serve_one_worker!(move || {
                    let s = s.clone();
                    let limiter = s.ratelimit.middleware();
                    App::new()
                        .configure(move |cfg| s.configure(cfg))
                        .wrap(limiter)
                }),
                Ok(other) => panic!("REDKIT_BENCH_MIDDLEWARE={other}: none, frame or ratelimit"),
                Err(_) => support::serve_one_worker!(move || redkit::http::app(s.clone())),
            };
            let l2 = {
                let s = without_l1.clone();
                support::serve_one_worker!(move || redkit::http::app(s.clone()))
            };
            // Products cached for 1 s from a catalog whose table is then dropped: once the TTL
            // passed, every answer is the fail-safe's stale value.
            let stale = {
                let dir = tempfile::tempdir().unwrap();
                let mut config = config(redkit::cache::DEFAULT_L1_MAX_BYTES);
                // Its own keys: the other servers' product in L2 is fresh.
                config.cache.key_prefix = "stale:".into();
                config.database = redkit::config::DatabaseLocation::File(dir.path().join("c.db"));
                config.catalog.product_ttl = Duration::from_secs(1);
                let services = Services::start(&config).unwrap();
                let addr = support::serve_one_worker!(move || redkit::http::app(services.clone()));
                let first = common::http(addr, "GET", "/products/1", &[], b"").await;
                assert_eq!((first.status, first.header("x-cache")), (200, Some("MISS")));
                rusqlite::Connection::open(dir.path().join("c.db"))
                    .unwrap()
                    .execute_batch("DROP TABLE products")
                    .unwrap();
                // The directory lives as long as the server: until the process ends.
                std::mem::forget(dir);
                addr
            };
            let l1_base = support::serve_product_baseline(product.clone());
            let l2_base = {
                let client = redis::Client::open(redis_url.as_str()).unwrap();
                let conn = redis::aio::ConnectionManager::new(client).await.unwrap();
                support::serve_one_worker!(move || {
                    let conn = conn.clone();
                    App::new().route(
                        "/cache/{key}",
                        web::get().to(move |key: web::Path<String>| {
                            let mut conn = conn.clone();
                            async move {
                                let value: Option<Vec<u8>> = redis::cmd("GET")
                                    .arg(format!("redkit:cache:api:{key}"))
                                    .query_async(&mut conn)
                                    .await
                                    .unwrap();
                                let value = value.unwrap();
                                let mut body = Vec::with_capacity(value.len() + 32);
                                body.extend_from_slice(b"{\"key\":");
                                body.extend_from_slice(&serde_json::to_vec(key.as_str()).unwrap());
                                body.extend_from_slice(b",\"value\":");
                                body.extend_from_slice(&value);
                                body.push(b'}');
                                HttpResponse::Ok()
                                    .content_type("application/json")
                                    .insert_header(("X-Cache", "HIT-L2"))
                                    .body(body)
                            }
                        }),
                    )
                })
            };
            tx.send(Addrs {
                l1,
                l1_base,
                l2,
                l2_base,
                stale,
                product,
            })
            .unwrap();
            std::future::pending::<()>().await;
        });
    });
    rx.recv().unwrap()
}

fn report(name: &str, target: f64, run: &Comparison) {
    let (redkit, base) = (run.a, run.b);
    let ratio = run.ratio();
    println!(
        "{name:<44} redkit {:>9.0} req/s   baseline {:>9.0} req/s   ratio {ratio:.3} (rounds {}; target >= {target:.2}) {}",
        redkit.per_sec,
        base.per_sec,
        run.spread(),
        if ratio >= target {
            "OK"
        } else {
            "BELOW TARGET"
        }
    );
    assert_eq!(
        redkit.non_200 + redkit.errors + base.non_200 + base.errors,
        0,
        "errors during {name}"
    );
    assert!(
        redkit.requests > 0 && base.requests > 0,
        "no requests during {name}"
    );
}

fn main() {
    let redis = RedisServer::start();
    let addrs = serve_all(redis.url());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let get_product: &'static [u8] = b"GET /products/1 HTTP/1.1\r\nHost: bench\r\n\r\n";
        let get_key: &'static [u8] = b"GET /cache/bench HTTP/1.1\r\nHost: bench\r\n\r\n";
        // `REDKIT_BENCH_PIN=0` leaves the threads where the scheduler puts them.
        // Not in the smoke run, whose debug build shares the machine with whatever else runs.
        let pinned = !support::smoke()
            && std::env::var("REDKIT_BENCH_PIN").as_deref() != Ok("0")
            && support::pin_load_generator_apart(&redis.pid().into_iter().collect::<Vec<_>>());
        println!(
            "redkit foundation bench{}: {} rounds of {:?}, redkit and its baseline loaded together ({} connections each), median of the per-round ratios, 1 server worker each, {}",
            if support::smoke() { " (smoke run: checks only, rates mean nothing)" } else { "" },
            rounds(),
            each(),
            connections(),
            if pinned {
                "load generator and redis-server on CPU 1, servers on CPU 0"
            } else {
                "threads not (all) pinned: taskset unavailable or refused"
            }
        );
        // Each path answers what it is meant to measure: the L1 route from L1, with the product's
        // bytes; the L2 route from L2 (the first read of each fills L1 where there is one).
        common::http(addrs.l1, "GET", "/products/1", &[], b"").await;
        let hit = common::http(addrs.l1, "GET", "/products/1", &[], b"").await;
        assert_eq!((hit.status, hit.header("x-cache")), (200, Some("HIT-L1")));
        assert_eq!(hit.body, addrs.product[..]);
        let hit = common::http(addrs.l2, "GET", "/cache/bench", &[], b"").await;
        assert_eq!((hit.status, hit.header("x-cache")), (200, Some("HIT-L2")));
        let base = common::http(addrs.l2_base, "GET", "/cache/bench", &[], b"").await;
        assert_eq!(base.body, hit.body, "the L2 baseline answers the same bytes");

        let total = |calls: &std::collections::BTreeMap<String, u64>| calls.values().sum::<u64>();
        let before = redis.command_calls();
        let started = std::time::Instant::now();
        let l1 = compare((addrs.l1, get_product), (addrs.l1_base, get_product), connections(), rounds(), each()).await;
        let took = started.elapsed();
        let after = redis.command_calls();
        report("1. L1 hit GET /products/1 vs static handler", 0.90, &l1);
        // The same servers, idle for as long: their background commands.
        let idle_before = redis.command_calls();
        tokio::time::sleep(took).await;
        let idle_after = redis.command_calls();
        // Each `command_calls` is one `INFO` of its own, counted in the next reading.
        let during_load = total(&after) - total(&before) - 1;
        let during_idle = total(&idle_after) - total(&idle_before) - 1;
        let by_command = |from: &std::collections::BTreeMap<String, u64>, to: &std::collections::BTreeMap<String, u64>| {
            to.iter()
                .filter_map(|(k, v)| {
                    let d = v - from.get(k).copied().unwrap_or(0);
                    (d > 0).then(|| format!("{k}={d}"))
                })
                .collect::<Vec<_>>()
                .join(" ")
        };
        let hits = l1.a.requests * rounds() as u64;
        println!(
            "   Redis commands (INFO commandstats totals) during the L1 rounds ({:.1} s, about {hits} L1 hits): {during_load} [{}]; the same servers idle for as long: {during_idle} [{}]; beyond idle: {} (allowed {RECONNECT_ALLOWANCE})",
            took.as_secs_f64(),
            by_command(&before, &after),
            by_command(&idle_before, &idle_after),
            during_load.saturating_sub(during_idle),
        );
        assert!(
            during_load <= during_idle + RECONNECT_ALLOWANCE,
            "L1 hits reached Redis: {during_load} commands during {hits} hits, {during_idle} idle"
        );

        if std::env::var("REDKIT_BENCH_ONLY").as_deref() == Ok("l1") {
            return;
        }
        let l2 = compare((addrs.l2, get_key), (addrs.l2_base, get_key), connections(), rounds(), each()).await;
        report("2. L2 GET /cache/{key} (L1 off) vs GET handler", 0.85, &l2);

        tokio::time::sleep(Duration::from_millis(1200)).await;
        let stale = common::http(addrs.stale, "GET", "/products/1", &[], b"").await;
        assert_eq!((stale.status, stale.header("x-cache")), (200, Some("STALE")));
        assert_eq!(stale.body, addrs.product[..]);
        let failsafe = compare((addrs.stale, get_product), (addrs.l2, get_key), connections(), rounds(), each()).await;
        report("4. STALE GET /products/1 vs L2 GET /cache/{key}", 1.0, &failsafe);

        for connections in support::sized([64, 256], [8, 32]) {
            for (name, addr, req) in [("L1", addrs.l1, get_product), ("L2", addrs.l2, get_key)] {
                let run = load(addr, req, connections, support::sized(Duration::from_secs(2), Duration::from_millis(300))).await;
                println!(
                    "3. {name} path at {connections:>3} connections: {:>9.0} req/s, {} non-200, {} connection errors",
                    run.per_sec, run.non_200, run.errors
                );
                assert_eq!(run.non_200 + run.errors, 0);
            }
        }
    });
}
