//! Live events on one stream for many channels (`GET /events?channel=..`): what each frame says,
//! exact resume across channels with the composite `Last-Event-ID`, refusals, and fleet-wide
//! presence; on memory, one Redis and a cluster (channels on different shards).

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    time::{Duration, Instant},
};

use crate::common::{Backend, TestServer, services, sse::Sse};
use redkit::Config;
use serde_json::Value;

/// Bound on waiting for one expected frame.
pub(super) const WAIT: Duration = Duration::from_secs(10);
/// How long a stream must stay silent (heartbeats aside) after its last expected event.
pub(super) const QUIET: Duration = Duration::from_millis(600);

/// One parsed SSE block.
#[derive(Debug, Default)]
pub(super) struct Block {
    pub(super) id: Option<String>,
    pub(super) event: Option<String>,
    pub(super) data: Option<Value>,
}

pub(super) fn parse(block: &str) -> Block {
    let mut out = Block::default();
    let mut data = Vec::new();
    for line in block.lines() {
        if let Some(v) = line.strip_prefix("id: ") {
            out.id = Some(v.to_owned());
        } else if let Some(v) = line.strip_prefix("event: ") {
            out.event = Some(v.to_owned());
        } else if let Some(v) = line.strip_prefix("data: ") {
            data.push(v);
        }
    }
    if !data.is_empty() {
        out.data = Some(serde_json::from_str(&data.join("\n")).expect("JSON data"));
    }
    out
}

/// The test's configuration: no rate limits, quick heartbeats.
pub(super) fn config(backend: &Backend) -> Config {
    let mut config = crate::common::with_test_secret(backend.config());
    config.rate_limit = redkit::ratelimit::RateLimitConfig::parse(
        &["default=off", "POST /events/{channel}=off"],
        &[] as &[&str],
    )
    .unwrap();
    config.events.heartbeat = Duration::from_millis(200);
    config
}

/// A served instance and a publisher's token (a user registered through the production auth).
pub(super) struct App {
    pub(super) addr: SocketAddr,
    pub(super) server: TestServer,
}

impl App {
    pub(super) fn start(config: &Config) -> Self {
        let server = TestServer::start(services(config), 1);
        Self {
            addr: server.addr,
            server,
        }
    }

    /// Registers and logs in `name` through the API; answers (user id, access token).
    pub(super) async fn user(&self, name: &str) -> (String, String) {
        let body = serde_json::json!({
            "username": name, "email": format!("{name}@example.com"), "password": "correct horse",
        });
        let json = [("content-type", "application/json")];
        let reply = crate::common::http(
            self.addr,
            "POST",
            "/auth/register",
            &json,
            body.to_string().as_bytes(),
        )
        .await;
        assert_eq!(reply.status, 201, "{:?}", reply.body);
        let id = reply.json()["id"].to_string();
        let body = serde_json::json!({"username": name, "password": "correct horse"});
        let reply = crate::common::http(
            self.addr,
            "POST",
            "/auth/login",
            &json,
            body.to_string().as_bytes(),
        )
        .await;
        assert_eq!(reply.status, 200, "{:?}", reply.body);
        (
            id,
            reply.json()["access_token"].as_str().unwrap().to_owned(),
        )
    }

