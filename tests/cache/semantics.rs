//! The cache's semantics, through `CacheHandle` and over HTTP, on both backends.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use actix_web::test::TestRequest;
use futures_util::future::join_all;
use redkit::cache::{CacheError, Tier};
use serde_json::json;

use crate::common::{Backend, Reply, app, call, services, with_token};

fn put(key: &str, body: &str) -> TestRequest {
    with_token(TestRequest::put())
        .uri(&format!("/cache/{key}"))
        .insert_header(("content-type", "application/json"))
        .set_payload(body.to_owned())
}

fn get(key: &str) -> TestRequest {
    TestRequest::get().uri(&format!("/cache/{key}"))
}

fn assert_hit(reply: &Reply, key: &str, value: serde_json::Value, tier: &str) {
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    assert_eq!(reply.json(), json!({"key": key, "value": value}));
    assert_eq!(reply.header("x-cache"), Some(tier));
}

/// A cached `null`, `[]`, `0`, `""`, `false` and `{}` are hits, from L1 and from L2 alike.
async fn falsy_values_are_hits(backend: Backend) {
    for l1_bytes in [redkit::cache::DEFAULT_L1_MAX_BYTES, 0] {
        let mut config = backend.config();
        config.cache.l1_max_bytes = l1_bytes;
        let services = services(&config);
        let app = app(&services).await;
        crate::common::authorize(&app).await;
        let tier = if l1_bytes == 0 { "HIT-L2" } else { "HIT-L1" };
        for (i, value) in ["null", "[]", "0", "\"\"", "false", "{}"]
            .into_iter()
            .enumerate()
        {
            let key = format!("falsy-{l1_bytes}-{i}");
            assert_eq!(call(&app, put(&key, value)).await.status, 200);
            let reply = call(&app, get(&key)).await;
            assert_hit(&reply, &key, serde_json::from_str(value).unwrap(), tier);
        }
        // And through the handle: Some(null), not None.
        let got: Option<serde_json::Value> = services
            .cache
            .get(&format!("api:falsy-{l1_bytes}-0"))
            .await
            .unwrap();
        assert_eq!(got, Some(serde_json::Value::Null));
    }
}

/// A key never written is a 404 problem with `X-Cache: MISS`; HEAD answers existence.
async fn miss_and_head(backend: Backend) {
    let services = services(&backend.config());
    let app = app(&services).await;
    crate::common::authorize(&app).await;
    let reply = call(&app, get("nothing-here")).await;
    reply.problem(404);
    assert_eq!(reply.header("x-cache"), Some("MISS"));
    assert_eq!(
        call(
            &app,
            TestRequest::default()
                .method(actix_web::http::Method::HEAD)
                .uri("/cache/nothing-here")
        )
        .await
        .status,
        404
    );
    assert_eq!(call(&app, put("there", "1")).await.status, 200);
    let head = call(
        &app,
        TestRequest::default()
            .method(actix_web::http::Method::HEAD)
            .uri("/cache/there"),
    )
    .await;
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
}

/// With L1 on, the first L2 read fills L1; with L1 off, every read comes from L2.
async fn l2_read_fills_l1(backend: Backend) {
    let services = services(&backend.config());
    let app = app(&services).await;
    crate::common::authorize(&app).await;
    services
        .cache
        .set("api:warm", &json!({"a": 1}), Duration::from_secs(60))
        .await
        .unwrap();
    // A second process-local view: another Services on the same backend (Redis only shares L2).
    if backend.is_redis() {
        let other = crate::common::services(&backend.config());
        let other_app = app_for(&other).await;
        assert_hit(
            &call(&other_app, get("warm")).await,
            "warm",
            json!({"a": 1}),
            "HIT-L2",
        );
        assert_hit(
            &call(&other_app, get("warm")).await,
            "warm",
            json!({"a": 1}),
            "HIT-L1",
        );
    }
    assert_hit(
        &call(&app, get("warm")).await,
        "warm",
        json!({"a": 1}),
        "HIT-L1",
    );
    // L1 off: every read is an L2 hit, however often the key is read.
    let mut config = backend.config();
    config.cache.l1_max_bytes = 0;
    let l1_off = crate::common::services(&config);
    let l1_off_app = app_for(&l1_off).await;
    if !backend.is_redis() {
        // The memory backend's L2 is per process: this instance has its own.
        l1_off
            .cache
            .set("api:warm", &json!({"a": 1}), Duration::from_secs(60))
            .await
            .unwrap();
    }
    for _ in 0..3 {
        assert_hit(
            &call(&l1_off_app, get("warm")).await,
            "warm",
            json!({"a": 1}),
            "HIT-L2",
        );
    }
    assert_eq!(l1_off.cache.stats().l1_hits, 0);
}

