//! Redis failures and namespace safety, against a private redis-server.

use std::time::{Duration, Instant};

use actix_web::test::TestRequest;
use serde_json::json;

use crate::common::{Backend, app, call, eventually, services, with_token};

fn put(key: &str, body: &str) -> TestRequest {
    with_token(TestRequest::put())
        .uri(&format!("/cache/{key}"))
        .insert_header(("content-type", "application/json"))
        .set_payload(body.to_owned())
}

/// No internal error text (Redis, IO, OS) in a body sent to a client.
fn assert_opaque(body: &serde_json::Value) {
    let text = body.to_string().to_lowercase();
    for leak in [
        "refused",
        "os error",
        "io error",
        "broken pipe",
        "unix",
        "socket",
        "redis-rs",
        "connection reset",
    ] {
        assert!(
            !text.contains(leak),
            "internal detail {leak:?} leaked: {text}"
        );
    }
}

/// Redis killed mid-test: L1 is flushed and bypassed (its feed is lost: nothing would report a
/// change), so reads come from the loader or are a 503, writes are 503 with Retry-After,
/// `/health` is degraded, and everything recovers when Redis returns, without a restart.
#[actix_web::test]
async fn redis_killed_then_restarted() {
    let mut backend = Backend::redis();
    let services = services(&backend.config());
    let app = app(&services).await;
    crate::common::authorize(&app).await;
    assert_eq!(
        call(&app, TestRequest::get().uri("/products/1"))
            .await
            .status,
        200
    );
    assert_eq!(call(&app, put("kept", "{\"v\":1}")).await.status, 200);

    let hit = call(&app, TestRequest::get().uri("/products/1")).await;
    assert_eq!((hit.status, hit.header("x-cache")), (200, Some("HIT-L1")));

    backend.server().unwrap().kill();
    assert!(
        eventually(Duration::from_secs(3), || async {
            services.cache.feed() == redkit::cache::L1Feed::Down
        })
        .await,
        "the feed's loss is noticed"
    );

    let warm = call(&app, TestRequest::get().uri("/products/1")).await;
    assert_eq!(
        (warm.status, warm.header("x-cache")),
        (200, Some("MISS")),
        "L1 is bypassed: the loader answers"
    );
    let cold = call(&app, TestRequest::get().uri("/products/2")).await;
    assert_eq!(
        (cold.status, cold.header("x-cache")),
        (200, Some("MISS")),
        "loader answers without L2"
    );
    assert_eq!(cold.json()["name"], "Wireless mouse");
    // What L1 held is not served: it could be stale by now.
    let kept = call(&app, TestRequest::get().uri("/cache/kept")).await;
    assert_opaque(&kept.problem(503));

    let unknown = call(&app, TestRequest::get().uri("/cache/unknown")).await;
    assert_opaque(&unknown.problem(503));
    for req in [
        put("new", "1"),
        with_token(TestRequest::delete()).uri("/cache/kept"),
        with_token(TestRequest::delete()).uri("/cache?pattern=*"),
        with_token(TestRequest::post())
            .uri("/products")
            .insert_header(("content-type", "application/json"))
            .set_payload(json!({"name": "Pen", "price": 1}).to_string()),
        with_token(TestRequest::delete()).uri("/products/3"),
    ] {
        let reply = call(&app, req).await;
        assert_opaque(&reply.problem(503));
        assert_eq!(reply.header("retry-after"), Some("1"));
    }
    assert!(
        services.catalog.get(3).await.unwrap().is_some(),
        "a refused write changes nothing"
    );
    let health = call(&app, TestRequest::get().uri("/health")).await;
    assert_eq!(
        (health.status, health.json()["status"].as_str()),
        (503, Some("degraded"))
    );
    assert!(services.cache.stats().l2_errors >= 1);

    backend.server().unwrap().restart();
    let recovered = eventually(Duration::from_secs(5), || async {
        call(&app, TestRequest::get().uri("/health")).await.status == 200
    })
    .await;
    assert!(recovered, "health recovers once Redis answers");
    assert_eq!(call(&app, put("new", "2")).await.status, 200);
    let reread = call(&app, TestRequest::get().uri("/cache/new")).await;
    assert_eq!(reread.json(), json!({"key": "new", "value": 2}));
    let mut conn = backend.server().unwrap().conn();
    let stored: String = redis::cmd("GET")
        .arg("redkit:cache:api:new")
        .query(&mut conn)
        .unwrap();
    assert_eq!(stored, "2");
}

