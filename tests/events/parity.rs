//! What single-channel streams promise, held on multi-channel ones too (and the other way
//! round): token expiry of private streams, fleet-wide presence frames, heartbeats, and the
//! per-address and total stream caps; on memory, one Redis and a cluster.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use redkit::clock::ManualClock;

use super::multi::{App, WAIT, assert_quiet, config, counts, multi_path, next};
use crate::common::{Backend, sse::Sse};

/// The heartbeat comment every stream sends (`events.heartbeat` apart; 200 ms here).
const HEARTBEAT: &str = ": keep-alive\n\n";

/// Logs `name` in again (a token issued at the clock's time now); answers the access token.
async fn login(app: &App, name: &str) -> String {
    let body = serde_json::json!({"username": name, "password": "correct horse"});
    let reply = crate::common::http(
        app.addr,
        "POST",
        "/auth/login",
        &[("content-type", "application/json")],
        body.to_string().as_bytes(),
    )
    .await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    reply.json()["access_token"].as_str().unwrap().to_owned()
}

/// Every frame but heartbeats until the server ends `sse`; panics if it is still open after
/// `within`.
async fn frames_until_end(sse: &mut Sse, within: Duration) -> Vec<String> {
    let deadline = Instant::now() + within;
    let mut frames = Vec::new();
    while let Some(block) = sse
        .next_block(deadline.saturating_duration_since(Instant::now()))
        .await
    {
        if block != HEARTBEAT {
            frames.push(block);
        }
    }
    assert!(sse.ended, "the stream is still open after {within:?}");
    frames
}

/// The next frame that is not a heartbeat, as sent.
async fn next_frame(sse: &mut Sse) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let block = sse
            .next_block(deadline.saturating_duration_since(Instant::now()))
            .await
            .expect("a frame in time");
        if block != HEARTBEAT {
            return block;
        }
    }
}

/// A private multi-channel stream ends when its token expires exactly as a private single-channel
/// stream does: within a sweep (about a second), with no frame of its own and no event published
/// after the expiry, and it leaves every channel it followed. Public streams (multi or single, with a token or without) are not
/// affected: they stay open and get the next event. Time is moved by a test clock that auth
/// (tokens) and events (sweeps) share, past the access token's 30 minutes.
async fn private_streams_end_when_their_token_expires(backend: Backend) {
    let clock = Arc::new(ManualClock::starting_now());
    let mut config = config(&backend);
    config.auth.clock = clock.clone();
    config.events.clock = clock.clone();
    let app = App::start(&config);
    let (alice, token) = app.user("alice").await;
    let bearer = format!("Bearer {token}");
    let auth = [("authorization", bearer.as_str())];
    let private = format!("user:{alice}");
    let mut single = app.open(&format!("/events/{private}"), &auth).await;
    let mut multi = app.open(&multi_path(&[&private, "news"]), &auth).await;
    next(&mut multi).await;
    let mut public = app.open(&multi_path(&["news", "sports"]), &[]).await;
    next(&mut public).await;
    let mut public_with_token = app.open(&multi_path(&["news", "sports"]), &auth).await;
    next(&mut public_with_token).await;
    let mut single_public = app.open("/events/news", &auth).await;
    counts(&app, "news", 4, WAIT).await;
    // Both private streams are live.
    let id = app.publish(&token, &private, 1).await;
    assert_eq!(
        next_frame(&mut single).await,
        format!("id: {id}\nevent: message\ndata: {{\"n\":1}}\n\n")
    );
    let event = next(&mut multi).await;
    assert_eq!(event.data.unwrap()["id"], id.as_str());

    clock.advance(Duration::from_secs(31 * 60));
    // An event published past the expiry (before or after the sweep) reaches neither.
    let fresh = login(&app, "alice").await;
    app.publish(&fresh, &private, 2).await;
    let within = Duration::from_secs(3);
    let single_tail = frames_until_end(&mut single, within).await;
    let multi_tail = frames_until_end(&mut multi, within).await;
    assert_eq!(single_tail, Vec::<String>::new(), "the single stream's end");
    assert_eq!(
        multi_tail, single_tail,
        "the multi-channel stream ends alike"
    );
    // The multi-channel stream left "news" too.
    counts(&app, "news", 3, WAIT).await;
    for sse in [&mut public, &mut public_with_token] {
        assert_quiet(sse).await;
        assert!(!sse.ended, "a public stream ended with the token");
    }
    let id = app.publish(&fresh, "news", 3).await;
    for sse in [&mut public, &mut public_with_token] {
        let event = next(sse).await;
        let data = event.data.expect("the event");
        assert_eq!(
            (data["channel"].as_str(), data["id"].as_str()),
            (Some("news"), Some(id.as_str()))
        );
    }
    assert_eq!(
        next_frame(&mut single_public).await,
        format!("id: {id}\nevent: message\ndata: {{\"n\":3}}\n\n")
    );
    app.server.stop().await;
}

