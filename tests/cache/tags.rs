//! Cache tags: `PUT /cache/{key}?tag=`, `DELETE /cache?tag=` and the library's
//! `invalidate_tag`, on every backend, across two instances and through a feed loss.

use std::time::{Duration, Instant};

use actix_web::test::TestRequest;
use redkit::cache::{CacheError, Tier};
use serde_json::json;

use crate::common::{Backend, app, call, services, with_token};

fn put(key: &str, tags: &str) -> TestRequest {
    with_token(TestRequest::put())
        .uri(&format!("/cache/{key}{tags}"))
        .insert_header(("content-type", "application/json"))
        .set_payload(format!("\"{key}\""))
}

fn drop_tag(tag: &str) -> TestRequest {
    with_token(TestRequest::delete()).uri(&format!("/cache?tag={tag}"))
}

/// Commands of the kinds a drop could cost, so far.
fn costly(backend: &Backend) -> Option<u64> {
    backend.command_calls().map(|calls| {
        [
            "set", "del", "unlink", "scan", "evalsha", "eval", "get", "mget",
        ]
        .iter()
        .map(|c| calls.get(*c).copied().unwrap_or(0))
        .sum()
    })
}

/// Dropping a tag drops every value written with it before the call, on both instances' L1
/// within 100 ms, at the same Redis cost for 500 entries as for 5; values written after the
/// drop, and values of other tags, live.
async fn dropping_a_tag_drops_its_entries_everywhere(backend: Backend) {
    let a = services(&backend.config());
    let app_a = app(&a).await;
    crate::common::authorize(&app_a).await;
    let b = backend.is_redis().then(|| services(&backend.config()));
    if let Some(b) = &b {
        crate::common::feed_ready(b).await;
    }
    for i in 0..500 {
        assert_eq!(
            call(&app_a, put(&format!("big-{i}"), "?tag=big"))
                .await
                .status,
            200
        );
    }
    for i in 0..5 {
        let reply = call(&app_a, put(&format!("small-{i}"), "?tag=small&tag=other")).await;
        assert_eq!(reply.status, 200);
    }
    // Both instances hold a value of each tag in L1.
    let caches: Vec<_> = std::iter::once(&a.cache)
        .chain(b.as_ref().map(|b| &b.cache))
        .collect();
    for cache in &caches {
        for key in ["api:big-7", "api:small-3"] {
            cache.get_raw(key).await.unwrap().unwrap();
            assert_eq!(
                cache.get_raw(key).await.unwrap().unwrap().tier,
                Tier::L1,
                "{key}"
            );
        }
    }
    let before = costly(&backend);
    let started = Instant::now();
    assert_eq!(call(&app_a, drop_tag("big")).await.status, 204);
    let after_big = costly(&backend);
    assert_eq!(call(&app_a, drop_tag("small")).await.status, 204);
    let after_small = costly(&backend);
    if let (Some(before), Some(big), Some(small)) = (before, after_big, after_small) {
        // One command each, whatever the tag's size (the feed's own commands are not counted).
        assert_eq!((big - before, small - big), (1, 1));
    }
    for cache in &caches {
        // Within 100 ms of the drop's answer (`eventually` polls every 50 ms).
        let gone = crate::common::eventually(Duration::from_millis(100), || async {
            cache.get_raw("api:big-7").await.unwrap().is_none()
        })
        .await;
        assert!(gone, "an instance still serves a dropped entry");
        assert!(cache.get_raw("api:small-3").await.unwrap().is_none());
    }
    eprintln!(
        "both tags dropped on every instance {:?} after the first drop began",
        started.elapsed()
    );
    for i in [0, 250, 499] {
        call(&app_a, TestRequest::get().uri(&format!("/cache/big-{i}")))
            .await
            .problem(404);
    }
    // Written after the drop: lives, on every instance.
    assert_eq!(call(&app_a, put("big-0", "?tag=big")).await.status, 200);
    for cache in &caches {
        let hit = cache.get_raw("api:big-0").await.unwrap().unwrap();
        assert_eq!(hit.json.as_ref(), b"\"big-0\"");
    }
    // Untagged values and other tags are untouched; the other tag of a dropped entry does
    // not bring it back.
    assert_eq!(call(&app_a, put("plain", "")).await.status, 200);
    assert_eq!(call(&app_a, drop_tag("other")).await.status, 204);
    assert_eq!(
        call(&app_a, TestRequest::get().uri("/cache/plain"))
            .await
            .status,
        200
    );
    if let Some(keys) = backend.keys_with_ttl() {
        for (key, ttl) in &keys {
            assert!(*ttl > 0, "{key} has no TTL");
        }
        let (_, ttl) = keys
            .iter()
            .find(|(k, _)| k == "redkit:cachetag:api:big")
            .unwrap();
        let (_, entry) = keys
            .iter()
            .find(|(k, _)| k == "redkit:cache:api:big-0")
            .unwrap();
        // At least the life of every entry written under it, at most twice the entries' 300 s.
        assert!(
            *entry > 299_000 && ttl >= entry && *ttl <= 600_000,
            "{ttl} {entry}"
        );
    }
}

