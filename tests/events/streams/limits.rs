//! What a publisher and a subscriber may do: publish rules, sizes, caps, bounded replays and reads.

use super::*;

/// Publishing needs a token; bad channel names and CR/LF in event types are 400 problems;
/// a JSON body with newlines arrives as one event whose data is that JSON.
async fn publish_rules_and_injection(backend: Backend) {
    let app = TestApp::start(&config(&backend));
    let (status, _) = http(app.addr, "POST", "/events/a", &[], Some("{}")).await;
    assert_eq!(status, 401);
    let bearer = format!("Bearer {}", app.token);
    let auth = [("authorization", bearer.as_str())];
    for path in [
        "/events/a%0D%0Aevent:%20x".to_owned(),
        format!("/events/{}", "a".repeat(129)),
        "/events/a%20b".to_owned(),
    ] {
        let (status, body) = http(app.addr, "POST", &path, &auth, Some("{}")).await;
        assert_eq!(status, 400, "{path}");
        assert!(body.contains("invalid-channel"), "{body}");
    }
    for kind in ["a%0D%0Adata:%20evil", "a%0Ab", "a:b", ""] {
        let (status, body) = http(
            app.addr,
            "POST",
            &format!("/events/a?event={kind}"),
            &auth,
            Some("{}"),
        )
        .await;
        assert_eq!(status, 400, "{kind}");
        assert!(body.contains("invalid-event-type"), "{body}");
    }
    let (status, _) = http(app.addr, "GET", "/events/a%20b", &[], None).await;
    assert_eq!(status, 400);
    let mut client = app.sse("/events/a", &[]).await.opened().await;
    app.wait_subscribers("a", 1).await;
    let body = "{\n  \"text\": \"line1\\nid: 9-9\\n\\ndata: evil\",\n  \"n\": 1\n}";
    let (status, _) = http(
        app.addr,
        "POST",
        "/events/a?event=note.v2",
        &auth,
        Some(body),
    )
    .await;
    assert_eq!(status, 202);
    let event = client.next_event().await.unwrap();
    assert_eq!(event.event.as_deref(), Some("note.v2"));
    assert_eq!(event.data.len(), 1, "{event:?}");
    let got: serde_json::Value = serde_json::from_str(&event.data[0]).unwrap();
    let sent: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(got, sent);
    let next = client
        .next_within(Duration::from_millis(400))
        .await
        .unwrap();
    assert!(next.is_comment());
}