/// Redis unreachable at start-up: the server starts, serves from the loader, reports it, and
/// uses Redis as soon as it answers.
#[actix_web::test]
async fn redis_down_at_startup() {
    let mut backend = Backend::redis();
    let config = backend.config();
    backend.server().unwrap().kill();
    let services = services(&config);
    let app = app(&services).await;
    assert_eq!(
        call(&app, TestRequest::get().uri("/products/3"))
            .await
            .status,
        200
    );
    assert_eq!(
        call(&app, TestRequest::get().uri("/health")).await.status,
        503
    );
    // Accounts live in SQLite: registering works; sessions live in Redis: logging in is a 503.
    let register = TestRequest::post().uri("/auth/register").set_json(
        json!({"username": "writer", "email": "w@example.com", "password": "correct horse"}),
    );
    assert_eq!(call(&app, register).await.status, 201);
    let login = TestRequest::post()
        .uri("/auth/login")
        .set_json(json!({"username": "writer", "password": "correct horse"}));
    let refused = call(&app, login).await;
    assert_opaque(&refused.problem(503));
    assert!(refused.header("retry-after").is_some());

    backend.server().unwrap().restart();
    let usable = eventually(Duration::from_secs(5), || async {
        call(&app, TestRequest::get().uri("/health")).await.status == 200
    })
    .await;
    assert!(usable);
    let (token, _) = crate::common::login(&app, "writer", "correct horse").await;
    let usable = eventually(Duration::from_secs(5), || async {
        let req = put("k", "1").insert_header(crate::common::bearer(&token));
        call(&app, req).await.status == 200
    })
    .await;
    assert!(usable);
    let keys = backend.server().unwrap().keys_with_ttl();
    assert_eq!(
        keys.iter()
            .filter(|(k, _)| k.starts_with("redkit:cache:"))
            .count(),
        1,
        "{keys:?}"
    );
}

/// A frozen Redis (SIGSTOP) never hangs a request: writes fail within the response timeout.
#[actix_web::test]
async fn frozen_redis_times_out() {
    let backend = Backend::redis();
    let services = services(&backend.config());
    let app = app(&services).await;
    crate::common::authorize(&app).await;
    assert_eq!(call(&app, put("k", "1")).await.status, 200);
    let server = match &backend {
        Backend::Redis(server) => server,
        _ => unreachable!(),
    };
    server.pause();
    // A warm key is answered from L1 while Redis is frozen (a read asking Redis would time out).
    let warm = call(&app, TestRequest::get().uri("/cache/k")).await;
    assert_eq!((warm.status, warm.header("x-cache")), (200, Some("HIT-L1")));
    let started = Instant::now();
    let reply = call(&app, put("k2", "2")).await;
    let took = started.elapsed();
    server.resume();
    assert_opaque(&reply.problem(503));
    assert!(
        took < Duration::from_secs(2),
        "answered in {took:?}, the timeout is 500 ms"
    );
}