    /// Publishes `{"n": n}` on `channel`; answers the event's stream id.
    pub(super) async fn publish(&self, token: &str, channel: &str, n: u64) -> String {
        let auth = format!("Bearer {token}");
        let headers = [
            ("content-type", "application/json"),
            ("authorization", auth.as_str()),
        ];
        let body = format!(r#"{{"n":{n}}}"#);
        let path = format!("/events/{channel}");
        let reply = crate::common::http(self.addr, "POST", &path, &headers, body.as_bytes()).await;
        assert_eq!(reply.status, 202, "{:?}", reply.body);
        reply.json()["id"].as_str().unwrap().to_owned()
    }

    /// `GET /events/{channel}/info`'s subscriber count.
    pub(super) async fn subscribers(&self, channel: &str) -> u64 {
        let path = format!("/events/{channel}/info");
        let reply = crate::common::http(self.addr, "GET", &path, &[], b"").await;
        assert_eq!(reply.status, 200, "{:?}", reply.body);
        reply.json()["subscribers"].as_u64().unwrap()
    }

    /// Opens a stream and checks it answered 200 with the `retry:` hint first.
    pub(super) async fn open(&self, path: &str, headers: &[(&str, &str)]) -> Sse {
        let mut sse = Sse::open(self.addr, path, headers).await;
        assert_eq!(sse.status, 200, "{path}");
        assert_eq!(sse.header("content-type"), Some("text/event-stream"));
        let first = sse.next_block(WAIT).await.expect("the retry hint");
        assert!(first.starts_with("retry: "), "{first:?}");
        sse
    }
}

/// `GET /events` with a `channel=` per name.
pub(super) fn multi_path(channels: &[&str]) -> String {
    let query: Vec<String> = channels.iter().map(|c| format!("channel={c}")).collect();
    format!("/events?{}", query.join("&"))
}

/// `n` channel names; on a cluster, each on another primary (their stream keys' slots).
fn channels(backend: &Backend, config: &Config, tag: &str, n: usize) -> Vec<String> {
    let Backend::Cluster(cluster) = backend else {
        return (0..n).map(|i| format!("{tag}-{i}")).collect();
    };
    let mut picked: Vec<(String, usize)> = Vec::new();
    for i in 0.. {
        let name = format!("{tag}-{i}");
        let primary = cluster.primary_for(&format!("{}events:{name}", config.events.key_prefix));
        if picked.iter().all(|(_, p)| *p != primary) || picked.len() >= cluster.primaries().len() {
            picked.push((name, primary));
        }
        if picked.len() == n {
            break;
        }
    }
    picked.into_iter().map(|(name, _)| name).collect()
}

/// The next block that is not a heartbeat; panics after [`WAIT`].
pub(super) async fn next(sse: &mut Sse) -> Block {
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let block = sse.next_block(left).await.expect("a frame in time");
        if !block.starts_with(':') {
            return parse(&block);
        }
    }
}

/// The next `count` events, by channel: the `n`s in arrival order. Each event's data names its
/// channel and its own stream id, and its `id:` is the stream's position. Answers the last `id:`.
pub(super) async fn events(sse: &mut Sse, count: usize) -> (BTreeMap<String, Vec<u64>>, String) {
    let mut by_channel: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut last = String::new();
    while by_channel.values().map(Vec::len).sum::<usize>() < count {
        let block = next(sse).await;
        let Some(data) = block.data else {
            // The id block that states the positions (no data).
            last = block.id.expect("an id-only block");
            continue;
        };
        assert_eq!(block.event.as_deref(), Some("message"), "{data}");
        let id = block.id.expect("every event carries the stream's position");
        assert!(id.starts_with('m'), "{id}");
        assert!(
            data["id"].as_str().is_some_and(|i| i.contains('-')),
            "{data}"
        );
        let channel = data["channel"].as_str().expect("the channel").to_owned();
        by_channel
            .entry(channel)
            .or_default()
            .push(data["data"]["n"].as_u64().unwrap());
        last = id;
    }
    (by_channel, last)
}

/// Asserts that for [`QUIET`] nothing but heartbeats (and id-only blocks) arrives.
pub(super) async fn assert_quiet(sse: &mut Sse) {
    let deadline = Instant::now() + QUIET;
    while let Some(block) = sse
        .next_block(deadline.saturating_duration_since(Instant::now()))
        .await
    {
        let parsed = parse(&block);
        assert!(
            parsed.data.is_none(),
            "an event after the last expected: {block:?}"
        );
    }
}

