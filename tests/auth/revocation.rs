//! Revocation where a fleet is hardest: one instance cut off from Redis while another revokes,
//! and a primary killed under load. A revoked token is never honoured; a valid one is never
//! answered 401 (503 with `Retry-After` while it cannot be checked).

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use redkit::{auth::ViewState, config::RedisSettings};

use crate::common::{
    Backend, RedisServer, Reply, TestServer, proxy::Proxy, sse::Sse, with_test_secret,
};

/// Bound on a single request: a hang is a failure.
const REQUEST_BOUND: Duration = Duration::from_secs(5);

async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Reply {
    tokio::time::timeout(
        REQUEST_BOUND,
        crate::common::http(addr, method, path, headers, body.as_bytes()),
    )
    .await
    .unwrap_or_else(|_| panic!("{method} {path} did not answer within {REQUEST_BOUND:?}"))
}

fn json() -> (&'static str, &'static str) {
    ("content-type", "application/json")
}

/// Registers `username` through `addr` (password `correct horse`); answers its user id.
async fn register(addr: SocketAddr, username: &str) -> i64 {
    let body = format!(
        r#"{{"username":"{username}","email":"{username}@example.com","password":"correct horse"}}"#
    );
    let reply = request(addr, "POST", "/auth/register", &[json()], &body).await;
    assert_eq!(reply.status, 201, "{:?}", reply.body);
    reply.json()["id"].as_i64().unwrap()
}

