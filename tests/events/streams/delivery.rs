//! Order, exactly-once, resume and reset, slow consumers, private channels and their revocation.

use super::*;

/// Every one of 10 clients gets all 50 events exactly once, in publish order, with ids and types.
async fn order_and_exactly_once(backend: Backend) {
    let app = TestApp::start(&config(&backend));
    let mut clients = Vec::new();
    for _ in 0..10 {
        clients.push(app.sse("/events/news", &[]).await.opened().await);
    }
    app.wait_subscribers("news", 10).await;
    let mut ids = Vec::new();
    for n in 0..50 {
        ids.push(app.publish("news", &format!("{{\"n\":{n}}}")).await);
    }
    // The whole stream, by sequence number: no duplicate, no gap, nothing after the last.
    for client in &mut clients {
        let events = client.events_through(ids.last().unwrap(), QUIET).await;
        assert_eq!(ids_and_ns(&events), numbered(&ids, 0));
        assert!(events.iter().all(|e| e.event.as_deref() == Some("message")));
    }
}

/// Resuming with Last-Event-ID k (header or query) gets exactly k+1.. in order, then live events,
/// with no duplicate at the handover.
async fn resume_replays_after_id(backend: Backend) {
    let app = TestApp::start(&config(&backend));
    let mut ids = Vec::new();
    for n in 0..10 {
        ids.push(app.publish("feed", &format!("{{\"n\":{n}}}")).await);
    }
    let mut by_header = app
        .sse("/events/feed", &[("last-event-id", &ids[3])])
        .await
        .opened()
        .await;
    let mut by_query = app
        .sse(&format!("/events/feed?last_event_id={}", ids[3]), &[])
        .await
        .opened()
        .await;
    app.wait_subscribers("feed", 2).await;
    ids.push(app.publish("feed", r#"{"n":10}"#).await);
    for client in [&mut by_header, &mut by_query] {
        let events = client.events_through(ids.last().unwrap(), QUIET).await;
        assert_eq!(ids_and_ns(&events), numbered(&ids[4..], 4));
    }
}

/// An id older than history (or unknown, or malformed) gets `event: reset` first, then live.
async fn too_old_id_gets_reset(backend: Backend) {
    let mut config = config(&backend);
    config.events.history_len = 5;
    let app = TestApp::start(&config);
    // Redis trims approximately (whole 100-entry nodes): publish enough to drop the first.
    let first = app.publish("old", r#"{"n":0}"#).await;
    for n in 1..250 {
        app.publish("old", &format!("{{\"n\":{n}}}")).await;
    }
    for id in [first.as_str(), "1-0", "not-an-id"] {
        let mut client = app
            .sse("/events/old", &[("last-event-id", id)])
            .await
            .opened()
            .await;
        let reset = client.next_event().await.unwrap();
        assert_eq!(reset.event.as_deref(), Some("reset"), "for {id}");
        assert_eq!(reset.id, None);
        app.wait_subscribers("old", 1).await;
        app.publish("old", r#"{"n":999}"#).await;
        let live = client.next_event().await.unwrap();
        assert_eq!(data_n(&live), 999);
        drop(client);
        app.wait_subscribers("old", 0).await;
    }
}

/// A client that stops reading is cut with a final `event: overflow`; a reading client gets all.
async fn slow_consumer_is_cut(backend: Backend) {
    let mut config = config(&backend);
    config.events.queue_size = 4;
    config.events.max_event_bytes = 1024 * 1024;
    config.body_limit = 1024 * 1024;
    let app = TestApp::start(&config);
    let mut fast = app.sse("/events/big", &[]).await.opened().await;
    let mut slow = app.sse("/events/big", &[]).await.opened().await;
    app.wait_subscribers("big", 2).await;
    let blob = "x".repeat(256 * 1024);
    let total = 60;
    let reader = actix_web::rt::spawn(async move {
        let mut got = 0;
        while let Some(event) = fast.next_event().await {
            if event.event.as_deref() == Some("message") {
                got += 1;
                if got == total {
                    break;
                }
            }
        }
        got
    });
    for n in 0..total {
        app.publish("big", &format!("{{\"n\":{n},\"blob\":\"{blob}\"}}"))
            .await;
        // Let the fast reader keep up with its queue of 4.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(reader.await.unwrap(), total);
    // The slow client now reads what reached it: fewer than all, then overflow, then the end.
    let mut messages = 0;
    let last = loop {
        let event = slow.next_event().await.expect("overflow before the end");
        if event.event.as_deref() == Some("message") {
            messages += 1;
        } else {
            break event;
        }
    };
    assert_eq!(last.event.as_deref(), Some("overflow"));
    assert!(messages < total, "slow client got all {messages}");
    assert!(
        slow.next_within(WAIT).await.is_none(),
        "stream ends after overflow"
    );
    app.wait_subscribers("big", 0).await;
}

/// Private channels through the production verifier (`auth::EventsBridge`, real logins): 401
/// without a valid token (and for the token in a cookie of another name than `redkit_access`),
/// 403 for another user's, 200 for the owner by bearer, `redkit_access` cookie or single-use
/// ticket; a logout closes every stream of its session (`still_valid` → `principal_status`).
async fn private_channel_rules(backend: Backend) {
    let app = TestApp::with_logins(&config(&backend)).await;
    let channel = app.alice.clone();
    let path = &format!("/events/{channel}");
    assert_eq!(app.sse(path, &[]).await.status, 401);
    assert_eq!(
        app.sse(path, &[("authorization", "Bearer nope")])
            .await
            .status,
        401
    );
    assert_eq!(
        app.sse(path, &[("cookie", &format!("access_token={}", app.token))])
            .await
            .status,
        401
    );
    assert_eq!(
        app.sse(path, &[("authorization", &format!("Bearer {}", app.bob))])
            .await
            .status,
        403
    );
    let bearer = format!("Bearer {}", app.token);
    let mut by_bearer = app
        .sse(path, &[("authorization", &bearer)])
        .await
        .opened()
        .await;
    let mut by_cookie = app
        .sse(path, &[("cookie", &format!("redkit_access={}", app.token))])
        .await
        .opened()
        .await;
    // Tickets: issued for a valid token only, redeemable once.
    let (status, _) = http(app.addr, "POST", "/events/ticket", &[], None).await;
    assert_eq!(status, 401);
    let (status, body) = http(
        app.addr,
        "POST",
        "/events/ticket",
        &[("authorization", &bearer)],
        None,
    )
    .await;
    assert_eq!(status, 200);
    let ticket: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ticket["expires_in"], 60);
    let ticket = ticket["ticket"].as_str().unwrap().to_owned();
    let mut by_ticket = app
        .sse(&format!("{path}?ticket={ticket}"), &[])
        .await
        .opened()
        .await;
    assert_eq!(
        app.sse(&format!("{path}?ticket={ticket}"), &[])
            .await
            .status,
        401
    );
    // A channel named like a ticket's key never meets a ticket (it used to answer 500).
    app.publish("ticket:aa", "{}").await;
    assert_eq!(app.sse(&format!("{path}?ticket=aa"), &[]).await.status, 401);
    // Info follows the same rule.
    let (status, _) = http(app.addr, "GET", &format!("{path}/info"), &[], None).await;
    assert_eq!(status, 401);
    app.wait_subscribers(&channel, 3).await;
    if let Backend::Cluster(cluster) = &backend {
        assert!(
            crate::common::eventually(WAIT, || async { cluster.has_shard_channel(&channel) }).await,
            "{channel} has no sharded subscription"
        );
    }
    // Every stream gets the owner's event.
    let id = app.publish(&channel, r#"{"n":1}"#).await;
    for stream in [&mut by_bearer, &mut by_cookie, &mut by_ticket] {
        let event = stream.next_event().await.unwrap();
        assert_eq!(
            (event.id.as_deref(), data_n(&event)),
            (Some(id.as_str()), 1)
        );
    }
    // Logging out closes every stream of the session (swept about once a second); heartbeats
    // keep coming until then, so the bound is on the whole wait.
    let (status, body) = http(
        app.addr,
        "POST",
        "/auth/logout",
        &[("authorization", &bearer)],
        None,
    )
    .await;
    assert_eq!(status, 204, "{body}");
    for stream in [&mut by_bearer, &mut by_cookie, &mut by_ticket] {
        tokio::time::timeout(Duration::from_secs(3), async {
            while let Some(event) = stream.next().await {
                assert!(event.is_comment(), "{event:?}");
            }
        })
        .await
        .expect("a revoked session's stream closes within 3 s");
        assert!(stream.ended);
    }
    app.wait_subscribers(&channel, 0).await;
    // Swept clients leave like any other: the emptied channel is unsubscribed.
    if let Backend::Redis(server) = &backend {
        wait_numsub(server, &channel, 0).await;
    }
    if let Backend::Cluster(cluster) = &backend {
        assert!(
            crate::common::eventually(WAIT, || async { !cluster.has_shard_channel(&channel) })
                .await,
            "{channel} still has a sharded subscription"
        );
    }
    // The revoked token opens nothing and publishes nothing.
    assert_eq!(
        app.sse(path, &[("authorization", &bearer)]).await.status,
        401
    );
    assert_eq!(app.try_publish(&channel, "{}").await.0, 401);
}

/// "Revocation unknown" through the production verifier: while an instance cannot know whether
/// a token was revoked (its Redis gone for longer than the revocation feed's liveness deadline),
/// the events routes answer a valid token 503 with `Retry-After` (publish, subscribe to its
/// private channel, ticket), never 401; once Redis is back, 202 and 200 again. On memory,
/// revocation is always known: the same requests succeed.
async fn revocation_unknown_is_503(mut backend: Backend) {
    let app = TestApp::with_logins(&config(&backend)).await;
    let path = format!("/events/{}", app.alice);
    let bearer = format!("Bearer {}", app.token);
    let auth = [("authorization", bearer.as_str())];
    if !backend.kill_redis() {
        assert_eq!(app.services.auth.view_state(), ViewState::InSync);
        assert_eq!(app.try_publish(&app.alice, "{}").await.0, 202);
        app.sse(&path, &auth).await.opened().await;
        return;
    }
    let deadline = tokio::time::Instant::now() + WAIT;
    while app.services.auth.view_state() != ViewState::Stale {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the view never went stale"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (status, body) = app.try_publish(&app.alice, "{}").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("revocation"), "{body}");
    let refused = app.sse(&path, &auth).await;
    assert_eq!(refused.status, 503);
    assert_eq!(refused.header("retry-after"), Some("1"));
    let (status, _) = http(app.addr, "POST", "/events/ticket", &auth, None).await;
    assert_eq!(status, 503);
    // Not a guess either way: a garbage token is still 401.
    assert_eq!(
        app.sse(&path, &[("authorization", "Bearer nope")])
            .await
            .status,
        401
    );
    // One server comes back quickly (a whole cluster restarting is the failover tests' part).
    if let Some(server) = backend.server() {
        server.restart();
        app.publish_when_back(&app.alice, "{}").await;
        app.sse(&path, &auth).await.opened().await;
    }
}

backend_suite!(
    order_and_exactly_once,
    resume_replays_after_id,
    too_old_id_gets_reset,
    slow_consumer_is_cut,
    private_channel_rules,
    revocation_unknown_is_503
);