/// A 3-channel stream (a repeat in the list collapses) gets each channel's event once, named,
/// and nothing of a 4th channel published meanwhile.
async fn three_channels_on_one_stream(backend: Backend) {
    let config = config(&backend);
    let app = App::start(&config);
    let (_, token) = app.user("publisher").await;
    let names = channels(&backend, &config, "three", 4);
    let listed = [&names[0], &names[1], &names[2], &names[0]].map(String::as_str);
    let mut sse = app.open(&multi_path(&listed), &[]).await;
    // The positions block comes first: the stream is live.
    let head = next(&mut sse).await;
    assert!(head.data.is_none() && head.id.is_some(), "{head:?}");
    for (n, channel) in names.iter().enumerate().rev() {
        app.publish(&token, channel, n as u64).await;
    }
    let (got, _) = events(&mut sse, 3).await;
    let want: BTreeMap<String, Vec<u64>> = names[..3]
        .iter()
        .enumerate()
        .map(|(n, c)| (c.clone(), vec![n as u64]))
        .collect();
    assert_eq!(got, want);
    assert_quiet(&mut sse).await;
    app.server.stop().await;
}

/// A stream that drops and resumes with its last `id:` as `Last-Event-ID` gets exactly the 15
/// events published on its 3 channels while away (5 each: no duplicate, no gap, in order), then
/// live ones; on a cluster its channels sit on 3 different primaries.
async fn resume_replays_every_channel_exactly_once(backend: Backend) {
    let config = config(&backend);
    let app = App::start(&config);
    let (_, token) = app.user("publisher").await;
    let names = channels(&backend, &config, "resume", 3);
    let listed: Vec<&str> = names.iter().map(String::as_str).collect();
    let path = multi_path(&listed);
    let mut sse = app.open(&path, &[]).await;
    next(&mut sse).await;
    // One event on the first channel only: the others resume from their start position.
    app.publish(&token, &names[0], 0).await;
    let (_, last_id) = events(&mut sse, 1).await;
    drop(sse);
    for n in 1..=5 {
        for channel in &names {
            app.publish(&token, channel, n).await;
        }
    }
    let mut resumed = app.open(&path, &[("last-event-id", &last_id)]).await;
    let (got, after) = events(&mut resumed, 15).await;
    let want: BTreeMap<String, Vec<u64>> = names
        .iter()
        .map(|c| (c.clone(), (1..=5).collect()))
        .collect();
    assert_eq!(got, want);
    // The stream goes on live, from where the replay ended.
    let head = next(&mut resumed).await;
    assert_eq!(
        head.id.as_deref(),
        Some(after.as_str()),
        "the positions after the replay"
    );
    app.publish(&token, &names[1], 6).await;
    let (live, last_id) = events(&mut resumed, 1).await;
    assert_eq!(live, BTreeMap::from([(names[1].clone(), vec![6])]));
    assert_quiet(&mut resumed).await;
    drop(resumed);
    // Resumed again with nothing missed: nothing is replayed.
    let mut again = app.open(&path, &[("last-event-id", &last_id)]).await;
    let head = next(&mut again).await;
    assert!(head.data.is_none(), "{head:?}");
    assert_quiet(&mut again).await;
    if let Backend::Cluster(cluster) = &backend {
        let primaries: std::collections::BTreeSet<usize> = names
            .iter()
            .map(|c| cluster.primary_for(&format!("{}events:{c}", config.events.key_prefix)))
            .collect();
        assert_eq!(primaries.len(), 3, "the channels sit on different shards");
    }
    app.server.stop().await;
}

