//! Live events end to end: real SSE clients over TCP against a running server, both backends.

#![cfg(feature = "server")]

mod common;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use common::{
    Backend, services,
    sse::{Frame, Sse},
    static_tokens::StaticTokens,
};
use redkit::{Config, auth::ViewState, clock::ManualClock, events::Caller, http::Services};

const TOKEN: &str = "alice-token";
const BOB: &str = "bob-token";
const WAIT: Duration = Duration::from_secs(5);
/// How long a stream is watched for anything after its last expected event: three heartbeats
/// of the suites' 200 ms, so a duplicate queued behind a heartbeat is seen.
const QUIET: Duration = Duration::from_millis(700);

/// A redkit server on 127.0.0.1:0. Its events tokens are a static table (alice, bob) for the
/// suites whose subject is not auth, or real logins through the production verifier
/// (`auth::EventsBridge`) for those that test who may publish and read.
struct TestApp {
    addr: SocketAddr,
    services: Services,
    /// Alice's access token.
    token: String,
    /// Bob's access token.
    bob: String,
    /// Alice's private channel.
    alice: String,
    server: common::TestServer,
}

impl TestApp {
    fn start(config: &Config) -> Self {
        let services = services(config);
        let tokens = Arc::new(StaticTokens::new());
        let far = redkit_now() + 3600;
        tokens.insert(TOKEN, Caller::new("alice", "s-alice", far));
        tokens.insert(BOB, Caller::new("bob", "s-bob", far));
        services.events.set_auth(tokens);
        let server = common::TestServer::start(services.clone(), 1);
        Self {
            addr: server.addr,
            services,
            token: TOKEN.to_owned(),
            bob: BOB.to_owned(),
            alice: "user:alice".to_owned(),
            server,
        }
    }