/// Bad tags are 400 `invalid-tag` problems and store nothing: empty, 65 characters, a control
/// character, 9 tags; `DELETE /cache` with neither `pattern` nor `tag` removes nothing.
async fn bad_tags_are_400(backend: Backend) {
    let services = services(&backend.config());
    let app = app(&services).await;
    crate::common::authorize(&app).await;
    let long = "x".repeat(65);
    let nine = (0..9)
        .map(|i| format!("tag=t{i}"))
        .collect::<Vec<_>>()
        .join("&");
    for query in [
        "?tag=".to_owned(),
        "?tag".to_owned(),
        format!("?tag={long}"),
        "?tag=a%01b".to_owned(),
        "?tag=%ZZ".to_owned(),
        format!("?{nine}"),
    ] {
        let reply = call(&app, put("bad", &query)).await;
        assert_eq!(
            reply.problem(400)["type"],
            "https://redkit.dev/problems/invalid-tag",
            "{query}"
        );
    }
    call(&app, TestRequest::get().uri("/cache/bad"))
        .await
        .problem(404);
    let max = (0..8)
        .map(|i| format!("tag=t{i}"))
        .collect::<Vec<_>>()
        .join("&");
    assert_eq!(
        call(
            &app,
            put("eight", &format!("?{max}&tag={}", "y".repeat(64)))
        )
        .await
        .status,
        400
    );
    assert_eq!(
        call(&app, put("eight", &format!("?{max}"))).await.status,
        200
    );
    let none = call(&app, with_token(TestRequest::delete()).uri("/cache")).await;
    assert_eq!(
        (none.status, none.json()),
        (200, serde_json::json!({"deleted": 0}))
    );
    for uri in ["/cache?tag=", "/cache?pattern=*&tag="] {
        call(&app, with_token(TestRequest::delete()).uri(uri))
            .await
            .problem(400);
    }
    // Both: the tag is dropped and the pattern flushed; the answer counts the pattern's keys.
    let both = call(
        &app,
        with_token(TestRequest::delete()).uri("/cache?pattern=eigh*&tag=t0"),
    )
    .await;
    assert_eq!(
        (both.status, both.json()),
        (200, serde_json::json!({"deleted": 1}))
    );
    let reply = call(&app, TestRequest::delete().uri("/cache?tag=a")).await;
    reply.problem(401);
}

/// The library: `remember_json_tagged` values and the catalog's entries go with their tag;
/// `set_tagged` checks its tags.
async fn library_and_catalog_tags(backend: Backend) {
    let services = services(&backend.config());
    let app = app(&services).await;
    let cache = &services.cache;
    let load =
        |v: &'static str| move || async move { Ok::<_, CacheError>(Some(bytes::Bytes::from(v))) };
    let ttl = Duration::from_secs(60);
    assert_eq!(
        cache
            .remember_json_tagged("lib", ttl, &["t"], load("1"))
            .await
            .unwrap()
            .tier,
        Tier::Miss
    );
    assert_eq!(
        cache
            .remember_json_tagged("lib", ttl, &["t"], load("2"))
            .await
            .unwrap()
            .tier,
        Tier::L1
    );
    cache.invalidate_tag("t").await.unwrap();
    let again = cache
        .remember_json_tagged("lib", ttl, &["t"], load("3"))
        .await
        .unwrap();
    assert_eq!(
        (again.tier, again.value.as_deref()),
        (Tier::Miss, Some(&b"3"[..]))
    );
    assert!(matches!(
        cache.set_tagged("x", &1, ttl, &[""]).await,
        Err(CacheError::InvalidTag(_))
    ));
    assert!(matches!(
        cache.invalidate_tag("a\nb").await,
        Err(CacheError::InvalidTag(_))
    ));
    // The catalog tags its entries.
    let first = call(&app, TestRequest::get().uri("/products/1")).await;
    assert_eq!(first.header("x-cache"), Some("MISS"));
    let hit = call(&app, TestRequest::get().uri("/products/1")).await;
    assert_eq!(hit.header("x-cache"), Some("HIT-L1"));
    cache
        .invalidate_tag(redkit::catalog::CATALOG_TAG)
        .await
        .unwrap();
    let reloaded = call(&app, TestRequest::get().uri("/products/1")).await;
    assert_eq!(reloaded.header("x-cache"), Some("MISS"));
    assert_eq!(reloaded.json()["id"], json!(1));
}

