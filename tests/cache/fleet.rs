//! Two instances on one Redis behave as one cache: every change, made through either instance or
//! by another Redis client, reaches the other's L1; losing the invalidation feed is never stale;
//! loads overtaken by a change never put their old value back.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use actix_web::test::TestRequest;
use bytes::Bytes;
use redkit::{
    Config,
    cache::{CacheError, CacheHandle, L1Feed, Tier},
    config::DatabaseLocation,
    http::Services,
};
use serde_json::json;
use tokio::sync::oneshot;

use crate::common::{Backend, Reply, call, with_token};

/// How long a change may take to reach the other instance in these tests: generous next to
/// the 100 ms target (`benches/fleet.rs` measures the lag), tight next to the 60 s L1 TTL.
const REACH: Duration = Duration::from_secs(1);

/// Instances on one private Redis, sharing one SQLite file (the catalog's source of truth).
struct Fleet {
    backend: Backend,
    _dir: tempfile::TempDir,
    config: Config,
}

impl Fleet {
    fn new() -> Self {
        let backend = Backend::redis();
        let dir = tempfile::tempdir().unwrap();
        let mut config = backend.config();
        config.database = DatabaseLocation::File(dir.path().join("catalog.sqlite"));
        Self {
            backend,
            _dir: dir,
            config,
        }
    }

    /// Starts one more instance and waits for its feed.
    async fn instance(&self) -> Services {
        let services = crate::common::services(&self.config);
        crate::common::feed_ready(&services).await;
        assert_eq!(services.cache.feed(), L1Feed::Up);
        services
    }

    /// Two instances' caches.
    async fn two_caches(&self) -> (CacheHandle, CacheHandle) {
        let (a, b) = (self.instance().await, self.instance().await);
        (a.cache.clone(), b.cache.clone())
    }

    fn server(&self) -> &crate::common::RedisServer {
        match &self.backend {
            Backend::Redis(server) => server,
            _ => unreachable!("a fleet runs on Redis"),
        }
    }
}

fn get(uri: &str) -> TestRequest {
    TestRequest::get().uri(uri)
}

fn put_json(uri: &str, body: &str) -> TestRequest {
    with_token(TestRequest::put())
        .uri(uri)
        .insert_header(("content-type", "application/json"))
        .set_payload(body.to_owned())
}

