//! The fail-safe's stale copies: once a failing loader's stale value was answered, the answers
//! that follow skip L2 while nothing changed the key, are replaced as soon as something does, and
//! keep answering when L2 cannot.

use std::{
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use crate::common::{Backend, services};
use bytes::Bytes;
use redkit::{
    cache::{CacheError, Tier},
    config::Config,
};

/// A 10 s window, a 5 s throttle, no timeouts, no eager refresh.
fn config(backend: &Backend) -> Config {
    let mut config = backend.config();
    config.cache.fail_safe_max = Duration::from_secs(10);
    config.cache.fail_safe_throttle = Duration::from_secs(5);
    config.cache.loader_soft_timeout = Duration::ZERO;
    config.cache.loader_hard_timeout = Duration::ZERO;
    config.cache.eager_refresh = 0.0;
    config
}

type Load = std::pin::Pin<Box<dyn Future<Output = Result<Option<Bytes>, CacheError>>>>;

fn value(v: &'static str) -> impl FnOnce() -> Load {
    move || Box::pin(async move { Ok(Some(Bytes::from(v))) })
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

fn gets(backend: &Backend) -> u64 {
    backend
        .command_calls()
        .map_or(0, |calls| calls.get("get").copied().unwrap_or(0))
}

/// Past the TTL with the loader failing: after the first two stale answers (the failure, then
/// the answer that keeps the copy), 50 more are stale with no L2 read and no loader call; a
/// write of the key by another instance (or this one, on memory) is answered fresh within
/// 100 ms.
async fn stale_answers_skip_l2_until_the_key_changes(backend: Backend) {
    let config = config(&backend);
    let a = services(&config);
    let b = backend.is_redis().then(|| services(&config));
    crate::common::feed_ready(&a).await;
    if let Some(b) = &b {
        crate::common::feed_ready(b).await;
    }
    let ttl = Duration::from_secs(1);
    let first = a
        .cache
        .remember_json_owned("fc", ttl, value("\"v1\""))
        .await
        .unwrap();
    assert_eq!(first.tier, Tier::Miss);
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let calls = Arc::new(AtomicUsize::new(0));
    for _ in 0..2 {
        let reply = a
            .cache
            .remember_json_owned("fc", ttl, failing(&calls))
            .await
            .unwrap();
        assert_eq!(
            (reply.tier, reply.value.as_deref()),
            (Tier::Stale, Some(&b"\"v1\""[..]))
        );
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let before = gets(&backend);
    for _ in 0..50 {
        let reply = a
            .cache
            .remember_json_owned("fc", ttl, failing(&calls))
            .await
            .unwrap();
        assert_eq!(
            (reply.tier, reply.value.as_deref()),
            (Tier::Stale, Some(&b"\"v1\""[..]))
        );
        assert_eq!(reply.age.map(|a| a.as_secs()), Some(1));
    }
    // One `INFO commandstats` reading counts itself, not a GET.
    assert_eq!(gets(&backend) - before, 0, "stale answers read L2");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(a.cache.stats().stale_served, 52);
    // Another writer changes the key: the copy is dropped with the invalidation.
    let writer = b.as_ref().unwrap_or(&a);
    writer
        .cache
        .set("fc", &"v2", Duration::from_secs(60))
        .await
        .unwrap();
    let written = Instant::now();
    loop {
        let reply = a
            .cache
            .remember_json_owned("fc", ttl, failing(&calls))
            .await
            .unwrap();
        if reply.value.as_deref() == Some(&b"\"v2\""[..]) {
            assert_ne!(reply.tier, Tier::Stale);
            break;
        }
        assert!(
            written.elapsed() < Duration::from_millis(100),
            "still {:?} {:?} after {:?}",
            reply.tier,
            reply.value,
            written.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

/// Redis killed, the loader failing: a key whose stale value was answered before keeps being
/// answered stale (the copy) within the window; a key never cached answers the loader's error,
/// never a panic or a hang.
async fn l2_down_serves_the_copy(mut backend: Backend) {
    let config = config(&backend);
    let a = services(&config);
    crate::common::feed_ready(&a).await;
    let ttl = Duration::from_secs(1);
    a.cache
        .remember_json_owned("fd", ttl, value("\"v1\""))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let calls = Arc::new(AtomicUsize::new(0));
    for _ in 0..2 {
        let reply = a
            .cache
            .remember_json_owned("fd", ttl, failing(&calls))
            .await
            .unwrap();
        assert_eq!(reply.tier, Tier::Stale);
    }
    assert!(backend.kill_redis());
    for _ in 0..5 {
        let reply = tokio::time::timeout(
            Duration::from_secs(3),
            a.cache.remember_json_owned("fd", ttl, failing(&calls)),
        )
        .await
        .expect("answers in time")
        .unwrap();
        assert_eq!(
            (reply.tier, reply.value.as_deref()),
            (Tier::Stale, Some(&b"\"v1\""[..]))
        );
    }
    let err = tokio::time::timeout(
        Duration::from_secs(3),
        a.cache
            .remember_json_owned("never-cached", ttl, failing(&calls)),
    )
    .await
    .expect("answers in time")
    .unwrap_err();
    assert!(matches!(err, CacheError::InvalidValue), "{err:?}");
}

/// A copy kept late in its window lasts to the window's end (the TTL plus `fail_safe_max` after
/// the load): a value loaded 2.6 s before with a TTL of 2 s and a 3 s window, answered stale
/// and kept, is answered from the copy 1 s later still, with no L2 read.
async fn late_copies_last_their_whole_window(backend: Backend) {
    let mut config = config(&backend);
    config.cache.fail_safe_max = Duration::from_secs(3);
    let a = services(&config);
    crate::common::feed_ready(&a).await;
    let ttl = Duration::from_secs(2);
    a.cache
        .remember_json_owned("fl", ttl, value("\"v1\""))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2_600)).await;
    let calls = Arc::new(AtomicUsize::new(0));
    let stale = async || {
        let reply = a
            .cache
            .remember_json_owned("fl", ttl, failing(&calls))
            .await
            .unwrap();
        assert_eq!(
            (reply.tier, reply.value.as_deref()),
            (Tier::Stale, Some(&b"\"v1\""[..]))
        );
    };
    // The failure, then the answer that keeps the copy.
    stale().await;
    stale().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = gets(&backend);
    for _ in 0..10 {
        stale().await;
    }
    assert_eq!(gets(&backend) - before, 0, "stale answers read L2");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

mod memory {
    #[actix_web::test]
    async fn stale_answers_skip_l2_until_the_key_changes() {
        super::stale_answers_skip_l2_until_the_key_changes(super::Backend::memory()).await;
    }
}

mod redis {
    #[actix_web::test]
    async fn stale_answers_skip_l2_until_the_key_changes() {
        super::stale_answers_skip_l2_until_the_key_changes(super::Backend::redis()).await;
    }

    #[actix_web::test]
    async fn l2_down_serves_the_copy() {
        super::l2_down_serves_the_copy(super::Backend::redis()).await;
    }

    #[actix_web::test]
    async fn late_copies_last_their_whole_window() {
        super::late_copies_last_their_whole_window(super::Backend::redis()).await;
    }
}

mod cluster {
    #[actix_web::test]
    async fn stale_answers_skip_l2_until_the_key_changes() {
        super::stale_answers_skip_l2_until_the_key_changes(super::Backend::cluster()).await;
    }

    #[actix_web::test]
    async fn l2_down_serves_the_copy() {
        super::l2_down_serves_the_copy(super::Backend::cluster()).await;
    }

    #[actix_web::test]
    async fn late_copies_last_their_whole_window() {
        super::late_copies_last_their_whole_window(super::Backend::cluster()).await;
    }
}
