//! The fail-safe when Redis itself is lost: each instance keeps the last good value of the keys
//! it read from L2 or loaded, and answers it `STALE` when L2 cannot answer and the loader fails,
//! for as long as the fail-safe window lasts; a key deleted or invalidated before the outage
//! (here or on another instance) never comes back.
//!
//! Redis and the cluster only: the memory backend has no L2 to lose (its L2 is in the process,
//! and its stale answers are `failsafe.rs`'s).

use std::time::{Duration, Instant};

use bytes::Bytes;
use redkit::{
    cache::{CacheError, L1Feed, Tier},
    config::Config,
};

use super::failsafe::{assert_stale, drop_products, product};
use crate::common::{Backend, app, call, eventually, services};

/// Products cached for 1 s, a 2 s fail-safe window, a 1 s throttle, no timeouts, no eager
/// refresh; the catalog in a file of `dir` (so that a test can break its table).
fn config(backend: &Backend, dir: &tempfile::TempDir) -> Config {
    let mut config = backend.config();
    config.database = redkit::config::DatabaseLocation::File(dir.path().join("catalog.db"));
    config.catalog.product_ttl = Duration::from_secs(1);
    config.cache.fail_safe_max = Duration::from_secs(2);
    config.cache.fail_safe_throttle = Duration::from_secs(1);
    config.cache.loader_soft_timeout = Duration::ZERO;
    config.cache.loader_hard_timeout = Duration::ZERO;
    config.cache.eager_refresh = 0.0;
    config
}

/// Kills Redis (every node of a cluster) and waits until the cache knows (its feed down, L1
/// bypassed).
async fn cut(backend: &mut Backend, services: &[&redkit::http::Services]) {
    assert!(backend.kill_redis());
    for services in services {
        assert!(
            eventually(Duration::from_secs(5), || async {
                services.cache.feed() == L1Feed::Down
            })
            .await,
            "the feed never noticed"
        );
    }
}

async fn sleep_until(at: Instant) {
    tokio::time::sleep(at.saturating_duration_since(Instant::now())).await;
}

/// A product read fresh (MISS, then a hit), Redis then lost and its table dropped: past its
/// TTL it is answered `STALE` with its `Age`, the exact bytes read before, counted as a stale
/// answer and a loader failure; past the window, and for a product never read, the loader's
/// error (a 500 problem). Values loaded while Redis is down are answered `STALE` too once their
/// loader fails.
async fn lost_l2_serves_the_last_good_value(mut backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let services = services(&config(&backend, &dir));
    let app = app(&services).await;
    let first = call(&app, product(3)).await;
    let loaded = Instant::now();
    assert_eq!((first.status, first.header("x-cache")), (200, Some("MISS")));
    let hit = call(&app, product(3)).await;
    assert_eq!((hit.status, hit.header("x-cache")), (200, Some("HIT-L1")));
    assert_eq!(hit.body, first.body);
    cut(&mut backend, &[&services]).await;
    // Loaded while Redis is down: the newest good value (a tagged entry, whose tags cannot be
    // read, and an untagged one).
    let while_down = call(&app, product(8)).await;
    assert_eq!(
        (while_down.status, while_down.header("x-cache")),
        (200, Some("MISS"))
    );
    let ttl = Duration::from_secs(1);
    let untagged = services
        .cache
        .remember_json_owned("lg", ttl, || async {
            Ok::<_, CacheError>(Some(Bytes::from_static(b"[1]")))
        })
        .await
        .unwrap();
    assert_eq!(untagged.tier, Tier::Miss);
    drop_products(&dir);
    let failing = || async { Err::<Option<Bytes>, _>(CacheError::InvalidValue) };
    let reply = services
        .cache
        .remember_json_owned("lg", ttl, failing)
        .await
        .unwrap();
    assert_eq!(
        (
            reply.tier,
            reply.value.as_deref(),
            reply.age.map(|a| a.as_secs())
        ),
        (Tier::Stale, Some(&b"[1]"[..]), Some(0))
    );
    let stale = call(&app, product(8)).await;
    assert_eq!(
        (stale.status, stale.header("x-cache"), stale.header("age")),
        (200, Some("STALE"), Some("0"))
    );
    assert_eq!(stale.body, while_down.body);
    sleep_until(loaded + Duration::from_millis(1_200)).await;
    let before = services.cache.stats();
    for answered in 1..=3 {
        let stale = call(&app, product(3)).await;
        assert_stale(&stale, &first.body, "1");
        let stats = services.cache.stats();
        assert_eq!(stats.stale_served - before.stale_served, answered);
        // Throttled: the failing loader was called once.
        assert_eq!(stats.loader_failures - before.loader_failures, 1);
    }
    // Never read: nothing to fall back on.
    call(&app, product(4)).await.problem(500);
    // Past the TTL and the window.
    sleep_until(loaded + Duration::from_millis(3_300)).await;
    call(&app, product(3)).await.problem(500);
}

/// Products deleted or invalidated before Redis is lost (one deleted by key here, one by
/// another instance, two by their tag) answer the loader's error, never `STALE`; a product read
/// after the tag drop and left alone is answered `STALE` (the fallback was there).
async fn deleted_keys_never_come_back_stale(mut backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let config = config(&backend, &dir);
    let (a, b) = (services(&config), services(&config));
    let app = app(&a).await;
    crate::common::feed_ready(&b).await;
    for id in [5, 6] {
        assert_eq!(call(&app, product(id)).await.status, 200);
    }
    a.cache
        .invalidate_tag(redkit::catalog::CATALOG_TAG)
        .await
        .unwrap();
    let mut bodies = Vec::new();
    for id in [2, 3, 7] {
        let first = call(&app, product(id)).await;
        assert_eq!((first.status, first.header("x-cache")), (200, Some("MISS")));
        bodies.push(first.body);
    }
    let loaded = Instant::now();
    assert!(a.cache.delete("products:3").await.unwrap());
    assert!(b.cache.delete("products:2").await.unwrap());
    // a's feed reports b's delete well within this.
    tokio::time::sleep(Duration::from_millis(300)).await;
    cut(&mut backend, &[&a, &b]).await;
    drop_products(&dir);
    sleep_until(loaded + Duration::from_millis(1_200)).await;
    for id in [2, 3, 5, 6] {
        let reply = call(&app, product(id)).await;
        assert_eq!(
            (reply.status, reply.header("x-cache")),
            (500, None),
            "product {id}: {}",
            String::from_utf8_lossy(&reply.body)
        );
        reply.problem(500);
    }
    let stale = call(&app, product(7)).await;
    assert_eq!(
        (stale.status, stale.header("x-cache")),
        (200, Some("STALE"))
    );
    assert_eq!(stale.body, bodies[2]);
}

mod redis {
    #[actix_web::test]
    async fn lost_l2_serves_the_last_good_value() {
        super::lost_l2_serves_the_last_good_value(super::Backend::redis()).await;
    }

    #[actix_web::test]
    async fn deleted_keys_never_come_back_stale() {
        super::deleted_keys_never_come_back_stale(super::Backend::redis()).await;
    }
}

mod cluster {
    #[actix_web::test]
    async fn lost_l2_serves_the_last_good_value() {
        super::lost_l2_serves_the_last_good_value(super::Backend::cluster()).await;
    }

    #[actix_web::test]
    async fn deleted_keys_never_come_back_stale() {
        super::deleted_keys_never_come_back_stale(super::Backend::cluster()).await;
    }
}
