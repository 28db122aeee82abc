//! Fleet benchmark: two redkit instances on one Redis serve L1 hits at full speed
//! while another Redis client writes 100 keys a second under the cache prefix.
//!
//! Run: `cargo bench --bench fleet`
//!
//! Reports:
//! 1. Invalidation lag: from just before the writer's `SET` until each instance's
//!    `CacheHandle::get_raw` answers the new value (polled every millisecond from the load
//!    generator's thread, so the figures include up to ~1 ms of polling granularity), p50, p99
//!    and max over every write and both instances. Target p99 ≤ 100 ms.
//! 2. L1 hit `GET /products/1` on each instance against a minimal handler returning the same
//!    bytes, all three loaded at once (64 connections each) during the writes; the median of the
//!    per-round throughput ratios. Target ≥ 0.90.
//!
//! Every change must be seen by both instances within [`GIVE_UP`] (asserted), every answer must
//! be a 200 with the product's bytes (checked before the load) and every L1 hit must come from L1.
//!
//! `REDKIT_BENCH_SMOKE=1` (CI, `cargo test --benches`): 1 round of 0.5 s, the same checks.
//!
//! As in `benches/http.rs`: the servers (and their actors, the feeds included) on CPU 0, the
//! load generator, the writer and redis-server on CPU 1.

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use common::RedisServer;
use redkit::{Config, cache::CacheHandle, config::RedisSettings, http::Services};
use support::{Load, load};

fn round_count() -> usize {
    support::sized(8, 1)
}

/// Connections to each server (8 in the smoke run).
fn connections() -> usize {
    support::sized(64, 8)
}

fn each() -> Duration {
    support::sized(Duration::from_secs(1), Duration::from_millis(500))
}
/// Keys the writer cycles through, each cached in both instances' L1 before it changes.
const KEYS: usize = 100;
const WRITE_EVERY: Duration = Duration::from_millis(10);
/// A change not seen after this long counts as this long (and fails the target).
const GIVE_UP: Duration = Duration::from_secs(2);

struct Fleet {
    a: SocketAddr,
    b: SocketAddr,
    base: SocketAddr,
    caches: [CacheHandle; 2],
    namespace: String,
    product: bytes::Bytes,
}

fn serve_all(redis_url: String) -> Fleet {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let mut config = Config::for_tests();
            config.redis = Some(RedisSettings::new(redis_url.clone()));
            config.rate_limit =
                redkit::ratelimit::RateLimitConfig::parse(&["default=off"], &[] as &[&str])
                    .unwrap();
            let a = Services::start(&config).unwrap();
            let b = Services::start(&config).unwrap();
            common::feed_ready(&a).await;
            common::feed_ready(&b).await;
            let product = a.catalog.get(1).await.unwrap().unwrap();
            let product = bytes::Bytes::from(serde_json::to_vec(&product).unwrap());
            let serve_app =
                |s: Services| support::serve_one_worker!(move || redkit::http::app(s.clone()));
            let (addr_a, addr_b) = (serve_app(a.clone()), serve_app(b.clone()));
            let base = support::serve_product_baseline(product.clone());
            tx.send(Fleet {
                a: addr_a,
                b: addr_b,
                base,
                namespace: a.cache.config().namespace(),
                caches: [a.cache.clone(), b.cache.clone()],
                product,
            })
            .unwrap();
            std::future::pending::<()>().await;
        });
    });
    rx.recv().unwrap()
}