/// A channel further behind than the replay allows (more than `max_replay` events) gets
/// `event: reset` naming it, while the others replay in full.
async fn too_far_behind_is_reset_per_channel(backend: Backend) {
    let mut config = config(&backend);
    config.events.max_replay = 4;
    let app = App::start(&config);
    let (_, token) = app.user("publisher").await;
    let names = channels(&backend, &config, "behind", 2);
    let listed: Vec<&str> = names.iter().map(String::as_str).collect();
    let path = multi_path(&listed);
    let mut sse = app.open(&path, &[]).await;
    let head = next(&mut sse).await;
    let start = head.id.unwrap();
    drop(sse);
    app.publish(&token, &names[0], 1).await;
    for n in 1..=5 {
        app.publish(&token, &names[1], n).await;
    }
    let mut resumed = app.open(&path, &[("last-event-id", &start)]).await;
    let mut frames = Vec::new();
    for _ in 0..3 {
        let block = next(&mut resumed).await;
        frames.push((block.event.clone(), block.data.clone()));
    }
    let reset = frames
        .iter()
        .find(|(event, _)| event.as_deref() == Some("reset"))
        .expect("a reset");
    assert_eq!(reset.1.as_ref().unwrap()["channel"], names[1].as_str());
    let replayed: Vec<&Value> = frames
        .iter()
        .filter(|(e, _)| e.as_deref() == Some("message"))
        .map(|(_, d)| d.as_ref().unwrap())
        .collect();
    assert_eq!(replayed.len(), 1, "{frames:?}");
    assert_eq!(replayed[0]["channel"], names[0].as_str());
    assert_eq!(replayed[0]["data"]["n"], 1);
    app.server.stop().await;
}

/// 65 distinct channels, none, a bad name or a bad flag are 400 problems; 64 (with repeats on
/// top) are a stream; a `Last-Event-ID` this server did not write, or longer than 2048 characters, is 400.
async fn channel_lists_and_ids_are_checked(backend: Backend) {
    let config = config(&backend);
    let app = App::start(&config);
    let many: Vec<String> = (0..65).map(|i| format!("c{i}")).collect();
    let all: Vec<&str> = many.iter().map(String::as_str).collect();
    let problem = |reply: crate::common::Reply, kind: &str| {
        let body = reply.problem(400);
        assert!(body["type"].as_str().unwrap().ends_with(kind), "{body}");
    };
    for (path, kind) in [
        (multi_path(&all), "invalid-channel-list"),
        ("/events".to_owned(), "invalid-channel-list"),
        (multi_path(&["ok", "bad%20channel"]), "invalid-channel"),
        (
            "/events?channel=ok&presence=maybe".to_owned(),
            "invalid-parameter",
        ),
    ] {
        problem(
            crate::common::http(app.addr, "GET", &path, &[], b"").await,
            kind,
        );
    }
    let mut repeated = all[..54].to_vec();
    repeated.extend_from_slice(&all[..10]);
    let mut sse = app.open(&multi_path(&repeated), &[]).await;
    let head = next(&mut sse).await;
    assert_eq!(
        head.id.unwrap().split(',').count(),
        54,
        "one position per distinct channel"
    );
    let mut over = all[..64].to_vec();
    over.push(all[0]);
    problem(
        crate::common::http(app.addr, "GET", &multi_path(&over), &[], b"").await,
        "invalid-channel-list",
    );
    drop(sse);
    let path = multi_path(&["a", "b"]);
    let overlong = "m".repeat(2049);
    // An id this server did not write is a position nowhere, as on a single-channel stream:
    // every channel is reset, and the stream goes on.
    for bad in [
        "1700000000000-0",
        "m1:2",
        "m1:2:3:4",
        "null",
        overlong.as_str(),
    ] {
        let mut sse = app.open(&path, &[("last-event-id", bad)]).await;
        let mut reset = Vec::new();
        while reset.len() < 2 {
            let block = next(&mut sse).await;
            if block.event.as_deref() == Some("reset") {
                reset.push(block.data.unwrap()["channel"].as_str().unwrap().to_owned());
            }
        }
        reset.sort();
        assert_eq!(reset, ["a", "b"], "{bad}");
    }
    app.server.stop().await;
}