/// Polls `read` until it answers `want` (status, body) or `REACH` passes; answers the last reply.
async fn until<F, Fut>(want: (u16, Option<serde_json::Value>), mut read: F) -> Reply
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Reply>,
{
    let deadline = Instant::now() + REACH;
    loop {
        let reply = read().await;
        let body = (!reply.body.is_empty())
            .then(|| serde_json::from_slice(&reply.body).ok())
            .flatten();
        let seen = (reply.status, if want.1.is_some() { body } else { None });
        if seen == want || Instant::now() >= deadline {
            return reply;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// A product write on A reaches B's L1 (which served the old price from L1 before).
#[actix_web::test]
async fn product_write_reaches_the_other_instance() {
    let fleet = Fleet::new();
    let (a, b) = (fleet.instance().await, fleet.instance().await);
    let app_a = crate::common::app(&a).await;
    let app_b = crate::common::app(&b).await;
    crate::common::authorize(&app_a).await;

    let first = call(&app_b, get("/products/1")).await;
    assert_eq!((first.status, first.header("x-cache")), (200, Some("MISS")));
    let old = first.json();
    assert_eq!(old["price"], json!(89.9));
    let hit = call(&app_b, get("/products/1")).await;
    assert_eq!(hit.header("x-cache"), Some("HIT-L1"));

    let updated = call(&app_a, put_json("/products/1", r#"{"price": 1.0}"#)).await;
    assert_eq!(updated.status, 200);
    let mut new = old.clone();
    new["price"] = json!(1.0);
    assert_eq!(updated.json(), new);

    let seen = until((200, Some(new.clone())), || {
        call(&app_b, get("/products/1"))
    })
    .await;
    assert_eq!(seen.json(), new);
    // And B caches the new row again.
    let again = call(&app_b, get("/products/1")).await;
    assert_eq!(
        (again.json(), again.header("x-cache")),
        (new, Some("HIT-L1"))
    );
}

/// `PUT`, `DELETE` and a pattern flush of `/cache` on A reach B's L1, each read back exactly.
#[actix_web::test]
async fn cache_writes_reach_the_other_instance() {
    let fleet = Fleet::new();
    let (a, b) = (fleet.instance().await, fleet.instance().await);
    let app_a = crate::common::app(&a).await;
    let app_b = crate::common::app(&b).await;
    crate::common::authorize(&app_a).await;
    let body = |v: &str| Some(json!({"key": "k1", "value": v}));

    assert_eq!(
        call(&app_a, put_json("/cache/k1", r#""v1""#)).await.status,
        200
    );
    // The writer's own L1 holds its write when the write answers.
    assert_eq!(
        call(&app_a, get("/cache/k1")).await.header("x-cache"),
        Some("HIT-L1")
    );
    let read = call(&app_b, get("/cache/k1")).await;
    assert_eq!((read.status, Some(read.json())), (200, body("v1")));
    assert_eq!(
        call(&app_b, get("/cache/k1")).await.header("x-cache"),
        Some("HIT-L1")
    );

    assert_eq!(
        call(&app_a, put_json("/cache/k1", r#""v2""#)).await.status,
        200
    );
    let read = until((200, body("v2")), || call(&app_b, get("/cache/k1"))).await;
    assert_eq!(read.json(), body("v2").unwrap());

    let deleted = call(&app_a, with_token(TestRequest::delete()).uri("/cache/k1")).await;
    assert_eq!(deleted.status, 204);
    let read = until((404, None), || call(&app_b, get("/cache/k1"))).await;
    assert_eq!(read.status, 404);

    // A pattern flush on A: B had both keys in L1.
    for key in ["user:1", "user:2"] {
        let uri = format!("/cache/{key}");
        assert_eq!(call(&app_a, put_json(&uri, "1")).await.status, 200);
        assert_eq!(call(&app_b, get(&uri)).await.status, 200);
        assert_eq!(
            call(&app_b, get(&uri)).await.header("x-cache"),
            Some("HIT-L1")
        );
    }
    let flushed = call(
        &app_a,
        with_token(TestRequest::delete()).uri("/cache?pattern=user:*"),
    )
    .await;
    assert_eq!(flushed.status, 200);
    assert_eq!(flushed.json()["deleted"], 2);
    for key in ["user:1", "user:2"] {
        let uri = format!("/cache/{key}");
        let read = until((404, None), || call(&app_b, get(&uri))).await;
        assert_eq!(read.status, 404, "{key}");
    }
}

/// What the instances answer for `key` through their handles.
async fn both(a: &CacheHandle, b: &CacheHandle, key: &str) -> [Option<Bytes>; 2] {
    let read = |c: &CacheHandle| {
        let key = key.to_owned();
        let c = c.clone();
        async move { c.get_raw(&key).await.unwrap().map(|hit| hit.json) }
    };
    [read(a).await, read(b).await]
}

/// Polls both instances until they answer `want` for `key` (or `REACH` passes).
async fn both_until(a: &CacheHandle, b: &CacheHandle, key: &str, want: Option<&str>) {
    let want = want.map(|w| Bytes::copy_from_slice(w.as_bytes()));
    let deadline = Instant::now() + REACH;
    loop {
        let seen = both(a, b, key).await;
        if seen == [want.clone(), want.clone()] {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{key}: wanted {want:?} on both, saw {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Reads `key` on both instances until both serve it from L1 (the change that wrote it may
/// still be on its way to the feed, and drops the first fill when it lands).
async fn warm(a: &CacheHandle, b: &CacheHandle, key: &str) {
    for cache in [a, b] {
        let deadline = Instant::now() + REACH;
        while cache.get_raw(key).await.unwrap().unwrap().tier != Tier::L1 {
            assert!(Instant::now() < deadline, "{key} never reached L1");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

/// `SET`, `DEL`, `UNLINK`, `EXPIRE`, `FLUSHDB` and `FLUSHALL` by a plain Redis client on keys
/// under the cache prefix reach both instances' L1; values stay plain JSON both ways.
#[actix_web::test]
async fn changes_by_other_programs_reach_every_l1() {
    let fleet = Fleet::new();
    let (a, b) = fleet.two_caches().await;
    let (a, b) = (&a, &b);
    let mut conn = fleet.server().conn();
    let ns = a.config().namespace();
    let redis = |args: &[&str], conn: &mut redis::Connection| {
        let mut cmd = redis::cmd(args[0]);
        for arg in &args[1..] {
            cmd.arg(*arg);
        }
        cmd.query::<redis::Value>(conn).unwrap();
    };
    let key = format!("{ns}ext");

    // Written by redkit, read as plain JSON by the other program.
    a.set("ext", &json!({"n": 1}), Duration::from_secs(60))
        .await
        .unwrap();
    let raw: String = redis::cmd("GET").arg(&key).query(&mut conn).unwrap();
    assert_eq!(raw, r#"{"n":1}"#);
    warm(a, b, "ext").await;

    redis(&["SET", &key, r#"{"n":2}"#, "EX", "60"], &mut conn);
    both_until(a, b, "ext", Some(r#"{"n":2}"#)).await;
    warm(a, b, "ext").await;
    redis(&["DEL", &key], &mut conn);
    both_until(a, b, "ext", None).await;

    redis(&["SET", &key, "3", "EX", "60"], &mut conn);
    both_until(a, b, "ext", Some("3")).await;
    warm(a, b, "ext").await;
    redis(&["UNLINK", &key], &mut conn);
    both_until(a, b, "ext", None).await;

    redis(&["SET", &key, "4", "EX", "60"], &mut conn);
    both_until(a, b, "ext", Some("4")).await;
    warm(a, b, "ext").await;
    // An expiry shortened to the past deletes the key.
    redis(&["EXPIRE", &key, "0"], &mut conn);
    both_until(a, b, "ext", None).await;

    for flush in ["FLUSHDB", "FLUSHALL"] {
        redis(&["SET", &key, "5", "EX", "60"], &mut conn);
        both_until(a, b, "ext", Some("5")).await;
        warm(a, b, "ext").await;
        redis(&[flush], &mut conn);
        both_until(a, b, "ext", None).await;
    }
    assert!(a.stats().l1_invalidations >= 10);
    assert!(b.stats().l1_invalidations >= 10);
}

/// Every connection killed (`CLIENT KILL TYPE normal` and `TYPE pubsub`), then a key changed
/// while the feed may be down: the instance serves the new value within 3 s, flushed L1 once
/// per loss, and says so in `/metrics`, `/health` and `/stats`.
#[actix_web::test]
async fn killed_connections_are_never_stale() {
    let fleet = Fleet::new();
    let services = fleet.instance().await;
    let app = crate::common::app(&services).await;
    let cache = &services.cache;
    let mut conn = fleet.server().conn();
    // `GET /cache/victim` reads the API's key `api:victim`.
    let key = format!("{}api:victim", cache.config().namespace());
    redis::cmd("SET")
        .arg(&key)
        .arg(r#""old""#)
        .arg("EX")
        .arg(60)
        .query::<()>(&mut conn)
        .unwrap();
    warm(cache, cache, "api:victim").await;
    let read = call(&app, get("/cache/victim")).await;
    assert_eq!(
        (read.json()["value"].clone(), read.header("x-cache")),
        (json!("old"), Some("HIT-L1"))
    );

    for kind in ["normal", "pubsub"] {
        redis::cmd("CLIENT")
            .arg("KILL")
            .arg("TYPE")
            .arg(kind)
            .query::<i64>(&mut conn)
            .unwrap();
    }
    redis::cmd("SET")
        .arg(&key)
        .arg(r#""new""#)
        .arg("EX")
        .arg(60)
        .query::<()>(&mut conn)
        .unwrap();
    let started = Instant::now();
    loop {
        let read = call(&app, get("/cache/victim")).await;
        if read.status == 200 && read.json()["value"] == "new" {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "still serving {:?}",
            String::from_utf8_lossy(&read.body)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The feed comes back and L1 serves again.
    assert!(
        crate::common::eventually(Duration::from_secs(3), || async {
            cache.feed() == L1Feed::Up
        })
        .await
    );
    assert_eq!(cache.stats().l1_feed_flushes, 1);
    warm(cache, cache, "api:victim").await;
    let hit = call(&app, get("/cache/victim")).await;
    assert_eq!(
        (hit.json()["value"].clone(), hit.header("x-cache")),
        (json!("new"), Some("HIT-L1"))
    );

    let metrics = String::from_utf8(call(&app, get("/metrics")).await.body.to_vec()).unwrap();
    assert!(
        metrics.contains("\ncache_l1_feed_flushes_total 1\n"),
        "{metrics}"
    );
    assert!(metrics.contains("\ncache_l1_feed_up 1\n"), "{metrics}");
    assert!(
        metrics.contains("\ncache_l1_invalidations_total "),
        "{metrics}"
    );
    let health = call(&app, get("/health")).await;
    assert_eq!(health.json()["l1_feed"], "up");
    let stats = call(&app, get("/stats")).await;
    assert_eq!(stats.json()["cache"]["l1_feed"], "up");
    assert_eq!(stats.json()["cache"]["l1_feed_flushes"], 1);
}

/// A Redis that stops answering (SIGSTOP: the connection stays open) cannot show the feed
/// alive: L1 is flushed and bypassed within the check interval and the deadline, and comes back
/// once Redis answers again.
#[actix_web::test]
async fn a_silent_feed_is_detected_by_its_deadline() {
    let fleet = Fleet::new();
    let services = fleet.instance().await;
    let cache = &services.cache;
    cache
        .set("quiet", &1, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(
        cache.get_raw("quiet").await.unwrap().unwrap().tier,
        Tier::L1
    );
    let server = fleet.server();
    server.pause();
    // Interval (0.5 s) + deadline (the tests' 0.5 s response timeout), with slack.
    let down = crate::common::eventually(Duration::from_secs(3), || async {
        cache.feed() == L1Feed::Down
    })
    .await;
    server.resume();
    assert!(down, "the feed was not declared down");
    assert_eq!(cache.stats().l1_feed_flushes, 1);
    assert!(
        crate::common::eventually(Duration::from_secs(5), || async {
            cache.feed() == L1Feed::Up
        })
        .await
    );
    assert_eq!(
        cache.get::<i64>("quiet").await.unwrap(),
        Some(1),
        "served again after the feed came back"
    );
}

/// What a held loader answers.
type Loaded =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Option<Bytes>, CacheError>>>>;

/// A loader the test holds: `entered` fires when it starts, and it answers what `release` sends.
fn held_loader() -> (
    oneshot::Receiver<()>,
    oneshot::Sender<Bytes>,
    impl FnOnce() -> Loaded,
) {
    let (entered_tx, entered) = oneshot::channel();
    let (release, release_rx) = oneshot::channel::<Bytes>();
    let loader = move || -> Loaded {
        Box::pin(async move {
            let _ = entered_tx.send(());
            Ok(Some(release_rx.await.expect("released")))
        })
    };
    (entered, release, loader)
}

/// Starts `cache.remember_json(key)` with a held loader; answers when the loader has begun, with
/// the sender that releases it and the running call.
async fn held_load(
    cache: &CacheHandle,
    key: &'static str,
) -> (
    oneshot::Sender<Bytes>,
    tokio::task::JoinHandle<Result<redkit::cache::Remembered<Bytes>, CacheError>>,
) {
    let (entered, release, loader) = held_loader();
    let load = {
        let cache = cache.clone();
        actix_web::rt::spawn(async move {
            cache
                .remember_json::<CacheError, _, _>(key, Duration::from_secs(60), loader)
                .await
        })
    };
    entered.await.unwrap();
    (release, load)
}

/// Waits until `cache` has applied more than `before` invalidations from its feed.
async fn invalidations_past(cache: &CacheHandle, before: u64) {
    assert!(
        crate::common::eventually(REACH, || async { cache.stats().l1_invalidations > before })
            .await,
        "no invalidation arrived"
    );
}

/// A load that began before another instance changed its key does not put its old value into
/// L1 afterwards (the L1 ticket). The key holds a `}` outside a hash tag, so no L2 fill is
/// attempted (no fill-guard marker can share its slot): only the L1 guard stands between the
/// old value and L1.
#[actix_web::test]
async fn an_overtaken_load_stays_out_of_l1() {
    let fleet = Fleet::new();
    let (a, b) = fleet.two_caches().await;
    let key = "race}l1";
    let (release, load) = held_load(&a, key).await;
    let before = a.stats().l1_invalidations;
    b.set_json(key, Bytes::from_static(b"\"new\""), Duration::from_secs(60))
        .await
        .unwrap();
    invalidations_past(&a, before).await;
    release.send(Bytes::from_static(b"\"old\"")).unwrap();
    let loaded = load.await.unwrap().unwrap();
    assert_eq!(loaded.value, Some(Bytes::from_static(b"\"old\"")));
    assert_eq!(loaded.tier, Tier::Miss);
    let hit = a.get_raw(key).await.unwrap().unwrap();
    assert_eq!(
        (hit.json, hit.tier),
        (Bytes::from_static(b"\"new\""), Tier::L2),
        "the overtaken load's value was served from L1"
    );
}

/// A slow load on A that began before B deleted its key does not write the old value back to
/// Redis (the fill-guard marker), so no instance serves it afterwards.
#[actix_web::test]
async fn a_slow_load_does_not_write_back_over_a_delete() {
    let fleet = Fleet::new();
    let (a, b) = fleet.two_caches().await;
    let key = "products:42";
    let (release, load) = held_load(&a, key).await;
    // B's write to the source happened; its invalidation of the key follows.
    assert!(!b.delete(key).await.unwrap());
    release.send(Bytes::from_static(b"\"old row\"")).unwrap();
    load.await.unwrap().unwrap();

    let stored: Option<String> = redis::cmd("GET")
        .arg(format!("{}{key}", a.config().namespace()))
        .query(&mut fleet.server().conn())
        .unwrap();
    assert_eq!(stored, None, "the old row was written back to L2");
    assert_eq!(a.stats().fills_refused, 1);
    assert_eq!(b.get_raw(key).await.unwrap().map(|h| h.json), None);
    assert_eq!(a.get_raw(key).await.unwrap().map(|h| h.json), None);
}

/// Without a concurrent change, a load fills both tiers: the guard refuses nothing.
#[actix_web::test]
async fn an_unchallenged_load_fills_both_tiers() {
    let fleet = Fleet::new();
    let (a, b) = fleet.two_caches().await;
    let loads = Arc::new(AtomicU64::new(0));
    let remember = |cache: CacheHandle| {
        let loads = Arc::clone(&loads);
        async move {
            cache
                .remember_json::<CacheError, _, _>("calm", Duration::from_secs(60), || async move {
                    loads.fetch_add(1, Ordering::Relaxed);
                    Ok(Some(Bytes::from_static(b"7")))
                })
                .await
                .unwrap()
        }
    };
    assert_eq!(remember(a.clone()).await.tier, Tier::Miss);
    assert_eq!(remember(a.clone()).await.tier, Tier::L1);
    assert_eq!(remember(b.clone()).await.tier, Tier::L2);
    assert_eq!(remember(b.clone()).await.tier, Tier::L1);
    assert_eq!(loads.load(Ordering::Relaxed), 1);
    assert_eq!(a.stats().fills_refused, 0);
}