async fn app_for(
    services: &redkit::http::Services,
) -> impl actix_web::dev::Service<
    actix_http::Request,
    Response = actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>,
    Error = actix_web::Error,
> {
    app(services).await
}

/// `set` and `delete` keep L1 consistent: the new value is read back at once, a deleted key is gone.
async fn writes_keep_l1_consistent(backend: Backend) {
    let services = services(&backend.config());
    let app = app(&services).await;
    crate::common::authorize(&app).await;
    assert_eq!(call(&app, put("k", "1")).await.status, 200);
    assert_hit(&call(&app, get("k")).await, "k", json!(1), "HIT-L1");
    assert_eq!(call(&app, put("k", "2")).await.status, 200);
    assert_hit(&call(&app, get("k")).await, "k", json!(2), "HIT-L1");
    assert_eq!(
        call(&app, with_token(TestRequest::delete()).uri("/cache/k"))
            .await
            .status,
        204
    );
    call(&app, get("k")).await.problem(404);
    call(&app, with_token(TestRequest::delete()).uri("/cache/k"))
        .await
        .problem(404);
    assert!(!services.cache.exists("api:k").await.unwrap());
}

/// `remember` caches an absent result as a negative entry: the loader runs once until it expires.
async fn remember_caches_absence(backend: Backend) {
    let mut config = backend.config();
    config.cache.negative_ttl = Duration::from_secs(1);
    let services = services(&config);
    // L1 serves only once the invalidation feed is up (on a cluster: armed on every node).
    crate::common::feed_ready(&services).await;
    let calls = AtomicUsize::new(0);
    let load = || async {
        calls.fetch_add(1, Ordering::SeqCst);
        Ok::<Option<u32>, CacheError>(None)
    };
    let first = services
        .cache
        .remember("missing", Duration::from_secs(60), load)
        .await
        .unwrap();
    assert_eq!((first.value, first.tier), (None, Tier::Miss));
    for _ in 0..5 {
        let again = services
            .cache
            .remember("missing", Duration::from_secs(60), load)
            .await
            .unwrap();
        assert_eq!((again.value, again.tier), (None, Tier::L1));
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    // A negative entry is not a value.
    assert!(!services.cache.exists("missing").await.unwrap());
    assert_eq!(services.cache.get::<u32>("missing").await.unwrap(), None);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    services
        .cache
        .remember("missing", Duration::from_secs(60), load)
        .await
        .unwrap();
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "the negative entry expires after its own TTL"
    );
}

/// 500 concurrent `remember` calls on one cold key run the loader exactly once; all get the value.
async fn remember_is_single_flight(backend: Backend) {
    let services = services(&backend.config());
    let calls = Arc::new(AtomicUsize::new(0));
    let results = join_all((0..500).map(|_| {
        let cache = services.cache.clone();
        let calls = Arc::clone(&calls);
        async move {
            cache
                .remember("cold", Duration::from_secs(60), || async {
                    calls.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    Ok::<_, CacheError>(Some(json!({"v": 42})))
                })
                .await
                .unwrap()
        }
    }))
    .await;
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(results.len(), 500);
    assert!(results.iter().all(|r| r.value == Some(json!({"v": 42}))));
    assert_eq!(services.cache.stats().loads, 1);
}