/// With L1 off, a dropped tag drops its entries from L2 reads too: a token read once is not
/// trusted after the drop (only a live invalidation feed may keep tokens).
async fn dropping_a_tag_without_l1(backend: Backend) {
    let mut config = backend.config();
    config.cache.l1_max_bytes = 0;
    let services = services(&config);
    let cache = &services.cache;
    cache
        .set_tagged("k", &1, Duration::from_secs(60), &["t"])
        .await
        .unwrap();
    for _ in 0..2 {
        let hit = cache.get_raw("k").await.unwrap().unwrap();
        assert_eq!((hit.tier, hit.json.as_ref()), (Tier::L2, &b"1"[..]));
    }
    cache.invalidate_tag("t").await.unwrap();
    assert!(cache.get_raw("k").await.unwrap().is_none());
}

backend_suite!(
    dropping_a_tag_drops_its_entries_everywhere,
    bad_tags_are_400,
    library_and_catalog_tags,
    dropping_a_tag_without_l1,
);

/// A tag dropped while the other instance's feed is lost: once it is back (and meanwhile,
/// reading Redis), that instance does not serve the dropped entry.
async fn tag_drop_during_a_feed_loss(backend: Backend) {
    let a = services(&backend.config());
    let b = services(&backend.config());
    crate::common::feed_ready(&a).await;
    crate::common::feed_ready(&b).await;
    a.cache
        .set_tagged("k", &1, Duration::from_secs(60), &["t"])
        .await
        .unwrap();
    b.cache.get_raw("k").await.unwrap().unwrap();
    assert_eq!(b.cache.get_raw("k").await.unwrap().unwrap().tier, Tier::L1);
    // Kill every tracking connection (both feeds).
    let kill = |conn: &mut dyn ::redis::ConnectionLike| {
        let list: String = ::redis::cmd("CLIENT").arg("LIST").query(conn).unwrap();
        for line in list.lines() {
            let field = |name: &str| line.split(' ').find_map(|f| f.strip_prefix(name));
            if field("flags=").is_some_and(|flags| flags.contains('t')) {
                let id = field("id=").unwrap();
                let _: ::redis::RedisResult<()> = ::redis::cmd("CLIENT")
                    .arg("KILL")
                    .arg("ID")
                    .arg(id)
                    .query(conn);
            }
        }
    };
    match &backend {
        Backend::Redis(server) => kill(&mut server.conn()),
        Backend::Cluster(cluster) => {
            for node in cluster.nodes() {
                kill(&mut node.conn().unwrap());
            }
        }
        Backend::Memory => unreachable!(),
    }
    let dropped = crate::common::eventually(Duration::from_secs(3), || async {
        a.cache.invalidate_tag("t").await.is_ok()
    })
    .await;
    assert!(dropped);
    assert!(b.cache.get_raw("k").await.unwrap_or(None).is_none());
    crate::common::feed_ready(&b).await;
    assert_eq!(b.cache.feed(), redkit::cache::L1Feed::Up);
    assert!(b.cache.get_raw("k").await.unwrap().is_none());
}

#[actix_web::test]
async fn redis_tag_drop_during_a_feed_loss() {
    tag_drop_during_a_feed_loss(Backend::redis()).await;
}

#[actix_web::test]
async fn cluster_tag_drop_during_a_feed_loss() {
    tag_drop_during_a_feed_loss(Backend::cluster()).await;
}