    /// An app with the production auth: alice and bob registered and logged in through it.
    async fn with_logins(config: &Config) -> Self {
        let services = services(&common::with_test_secret(config.clone()));
        let server = common::TestServer::start(services.clone(), 1);
        let mut tokens = Vec::new();
        for name in ["alice", "bob"] {
            let body = format!(
                r#"{{"username":"{name}","email":"{name}@example.com","password":"correct horse"}}"#
            );
            let (status, reply) =
                http(server.addr, "POST", "/auth/register", &[], Some(&body)).await;
            assert_eq!(status, 201, "{reply}");
            let id = serde_json::from_str::<serde_json::Value>(&reply).unwrap()["id"]
                .as_i64()
                .unwrap();
            let body = format!(r#"{{"username":"{name}","password":"correct horse"}}"#);
            let (status, reply) = http(server.addr, "POST", "/auth/login", &[], Some(&body)).await;
            assert_eq!(status, 200, "{reply}");
            let token = serde_json::from_str::<serde_json::Value>(&reply).unwrap()["access_token"]
                .as_str()
                .unwrap()
                .to_owned();
            tokens.push((id, token));
        }
        let [(alice, token), (_, bob)] = <[_; 2]>::try_from(tokens).unwrap();
        Self {
            addr: server.addr,
            services,
            token,
            bob,
            alice: format!("user:{alice}"),
            server,
        }
    }

    /// `POST /events/{channel}` with the test token: (status, body).
    async fn try_publish(&self, channel: &str, body: &str) -> (u16, String) {
        http(
            self.addr,
            "POST",
            &format!("/events/{channel}"),
            &[("authorization", &format!("Bearer {}", self.token))],
            Some(body),
        )
        .await
    }

    async fn publish(&self, channel: &str, body: &str) -> String {
        let reply = self.try_publish(channel, body).await;
        assert_eq!(reply.0, 202, "{}", reply.1);
        published_id(&reply.1)
    }

    /// Publishes as soon as Redis answers again (503 until then); the event's id.
    async fn publish_when_back(&self, channel: &str, body: &str) -> String {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let (status, reply) = self.try_publish(channel, body).await;
            if status == 202 {
                return published_id(&reply);
            }
            assert_eq!(status, 503, "{reply}");
            assert!(
                tokio::time::Instant::now() < deadline,
                "publish never recovered"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn sse(&self, path: &str, headers: &[(&str, &str)]) -> Sse {
        Sse::open(self.addr, path, headers).await
    }

    async fn wait_subscribers(&self, channel: &str, n: usize) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let info = self.services.events.info(channel).await;
            if info.as_ref().is_ok_and(|i| i.subscribers == n) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "subscribers never reached {n}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

fn redkit_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A one-shot request (JSON when it has a body); answers status and body.
async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> (u16, String) {
    let mut headers = headers.to_vec();
    if body.is_some() {
        headers.push(("content-type", "application/json"));
    }
    let reply = common::http(addr, method, path, &headers, body.unwrap_or("").as_bytes()).await;
    (
        reply.status,
        String::from_utf8(reply.body.to_vec()).unwrap(),
    )
}

fn config(backend: &Backend) -> Config {
    let mut config = backend.config();
    // These suites publish hundreds of events from one address; the publish policy has its own test.
    config.rate_limit = redkit::ratelimit::RateLimitConfig::parse(
        &["default=off", "POST /events/{channel}=off"],
        &[] as &[&str],
    )
    .unwrap();
    config.events.heartbeat = Duration::from_millis(200);
    config
}

/// The ids and `n`s of `events`, for comparing whole streams at once.
fn ids_and_ns(events: &[Frame]) -> Vec<(String, u64)> {
    events
        .iter()
        .map(|e| (e.id.clone().unwrap_or_default(), data_n(e)))
        .collect()
}

/// `ids` numbered from `first`: what [`ids_and_ns`] of a burst published as `{"n":first..}` is.
fn numbered(ids: &[String], first: u64) -> Vec<(String, u64)> {
    ids.iter().cloned().zip(first..).collect()
}

fn data_n(event: &Frame) -> u64 {
    let value: serde_json::Value = serde_json::from_str(&event.data.join("\n")).unwrap();
    value["n"].as_u64().unwrap()
}

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
            common::eventually(WAIT, || async { cluster.has_shard_channel(&channel) }).await,
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
            common::eventually(WAIT, || async { !cluster.has_shard_channel(&channel) }).await,
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

/// Issue 16 (3): only the owner publishes into `user:{id}`: another user's token gets 403 and
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

/// Issue 16 (8): event data is capped (64 KiB of compact JSON by default): one byte more is a
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

/// Issue 16 (9): a resume replays at most `max_replay` events: a client further behind gets
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

/// Issue 16 (9): SSE connections are capped per address (429 `too-many-streams`) and in all
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

/// Issue 27 (5): a resume reads history in pages bounded by the replay cap. A client 6 MB
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
    order_and_exactly_once,
    resume_replays_after_id,
    too_old_id_gets_reset,
    slow_consumer_is_cut,
    private_channel_rules,
    revocation_unknown_is_503,
    publish_rules_and_injection,
    info_and_shutdown,
);

fn redis_count(server: &common::RedisServer, kind: &str) -> usize {
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

/// Waits until `channel`'s stream key has `n` Redis subscribers (instances, not clients); the
/// channels are sharded (`SSUBSCRIBE`), so `SHARDNUMSUB` counts them.
async fn wait_numsub(server: &common::RedisServer, channel: &str, n: u64) {
    let numsub = || {
        let reply: (String, u64) = ::redis::cmd("PUBSUB")
            .arg("SHARDNUMSUB")
            .arg(format!("redkit:events:{channel}"))
            .query(&mut server.conn())
            .unwrap();
        reply.1
    };
    assert!(
        common::eventually(WAIT, || async { numsub() == n }).await,
        "{channel} never had {n} subscribers (now {})",
        numsub()
    );
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
    server: &common::RedisServer,
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
fn kill_subscribers(server: &common::RedisServer) {
    let killed: u64 = ::redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .query(&mut server.conn())
        .unwrap();
    assert_eq!(killed, 2, "the events and revocation subscribers");
}

/// Issue 27 (3): after its subscription is lost, an instance catches its open streams up from
/// history, in order and exactly once (events it never heard live included); when more was
/// missed than a client's queue holds, the stream gets `event: reset` instead, then live events.
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
    // 20 missed: more than the client's queue of 16.
    append_unheard(server, "missed", 11..31);
    kill_subscribers(server);
    let reset = client.next_event().await.unwrap();
    assert_eq!(reset.event.as_deref(), Some("reset"), "{reset:?}");
    client.assert_quiet(QUIET).await;
    let live = app.publish("missed", r#"{"n":31}"#).await;
    let events = client.events_through(&live, QUIET).await;
    assert_eq!(ids_and_ns(&events), numbered(&[live], 31));
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

/// The id in a 202 publish answer.
fn published_id(reply: &str) -> String {
    let json: serde_json::Value = serde_json::from_str(reply).unwrap();
    json["id"].as_str().unwrap().to_owned()
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