/// Callers that missed L2 and wait on a load that is abandoned retry; the one that takes the
/// lease next finds the value in L2 (stored meanwhile) and hands it to all the others at once:
/// one L2 read, not one per waiter in turn (L1 off: nothing else would serve them).
async fn waiters_share_a_value_found_in_l2(backend: Backend) {
    use redkit::cache::{Acquire, Lease};
    const WAITERS: usize = 10;
    let mut config = backend.config();
    config.cache.l1_max_bytes = 0;
    let services = services(&config);
    let cache = services.cache.clone();
    let acquire = |key: &str| {
        cache.addr().send(Acquire {
            key: key.to_owned(),
        })
    };
    // A load of the key in flight, held here.
    let Lease::Leader(held) = acquire("shared").await.unwrap() else {
        panic!("the first acquire leads");
    };
    let waiters: Vec<_> = (0..WAITERS)
        .map(|_| {
            let cache = cache.clone();
            actix_web::rt::spawn(async move {
                cache
                    .remember("shared", Duration::from_secs(60), || async {
                        Ok::<_, CacheError>(Some(json!("loaded")))
                    })
                    .await
                    .unwrap()
            })
        })
        .collect();
    // Every waiter missed L2 and queued its acquire (fewer than the mailbox holds): once the
    // actor answers a later one, they all wait on the held load.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while cache.stats().misses < WAITERS as u64 {
        assert!(
            std::time::Instant::now() < deadline,
            "the waiters never missed L2"
        );
        actix_web::rt::task::yield_now().await;
    }
    let Lease::Leader(barrier) = acquire("barrier").await.unwrap() else {
        panic!("nobody loads the barrier key");
    };
    drop(barrier);
    cache
        .set("shared", &json!("stored"), Duration::from_secs(60))
        .await
        .unwrap();
    drop(held);
    let before = cache.stats();
    for waiter in waiters {
        assert_eq!(waiter.await.unwrap().value, Some(json!("stored")));
    }
    let after = cache.stats();
    assert_eq!(after.loads, 0, "nobody ran the loader");
    assert_eq!(after.l2_hits - before.l2_hits, 1, "one L2 read for all");
    assert_eq!(after.coalesced, WAITERS as u64 - 1);
}

/// A failing loader is not cached, and the next caller loads again.
async fn failed_load_is_not_cached(backend: Backend) {
    let services = services(&backend.config());
    let err = services
        .cache
        .remember::<u32, CacheError, _, _>("flaky", Duration::from_secs(60), || async {
            Err(CacheError::InvalidValue)
        })
        .await;
    assert!(matches!(err, Err(CacheError::InvalidValue)));
    let ok = services
        .cache
        .remember("flaky", Duration::from_secs(60), || async {
            Ok::<_, CacheError>(Some(7u32))
        })
        .await;
    assert_eq!(ok.unwrap().value, Some(7));
}