/// `/info` counts local subscribers and history; a shut-down handle ends every stream cleanly.
async fn info_and_shutdown(backend: Backend) {
    let app = TestApp::start(&config(&backend));
    let (status, body) = http(app.addr, "GET", "/events/room/info", &[], None).await;
    assert_eq!(status, 200);
    assert_eq!(body, r#"{"subscribers":0,"history":0}"#);
    let mut a = app.sse("/events/room", &[]).await.opened().await;
    let mut b = app.sse("/events/room", &[]).await.opened().await;
    app.wait_subscribers("room", 2).await;
    app.publish("room", "{}").await;
    app.publish("room", "{}").await;
    let (_, body) = http(app.addr, "GET", "/events/room/info", &[], None).await;
    assert_eq!(body, r#"{"subscribers":2,"history":2}"#);
    app.services.events.shutdown();
    for client in [&mut a, &mut b] {
        assert_eq!(
            client.next_event().await.unwrap().event.as_deref(),
            Some("message")
        );
        assert_eq!(
            client.next_event().await.unwrap().event.as_deref(),
            Some("message")
        );
        assert!(client.next_within(WAIT).await.is_none());
    }
    assert_eq!(app.sse("/events/room", &[]).await.status, 503);
    app.server.stop().await;
}

/// Only the owner publishes into `user:{id}`: another user's token gets 403 and
/// nothing reaches the owner's stream or history; server code still publishes there.
async fn private_channel_publish_is_owner_only(backend: Backend) {
    let app = TestApp::with_logins(&config(&backend)).await;
    let channel = app.alice.clone();
    let bob = format!("Bearer {}", app.bob);
    let (status, body) = http(
        app.addr,
        "POST",
        &format!("/events/{channel}"),
        &[("authorization", &bob)],
        Some(r#"{"forged":true}"#),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    let problem: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(problem["type"], "https://redkit.dev/problems/forbidden");
    assert_eq!(app.services.events.info(&channel).await.unwrap().history, 0);
    let (status, _) = app.try_publish(&channel, r#"{"mine":true}"#).await;
    assert_eq!(status, 202);
    app.services
        .events
        .publish(&channel, &serde_json::json!({"from": "server"}))
        .await
        .unwrap();
    assert_eq!(app.services.events.info(&channel).await.unwrap().history, 2);
    app.server.stop().await;
}

/// Event data is capped (64 KiB of compact JSON by default): one byte more is a
/// 413 problem and is not kept; exactly the cap is accepted.
async fn oversized_event_is_413(backend: Backend) {
    let app = TestApp::start(&config(&backend));
    // `{"b":"…"}` is 8 bytes of framing around the string.
    let at_cap = format!(r#"{{"b":"{}"}}"#, "x".repeat(64 * 1024 - 8));
    let over = format!(r#"{{"b":"{}"}}"#, "x".repeat(64 * 1024 - 7));
    let (status, body) = app.try_publish("room", &over).await;
    assert_eq!(status, 413, "{body}");
    let problem: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        problem,
        serde_json::json!({
            "type": "https://redkit.dev/problems/payload-too-large",
            "title": "Payload too large",
            "status": 413,
            "detail": "An event's data is at most 65536 bytes of compact JSON.",
        })
    );
    assert_eq!(app.services.events.info("room").await.unwrap().history, 0);
    assert_eq!(app.try_publish("room", &at_cap).await.0, 202);
    assert_eq!(app.services.events.info("room").await.unwrap().history, 1);
    app.server.stop().await;
}

/// A resume replays at most `max_replay` events: a client further behind gets
/// `event: reset` (then live), one within the bound gets exactly the missing events.
async fn replay_is_bounded(backend: Backend) {
    let mut config = config(&backend);
    config.events.max_replay = 5;
    let app = TestApp::start(&config);
    let mut ids = Vec::new();
    for n in 0..12 {
        ids.push(app.publish("long", &format!("{{\"n\":{n}}}")).await);
    }
    // Eleven events follow the first id: more than five.
    let mut behind = app
        .sse("/events/long", &[("last-event-id", &ids[0])])
        .await
        .opened()
        .await;
    let reset = behind.next_event().await.unwrap();
    assert_eq!(reset.event.as_deref(), Some("reset"));
    // Only a reset is replayed.
    behind.assert_quiet(QUIET).await;
    // Exactly five follow the 7th id (n = 7..=11), and nothing more.
    let mut close = app
        .sse("/events/long", &[("last-event-id", &ids[6])])
        .await
        .opened()
        .await;
    let events = close.events_through(ids.last().unwrap(), QUIET).await;
    assert_eq!(ids_and_ns(&events), numbered(&ids[7..], 7));
    app.server.stop().await;
}

/// SSE connections are capped per address (429 `too-many-streams`) and in all
/// (503 with `Retry-After`); a closed stream frees its place.
async fn sse_connections_are_capped(backend: Backend) {
    let mut config = config(&backend);
    config.events.max_connections_per_ip = 2;
    let app = TestApp::start(&config);
    let first = app.sse("/events/a", &[]).await.opened().await;
    let _second = app.sse("/events/b", &[]).await.opened().await;
    let third = app.sse("/events/c", &[]).await;
    assert_eq!(third.status, 429);
    // `/stats/stream` is an endless stream too: it counts against the same places.
    let stats = app.sse("/stats/stream", &[]).await;
    assert_eq!(stats.status, 429);
    assert!(stats.body.contains("too-many-streams"), "{}", stats.body);
    assert!(third.body.contains("too-many-streams"), "{}", third.body);
    drop(first);
    app.wait_subscribers("a", 0).await;
    let mut opened = false;
    for _ in 0..50 {
        let again = app.sse("/events/c", &[]).await;
        if again.status == 200 {
            opened = true;
            break;
        }
        assert_eq!(again.status, 429);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(opened, "a closed stream frees its place");
    app.server.stop().await;

    let mut config = self::config(&backend);
    config.events.max_connections = 1;
    let app = TestApp::start(&config);
    let _only = app.sse("/events/a", &[]).await.opened().await;
    let full = app.sse("/events/a", &[]).await;
    assert_eq!(full.status, 503);
    assert_eq!(full.header("retry-after"), Some("1"));
    app.server.stop().await;
}

/// Bytes Redis has sent its clients so far (`total_net_output_bytes`, summed over a cluster's
/// running nodes); `None` on memory.
fn redis_bytes_out(backend: &Backend) -> Option<u64> {
    let sent = |conn: &mut ::redis::Connection| -> u64 {
        let info: String = ::redis::cmd("INFO").arg("stats").query(conn).unwrap();
        info.lines()
            .find_map(|l| l.strip_prefix("total_net_output_bytes:"))
            .and_then(|v| v.trim().parse().ok())
            .expect("total_net_output_bytes")
    };
    match backend {
        Backend::Memory => None,
        Backend::Redis(server) => Some(sent(&mut server.conn())),
        Backend::Cluster(cluster) => Some(
            cluster
                .nodes()
                .iter()
                .filter(|n| n.running())
                .map(|n| sent(&mut n.conn().unwrap()))
                .sum(),
        ),
    }
}

/// What Redis may send beside a resume's own reads while it is measured: liveness checks of the
/// subscriber and feed connections, and the `INFO` replies of the measure itself.
const BACKGROUND_BYTES: u64 = 32 * 1024;

/// A resume reads history in pages bounded by the replay cap. A client 6 MB
/// behind gets `event: reset` and Redis sends it almost nothing for that; a replay within the
/// cap costs Redis at most twice what the client receives, and is exactly the missing events.
async fn resume_reads_are_bounded_by_what_they_send(backend: Backend) {
    let app = TestApp::start(&config(&backend));
    let blob = "x".repeat(60_000);
    let mut ids = Vec::new();
    for n in 0..100 {
        let body = format!(r#"{{"n":{n},"blob":"{blob}"}}"#);
        ids.push(app.publish("big-history", &body).await);
    }
    // 99 events of 60 kB follow the first id: 6 MB, over the 1 MiB cap.
    let before = redis_bytes_out(&backend);
    let mut far = app
        .sse("/events/big-history", &[("last-event-id", &ids[0])])
        .await
        .opened()
        .await;
    let reset = far.next_event().await.unwrap();
    assert_eq!(reset.event.as_deref(), Some("reset"));
    far.assert_quiet(QUIET).await;
    if let (Some(before), Some(after)) = (before, redis_bytes_out(&backend)) {
        let sent = after - before;
        eprintln!(
            "reset: Redis sent {sent} bytes, the client received {}",
            far.received
        );
        assert!(
            sent <= 2 * far.received as u64 + BACKGROUND_BYTES,
            "Redis sent {sent} bytes for a reset ({} received)",
            far.received
        );
    }
    // 14 events of 60 kB follow the 86th: 840 kB, within the cap.
    let before = redis_bytes_out(&backend);
    let mut near = app
        .sse("/events/big-history", &[("last-event-id", &ids[85])])
        .await
        .opened()
        .await;
    let events = near.events_through(ids.last().unwrap(), QUIET).await;
    assert_eq!(ids_and_ns(&events), numbered(&ids[86..], 86));
    if let (Some(before), Some(after)) = (before, redis_bytes_out(&backend)) {
        let sent = after - before;
        eprintln!(
            "replay: Redis sent {sent} bytes, the client received {}",
            near.received
        );
        assert!(
            sent <= 2 * near.received as u64 + BACKGROUND_BYTES,
            "Redis sent {sent} bytes for a replay of {} received",
            near.received
        );
    }
    app.server.stop().await;
}

backend_suite!(
    resume_reads_are_bounded_by_what_they_send,
    replay_is_bounded,
    sse_connections_are_capped,
    private_channel_publish_is_owner_only,
    oversized_event_is_413,
    publish_rules_and_injection,
    info_and_shutdown
);
