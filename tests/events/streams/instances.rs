//! Redis only: two instances, a lost or half-open subscription, Redis down and back, a frozen
//! subscription holding no other channel back.

use super::*;

fn redis_count(server: &crate::common::RedisServer, kind: &str) -> usize {
    let list: String = ::redis::cmd("CLIENT")
        .arg("LIST")
        .arg("TYPE")
        .arg(kind)
        .query(&mut server.conn())
        .unwrap();
    list.lines().count()
}

/// Two instances sharing one redis-server deliver each other's publishes, each with one
/// subscriber connection whatever its client count.
#[actix_web::test]
async fn two_instances_share_events() {
    let backend = Backend::redis();
    let a = TestApp::start(&config(&backend));
    let b = TestApp::start(&config(&backend));
    let mut on_a: Vec<Sse> = Vec::new();
    for _ in 0..5 {
        on_a.push(a.sse("/events/shared", &[]).await.opened().await);
    }
    let mut on_b = b.sse("/events/shared", &[]).await.opened().await;
    a.wait_subscribers("shared", 5).await;
    b.wait_subscribers("shared", 1).await;
    let Backend::Redis(server) = &backend else {
        unreachable!()
    };
    assert_eq!(
        redis_count(server, "pubsub"),
        4,
        "per instance: one events subscriber (whatever the number of clients) and auth's revocation subscriber"
    );
    let from_b = b.publish("shared", r#"{"n":1}"#).await;
    let from_a = a.publish("shared", r#"{"n":2}"#).await;
    for client in on_a.iter_mut().chain([&mut on_b]) {
        let events = client.events_through(&from_a, QUIET).await;
        assert_eq!(
            ids_and_ns(&events),
            numbered(&[from_b.clone(), from_a.clone()], 1)
        );
    }
    // The last client leaving unsubscribes.
    drop(on_b);
    b.wait_subscribers("shared", 0).await;
    wait_numsub(server, "shared", 1).await;
}

/// `CLIENT KILL TYPE pubsub`: the subscriber reconnects, resubscribes and delivers within 1 s,
/// including what was published while it was gone; no client is disconnected.
#[actix_web::test]
async fn pubsub_kill_resubscribes_without_loss() {
    let backend = Backend::redis();
    let app = TestApp::start(&config(&backend));
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(app.sse("/events/k", &[]).await.opened().await);
    }
    app.wait_subscribers("k", 3).await;
    let before = app.publish("k", r#"{"n":0}"#).await;
    let Backend::Redis(server) = &backend else {
        unreachable!()
    };
    let killed: u64 = ::redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .query(&mut server.conn())
        .unwrap();
    // The events subscriber and auth's revocation subscriber.
    assert_eq!(killed, 2);
    let started = tokio::time::Instant::now();
    // Published at once: likely while the subscriber is reconnecting.
    let gap = app.publish("k", r#"{"n":1}"#).await;
    let mut after = Vec::new();
    for n in 2..5 {
        after.push(app.publish("k", &format!("{{\"n\":{n}}}")).await);
    }
    let mut expected = vec![before.clone(), gap.clone()];
    expected.extend(after.iter().cloned());
    for client in &mut clients {
        let mut ids = Vec::new();
        while ids.len() < 5 {
            let event = client
                .next_within(Duration::from_secs(1))
                .await
                .expect("still connected");
            if !event.is_comment() {
                ids.push(event.id.unwrap());
            }
        }
        assert_eq!(ids, expected);
    }
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    // Nothing after them: no event replayed twice by the catch-up.
    for client in &mut clients {
        client.assert_quiet(QUIET).await;
    }
    assert_eq!(
        redis_count(server, "pubsub"),
        2,
        "both subscribers came back"
    );
    assert_eq!(app.services.events.info("k").await.unwrap().subscribers, 3);
}

/// Appends `{"n":n}` for each `n` to `channel`'s history behind redkit's back (no `SPUBLISH`):
/// events an instance whose subscription was lost never hears live. Answers their ids.
fn append_unheard(
    server: &crate::common::RedisServer,
    channel: &str,
    ns: std::ops::Range<u64>,
) -> Vec<String> {
    let mut conn = server.conn();
    ns.map(|n| {
        ::redis::cmd("XADD")
            .arg(format!("redkit:events:{channel}"))
            .arg("*")
            .arg("event")
            .arg("message")
            .arg("data")
            .arg(format!(r#"{{"n":{n}}}"#))
            .query(&mut conn)
            .unwrap()
    })
    .collect()
}

/// Cuts every pub/sub connection (`CLIENT KILL TYPE pubsub`): the events subscriber's
/// subscription is lost and must be made again.
fn kill_subscribers(server: &crate::common::RedisServer) {
    let killed: u64 = ::redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .query(&mut server.conn())
        .unwrap();
    assert_eq!(killed, 2, "the events and revocation subscribers");
}

/// After its subscription is lost, an instance catches its open streams up from
/// history, in order and exactly once (events it never heard live included), also when more was
/// missed than a client's queue holds (paged, as the client makes room); when history no longer
/// reaches back, the stream gets `event: reset` instead, then live events.
#[actix_web::test]
async fn lost_subscription_catches_up_from_history_or_resets() {
    let backend = Backend::redis();
    let mut config = config(&backend);
    config.events.queue_size = 16;
    let app = TestApp::start(&config);
    let Backend::Redis(server) = &backend else {
        unreachable!()
    };
    let mut client = app.sse("/events/missed", &[]).await.opened().await;
    app.wait_subscribers("missed", 1).await;
    let mut ids = vec![app.publish("missed", r#"{"n":0}"#).await];
    ids.extend(append_unheard(server, "missed", 1..11));
    kill_subscribers(server);
    let events = client.events_through(ids.last().unwrap(), QUIET).await;
    assert_eq!(ids_and_ns(&events), numbered(&ids, 0));
    // 50 missed: more than three times the client's queue of 16, all replayed in order.
    let missed = append_unheard(server, "missed", 11..61);
    kill_subscribers(server);
    let events = client.events_through(missed.last().unwrap(), QUIET).await;
    assert_eq!(ids_and_ns(&events), numbered(&missed, 11));
    // 20 missed, then history trimmed past where the client stands: a reset.
    append_unheard(server, "missed", 61..81);
    let _: i64 = ::redis::cmd("XTRIM")
        .arg("redkit:events:missed")
        .arg("MAXLEN")
        .arg(5)
        .query(&mut server.conn())
        .unwrap();
    kill_subscribers(server);
    let reset = client.next_event().await.unwrap();
    assert_eq!(reset.event.as_deref(), Some("reset"), "{reset:?}");
    client.assert_quiet(QUIET).await;
    let live = app.publish("missed", r#"{"n":81}"#).await;
    let events = client.events_through(&live, QUIET).await;
    assert_eq!(ids_and_ns(&events), numbered(&[live], 81));
}

/// A client that stops reading during a catch-up is cut as a slow consumer, as live delivery
/// cuts one, and holds no other client of its channel back: the client that reads gets every
/// missed event, in order, and no `reset`.
#[actix_web::test]
async fn a_stalled_client_does_not_reset_its_channel_in_a_catch_up() {
    let backend = Backend::redis();
    let mut config = config(&backend);
    config.events.queue_size = 16;
    // A resync's bound (4 response timeouts) is not what this test is about: 20 MiB of catch-up
    // through a debug build on a loaded machine takes longer than the default's.
    let mut settings = config.redis.clone().unwrap();
    settings.response_timeout = Duration::from_secs(10);
    config.redis = Some(settings);
    let app = TestApp::start(&config);
    let Backend::Redis(server) = &backend else {
        unreachable!()
    };
    let mut reader = app.sse("/events/stall", &[]).await.opened().await;
    // Never read again: once its socket buffers and its queue are full, it takes nothing more.
    let _stalled = app.sse("/events/stall", &[]).await.opened().await;
    app.wait_subscribers("stall", 2).await;
    let slow_before = app.services.events.stats().slow_consumers;
    // 200 events of 100 KiB (20 MiB): more than loopback's socket buffers and a queue hold.
    let pad = "x".repeat(100 * 1024);
    let mut conn = server.conn();
    let ids: Vec<String> = (0..200)
        .map(|n| {
            ::redis::cmd("XADD")
                .arg("redkit:events:stall")
                .arg("*")
                .arg("event")
                .arg("message")
                .arg("data")
                .arg(format!(r#"{{"n":{n},"pad":"{pad}"}}"#))
                .query(&mut conn)
                .unwrap()
        })
        .collect();
    kill_subscribers(server);
    let events = reader.events_through(ids.last().unwrap(), QUIET).await;
    assert_eq!(ids_and_ns(&events), numbered(&ids, 0));
    app.wait_subscribers("stall", 1).await;
    assert_eq!(
        app.services.events.stats().slow_consumers - slow_before,
        1,
        "the stalled client is cut"
    );
}

/// A subscriber connection whose server stops answering without closing the socket (SIGSTOP:
/// half-open) is noticed within its liveness deadline (check interval + response timeout): the
/// hub resyncs, and once the server answers again the client gets what is published.
#[actix_web::test]
async fn half_open_subscriber_is_noticed() {
    let mut backend = Backend::redis();
    let mut config = config(&backend);
    let mut settings = config.redis.clone().unwrap();
    settings.response_timeout = Duration::from_millis(300);
    config.redis = Some(settings);
    let app = TestApp::start(&config);
    let mut client = app.sse("/events/h", &[]).await.opened().await;
    app.wait_subscribers("h", 1).await;
    let resyncs = app.services.events.stats().resyncs;
    backend.server().unwrap().pause();
    // 500 ms between checks, 300 ms to answer, and slack for a loaded machine.
    let deadline = tokio::time::Instant::now() + Duration::from_millis(500 + 300 + 700);
    while app.services.events.stats().resyncs == resyncs {
        if tokio::time::Instant::now() >= deadline {
            backend.server().unwrap().resume();
            panic!("a half-open events subscriber went unnoticed");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    backend.server().unwrap().resume();
    let id = app.publish_when_back("h", r#"{"n":3}"#).await;
    let event = client.next_event().await.expect("still open");
    assert_eq!(event.id, Some(id));
    assert_eq!(data_n(&event), 3);
}

/// With Redis down, subscribers still get 200 and heartbeats; once Redis is back, events flow.
#[actix_web::test]
async fn redis_down_keeps_streams_open() {
    let mut backend = Backend::redis();
    let app = TestApp::start(&config(&backend));
    let mut early = app.sse("/events/d", &[]).await.opened().await;
    app.wait_subscribers("d", 1).await;
    backend.server().unwrap().kill();
    let mut late = app.sse("/events/d", &[]).await.opened().await;
    for client in [&mut early, &mut late] {
        for _ in 0..2 {
            client.expect_heartbeat().await;
        }
    }
    let (status, body) = http(
        app.addr,
        "POST",
        "/events/d",
        &[("authorization", &format!("Bearer {}", app.token))],
        Some("{}"),
    )
    .await;
    assert_eq!(status, 503);
    assert!(
        !body.contains("redis.sock") && !body.contains("refused"),
        "{body}"
    );
    backend.server().unwrap().restart();
    // Publishing works again once the command connection has reconnected.
    let id = app.publish_when_back("d", r#"{"n":7}"#).await;
    for client in [&mut early, &mut late] {
        let event = client.next_event().await.expect("still open");
        assert_eq!(event.id, Some(id.clone()));
        assert_eq!(data_n(&event), 7);
    }
}

/// A client that arrives while Redis is down gets what is published as soon as Redis is back,
/// even when the publish beats the events subscriber's resubscription (it retries every 250 ms;
/// the command connection reconnects on the first publish attempt).
#[actix_web::test]
async fn joined_while_down_misses_nothing_after_restart() {
    let mut backend = Backend::redis();
    let app = TestApp::start(&config(&backend));
    backend.server().unwrap().kill();
    let mut client = app.sse("/events/late-join", &[]).await.opened().await;
    // A heartbeat: the stream is open and its client joined (`info` needs Redis).
    client.expect_heartbeat().await;
    backend.server().unwrap().restart();
    let id = app.publish_when_back("late-join", r#"{"n":1}"#).await;
    let event = client
        .next_event()
        .await
        .expect("delivered after the restart");
    assert_eq!(event.id, Some(id));
    assert_eq!(data_n(&event), 1);
}

/// A client of a channel this instance already follows is not held back by another channel's
/// subscription: with Redis frozen, a new channel's subscriber waits for its subscription (up to
/// the response timeout, 3 s here), and a second client of the live channel is answered at once.
async fn a_live_channel_does_not_wait_for_a_new_ones_subscription(backend: Backend) {
    let mut config = config(&backend);
    let settings = config.redis.as_mut().unwrap();
    settings.response_timeout = Duration::from_secs(3);
    let app = TestApp::start(&config);
    let mut first = app.sse("/events/live", &[]).await.opened().await;
    app.wait_subscribers("live", 1).await;
    backend.freeze();
    let addr = app.addr;
    let fresh =
        actix_web::rt::spawn(
            async move { Sse::open(addr, "/events/fresh", &[]).await.opened().await },
        );
    // The new channel's subscription is under way (its first command unanswered).
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = tokio::time::Instant::now();
    let second = tokio::time::timeout(WAIT, async {
        app.sse("/events/live", &[]).await.opened().await
    })
    .await;
    let waited = started.elapsed();
    backend.thaw();
    let mut second = second.expect("the second client's head");
    assert!(
        waited < Duration::from_secs(1),
        "a client of a live channel waited {waited:?} for another channel's subscription"
    );
    let mut fresh = fresh.await.unwrap();
    let id = app.publish_when_back("live", r#"{"n":1}"#).await;
    for client in [&mut first, &mut second] {
        let event = client.next_event().await.expect("still open");
        assert_eq!(event.id, Some(id.clone()));
        assert_eq!(data_n(&event), 1);
    }
    let id = app.publish("fresh", r#"{"n":2}"#).await;
    let event = fresh.next_event().await.expect("still open");
    assert_eq!(event.id, Some(id));
    assert_eq!(data_n(&event), 2);
}

#[actix_web::test]
async fn a_live_channel_does_not_wait_on_redis() {
    a_live_channel_does_not_wait_for_a_new_ones_subscription(Backend::redis()).await;
}

#[actix_web::test]
async fn a_live_channel_does_not_wait_on_the_cluster() {
    a_live_channel_does_not_wait_for_a_new_ones_subscription(Backend::cluster()).await;
}