/// `flush_pattern` deletes matching keys only, in both tiers, and answers the count.
async fn flush_pattern_matches_globs(backend: Backend) {
    let services = services(&backend.config());
    let app = app(&services).await;
    crate::common::authorize(&app).await;
    for key in [
        "user:1",
        "user:2",
        "user:10",
        "item:1",
        "a*b",
        "q?",
        "[x]",
        "back\\slash",
    ] {
        services
            .cache
            .set(&format!("api:{key}"), &json!(key), Duration::from_secs(60))
            .await
            .unwrap();
    }
    let flush = |pattern: &str| {
        with_token(TestRequest::delete()).uri(&format!("/cache?pattern={}", urlencode(pattern)))
    };
    let reply = call(&app, flush("user:?")).await;
    assert_eq!(reply.json(), json!({"deleted": 2}));
    call(&app, get("user:1")).await.problem(404);
    assert_hit(
        &call(&app, get("user:10")).await,
        "user:10",
        json!("user:10"),
        "HIT-L1",
    );
    assert_eq!(
        call(&app, flush("a\\*b")).await.json(),
        json!({"deleted": 1})
    );
    assert_eq!(
        call(&app, flush("\\[x]")).await.json(),
        json!({"deleted": 1})
    );
    assert_eq!(call(&app, flush("*")).await.json(), json!({"deleted": 4}));
    for key in ["user:10", "item:1", "q?", "back\\slash"] {
        assert!(
            !services.cache.exists(&format!("api:{key}")).await.unwrap(),
            "{key}"
        );
    }
    // No pattern (and no tag): nothing is removed, never everything.
    assert_eq!(call(&app, put("kept", "1")).await.status, 200);
    let none = call(&app, with_token(TestRequest::delete()).uri("/cache")).await;
    assert_eq!((none.status, none.json()), (200, json!({"deleted": 0})));
    assert!(services.cache.exists("api:kept").await.unwrap());
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// API keys must be 1–127 characters of printable UTF-8 (at most 508 bytes: 512 less the `api:`
/// namespace), as the API document states; anything else is a 400 problem.
async fn key_rules(backend: Backend) {
    let services = services(&backend.config());
    let app = app(&services).await;
    crate::common::authorize(&app).await;
    // 127 four-byte characters: the longest key in bytes.
    let longest = "%F0%9F%98%80".repeat(127);
    assert_eq!(call(&app, put(&longest, "1")).await.status, 200);
    assert_eq!(call(&app, get(&longest)).await.status, 200);
    let too_long = "k".repeat(128);
    assert_eq!(
        call(&app, put(&too_long, "1")).await.problem(400)["type"],
        "https://redkit.dev/problems/invalid-key"
    );
    call(&app, get("bad%01key")).await.problem(400);
    call(&app, put("bad%0Akey", "1")).await.problem(400);
    // Unicode is fine.
    assert_eq!(call(&app, put("caf%C3%A9", "\"ok\"")).await.status, 200);
    assert_hit(
        &call(&app, get("caf%C3%A9")).await,
        "café",
        json!("ok"),
        "HIT-L1",
    );
}

/// Bad input of every kind gets its 4xx problem, never a 500.
async fn bad_input_is_4xx(backend: Backend) {
    let mut config = backend.config();
    config.body_limit = 1024;
    let services = services(&config);
    let app = app(&services).await;
    crate::common::authorize(&app).await;
    let cases: Vec<(TestRequest, u16)> = vec![
        (
            with_token(TestRequest::put())
                .uri("/cache/k?ttl=-5")
                .insert_header(("content-type", "application/json"))
                .set_payload("1"),
            400,
        ),
        (
            with_token(TestRequest::put())
                .uri("/cache/k?ttl=abc")
                .insert_header(("content-type", "application/json"))
                .set_payload("1"),
            400,
        ),
        (
            with_token(TestRequest::put())
                .uri("/cache/k?ttl=0")
                .insert_header(("content-type", "application/json"))
                .set_payload("1"),
            400,
        ),
        (
            with_token(TestRequest::put())
                .uri("/cache/k?ttl=99999999999")
                .insert_header(("content-type", "application/json"))
                .set_payload("1"),
            400,
        ),
        (put("k", "{not json"), 400),
        (put("k", ""), 400),
        (
            with_token(TestRequest::put())
                .uri("/cache/k")
                .insert_header(("content-type", "text/plain"))
                .set_payload("1"),
            415,
        ),
        (
            with_token(TestRequest::put())
                .uri("/cache/k")
                .set_payload("1"),
            415,
        ),
        (put("k", &format!("\"{}\"", "x".repeat(2000))), 413),
        (with_token(TestRequest::patch()).uri("/cache/k"), 405),
        (with_token(TestRequest::post()).uri("/health"), 405),
        (TestRequest::get().uri("/no/such/route"), 404),
        (TestRequest::get().uri("/products/abc"), 400),
        (TestRequest::get().uri("/products/-1"), 400),
        (TestRequest::get().uri("/products/0"), 400),
        (
            TestRequest::get().uri("/products/99999999999999999999999"),
            400,
        ),
        (
            with_token(TestRequest::post())
                .uri("/products")
                .insert_header(("content-type", "application/json"))
                .set_payload("{\"name\":1}"),
            400,
        ),
        (
            with_token(TestRequest::post())
                .uri("/products")
                .insert_header(("content-type", "application/json"))
                .set_payload("{\"name\":\"x\",\"price\":-1}"),
            422,
        ),
        (
            with_token(TestRequest::post())
                .uri("/products")
                .insert_header(("content-type", "application/json"))
                .set_payload("[1,2"),
            400,
        ),
    ];
    for (i, (req, status)) in cases.into_iter().enumerate() {
        let reply = call(&app, req).await;
        assert_eq!(
            reply.status,
            status,
            "case {i}: {}",
            String::from_utf8_lossy(&reply.body)
        );
        reply.problem(status);
    }
}

/// `cached` computes once per argument set and keys by a stable hash of the arguments.
async fn cached_helper(backend: Backend) {
    let services = services(&backend.config());
    let calls = AtomicUsize::new(0);
    let square = |n: u64| {
        let calls = &calls;
        let cache = services.cache.clone();
        async move {
            redkit::cache::cached(&cache, "square", &n, Duration::from_secs(60), || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Ok::<_, CacheError>(n * n)
            })
            .await
            .unwrap()
        }
    };
    assert_eq!(square(3).await, 9);
    assert_eq!(square(3).await, 9);
    assert_eq!(square(4).await, 16);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    // The key is the namespace plus SHA-1 of the arguments' JSON: the same in every process.
    assert_eq!(
        redkit::cache::key_for("square", &3u64).unwrap(),
        "square:77de68daecd823babbb58edb1c8e14d7106e83bb"
    );
    assert!(
        services
            .cache
            .exists("square:77de68daecd823babbb58edb1c8e14d7106e83bb")
            .await
            .unwrap()
    );
}