/// Logs `username` in through `addr`; answers its access token.
async fn login(addr: SocketAddr, username: &str) -> String {
    let body = format!(r#"{{"username":"{username}","password":"correct horse"}}"#);
    let reply = request(addr, "POST", "/auth/login", &[json()], &body).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    reply.json()["access_token"].as_str().unwrap().to_owned()
}

async fn wait_state(services: &redkit::http::Services, state: ViewState, limit: Duration) {
    let start = Instant::now();
    while services.auth.view_state() != state {
        assert!(
            start.elapsed() < limit,
            "view {:?}, not {state:?}, after {limit:?}",
            services.auth.view_state()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A config reaching Redis at `url`, with the test secret and the tests' 500 ms timeouts (the
/// revocation subscriber's liveness deadline).
fn config_for(url: String) -> redkit::Config {
    let mut config = with_test_secret(Backend::memory().config());
    let mut settings = RedisSettings::new(url);
    settings.response_timeout = Duration::from_millis(500);
    settings.connect_timeout = Duration::from_millis(500);
    config.redis = Some(settings);
    config
}

/// A token logged out on B while A is cut off from Redis (a proxy in front of A only) is never
/// honoured by A: once A's feed has been down longer than its liveness deadline, A answers 503
/// with `Retry-After` to it, and to a valid token too (never 401, never 200), on the routes
/// that verify tokens; once healed and resynced, 401 to the revoked one and 200 to the valid
/// one. A private stream opened on A with the revoked token before the cut receives none of the
/// events published after the logout (during the cut or after healing) and is closed at
/// resync; the valid token's stream stays open and receives what is published after healing.
#[actix_web::test]
async fn token_revoked_while_cut_off_is_never_honoured() {
    let server = RedisServer::start();
    let proxy = Proxy::to_unix(server.socket_path());
    let a = TestServer::start(crate::common::services(&config_for(proxy.url())), 1);
    let b = TestServer::start(crate::common::services(&config_for(server.url())), 1);
    wait_state(&a.services, ViewState::InSync, REQUEST_BOUND).await;
    wait_state(&b.services, ViewState::InSync, REQUEST_BOUND).await;
    let id = register(b.addr, "alice").await;
    let revoked = login(b.addr, "alice").await;
    let valid = login(b.addr, "alice").await;
    let channel = format!("/events/user:{id}");
    let bearer = |token: &str| format!("Bearer {token}");
    let publish = |n: &str| {
        let auth = bearer(&valid);
        let body = format!(r#"{{"n":"{n}"}}"#);
        let path = channel.clone();
        async move {
            let reply = request(
                b.addr,
                "POST",
                &path,
                &[("authorization", &auth), json()],
                &body,
            )
            .await;
            assert_eq!(reply.status, 202, "{:?}", reply.body);
        }
    };
    let mut doomed = Sse::open(a.addr, &channel, &[("authorization", &bearer(&revoked))]).await;
    let mut kept = Sse::open(a.addr, &channel, &[("authorization", &bearer(&valid))]).await;
    assert_eq!((doomed.status, kept.status), (200, 200));
    // Both streams are live: an event published on B reaches them through A.
    tokio::time::sleep(Duration::from_millis(300)).await;
    publish("before").await;
    for stream in [&mut doomed, &mut kept] {
        assert_eq!(
            stream.next_data(REQUEST_BOUND).await.as_deref(),
            Some(r#"{"n":"before"}"#)
        );
    }

    proxy.cut();
    let cut = Instant::now();
    // Lost at once (the connection is closed), trusted for the 500 ms deadline, then stale.
    wait_state(&a.services, ViewState::Stale, Duration::from_secs(3)).await;
    assert!(
        cut.elapsed() >= Duration::from_millis(500),
        "{:?}",
        cut.elapsed()
    );
    let reply = request(
        b.addr,
        "POST",
        "/auth/logout",
        &[("authorization", &bearer(&revoked))],
        "",
    )
    .await;
    assert_eq!(reply.status, 204, "{:?}", reply.body);
    publish("during").await;
    // A cannot know of the logout: every route needing the token answers 503, whichever token.
    for token in [&revoked, &valid] {
        let refused = Sse::open(a.addr, &channel, &[("authorization", &bearer(token))]).await;
        assert_eq!(refused.status, 503, "{}", refused.body);
        assert_eq!(refused.header("retry-after"), Some("1"));
        let reply = request(
            a.addr,
            "POST",
            &channel,
            &[("authorization", &bearer(token)), json()],
            "{}",
        )
        .await;
        reply.problem(503);
        assert_eq!(reply.header("retry-after"), Some("1"));
        let reply = request(
            a.addr,
            "GET",
            "/auth/me",
            &[("authorization", &bearer(token))],
            "",
        )
        .await;
        reply.problem(503);
    }

    proxy.heal();
    wait_state(&a.services, ViewState::InSync, Duration::from_secs(5)).await;
    publish("after").await;
    // The revoked stream got nothing after the logout, and was closed.
    let got = doomed.data_within(Duration::from_secs(3)).await;
    assert_eq!(got, Vec::<String>::new());
    assert!(doomed.ended, "the revoked token's stream is still open");
    // The valid stream is open and caught up (what was published during the cut, then after).
    let got = kept.data_within(Duration::from_secs(2)).await;
    assert!(!kept.ended, "the valid token's stream was closed");
    assert_eq!(
        got.last().map(String::as_str),
        Some(r#"{"n":"after"}"#),
        "{got:?}"
    );
    let refused = Sse::open(a.addr, &channel, &[("authorization", &bearer(&revoked))]).await;
    assert_eq!(refused.status, 401, "{}", refused.body);
    let reply = request(
        a.addr,
        "GET",
        "/auth/me",
        &[("authorization", &bearer(&valid))],
        "",
    )
    .await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
}

/// Answers per route: (route, status) pairs.
type Tally = std::rc::Rc<std::cell::RefCell<Vec<(&'static str, u16)>>>;

/// One round of the mixed load: `GET /auth/me` on `b`, `PUT /cache/{key}` and
/// `POST /events/user:{id}` on `a`, `GET /events/user:{id}` (the stream's head) on `b`.
async fn load_round(a: SocketAddr, b: SocketAddr, token: &str, id: i64, n: u64, tally: &Tally) {
    let bearer = format!("Bearer {token}");
    let auth = ("authorization", bearer.as_str());
    let me = request(b, "GET", "/auth/me", &[auth], "").await;
    let put = request(
        a,
        "PUT",
        &format!("/cache/chaos-{id}-{}", n % 16),
        &[auth, json()],
        &format!(r#"{{"n":{n}}}"#),
    )
    .await;
    let publish = request(
        a,
        "POST",
        &format!("/events/user:{id}"),
        &[auth, json()],
        &format!(r#"{{"n":{n}}}"#),
    )
    .await;
    let subscribe = tokio::time::timeout(
        REQUEST_BOUND,
        Sse::open(b, &format!("/events/user:{id}"), &[auth]),
    )
    .await
    .expect("subscribe answers in time");
    let mut tally = tally.borrow_mut();
    tally.push(("GET /auth/me", me.status));
    tally.push(("PUT /cache/{key}", put.status));
    tally.push(("POST /events/{channel}", publish.status));
    tally.push(("GET /events/{channel}", subscribe.status));
}

/// Two instances on a 3+3 cluster under mixed load, the primary serving
/// auth's revocation record (and so the revocation subscriber) killed: 0 answers of 401 to
/// valid tokens on any route (`GET /auth/me`, `PUT /cache/{key}`, `POST /events/{channel}`,
/// `GET /events/{channel}`), no 500; every answer is 2xx or 503 (the time auth cannot know
/// about revocations, the slot's failover); and once the replica took over, every route
/// succeeds again.
#[actix_web::test]
async fn failover_never_answers_401_to_a_valid_token() {
    let mut backend = Backend::cluster_with_replicas();
    let mut config = with_test_secret(backend.config());
    config.rate_limit = redkit::ratelimit::RateLimitConfig::parse(
        &["default=off", "POST /events/{channel}=off"],
        &[] as &[&str],
    )
    .unwrap();
    // Every stream of the load comes from 127.0.0.1: the per-address cap is not under test.
    config.events.max_connections_per_ip = 10_000;
    let a = TestServer::start(crate::common::services(&config), 1);
    let b = TestServer::start(crate::common::services(&config), 1);
    wait_state(&a.services, ViewState::InSync, REQUEST_BOUND).await;
    wait_state(&b.services, ViewState::InSync, REQUEST_BOUND).await;
    let mut users = Vec::new();
    for name in ["ann", "ben", "cid"] {
        let id = register(a.addr, name).await;
        users.push((id, login(a.addr, name).await));
    }
    let cluster = backend.cluster_mut().unwrap();
    cluster.wait_replicated();
    let tally: Tally = Tally::default();
    let stop = std::rc::Rc::new(std::cell::Cell::new(false));
    let mut workers = Vec::new();
    for (id, token) in users {
        let (tally, stop) = (tally.clone(), stop.clone());
        let (a, b) = (a.addr, b.addr);
        workers.push(actix_web::rt::spawn(async move {
            let mut n = 0;
            while !stop.get() {
                load_round(a, b, &token, id, n, &tally).await;
                n += 1;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before = tally.borrow().len();
    let killed = cluster.kill_primary_for("redkit:auth:{revocations}");
    let failover = cluster.wait_failover(killed, Duration::from_secs(30)).await;
    let during = tally.borrow().len() - before;
    // The load goes on once the cluster is whole: it must all succeed again.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let settled = tally.borrow().len();
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.set(true);
    for worker in workers {
        worker.await.unwrap();
    }
    let tally = tally.borrow();
    let mut counts = std::collections::BTreeMap::<(&str, u16), u32>::new();
    for answer in tally.iter() {
        *counts.entry(*answer).or_default() += 1;
    }
    eprintln!(
        "failover in {failover:?}; {} answers ({before} before the kill, {during} during the failover): {counts:?}",
        tally.len()
    );
    let unexpected: Vec<_> = counts
        .iter()
        .filter(|((_, status), _)| !matches!(status, 200 | 202 | 503))
        .collect();
    assert!(unexpected.is_empty(), "{unexpected:?}");
    assert!(
        counts.iter().any(|((_, status), _)| *status == 503),
        "the failover was never seen: {counts:?}"
    );
    let late: Vec<_> = tally[settled..]
        .iter()
        .filter(|(_, status)| *status == 503)
        .collect();
    assert!(late.is_empty(), "still 503 after the failover: {late:?}");
    assert!(tally.len() > settled, "no load after the failover");
}

/// A revocation record lives as long as the longest token it can deny, the access
/// token (60 s + 5 s leeway here), not the refresh token (7 days): two sessions revoked by the
/// session cap (1) and a logout leave 4 entries in the instance (3 sessions, 1 token), and in
/// Redis every revocation key and zset entry expires within (55 s, 65 s].
async fn revocation_records_live_one_access_ttl(backend: Backend) {
    let mut config = with_test_secret(backend.config());
    config.auth.access_ttl = Duration::from_secs(60);
    config.auth.max_sessions_per_user = 1;
    let services = crate::common::services(&config);
    let app = crate::common::app(&services).await;
    // A second apart: the cap orders sessions by their creation second.
    crate::common::register_and_login(&app, "alice").await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    crate::common::login(&app, "alice", "correct horse").await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (access, _) = crate::common::login(&app, "alice", "correct horse").await;
    let reply = crate::common::call(
        &app,
        actix_web::test::TestRequest::post()
            .uri("/auth/logout")
            .insert_header(crate::common::bearer(&access)),
    )
    .await;
    assert_eq!(reply.status, 204);
    assert_eq!(services.auth.revocation_entries(), 4);
    let Some(keys) = backend.keys_with_ttl() else {
        return;
    };
    let revocations: Vec<_> = keys
        .iter()
        .filter(|(key, _)| key.contains("{revocations}"))
        .collect();
    // The session zset, the jti zset and the denylisted jti.
    assert_eq!(revocations.len(), 3, "{revocations:?}");
    for (key, ttl) in &revocations {
        assert!((55_000..=65_000).contains(ttl), "{key}: PTTL {ttl}");
    }
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let mut entries = 0;
    for suffix in ["sid", "jti"] {
        let key = format!("redkit:auth:{{revocations}}:{suffix}");
        let cmd = ::redis::cmd("ZRANGE")
            .arg(&key)
            .arg(0)
            .arg(-1)
            .arg("WITHSCORES")
            .clone();
        let scored: Vec<(String, i64)> = match &backend {
            Backend::Redis(server) => cmd.query(&mut server.conn()).unwrap(),
            Backend::Cluster(cluster) => cmd.query(&mut cluster.conn()).unwrap(),
            Backend::Memory => unreachable!(),
        };
        for (member, until) in &scored {
            let left = until - now_ms;
            assert!(
                (55_000..=65_000).contains(&left),
                "{key} {member}: {left} ms left"
            );
        }
        entries += scored.len();
    }
    assert_eq!(entries, 4);
}

backend_suite!(revocation_records_live_one_access_ttl);

/// `(p50, p99, mean)` of `samples`, in microseconds.
fn summary(mut samples: Vec<Duration>) -> (u128, u128, u128) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize].as_micros();
    let mean = samples.iter().map(Duration::as_micros).sum::<u128>() / samples.len() as u128;
    (at(0.5), at(0.99), mean)
}

/// The latency of one refresh rotation and one logout through `addr` (the login before is
/// not timed).
async fn timed_writes(addr: SocketAddr, user: &str) -> (Duration, Duration) {
    let body = format!(r#"{{"username":"{user}","password":"correct horse"}}"#);
    // The login is not timed: a durable one that no replica acknowledged in time is a 503
    // with `Retry-After`, retried as a client would.
    let mut reply = request(addr, "POST", "/auth/login", &[json()], &body).await;
    for _ in 0..5 {
        if reply.status != 503 {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        reply = request(addr, "POST", "/auth/login", &[json()], &body).await;
    }
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    let refresh = reply.json()["refresh_token"].as_str().unwrap().to_owned();
    let body = format!(r#"{{"refresh_token":"{refresh}"}}"#);
    let start = Instant::now();
    let reply = request(addr, "POST", "/auth/refresh", &[json()], &body).await;
    let refreshed = start.elapsed();
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    let access = reply.json()["access_token"].as_str().unwrap().to_owned();
    let bearer = format!("Bearer {access}");
    let start = Instant::now();
    let reply = request(
        addr,
        "POST",
        "/auth/logout",
        &[("authorization", &bearer)],
        "",
    )
    .await;
    let logged_out = start.elapsed();
    assert_eq!(reply.status, 204, "{:?}", reply.body);
    (refreshed, logged_out)
}

/// `--redis-durable-writes` on a 3+3 cluster: a logout is answered only once a replica has it,
/// so killing the revocation record's primary right after the answer (no time given to
/// replicate) loses nothing: an instance started after the failover, which rebuilds its view
/// from the promoted replica, refuses the logged-out token (401) and accepts a live one (200).
/// Prints the latency of a refresh and a logout with and without (50 of each, interleaved).
#[actix_web::test]
async fn durable_writes_survive_a_failover() {
    const ROUNDS: usize = 50;
    let mut backend = Backend::cluster_with_replicas();
    let mut config = with_test_secret(backend.config());
    let plain = TestServer::start(crate::common::services(&config), 1);
    config.auth.durable_writes = true;
    let durable = TestServer::start(crate::common::services(&config), 1);
    wait_state(&durable.services, ViewState::InSync, REQUEST_BOUND).await;
    register(durable.addr, "alice").await;
    register(plain.addr, "bob").await;
    // Interleaved, so that the machine's load weighs on both alike.
    let (mut plain_times, mut durable_times) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        plain_times.push(timed_writes(plain.addr, "bob").await);
        durable_times.push(timed_writes(durable.addr, "alice").await);
    }
    let split = |times: Vec<(Duration, Duration)>| -> (Vec<Duration>, Vec<Duration>) {
        times.into_iter().unzip()
    };
    let ((plain_refresh, plain_logout), (durable_refresh, durable_logout)) =
        (split(plain_times), split(durable_times));
    eprintln!(
        "{ROUNDS} rounds; refresh (p50, p99, mean) µs: plain {:?}, durable {:?}; logout: plain {:?}, durable {:?}",
        summary(plain_refresh),
        summary(durable_refresh),
        summary(plain_logout),
        summary(durable_logout)
    );
    let live = login(durable.addr, "alice").await;
    let revoked = login(durable.addr, "alice").await;
    let reply = request(
        durable.addr,
        "POST",
        "/auth/logout",
        &[("authorization", &format!("Bearer {revoked}"))],
        "",
    )
    .await;
    assert_eq!(reply.status, 204, "{:?}", reply.body);
    let cluster = backend.cluster_mut().unwrap();
    let killed = cluster.kill_primary_for("redkit:auth:{revocations}");
    cluster.wait_failover(killed, Duration::from_secs(30)).await;
    let fresh = TestServer::start(crate::common::services(&config), 1);
    wait_state(&fresh.services, ViewState::InSync, Duration::from_secs(10)).await;
    let me = |token: &str| {
        let bearer = format!("Bearer {token}");
        async move {
            request(
                fresh.addr,
                "GET",
                "/auth/me",
                &[("authorization", &bearer)],
                "",
            )
            .await
        }
    };
    assert_eq!(me(&revoked).await.status, 401);
    assert_eq!(me(&live).await.status, 200);
}

/// `--redis-durable-writes` where no replica answers (one Redis): a login waits half the
/// response timeout (250 ms here) for one, then answers 503 with `Retry-After`, never a
/// success it cannot vouch for.
#[actix_web::test]
async fn durable_writes_without_a_replica_answer_503() {
    let server = RedisServer::start();
    let mut config = config_for(server.url());
    config.auth.durable_writes = true;
    let app = TestServer::start(crate::common::services(&config), 1);
    wait_state(&app.services, ViewState::InSync, REQUEST_BOUND).await;
    let body = r#"{"username":"alice","email":"alice@example.com","password":"correct horse"}"#;
    let reply = request(app.addr, "POST", "/auth/register", &[json()], body).await;
    assert_eq!(reply.status, 201);
    let body = r#"{"username":"alice","password":"correct horse"}"#;
    let start = Instant::now();
    let reply = request(app.addr, "POST", "/auth/login", &[json()], body).await;
    reply.problem(503);
    assert_eq!(reply.header("retry-after"), Some("1"));
    assert!(
        start.elapsed() >= Duration::from_millis(250),
        "{:?}",
        start.elapsed()
    );
}