/// `?presence=true` on a single-channel stream (`GET /events/{channel}`) gets the `join` and
/// `leave` frames of authenticated subscribers of either instance (data `{"user":"<id>"}`), as a
/// multi-channel stream does (with its channel named); a stream without it gets none; an
/// anonymous subscriber is not announced; a user's second stream neither joins nor leaves.
async fn single_stream_presence_is_fleet_wide(backend: Backend) {
    let config = config(&backend);
    let a = App::start(&config);
    let second = backend.is_redis().then(|| App::start(&config));
    let b = second.as_ref().unwrap_or(&a);
    let (alice, token) = a.user("alice").await;
    let room = "lobby";
    let mut watcher = a.open(&format!("/events/{room}?presence=true"), &[]).await;
    let mut plain = a.open(&format!("/events/{room}"), &[]).await;
    let bearer = format!("Bearer {token}");
    let auth = [("authorization", bearer.as_str())];
    let alice_single = b.open(&format!("/events/{room}"), &auth).await;
    let anonymous = b.open(&format!("/events/{room}"), &[]).await;
    let alice_multi = b.open(&multi_path(&[room, "elsewhere"]), &auth).await;
    let joined = Duration::from_secs(2);
    counts(&a, room, 5, joined).await;
    counts(b, room, 5, joined).await;
    assert_eq!(
        next_frame(&mut watcher).await,
        format!("event: join\ndata: {{\"user\":\"{alice}\"}}\n\n")
    );
    drop((anonymous, alice_multi));
    counts(&a, room, 3, joined).await;
    counts(b, room, 3, joined).await;
    assert_quiet(&mut watcher).await;
    drop(alice_single);
    assert_eq!(
        next_frame(&mut watcher).await,
        format!("event: leave\ndata: {{\"user\":\"{alice}\"}}\n\n")
    );
    assert_quiet(&mut plain).await;
    assert!(!plain.ended);
    // The flag is checked as on `GET /events`.
    let reply = crate::common::http(
        a.addr,
        "GET",
        &format!("/events/{room}?presence=maybe"),
        &[],
        b"",
    )
    .await;
    let problem = reply.problem(400);
    assert!(
        problem["type"]
            .as_str()
            .unwrap()
            .ends_with("invalid-parameter"),
        "{problem}"
    );
    drop((watcher, plain));
    if let Some(b) = second {
        b.server.stop().await;
    }
    a.server.stop().await;
}

/// How many frames `sse` sends within `window`, each a heartbeat; the stream stays open.
async fn heartbeats(sse: &mut Sse, window: Duration) -> usize {
    let deadline = Instant::now() + window;
    let mut n = 0;
    while let Some(block) = sse
        .next_block(deadline.saturating_duration_since(Instant::now()))
        .await
    {
        assert_eq!(block, HEARTBEAT);
        n += 1;
    }
    assert!(!sse.ended, "the stream ended");
    n
}