/// With L1 off every read is an L2 hit (falsy values included), and on Redis it is one `GET`:
/// no `PTTL`, since there is no L1 whose life it would bound.
async fn l1_off_reads_l2_with_one_command(backend: Backend) {
    let mut config = backend.config();
    config.cache.l1_max_bytes = 0;
    let services = services(&config);
    let app = app_for(&services).await;
    for (key, value) in [("nothing", json!(null)), ("obj", json!({"a": 1}))] {
        services
            .cache
            .set(&format!("api:{key}"), &value, Duration::from_secs(60))
            .await
            .unwrap();
    }
    let before = backend.command_calls();
    for _ in 0..3 {
        assert_hit(
            &call(&app, get("nothing")).await,
            "nothing",
            json!(null),
            "HIT-L2",
        );
        assert_hit(
            &call(&app, get("obj")).await,
            "obj",
            json!({"a": 1}),
            "HIT-L2",
        );
    }
    if let (Some(before), Some(after)) = (before, backend.command_calls()) {
        let delta =
            |c: &str| after.get(c).copied().unwrap_or(0) - before.get(c).copied().unwrap_or(0);
        assert_eq!(delta("get"), 6);
        assert_eq!(delta("pttl"), 0);
    }
}

/// A star-heavy flush pattern against long keys answers at once (it froze the
/// instance: exponential matching on the actors' thread), and patterns are bounded.
async fn star_heavy_flush_answers(backend: Backend) {
    let services = services(&backend.config());
    let app = app(&services).await;
    crate::common::authorize(&app).await;
    // 202-byte keys (longer than the API's own): written through the handle, in the API's part.
    for i in 0..20 {
        let key = format!("api:{i:02}{}", "a".repeat(200));
        services
            .cache
            .set(&key, &json!(1), Duration::from_secs(60))
            .await
            .unwrap();
    }
    let flush = |pattern: &str| {
        with_token(TestRequest::delete()).uri(&format!("/cache?pattern={}", urlencode(pattern)))
    };
    // Linear-time matching: each flush is a scan of 20 keys (the exponential matcher took
    // minutes here); 500 ms leaves room for a loaded debug build.
    for (pattern, deleted) in [("*a*a*a*a*a*a*a*a*a*a*b", 0), ("*a*a*a*a*a*a*a*a*a*a*", 20)] {
        let started = std::time::Instant::now();
        let reply = call(&app, flush(pattern)).await;
        let elapsed = started.elapsed();
        assert_eq!(
            (reply.status, reply.json()),
            (200, json!({"deleted": deleted}))
        );
        assert!(
            elapsed < Duration::from_millis(500),
            "{pattern}: {elapsed:?}"
        );
    }
    let reply = call(&app, flush(&"*".repeat(125))).await;
    assert_eq!(
        reply.problem(400)["type"],
        "https://redkit.dev/problems/invalid-pattern"
    );
    call(&app, flush("")).await.problem(400);
}

