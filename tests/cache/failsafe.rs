//! A cache that keeps answering: fail-safe stale values, loader timeouts, eager refresh; and
//! the edges of TTLs and databases (`Duration::MAX`, `SWAPDB`), on every backend.

use std::{
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use actix_web::test::TestRequest;
use bytes::Bytes;
use futures_util::future::join_all;
use redkit::{
    cache::{CacheError, Tier},
    config::Config,
};

use crate::common::{Backend, app, call, services};

/// A config on `backend` whose catalog lives in a file of `dir` (so that a test can break its
/// table), with products cached for `ttl_secs`.
fn catalog_config(backend: &Backend, dir: &tempfile::TempDir, ttl_secs: u64) -> Config {
    let mut config = backend.config();
    config.database = redkit::config::DatabaseLocation::File(dir.path().join("catalog.db"));
    config.catalog.product_ttl = Duration::from_secs(ttl_secs);
    config
}

/// Drops the catalog's table behind redkit's back: every load fails from now on.
pub(super) fn drop_products(dir: &tempfile::TempDir) {
    let conn = rusqlite::Connection::open(dir.path().join("catalog.db")).unwrap();
    conn.execute_batch("DROP TABLE products").unwrap();
}

pub(super) fn product(id: u32) -> TestRequest {
    TestRequest::get().uri(&format!("/products/{id}"))
}

/// Asserts a `200` answered `X-Cache: STALE` with exactly `body` and `Age: age` seconds.
pub(super) fn assert_stale(reply: &crate::common::Reply, body: &[u8], age: &str) {
    assert_eq!(
        (reply.status, reply.header("x-cache")),
        (200, Some("STALE")),
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    assert_eq!(reply.body, body);
    assert_eq!(reply.header("age"), Some(age));
}

/// A product loaded once, its table then dropped: past its TTL it is served `STALE` with an
/// `Age` (the failure counted), never a 500, while the fail-safe window lasts.
async fn failing_loader_serves_stale(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let services = services(&catalog_config(&backend, &dir, 1));
    let app = app(&services).await;
    let first = call(&app, product(3)).await;
    assert_eq!((first.status, first.header("x-cache")), (200, Some("MISS")));
    drop_products(&dir);
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let stale = call(&app, product(3)).await;
    assert_stale(&stale, &first.body, "1");
    // A key never cached has nothing to fall back on: the honest error, as before.
    call(&app, product(4)).await.problem(500);
}

/// `set` with any TTL up to `Duration::MAX`, through the library: a TTL from 1 s to 100 years
/// is stored and read back; any other is `InvalidTtl`; the cache keeps working after each.
async fn huge_ttls_never_overflow(backend: Backend) {
    let services = services(&backend.config());
    let cache = &services.cache;
    let years_100 = Duration::from_secs(100 * 365 * 24 * 3600);
    let ttls = crate::common::durations::durations(40);
    for (i, ttl) in ttls.into_iter().enumerate() {
        let key = format!("ttl-{i}");
        let stored = cache.set(&key, &i, ttl).await;
        let valid = ttl >= Duration::from_secs(1) && ttl <= years_100;
        if valid {
            stored.unwrap_or_else(|e| panic!("{ttl:?}: {e}"));
            assert_eq!(cache.get::<usize>(&key).await.unwrap(), Some(i), "{ttl:?}");
        } else {
            assert!(
                matches!(stored, Err(CacheError::InvalidTtl)),
                "{ttl:?}: {stored:?}"
            );
        }
        let remembered = cache
            .remember::<usize, CacheError, _, _>(&format!("ttl-r-{i}"), ttl, || async {
                Ok(Some(i))
            })
            .await;
        if valid {
            assert_eq!(remembered.unwrap().value, Some(i), "{ttl:?}");
        } else {
            assert!(
                matches!(remembered, Err(CacheError::InvalidTtl)),
                "{ttl:?}: {remembered:?}"
            );
        }
        // The cache still answers.
        cache
            .set("alive", &i, Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(cache.get::<usize>("alive").await.unwrap(), Some(i));
    }
}

/// A config on `backend` with the fail-safe settings of these tests: a 2 s window, a 1 s
/// throttle, a 200 ms soft timeout and a 300 ms hard one, no eager refresh.
fn failsafe_config(backend: &Backend) -> Config {
    let mut config = backend.config();
    config.cache.fail_safe_max = Duration::from_secs(2);
    config.cache.fail_safe_throttle = Duration::from_secs(1);
    config.cache.loader_soft_timeout = Duration::from_millis(200);
    config.cache.loader_hard_timeout = Duration::from_millis(300);
    config.cache.eager_refresh = 0.0;
    config
}

/// What the test loaders return: an owned load.
type Load = std::pin::Pin<Box<dyn Future<Output = Result<Option<Bytes>, CacheError>>>>;

/// A loader answering `value` after `delay`, counting its calls.
fn slow(calls: &Arc<AtomicUsize>, delay: Duration, value: &'static str) -> impl FnOnce() -> Load {
    let calls = Arc::clone(calls);
    move || {
        Box::pin(async move {
            calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(delay).await;
            Ok(Some(Bytes::from(value)))
        })
    }
}

/// A loader that fails at once, counting its calls.
fn failing(calls: &Arc<AtomicUsize>) -> impl FnOnce() -> Load {
    let calls = Arc::clone(calls);
    move || {
        Box::pin(async move {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(CacheError::InvalidValue)
        })
    }
}

/// Past the TTL with the loader failing: stale within the window (both instances, with the
/// failure counted), the loader called at most once per throttle period per instance under a
/// load of 200 reads, and the loader's error once the window is over.
async fn stale_within_the_window_and_throttled(backend: Backend) {
    let config = failsafe_config(&backend);
    let a = services(&config);
    let b = if backend.is_redis() {
        Some(services(&config))
    } else {
        None
    };
    crate::common::feed_ready(&a).await;
    let calls = Arc::new(AtomicUsize::new(0));
    let ttl = Duration::from_secs(1);
    let written = Instant::now();
    let first = a
        .cache
        .remember_json_owned("fs", ttl, slow(&calls, Duration::ZERO, "\"v1\""))
        .await
        .unwrap();
    assert_eq!(
        (first.tier, first.value.as_deref()),
        (Tier::Miss, Some(&b"\"v1\""[..]))
    );
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let failures = Arc::new(AtomicUsize::new(0));
    let instances: Vec<_> = std::iter::once(&a).chain(b.as_ref()).collect();
    let mut a_done = None;
    for services in &instances {
        let replies = join_all((0..100).map(|_| {
            services
                .cache
                .remember_json_owned::<CacheError, _, _>("fs", ttl, failing(&failures))
        }))
        .await;
        for reply in replies {
            let reply = reply.unwrap();
            assert_eq!(reply.tier, Tier::Stale);
            assert_eq!(reply.value.as_deref(), Some(&b"\"v1\""[..]));
            assert_eq!(reply.age.map(|a| a.as_secs()), Some(1));
        }
        assert_eq!(services.cache.stats().loader_failures, 1);
        assert_eq!(services.cache.stats().stale_served, 100);
        // Instance A's failure (and throttle) happened by now.
        a_done.get_or_insert_with(Instant::now);
    }
    // Once per instance: the other 99 reads of each were throttled.
    assert_eq!(failures.load(Ordering::SeqCst), instances.len());
    // After the throttle period, one more call, and stale again.
    let a_done = a_done.unwrap();
    tokio::time::sleep(Duration::from_millis(1_050).saturating_sub(a_done.elapsed())).await;
    let again = a
        .cache
        .remember_json_owned::<CacheError, _, _>("fs", ttl, failing(&failures))
        .await
        .unwrap();
    assert_eq!(again.tier, Tier::Stale);
    assert_eq!(failures.load(Ordering::SeqCst), instances.len() + 1);
    // Past the window (TTL 1 s + 2 s from the L2 write, which lands a little after the first
    // answer: up to 170 ms on a loaded machine): the loader's error.
    tokio::time::sleep(Duration::from_millis(3_400).saturating_sub(written.elapsed())).await;
    let err = a
        .cache
        .remember_json_owned::<CacheError, _, _>("fs", ttl, failing(&failures))
        .await
        .unwrap_err();
    assert!(matches!(err, CacheError::InvalidValue), "{err:?}");
    if let Some(keys) = backend.keys_with_ttl() {
        assert!(
            !keys.iter().any(|(k, _)| k == "redkit:cache:fs"),
            "{keys:?}"
        );
    }
}

/// With a stale value at hand and a loader that takes 1 s: answered stale within the soft
/// timeout (+50 ms); the load finishes in the background and fills both tiers.
async fn soft_timeout_answers_stale_and_finishes_in_background(backend: Backend) {
    let services = services(&failsafe_config(&backend));
    crate::common::feed_ready(&services).await;
    let cache = &services.cache;
    let calls = Arc::new(AtomicUsize::new(0));
    let ttl = Duration::from_secs(1);
    cache
        .remember_json_owned("soft", ttl, slow(&calls, Duration::ZERO, "1"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let started = Instant::now();
    let reply = cache
        .remember_json_owned("soft", ttl, slow(&calls, Duration::from_secs(1), "2"))
        .await
        .unwrap();
    let took = started.elapsed();
    assert_eq!(
        (reply.tier, reply.value.as_deref()),
        (Tier::Stale, Some(&b"1"[..]))
    );
    assert!(took < Duration::from_millis(250), "answered after {took:?}");
    eprintln!("soft timeout 200 ms: answered stale after {took:?}");
    assert_eq!(cache.stats().loader_timeouts, 1);
    // The load went on: once it lands, both tiers hold its value (no loader call needed).
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let after = cache
        .remember_json_owned::<CacheError, _, _>("soft", ttl, failing(&calls))
        .await
        .unwrap();
    assert_eq!(
        (after.tier, after.value.as_deref()),
        (Tier::L1, Some(&b"2"[..]))
    );
    assert_eq!(
        cache.get_raw("soft").await.unwrap().unwrap().json.as_ref(),
        b"2"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

/// With nothing stale at hand, a loader slower than the hard timeout is a `LoaderTimeout`
/// after 300 ms (+50), which the catalog's routes answer as a 504 problem.
async fn hard_timeout_without_stale_is_504(backend: Backend) {
    let direct = services(&failsafe_config(&backend));
    let calls = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let err = direct
        .cache
        .remember_json_owned(
            "hard",
            Duration::from_secs(60),
            slow(&calls, Duration::from_secs(2), "1"),
        )
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert!(matches!(err, CacheError::LoaderTimeout), "{err:?}");
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_millis(350),
        "{took:?}"
    );
    assert_eq!(
        actix_web::ResponseError::status_code(&err),
        actix_web::http::StatusCode::GATEWAY_TIMEOUT
    );
    // Over HTTP (the catalog's routes answer a cache error as it maps itself): a 504 problem.
    let res = actix_web::ResponseError::error_response(&redkit::catalog::CatalogError::from(err));
    assert_eq!(res.status(), actix_web::http::StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(
        res.headers().get("content-type").unwrap(),
        "application/problem+json"
    );
    let body = actix_web::body::to_bytes(res.into_body()).await.unwrap();
    let problem: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(problem["status"], 504);
    assert_eq!(problem["detail"], "The data source did not answer in time.");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

/// An entry read every 100 ms for three TTLs (eager refresh at 0.5) misses once: the first
/// read. Each reload runs in the background, once per key and process.
async fn eager_refresh_never_misses(backend: Backend) {
    let mut config = failsafe_config(&backend);
    config.cache.eager_refresh = 0.5;
    let services = services(&config);
    crate::common::feed_ready(&services).await;
    let calls = Arc::new(AtomicUsize::new(0));
    let ttl = Duration::from_secs(1);
    let mut tiers = Vec::new();
    let started = Instant::now();
    while started.elapsed() < 3 * ttl {
        let reply = services
            .cache
            .remember_json_owned("eager", ttl, slow(&calls, Duration::from_millis(20), "1"))
            .await
            .unwrap();
        tiers.push(reply.tier);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let misses = tiers
        .iter()
        .filter(|t| **t != Tier::L1 && **t != Tier::L2)
        .count();
    eprintln!(
        "eager refresh: {} reads, {misses} miss, {} loads",
        tiers.len(),
        calls.load(Ordering::SeqCst)
    );
    assert_eq!(misses, 1, "{tiers:?}");
    assert_eq!(tiers[0], Tier::Miss);
    let loads = calls.load(Ordering::SeqCst);
    assert!((3..=7).contains(&loads), "{loads} loads");
}

/// Runs `cmd` on the backend's Redis (any node of a cluster routes it); `None` on memory.
fn redis_cmd<T: ::redis::FromRedisValue>(backend: &Backend, cmd: &::redis::Cmd) -> Option<T> {
    match backend {
        Backend::Memory => None,
        Backend::Redis(server) => Some(cmd.query(&mut server.conn()).unwrap()),
        Backend::Cluster(cluster) => Some(cmd.query(&mut cluster.conn()).unwrap()),
    }
}

/// A failing loader behind an eager refresh is called once per throttle period, however many
/// hits ask for a refresh meanwhile; the value keeps being served from L1.
async fn eager_refresh_respects_the_throttle(backend: Backend) {
    let mut config = failsafe_config(&backend);
    config.cache.eager_refresh = 0.2;
    config.cache.fail_safe_throttle = Duration::from_secs(2);
    let services = services(&config);
    crate::common::feed_ready(&services).await;
    let (calls, failures) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let ttl = Duration::from_secs(3);
    services
        .cache
        .remember_json_owned("eager-fail", ttl, slow(&calls, Duration::ZERO, "1"))
        .await
        .unwrap();
    // Past 0.6 s every hit is due for a refresh; read every 20 ms until 2.5 s.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(1_800) {
        let reply = services
            .cache
            .remember_json_owned::<CacheError, _, _>("eager-fail", ttl, failing(&failures))
            .await
            .unwrap();
        assert_eq!(reply.tier, Tier::L1);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(failures.load(Ordering::SeqCst), 1);
    assert_eq!(services.cache.stats().eager_refreshes, 1);
}

/// A value another program writes as plain JSON reads as a fresh value until its Redis TTL (then
/// the loader runs: no stale copy of a value redkit did not load); a value redkit loads is an
/// envelope kept for its TTL plus the fail-safe window, which `get` reads as plain JSON.
async fn plain_json_of_other_programs_stays_fresh(backend: Backend) {
    let services = services(&failsafe_config(&backend));
    crate::common::feed_ready(&services).await;
    let cache = &services.cache;
    let calls = Arc::new(AtomicUsize::new(0));
    let ttl = Duration::from_secs(60);
    if backend.is_redis() {
        let mut set = ::redis::cmd("SET");
        set.arg("redkit:cache:other")
            .arg(r#"{"by":"another program"}"#)
            .arg("PX")
            .arg(1_500);
        redis_cmd::<()>(&backend, &set);
        // Its invalidation reaches L1 first (else it may refuse the first read's L1 fill).
        tokio::time::sleep(Duration::from_millis(50)).await;
        for tier in [Tier::L2, Tier::L1] {
            let reply = cache
                .remember_json_owned::<CacheError, _, _>("other", ttl, failing(&calls))
                .await
                .unwrap();
            assert_eq!(reply.tier, tier);
            assert_eq!(
                reply.value.as_deref(),
                Some(&br#"{"by":"another program"}"#[..])
            );
        }
        tokio::time::sleep(Duration::from_millis(1_600)).await;
        let err = cache
            .remember_json_owned::<CacheError, _, _>("other", ttl, failing(&calls))
            .await
            .unwrap_err();
        assert!(matches!(err, CacheError::InvalidValue), "{err:?}");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
    let loaded = cache
        .remember_json_owned("mine", ttl, slow(&calls, Duration::ZERO, "[1,2]"))
        .await
        .unwrap();
    assert_eq!(loaded.tier, Tier::Miss);
    assert_eq!(
        cache.get::<Vec<u8>>("mine").await.unwrap(),
        Some(vec![1, 2])
    );
    assert!(cache.exists("mine").await.unwrap());
    if let Some(keys) = backend.keys_with_ttl() {
        let pttl = keys
            .iter()
            .find(|(k, _)| k == "redkit:cache:mine")
            .map(|(_, t)| *t)
            .unwrap();
        // 60 s fresh + 2 s fail-safe window.
        assert!((61_000..=62_000).contains(&pttl), "{pttl}");
        let raw: Vec<u8> =
            redis_cmd(&backend, ::redis::cmd("GET").arg("redkit:cache:mine")).unwrap();
        let text = String::from_utf8(raw).unwrap();
        assert!(
            text.starts_with("!rk1\t") && text.ends_with("\t60000\n[1,2]"),
            "{text}"
        );
    }
}

backend_suite!(
    eager_refresh_respects_the_throttle,
    plain_json_of_other_programs_stays_fresh,
    failing_loader_serves_stale,
    huge_ttls_never_overflow,
    stale_within_the_window_and_throttled,
    soft_timeout_answers_stale_and_finishes_in_background,
    hard_timeout_without_stale_is_504,
    eager_refresh_never_misses,
);

/// `SWAPDB` on the feed's database changes every key at once, which Redis does not report: L1
/// is flushed within a check interval and the next read answers the new database's value.
#[actix_web::test]
async fn swapdb_flushes_every_l1() {
    let backend = Backend::redis();
    let a = services(&backend.config());
    let b = services(&backend.config());
    crate::common::feed_ready(&a).await;
    crate::common::feed_ready(&b).await;
    let Backend::Redis(server) = &backend else {
        unreachable!()
    };
    let mut conn = server.conn();
    // Database 1 gets its value first: a write there is reported like any other (tracking
    // does not tell databases apart), and must not be what flushes the L1s below.
    ::redis::cmd("SELECT").arg(1).exec(&mut conn).unwrap();
    ::redis::cmd("SET")
        .arg("redkit:cache:swapped")
        .arg("\"db1\"")
        .arg("EX")
        .arg(60)
        .exec(&mut conn)
        .unwrap();
    a.cache
        .set("swapped", &"db0", Duration::from_secs(60))
        .await
        .unwrap();
    for cache in [&a.cache, &b.cache] {
        assert_eq!(
            cache.get::<String>("swapped").await.unwrap().as_deref(),
            Some("db0")
        );
        assert_eq!(
            cache.get_raw("swapped").await.unwrap().unwrap().tier,
            redkit::cache::Tier::L1
        );
    }
    ::redis::cmd("SWAPDB")
        .arg(0)
        .arg(1)
        .exec(&mut conn)
        .unwrap();
    let swapped = Instant::now();
    for cache in [&a.cache, &b.cache] {
        let seen = crate::common::eventually(Duration::from_secs(2), || async {
            cache.get::<String>("swapped").await.unwrap().as_deref() == Some("db1")
        })
        .await;
        assert!(seen, "an L1 kept the swapped-out value");
    }
    let took = swapped.elapsed();
    eprintln!("SWAPDB applied to both L1s in {took:?}");
    // One check interval (500 ms), the deadline (500 ms in tests) and the polling.
    assert!(took < Duration::from_millis(1_100), "{took:?}");
    // The sentinel keys carry a TTL, like every key.
    for (key, ttl) in server.keys_with_ttl() {
        assert!(ttl > 0, "{key} has no TTL");
    }
}