/// Heartbeats on an idle multi-channel stream: the same comment as on a single-channel stream,
/// at the same pace (one per interval, not one per channel).
async fn multi_channel_streams_get_heartbeats(backend: Backend) {
    let config = config(&backend);
    let app = App::start(&config);
    let mut single = app.open("/events/hb-0", &[]).await;
    let mut multi = app
        .open(&multi_path(&["hb-1", "hb-2", "hb-3", "hb-4"]), &[])
        .await;
    let head = next(&mut multi).await;
    assert!(head.data.is_none() && head.id.is_some(), "{head:?}");
    let window = Duration::from_millis(1100);
    let (one, many) = tokio::join!(
        heartbeats(&mut single, window),
        heartbeats(&mut multi, window)
    );
    // 200 ms apart: 5 in 1.1 s, give or take one at either edge.
    assert!(
        (4..=6).contains(&one),
        "{one} heartbeats on a single stream"
    );
    assert!(
        (4..=6).contains(&many) && many.abs_diff(one) <= 1,
        "{many} heartbeats on a 4-channel stream, {one} on a single one"
    );
    app.server.stop().await;
}

/// Multi-channel streams count against the same caps as single-channel ones: per address
/// (429 `too-many-streams`, whichever kind holds the places) and in all (503 with
/// `Retry-After`); a closed multi-channel stream frees its place, and a refused one takes none.
async fn multi_channel_streams_are_capped(backend: Backend) {
    let mut config = config(&backend);
    config.events.max_connections_per_ip = 2;
    let app = App::start(&config);
    let first = app.open(&multi_path(&["cap-a", "cap-b"]), &[]).await;
    let _second = app.open("/events/cap-c", &[]).await;
    for path in [multi_path(&["cap-a", "cap-d"]), "/events/cap-d".to_owned()] {
        let refused = Sse::open(app.addr, &path, &[]).await;
        assert_eq!(refused.status, 429, "{path}");
        assert_eq!(
            refused.header("content-type"),
            Some("application/problem+json")
        );
        assert!(
            refused.body.contains("too-many-streams"),
            "{}",
            refused.body
        );
    }
    drop(first);
    counts(&app, "cap-b", 0, WAIT).await;
    let deadline = Instant::now() + WAIT;
    let again = loop {
        let again = Sse::open(app.addr, &multi_path(&["cap-a", "cap-e"]), &[]).await;
        if again.status == 200 {
            break again;
        }
        assert_eq!(again.status, 429, "{}", again.body);
        assert!(
            Instant::now() < deadline,
            "a closed stream never freed its place"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    drop(again);
    counts(&app, "cap-e", 0, WAIT).await;
    // Refused lists (a bad name, too many names, another user's channel) hold no place.
    let many: Vec<String> = (0..65).map(|i| format!("c{i}")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    for _ in 0..3 {
        for (path, status) in [
            (multi_path(&["ok", "bad%20name"]), 400),
            (multi_path(&many), 400),
            (multi_path(&["ok", "user:someone"]), 401),
        ] {
            let reply = crate::common::http(app.addr, "GET", &path, &[], b"").await;
            reply.problem(status);
        }
    }
    let _third = app.open(&multi_path(&["cap-f", "cap-g"]), &[]).await;
    app.server.stop().await;

    let mut config = super::multi::config(&backend);
    config.events.max_connections = 1;
    let app = App::start(&config);
    let _only = app.open("/events/cap-a", &[]).await;
    let full = Sse::open(app.addr, &multi_path(&["cap-a", "cap-b"]), &[]).await;
    assert_eq!(full.status, 503, "{}", full.body);
    assert_eq!(full.header("retry-after"), Some("1"));
    app.server.stop().await;
}

backend_suite!(
    private_streams_end_when_their_token_expires,
    single_stream_presence_is_fleet_wide,
    multi_channel_streams_get_heartbeats,
    multi_channel_streams_are_capped,
);