/// The HTTP API has its own namespace: `PUT /cache/products:list` cannot change
/// what `GET /products` serves, and flushing `*` through the API leaves the catalog's keys.
async fn api_cannot_touch_server_keys(backend: Backend) {
    let services = services(&backend.config());
    let app = app(&services).await;
    crate::common::authorize(&app).await;
    let real = call(&app, TestRequest::get().uri("/products")).await;
    assert_eq!((real.status, real.header("x-cache")), (200, Some("MISS")));
    let forged = r#"{"products":[{"id":1,"name":"forged","price":0.01,"description":null}]}"#;
    let reply = call(&app, put("products:list", forged)).await;
    assert_eq!(
        (reply.status, reply.json()),
        (200, json!({"key": "products:list", "ttl": 300}))
    );
    let after = call(&app, TestRequest::get().uri("/products")).await;
    assert_eq!(after.header("x-cache"), Some("HIT-L1"));
    assert_eq!(after.body, real.body);
    // The API reads back its own value, not the catalog's.
    assert_hit(
        &call(&app, get("products:list")).await,
        "products:list",
        serde_json::from_str(forged).unwrap(),
        "HIT-L1",
    );
    let flushed = call(
        &app,
        with_token(TestRequest::delete()).uri("/cache?pattern=*"),
    )
    .await;
    assert_eq!(flushed.json(), json!({"deleted": 1}));
    let still = call(&app, TestRequest::get().uri("/products")).await;
    assert_eq!(still.header("x-cache"), Some("HIT-L1"));
    assert_eq!(still.body, real.body);
}

/// A value under a `cached()` key that does not decode as the caller's type is a
/// miss: computed again and overwritten, never an error for every caller.
async fn undecodable_cached_value_is_recomputed(backend: Backend) {
    let services = services(&backend.config());
    let key = redkit::cache::key_for("fx", &("EUR", "USD")).unwrap();
    services
        .cache
        .set(&key, &json!({"forged": true}), Duration::from_secs(60))
        .await
        .unwrap();
    let calls = AtomicUsize::new(0);
    for _ in 0..3 {
        let rate: f64 = redkit::cache::cached(
            &services.cache,
            "fx",
            &("EUR", "USD"),
            Duration::from_secs(60),
            || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Ok::<_, CacheError>(1.08)
            },
        )
        .await
        .unwrap();
        assert_eq!(rate, 1.08);
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(services.cache.get::<f64>(&key).await.unwrap(), Some(1.08));
}

/// Cached values are capped (64 KiB by default): one byte more is a 413 problem
/// and nothing is stored; exactly the cap is stored.
async fn oversized_value_is_413(backend: Backend) {
    let services = services(&backend.config());
    let app = app(&services).await;
    crate::common::authorize(&app).await;
    let at_cap = format!("\"{}\"", "x".repeat(64 * 1024 - 2));
    let over = format!("\"{}\"", "x".repeat(64 * 1024 - 1));
    let reply = call(&app, put("big", &over)).await;
    assert_eq!(
        reply.problem(413)["detail"],
        "A cached value is at most 65536 bytes of JSON."
    );
    call(&app, get("big")).await.problem(404);
    assert_eq!(call(&app, put("big", &at_cap)).await.status, 200);
    assert_eq!(call(&app, get("big")).await.status, 200);
}

backend_suite!(
    oversized_value_is_413,
    star_heavy_flush_answers,
    api_cannot_touch_server_keys,
    undecodable_cached_value_is_recomputed,
    falsy_values_are_hits,
    l1_off_reads_l2_with_one_command,
    miss_and_head,
    l2_read_fills_l1,
    writes_keep_l1_consistent,
    remember_caches_absence,
    remember_is_single_flight,
    waiters_share_a_value_found_in_l2,
    failed_load_is_not_cached,
    flush_pattern_matches_globs,
    key_rules,
    bad_input_is_4xx,
    cached_helper,
);