/// A list naming another user's private channel is refused whole: 403 with a token (the
/// production verifier, real logins), 401 without; the owner's own list streams.
async fn private_channel_of_another_user_refuses_the_list(backend: Backend) {
    let config = config(&backend);
    let app = App::start(&config);
    let (alice, alice_token) = app.user("alice").await;
    let (bob, bob_token) = app.user("bob").await;
    let path = multi_path(&["news", &format!("user:{bob}")]);
    let as_alice = format!("Bearer {alice_token}");
    let sse = Sse::open(app.addr, &path, &[("authorization", &as_alice)]).await;
    assert_eq!(sse.status, 403);
    let sse = Sse::open(app.addr, &path, &[]).await;
    assert_eq!(sse.status, 401);
    let both = multi_path(&[&format!("user:{alice}"), &format!("user:{bob}")]);
    let as_bob = format!("Bearer {bob_token}");
    assert_eq!(
        Sse::open(app.addr, &both, &[("authorization", &as_bob)])
            .await
            .status,
        403
    );
    let mut own = app.open(&path, &[("authorization", &as_bob)]).await;
    next(&mut own).await;
    app.publish(&bob_token, &format!("user:{bob}"), 7).await;
    let (got, _) = events(&mut own, 1).await;
    assert_eq!(got, BTreeMap::from([(format!("user:{bob}"), vec![7])]));
    app.server.stop().await;
}