/// Every key redkit writes lives under its prefix and carries the TTL it should: each kind of
/// key within its bounds, not merely a positive one.
#[actix_web::test]
async fn every_key_has_a_ttl() {
    let backend = Backend::redis();
    let mut config = backend.config();
    config.rate_limit =
        redkit::ratelimit::RateLimitConfig::parse(&["default=100/60s"], &[] as &[&str]).unwrap();
    let services = services(&config);
    let app = app(&services).await;
    crate::common::authorize(&app).await;
    assert_eq!(call(&app, put("a", "1")).await.status, 200);
    assert_eq!(call(&app, put("b?ttl=5", "null")).await.status, 200);
    for uri in ["/products", "/products/1", "/products/777"] {
        call(&app, TestRequest::get().uri(uri)).await;
    }
    redkit::cache::cached(
        &services.cache,
        "fn",
        &(1, "x"),
        Duration::from_secs(30),
        || async { Ok::<_, redkit::cache::CacheError>(5) },
    )
    .await
    .unwrap();
    // Let the asynchronous L2 stores of loaded values land.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let Backend::Redis(server) = &backend else {
        unreachable!()
    };
    let keys = server.keys_with_ttl();
    let cache_keys = keys
        .iter()
        .filter(|(k, _)| k.starts_with("redkit:cache:"))
        .count();
    assert_eq!(cache_keys, 6, "{keys:?}");
    assert!(
        keys.len() > cache_keys,
        "the rate limiter wrote its counters too: {keys:?}"
    );
    // Each kind of key with its TTL's bounds, in ms: the configured lifetime, less the few
    // seconds this test may take (a seconds-for-milliseconds slip is off by 1000 either way).
    let s = |secs: u64| i64::try_from(secs * 1000).unwrap();
    let fill_guard = i64::try_from(redkit::cache::FILL_GUARD_TTL.as_millis()).unwrap();
    // Loaded values are kept past their TTL for the fail-safe window (1 h by default), as stale
    // copies; values written with `set` only for their TTL.
    let stale = s(3600);
    let kinds: [(&str, i64, i64); 11] = [
        ("redkit:cache:fn:", s(30) + stale, s(30) + stale),
        ("redkit:cache:api:a", s(300), s(300)),
        ("redkit:cache:api:b", s(5), s(5)),
        ("redkit:cache:products:777", s(30), s(30)),
        ("redkit:cache:products:1", s(300) + stale, s(300) + stale),
        ("redkit:cache:products:list", s(600) + stale, s(600) + stale),
        ("redkit:fillguard:", fill_guard, fill_guard),
        // A tag's token outlives the entries written under it.
        ("redkit:cachetag:", s(600) + stale, s(604_800) * 2),
        // The cache feed's sentinel, renewed by every liveness check.
        ("redkit:cache~feed:", 1, s(60)),
        // GCRA at 100 / 60 s: the time until the bucket is full again, at most the window.
        ("redkit:rl:", 1, s(60)),
        // A session, its user's index and login counter live as long as the refresh token.
        ("redkit:", s(604_800), s(604_800)),
    ];
    let mut seen = [0usize; 11];
    for (key, ttl) in &keys {
        let kind = kinds
            .iter()
            .position(|(prefix, _, _)| key.starts_with(prefix))
            .unwrap_or_else(|| panic!("{key} is outside the prefix"));
        let (_, low, high) = kinds[kind];
        // Lower bounds leave 3 s for this test's own run (slow debug builds); upper bounds none.
        assert!(
            ((low - 3_000).max(1)..=high).contains(ttl),
            "{key}: TTL {ttl} ms, expected {low}..={high}"
        );
        seen[kind] += 1;
    }
    assert_eq!(seen, [1, 1, 1, 1, 1, 1, 2, 1, 1, 2, 3], "{keys:?}");
}

/// No flush pattern, however crafted, reaches a key outside the cache namespace, even with a
/// prefix full of glob metacharacters.
#[actix_web::test]
async fn flush_never_leaves_the_namespace() {
    let backend = Backend::redis();
    let mut config = backend.config();
    config.cache.key_prefix = "r[1]*?\\:".into();
    let services = services(&config);
    let app = app(&services).await;
    crate::common::authorize(&app).await;
    let Backend::Redis(server) = &backend else {
        unreachable!()
    };
    let mut conn = server.conn();
    let canaries = [
        "canary",
        "r1x:cache:a",
        "r[1]*?\\:cachf",
        "r[1]*?\\:cache",
        "r[1]*?\\:",
        "r[1]*?\\:other:a",
        "redkit:cache:a",
        "x:r[1]*?\\:cache:a",
    ];
    for canary in canaries {
        let () = redis::cmd("SET")
            .arg(canary)
            .arg("alive")
            .query(&mut conn)
            .unwrap();
    }
    let patterns = [
        "*", "?", "[", "]", "\\", "[a-z]*", "*\\", "\\*", "[^a]*", "**", "*:*", "[", "\\[", "a[",
        "*]",
    ];
    for pattern in patterns {
        assert_eq!(call(&app, put("a", "1")).await.status, 200);
        assert_eq!(call(&app, put("[x]", "1")).await.status, 200);
        let encoded: String = pattern.bytes().map(|b| format!("%{b:02X}")).collect();
        let reply = call(
            &app,
            with_token(TestRequest::delete()).uri(&format!("/cache?pattern={encoded}")),
        )
        .await;
        assert_eq!(reply.status, 200, "{pattern}: {:?}", reply.json());
    }
    for canary in canaries {
        let value: Option<String> = redis::cmd("GET").arg(canary).query(&mut conn).unwrap();
        assert_eq!(
            value.as_deref(),
            Some("alive"),
            "canary {canary:?} was touched"
        );
    }
    // And the patterns did reach inside: "*" empties the namespace.
    assert_eq!(call(&app, put("a", "1")).await.status, 200);
    let reply = call(
        &app,
        with_token(TestRequest::delete()).uri("/cache?pattern=*"),
    )
    .await;
    assert!(reply.json()["deleted"].as_u64().unwrap() >= 1);
    let left: Vec<String> = redis::cmd("KEYS").arg("r[[]1]*").query(&mut conn).unwrap();
    assert!(
        left.iter().all(|k| !k.starts_with("r[1]*?\\:cache:")),
        "{left:?}"
    );
}
