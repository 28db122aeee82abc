//! The embedding API and the events clock, without HTTP.

use super::*;

/// The embedding API: publish and subscribe through the handle, without HTTP.
#[actix_web::test]
async fn handle_publish_and_subscribe() {
    use futures_util::StreamExt;
    let backend = Backend::memory();
    let services = services(&backend.config());
    let events = services.events.clone();
    let mut stream = events.subscribe("embed", None).await.unwrap();
    let retry = stream.next().await.unwrap().unwrap();
    assert_eq!(&retry[..], b"retry: 3000\n\n");
    let id = events
        .publish("embed", &serde_json::json!({"hello": "world"}))
        .await
        .unwrap();
    let frame = stream.next().await.unwrap().unwrap();
    assert_eq!(
        String::from_utf8(frame.to_vec()).unwrap(),
        format!("id: {id}\nevent: message\ndata: {{\"hello\":\"world\"}}\n\n")
    );
}

/// A start time for tests on the events clock: 2023-11-14, a whole second.
const CLOCK_START_US: u64 = 1_700_000_000_000_000;

/// The memory backend mints event ids from the events clock: `<ms>-<seq>` of the clock's time,
/// the sequence restarting when the clock moves on.
#[actix_web::test]
async fn memory_event_ids_follow_the_events_clock() {
    let clock = ManualClock::new(CLOCK_START_US);
    let mut config = Backend::memory().config();
    config.events.clock = Arc::new(clock.clone());
    let events = services(&config).events.clone();
    let publish = || async {
        events
            .publish("ticks", &serde_json::json!(1))
            .await
            .unwrap()
            .to_string()
    };
    assert_eq!(publish().await, "1700000000000-0");
    assert_eq!(publish().await, "1700000000000-1");
    clock.advance(Duration::from_millis(5));
    assert_eq!(publish().await, "1700000000005-0");
}

/// Private-stream expiry reads the events clock: a stream stays open past a sweep while its
/// token is valid on that clock, and closes within a sweep of the clock passing its expiry.
#[actix_web::test]
async fn private_stream_expiry_follows_the_events_clock() {
    use futures_util::StreamExt;
    let clock = ManualClock::new(CLOCK_START_US);
    let mut config = Backend::memory().config();
    config.events.clock = Arc::new(clock.clone());
    let events = services(&config).events.clone();
    // The verifier's own expiry check reads the same clock.
    events.set_auth(Arc::new(
        StaticTokens::new().with_clock(Arc::new(clock.clone())),
    ));
    let expires = CLOCK_START_US / 1_000_000 + 10;
    let alice = Caller::new("alice", "s-alice", expires);
    let mut stream = events
        .subscribe_as("user:alice", None, Some(alice))
        .await
        .unwrap();
    assert_eq!(
        &stream.next().await.unwrap().unwrap()[..],
        b"retry: 3000\n\n"
    );
    // Sweeps run every second: past the first, the stream is open (on the wall clock, the token
    // expired in 2023).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let id = events
        .publish("user:alice", &serde_json::json!(1))
        .await
        .unwrap();
    let frame = tokio::time::timeout(WAIT, stream.next())
        .await
        .expect("delivered")
        .unwrap()
        .unwrap();
    assert_eq!(
        String::from_utf8(frame.to_vec()).unwrap(),
        format!("id: {id}\nevent: message\ndata: 1\n\n")
    );
    clock.advance(Duration::from_secs(10));
    let end = tokio::time::timeout(WAIT, stream.next())
        .await
        .expect("closed within a sweep");
    assert!(end.is_none(), "{end:?}");
}
