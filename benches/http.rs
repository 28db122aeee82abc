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

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use std::{net::SocketAddr, time::Duration};

use actix_web::{App, HttpResponse, web};
use common::RedisServer;
use redkit::{Config, config::RedisSettings, http::Services};
use support::{Comparison, compare, load};

const ROUNDS: usize = 8;
const EACH: Duration = Duration::from_secs(1);

struct Addrs {
    l1: SocketAddr,
    l1_base: SocketAddr,
    l2: SocketAddr,
    l2_base: SocketAddr,
    product: bytes::Bytes,
}

fn serve_all(redis_url: String) -> Addrs {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let config = |l1_bytes: u64| {
                let mut config = Config::for_tests();
                config.redis = Some(RedisSettings::new(redis_url.clone()));
                config.cache = redkit::cache::CacheConfig::builder()
                    .l1_max_bytes(l1_bytes)
                    .build()
                    .unwrap();
                // This bench measures the cache path; `benches/ratelimit.rs` measures the limiter.
                config.rate_limit =
                    redkit::ratelimit::RateLimitConfig::parse(&["default=off"], &[] as &[&str])
                        .unwrap();
                config
            };
            let with_l1 = Services::start(&config(redkit::config::DEFAULT_L1_MAX_BYTES)).unwrap();
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
            // middleware of the complete app (a breakdown of the ratio); unset, the complete
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
                        .wrap(redkit::http::Frame)
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
        let pinned = std::env::var("REDKIT_BENCH_PIN").as_deref() != Ok("0")
            && support::pin_load_generator_apart(&redis.pid().into_iter().collect::<Vec<_>>());
        println!(
            "redkit foundation bench: {ROUNDS} rounds of {EACH:?}, redkit and its baseline loaded together (64 connections each), median of the per-round ratios, 1 server worker each, {}",
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

        let before = redis.command_calls();
        let l1 = compare((addrs.l1, get_product), (addrs.l1_base, get_product), 64, ROUNDS, EACH).await;
        let after = redis.command_calls();
        report("1. L1 hit GET /products/1 vs static handler", 0.90, &l1);
        let delta: Vec<String> = after
            .iter()
            .filter_map(|(k, v)| {
                let d = v - before.get(k).copied().unwrap_or(0);
                (d > 0).then(|| format!("{k}={d}"))
            })
            .collect();
        println!(
            "   Redis commands during the L1 runs (about {} requests): {} (watchdog and liveness pings, the invalidation feed's CLIENT ID checks, push connections re-opened, and this probe only)",
            l1.a.requests * ROUNDS as u64,
            delta.join(" ")
        );
        assert!(
            // `hello`: a push connection (feed or subscriber) re-opened by its liveness check;
            // 2 per 8-s run with the server's CPU saturated (2026-12-02), never per request.
            delta.iter().all(|d| ["ping=", "info=", "client|id=", "hello="]
                .iter()
                .any(|allowed| d.starts_with(allowed))),
            "L1 hits must not reach Redis: {delta:?}"
        );

        if std::env::var("REDKIT_BENCH_ONLY").as_deref() == Ok("l1") {
            return;
        }
        let l2 = compare((addrs.l2, get_key), (addrs.l2_base, get_key), 64, ROUNDS, EACH).await;
        report("2. L2 GET /cache/{key} (L1 off) vs GET handler", 0.85, &l2);

        for connections in [64, 256] {
            for (name, addr, req) in [("L1", addrs.l1, get_product), ("L2", addrs.l2, get_key)] {
                let run = load(addr, req, connections, Duration::from_secs(2)).await;
                println!(
                    "3. {name} path at {connections:>3} connections: {:>9.0} req/s, {} non-200, {} connection errors",
                    run.per_sec, run.non_200, run.errors
                );
                assert_eq!(run.non_200 + run.errors, 0);
            }
        }
    });
}