/// Reads `key` through `cache` until it answers `want` and serves it from L1.
async fn until_l1(cache: &CacheHandle, key: &str, want: &[u8]) {
    let deadline = Instant::now() + GIVE_UP;
    loop {
        if let Some(hit) = cache.get_raw(key).await.unwrap()
            && hit.json == want
            && hit.tier == redkit::cache::Tier::L1
        {
            return;
        }
        assert!(Instant::now() < deadline, "{key} never reached L1");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Writes one key every `WRITE_EVERY` until `stop`, and measures how long each instance takes
/// to answer the new value.
async fn writer(
    fleet: &Fleet,
    redis: redis::aio::ConnectionManager,
    stop: tokio::sync::watch::Receiver<bool>,
) -> (Vec<Duration>, u64) {
    let lags = Arc::new(Mutex::new(Vec::new()));
    let mut polls = Vec::new();
    let mut tick = tokio::time::interval(WRITE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut written = 0u64;
    while !*stop.borrow() {
        tick.tick().await;
        written += 1;
        let key = format!("lag:{}", written % KEYS as u64);
        let value = written.to_string();
        let started = Instant::now();
        let mut conn = redis.clone();
        let _: () = redis::cmd("SET")
            .arg(format!("{}{key}", fleet.namespace))
            .arg(&value)
            .arg("EX")
            .arg(3600)
            .query_async(&mut conn)
            .await
            .unwrap();
        for cache in fleet.caches.clone() {
            let (key, value, lags) = (key.clone(), value.clone(), Arc::clone(&lags));
            polls.push(tokio::spawn(async move {
                loop {
                    let seen = cache.get_raw(&key).await.unwrap().map(|hit| hit.json);
                    let lag = started.elapsed();
                    if seen.as_deref() == Some(value.as_bytes()) || lag >= GIVE_UP {
                        lags.lock().unwrap().push(lag);
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }));
        }
    }
    for poll in polls {
        poll.await.unwrap();
    }
    let lags = std::mem::take(&mut *lags.lock().unwrap());
    (lags, written)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((sorted.len() as f64) * p).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    let redis = RedisServer::start();
    let fleet = serve_all(redis.url());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        // Not in the smoke run, whose debug build shares the machine with whatever else runs.
        let pinned = !support::smoke()
            && std::env::var("REDKIT_BENCH_PIN").as_deref() != Ok("0")
            && support::pin_load_generator_apart(&redis.pid().into_iter().collect::<Vec<_>>());
        println!(
            "redkit fleet bench{}: 2 instances + a minimal handler loaded together ({} rounds of {:?}, {} connections each, 1 worker each) while a plain Redis client writes one of {KEYS} keys every {WRITE_EVERY:?}; {}",
            if support::smoke() { " (smoke run: checks only, rates mean nothing)" } else { "" },
            round_count(),
            each(),
            connections(),
            if pinned {
                "load generator, writer and redis-server on CPU 1, servers on CPU 0"
            } else {
                "threads not (all) pinned"
            }
        );
        let get_product: &'static [u8] = b"GET /products/1 HTTP/1.1\r\nHost: bench\r\n\r\n";
        for addr in [fleet.a, fleet.b] {
            common::http(addr, "GET", "/products/1", &[], b"").await;
            let hit = common::http(addr, "GET", "/products/1", &[], b"").await;
            assert_eq!((hit.status, hit.header("x-cache")), (200, Some("HIT-L1")));
            assert_eq!(hit.body, fleet.product[..]);
        }
        // Every key the writer changes sits in both L1s first.
        let client = redis::Client::open(redis.url()).unwrap();
        let mut conn = redis::aio::ConnectionManager::new(client).await.unwrap();
        for i in 0..KEYS {
            let key = format!("lag:{i}");
            let _: () = redis::cmd("SET")
                .arg(format!("{}{key}", fleet.namespace))
                .arg("0")
                .arg("EX")
                .arg(3600)
                .query_async(&mut conn)
                .await
                .unwrap();
            for cache in &fleet.caches {
                until_l1(cache, &key, b"0").await;
            }
        }

        let (stop_tx, stop) = tokio::sync::watch::channel(false);
        let measure = async {
            // Warm-up, not counted.
            let warm = support::sized(Duration::from_millis(300), Duration::from_millis(100));
            tokio::join!(
                load(fleet.a, get_product, connections(), warm),
                load(fleet.b, get_product, connections(), warm),
                load(fleet.base, get_product, connections(), warm),
            );
            let mut rounds: Vec<(Load, Load, Load)> = Vec::new();
            for _ in 0..round_count() {
                rounds.push(tokio::join!(
                    load(fleet.a, get_product, connections(), each()),
                    load(fleet.b, get_product, connections(), each()),
                    load(fleet.base, get_product, connections(), each()),
                ));
            }
            stop_tx.send(true).unwrap();
            rounds
        };
        let (rounds, (mut lags, written)) = tokio::join!(measure, writer(&fleet, conn, stop));

        lags.sort();
        let (p50, p99, max) = (
            percentile(&lags, 0.50),
            percentile(&lags, 0.99),
            *lags.last().unwrap(),
        );
        println!(
            "1. invalidation lag over {} changes seen by 2 instances ({written} writes): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms (target p99 <= 100 ms) {}",
            lags.len(),
            p50.as_secs_f64() * 1e3,
            p99.as_secs_f64() * 1e3,
            max.as_secs_f64() * 1e3,
            if p99 <= Duration::from_millis(100) {
                "OK"
            } else {
                "ABOVE TARGET"
            }
        );
        assert_eq!(lags.len() as u64, written * 2);
        assert!(max < GIVE_UP, "a change was not seen within {GIVE_UP:?}");
        for (name, pick) in [
            ("A", (|r: &(Load, Load, Load)| r.0) as fn(&(Load, Load, Load)) -> Load),
            ("B", |r| r.1),
        ] {
            let ratios: Vec<f64> = rounds
                .iter()
                .map(|r| pick(r).per_sec / r.2.per_sec)
                .collect();
            let (min, max) = ratios
                .iter()
                .fold((f64::INFINITY, 0.0f64), |(lo, hi), r| (lo.min(*r), hi.max(*r)));
            let mut rates: Vec<f64> = rounds.iter().map(|r| pick(r).per_sec).collect();
            rates.sort_by(f64::total_cmp);
            let ratio = median(ratios);
            println!(
                "2. instance {name}: L1 hit GET /products/1 {:>9.0} req/s vs minimal handler {:>9.0} req/s   ratio {ratio:.3} (rounds {min:.3}–{max:.3}; target >= 0.90) {}",
                rates[rates.len() / 2],
                median(rounds.iter().map(|r| r.2.per_sec).collect()),
                if ratio >= 0.90 { "OK" } else { "BELOW TARGET" }
            );
        }
        let errors: u64 = rounds
            .iter()
            .map(|(a, b, c)| a.non_200 + a.errors + b.non_200 + b.errors + c.non_200 + c.errors)
            .sum();
        assert_eq!(errors, 0, "errors during the load");
        let stats = fleet.caches.each_ref().map(|c| c.stats());
        println!(
            "   invalidations received: A {}, B {}; L1 feed flushes: A {}, B {}",
            stats[0].l1_invalidations,
            stats[1].l1_invalidations,
            stats[0].l1_feed_flushes,
            stats[1].l1_feed_flushes
        );
    });
}