/// Waits until `app` counts `n` subscribers of `channel`; answers how long that took.
pub(super) async fn counts(app: &App, channel: &str, n: u64, within: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let seen = app.subscribers(channel).await;
        if seen == n {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "{seen} subscribers, not {n}, after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Presence across two instances (one on memory): 3 + 2 subscribers count 5 on both within 2 s,
/// 3 within 2 s of 2 leaving; a `?presence=true` stream gets `join`/`leave` of the
/// authenticated subscribers of either instance, with their user ids.
async fn presence_is_fleet_wide(backend: Backend) {
    let config = config(&backend);
    let a = App::start(&config);
    let second = backend.is_redis().then(|| App::start(&config));
    let b = second.as_ref().unwrap_or(&a);
    let (alice, alice_token) = a.user("alice").await;
    let room = "room";
    // On A: a presence watcher (a multi-channel stream) and two anonymous subscribers.
    let mut watcher = a
        .open(
            &format!("/events?channel={room}&channel=other&presence=true"),
            &[],
        )
        .await;
    next(&mut watcher).await;
    let mut on_a = vec![
        a.open(&format!("/events/{room}"), &[]).await,
        a.open(&multi_path(&[room]), &[]).await,
    ];
    // On B: alice twice (one join, one leave), one anonymous.
    let as_alice = format!("Bearer {alice_token}");
    let mut on_b = vec![
        b.open(&format!("/events/{room}"), &[("authorization", &as_alice)])
            .await,
        b.open(
            &multi_path(&[room, "elsewhere"]),
            &[("authorization", &as_alice)],
        )
        .await,
    ];
    let joined = Duration::from_secs(2);
    counts(&a, room, 5, joined).await;
    counts(b, room, 5, joined).await;
    let join = next(&mut watcher).await;
    assert_eq!(join.event.as_deref(), Some("join"));
    assert_eq!(
        join.data.unwrap(),
        serde_json::json!({"channel": room, "user": alice})
    );
    // Two leave: one of A's, and one of alice's two streams (she is still there: no leave).
    on_a.pop();
    on_b.pop();
    counts(&a, room, 3, joined).await;
    counts(b, room, 3, joined).await;
    assert_quiet(&mut watcher).await;
    // Her last stream goes: a leave.
    on_b.pop();
    let leave = next(&mut watcher).await;
    assert_eq!(leave.event.as_deref(), Some("leave"));
    assert_eq!(
        leave.data.unwrap(),
        serde_json::json!({"channel": room, "user": alice})
    );
    counts(&a, room, 2, joined).await;
    drop((on_a, watcher));
    if let Some(b) = second {
        b.server.stop().await;
    }
    a.server.stop().await;
}

/// A multi-channel client that stops reading is cut as a single-channel one is (`event:
/// overflow`, then the end), and from every channel it followed, not only the one that filled
/// its queue.
async fn slow_consumer_is_cut_from_every_channel(backend: Backend) {
    let mut config = config(&backend);
    config.events.queue_size = 4;
    config.events.max_event_bytes = 1024 * 1024;
    config.body_limit = 1024 * 1024;
    let app = App::start(&config);
    let (_, token) = app.user("publisher").await;
    let mut slow = app.open(&multi_path(&["big", "quiet"]), &[]).await;
    next(&mut slow).await;
    counts(&app, "quiet", 1, WAIT).await;
    let blob = "x".repeat(256 * 1024);
    let auth = format!("Bearer {token}");
    let headers = [
        ("content-type", "application/json"),
        ("authorization", auth.as_str()),
    ];
    let total = 40;
    for n in 0..total {
        let body = format!(r#"{{"n":{n},"blob":"{blob}"}}"#);
        let reply =
            crate::common::http(app.addr, "POST", "/events/big", &headers, body.as_bytes()).await;
        assert_eq!(reply.status, 202);
    }
    // Cut from "quiet" too, though nothing was published there.
    counts(&app, "quiet", 0, WAIT).await;
    let mut messages = 0;
    let last = loop {
        let block = next(&mut slow).await;
        match block.event.as_deref() {
            Some("message") => messages += 1,
            _ => break block,
        }
    };
    assert_eq!(last.event.as_deref(), Some("overflow"));
    assert!(messages < total, "the slow client got all {messages}");
    assert_eq!(
        slow.next_block(WAIT).await,
        None,
        "the stream ends after overflow"
    );
    app.server.stop().await;
}

/// An instance that stops renewing its entry stops counting: a peer's entry (as an instance
/// writes it) counts until its registry score lapses (at most 15 s after its last renewal; here
/// written 14 s ago), then not. Memory has no peers: its count is its own.
async fn a_dead_instance_stops_counting(backend: Backend) {
    let config = config(&backend);
    let app = App::start(&config);
    let sse = app.open("/events/lonely", &[]).await;
    counts(&app, "lonely", 1, Duration::from_secs(2)).await;
    let prefix = &config.events.key_prefix;
    let registry = format!("{prefix}events-presence");
    let entry = format!("{prefix}events-presence:{{dead-peer}}");
    let write = |conn: &mut dyn ::redis::ConnectionLike| {
        let now: (u64, u64) = ::redis::cmd("TIME").query(conn).unwrap();
        let now_ms = now.0 * 1000 + now.1 / 1000;
        // Renewed 14 s ago: its entry lapses 1 s from now.
        ::redis::cmd("ZADD")
            .arg(&registry)
            .arg(now_ms + 1000)
            .arg("dead-peer")
            .exec(conn)
            .unwrap();
        ::redis::cmd("HSET")
            .arg(&entry)
            .arg("lonely")
            .arg(7)
            .exec(conn)
            .unwrap();
        ::redis::cmd("PEXPIRE")
            .arg(&entry)
            .arg(1000)
            .exec(conn)
            .unwrap();
    };
    match &backend {
        Backend::Memory => {}
        Backend::Redis(server) => write(&mut server.conn()),
        Backend::Cluster(cluster) => write(&mut cluster.conn()),
    }
    if backend.is_redis() {
        assert_eq!(
            app.subscribers("lonely").await,
            8,
            "the peer's 7 count while its entry lives"
        );
    }
    let lapsed = counts(&app, "lonely", 1, Duration::from_secs(3)).await;
    assert!(lapsed <= Duration::from_secs(3), "{lapsed:?}");
    drop(sse);
    counts(&app, "lonely", 0, Duration::from_secs(2)).await;
    app.server.stop().await;
}

backend_suite!(
    slow_consumer_is_cut_from_every_channel,
    a_dead_instance_stops_counting,
    three_channels_on_one_stream,
    resume_replays_every_channel_exactly_once,
    too_far_behind_is_reset_per_channel,
    channel_lists_and_ids_are_checked,
    private_channel_of_another_user_refuses_the_list,
    presence_is_fleet_wide,
);
