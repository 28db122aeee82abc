//! The hub's baselines.

use super::*;

fn joined_ms(hub: &Hub, channel: &str) -> u64 {
    hub.lock().channels[channel].joined.ms
}

/// A late baseline starts at the first client's arrival on Redis's clock: with Redis's
/// clock 5 s behind ours, events Redis stamps after the arrival are not skipped.
#[test]
fn late_baseline_is_taken_on_redis_clock() {
    let hub = Hub::new(8, Arc::new(crate::clock::SystemClock));
    let _client = hub.join("behind", None).unwrap();
    let joined = joined_ms(&hub, "behind");
    let far = EventId {
        ms: u64::MAX,
        seq: 0,
    };
    hub.baseline("behind", far, Some(-5_000));
    assert_eq!(hub.last_id("behind").unwrap().ms, joined - 5_000);

    let _client = hub.join("on-time", None).unwrap();
    let joined = joined_ms(&hub, "on-time");
    hub.baseline("on-time", far, Some(0));
    assert_eq!(hub.last_id("on-time").unwrap().ms, joined);

    // Not late: the stream's newest id, whatever the clocks say.
    let _client = hub.join("live", None).unwrap();
    let newest = EventId { ms: 42, seq: 7 };
    hub.baseline("live", newest, None);
    assert_eq!(hub.last_id("live"), Some(newest));
}

fn clients(hub: &Hub) -> u64 {
    hub.counters.clients.load(Ordering::Relaxed)
}

/// A multi-channel client is one client: counted once, one heartbeat per beat, and cut on one
/// channel (its queue full) it leaves every channel, so its stream ends.
#[test]
fn a_multi_channel_client_is_one_client() {
    let hub = Hub::new(2, Arc::new(crate::clock::SystemClock));
    let channels: Arc<[Arc<str>]> = Arc::from(vec![Arc::from("a"), Arc::from("b")]);
    let mut joined = hub.join_all(&channels, Member::default()).unwrap();
    assert_eq!((clients(&hub), hub.count("a"), hub.count("b")), (1, 1, 1));
    hub.heartbeat();
    assert_eq!(joined.rx.try_recv().map(|f| f.kind), Some(Kind::Heartbeat));
    assert!(
        joined.rx.try_recv().is_none(),
        "one heartbeat, not one per channel"
    );
    for seq in 1..=3 {
        hub.fan_out(
            "a",
            EventId { ms: 1, seq },
            &Bytes::from_static(b"x"),
            false,
        );
    }
    assert!(joined.rx.overflowed());
    assert_eq!((clients(&hub), hub.count("a"), hub.count("b")), (0, 0, 0));
    // Its stream's guard leaving afterwards counts nothing twice.
    hub.leave(&channels, joined.id);
    assert_eq!(clients(&hub), 0);
}
