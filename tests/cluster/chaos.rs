//! Chaos: two instances on a 3+3 cluster under mixed load, a primary killed. Only 2xx, 404 and
//! 503 answers (never 401 to a valid token, never 500); once the cluster is whole, nothing
//! stale and every route answers; no acknowledged event is lost by a stream that resumes with
//! `Last-Event-ID`, none delivered twice, each channel in order.

use std::{
    cell::{Cell, RefCell},
    collections::BTreeMap,
    net::SocketAddr,
    rc::Rc,
    time::{Duration, Instant},
};

use crate::common::{Backend, Reply, TestServer, sse::Sse, with_test_secret};
use redkit::auth::ViewState;

/// Bound on a single request: a hang is a failure.
const REQUEST_BOUND: Duration = Duration::from_secs(5);
/// Keys each user writes in turn.
const KEYS: u64 = 4;

async fn request(addr: SocketAddr, method: &str, path: &str, token: &str, body: &str) -> Reply {
    let bearer = format!("Bearer {token}");
    let mut headers = vec![("content-type", "application/json")];
    if !token.is_empty() {
        headers.push(("authorization", bearer.as_str()));
    }
    tokio::time::timeout(
        REQUEST_BOUND,
        crate::common::http(addr, method, path, &headers, body.as_bytes()),
    )
    .await
    .unwrap_or_else(|_| panic!("{method} {path} did not answer within {REQUEST_BOUND:?}"))
}

/// What one user's load saw and had acknowledged.
#[derive(Default)]
struct Ledger {
    /// (route, status) of every answer.
    answers: Vec<(&'static str, u16)>,
    /// Per cache key, the value of the last write answered 2xx.
    acked_writes: BTreeMap<String, u64>,
    /// Events answered 202, by their `n`.
    acked_events: Vec<u64>,
    /// Every event's `n` the user's stream on the other instance delivered, in order.
    delivered: Vec<u64>,
    /// `event: reset` frames the stream received.
    resets: u32,
    /// Streams opened again with `Last-Event-ID`.
    resumes: u32,
}

/// The current token pair of a user: refreshes replace it.
struct Tokens {
    access: String,
    refresh: String,
}

/// One round: a cache write on `a` read back on `b`, a publish on `a`, `GET /auth/me` on `b`,
/// and every fourth round a refresh on `b`.
async fn round(
    a: SocketAddr,
    b: SocketAddr,
    id: i64,
    n: u64,
    tokens: &RefCell<Tokens>,
    ledger: &RefCell<Ledger>,
) {
    let access = tokens.borrow().access.clone();
    let key = format!("chaos-{id}-{}", n % KEYS);
    let put = request(a, "PUT", &format!("/cache/{key}"), &access, &n.to_string()).await;
    let get = request(b, "GET", &format!("/cache/{key}"), &access, "").await;
    let publish = request(
        a,
        "POST",
        &format!("/events/user:{id}"),
        &access,
        &format!(r#"{{"n":{n}}}"#),
    )
    .await;
    let me = request(b, "GET", "/auth/me", &access, "").await;
    let refreshed = if n % 4 == 3 {
        let body = format!(r#"{{"refresh_token":"{}"}}"#, tokens.borrow().refresh);
        Some(request(b, "POST", "/auth/refresh", "", &body).await)
    } else {
        None
    };
    let mut ledger = ledger.borrow_mut();
    if put.status / 100 == 2 {
        ledger.acked_writes.insert(key, n);
    }
    if publish.status == 202 {
        ledger.acked_events.push(n);
    }
    ledger.answers.extend([
        ("PUT /cache/{key}", put.status),
        ("GET /cache/{key}", get.status),
        ("POST /events/{channel}", publish.status),
        ("GET /auth/me", me.status),
    ]);
    if let Some(refreshed) = refreshed {
        ledger
            .answers
            .push(("POST /auth/refresh", refreshed.status));
        if refreshed.status == 200 {
            let pair = refreshed.json();
            *tokens.borrow_mut() = Tokens {
                access: pair["access_token"].as_str().unwrap().to_owned(),
                refresh: pair["refresh_token"].as_str().unwrap().to_owned(),
            };
        }
    }
}

/// Follows `user:{id}` on `b` until `stop`, resuming with `Last-Event-ID` whenever the stream
/// ends or cannot be opened, and after a second on each connection (as a browser that lost its
/// network would); records every delivered `n` in `ledger`.
async fn follow(
    b: SocketAddr,
    id: i64,
    tokens: Rc<RefCell<Tokens>>,
    ledger: Rc<RefCell<Ledger>>,
    stop: Rc<Cell<bool>>,
) {
    let mut last_id: Option<String> = None;
    while !stop.get() {
        let bearer = format!("Bearer {}", tokens.borrow().access);
        let mut headers = vec![("authorization", bearer.as_str())];
        if let Some(last) = &last_id {
            headers.push(("last-event-id", last.as_str()));
            ledger.borrow_mut().resumes += 1;
        }
        let opened = tokio::time::timeout(
            REQUEST_BOUND,
            Sse::open(b, &format!("/events/user:{id}"), &headers),
        )
        .await
        .expect("the stream answers in time");
        ledger
            .borrow_mut()
            .answers
            .push(("GET /events/{channel}", opened.status));
        if opened.status != 200 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        let mut stream = opened;
        let opened_at = Instant::now();
        while !stop.get() && opened_at.elapsed() < Duration::from_secs(1) {
            let Some(block) = stream.next_block(Duration::from_millis(200)).await else {
                if stream.ended {
                    break;
                }
                continue;
            };
            let mut ledger = ledger.borrow_mut();
            for line in block.lines() {
                if let Some(id) = line.strip_prefix("id: ") {
                    last_id = Some(id.to_owned());
                } else if line == "event: reset" {
                    ledger.resets += 1;
                } else if let Some(data) = line.strip_prefix("data: ")
                    && let Ok(event) = serde_json::from_str::<serde_json::Value>(data)
                    && let Some(n) = event["n"].as_u64()
                {
                    ledger.delivered.push(n);
                }
            }
        }
    }
}

/// Two instances on a 3+3 cluster, two users each writing the cache on A and reading it back
/// on B, publishing on A to a private channel streamed on B (resumed with `Last-Event-ID`),
/// refreshing on B; the primary of auth's revocation record killed. Every answer is 2xx, 404
/// or 503 (0 × 401, 0 × 500); once the replica took over, every route succeeds, each key
/// reads back on B as its last acknowledged write, and each stream delivered every
/// acknowledged event exactly once, in order.
#[actix_web::test]
async fn mixed_load_through_a_failover() {
    let mut backend = Backend::cluster_with_replicas();
    let mut config = with_test_secret(backend.config());
    config.rate_limit = redkit::ratelimit::RateLimitConfig::parse(
        &["default=off", "POST /events/{channel}=off"],
        &[] as &[&str],
    )
    .unwrap();
    let a = TestServer::start(crate::common::services(&config), 1);
    let b = TestServer::start(crate::common::services(&config), 1);
    for server in [&a, &b] {
        let start = Instant::now();
        while server.services.auth.view_state() != ViewState::InSync {
            assert!(start.elapsed() < REQUEST_BOUND, "never in sync");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    // The primary to kill serves auth's revocation record; of the users, one whose channel it
    // also serves and one whose channel another primary serves follow the load.
    let doomed = backend
        .cluster_mut()
        .unwrap()
        .primary_for("redkit:auth:{revocations}");
    let mut on_doomed = [false, false];
    let (stop_load, stop_follow) = (Rc::new(Cell::new(false)), Rc::new(Cell::new(false)));
    let mut users = Vec::new();
    let (mut loads, mut followers) = (Vec::new(), Vec::new());
    for name in ["ann", "ben", "cid", "dan", "eve", "fay", "gus", "hal"] {
        let body = format!(
            r#"{{"username":"{name}","email":"{name}@example.com","password":"correct horse"}}"#
        );
        let registered = request(a.addr, "POST", "/auth/register", "", &body).await;
        assert_eq!(registered.status, 201, "{:?}", registered.body);
        let id = registered.json()["id"].as_i64().unwrap();
        let shard = backend
            .cluster_mut()
            .unwrap()
            .primary_for(&format!("redkit:events:user:{id}"));
        let same = shard == doomed;
        if on_doomed[usize::from(same)] {
            continue;
        }
        on_doomed[usize::from(same)] = true;
        let body = format!(r#"{{"username":"{name}","password":"correct horse"}}"#);
        let pair = request(a.addr, "POST", "/auth/login", "", &body).await;
        assert_eq!(pair.status, 200, "{:?}", pair.body);
        let pair = pair.json();
        let tokens = Rc::new(RefCell::new(Tokens {
            access: pair["access_token"].as_str().unwrap().to_owned(),
            refresh: pair["refresh_token"].as_str().unwrap().to_owned(),
        }));
        let ledger = Rc::new(RefCell::new(Ledger::default()));
        followers.push(actix_web::rt::spawn(follow(
            b.addr,
            id,
            tokens.clone(),
            ledger.clone(),
            stop_follow.clone(),
        )));
        let (load_tokens, load_ledger, load_stop) =
            (tokens.clone(), ledger.clone(), stop_load.clone());
        let (a_addr, b_addr) = (a.addr, b.addr);
        loads.push(actix_web::rt::spawn(async move {
            let mut n = 0;
            while !load_stop.get() {
                round(a_addr, b_addr, id, n, &load_tokens, &load_ledger).await;
                n += 1;
            }
        }));
        users.push((id, tokens, ledger));
    }
    assert_eq!(on_doomed, [true, true], "users on both sides of the kill");
    let cluster = backend.cluster_mut().unwrap();
    cluster.wait_replicated();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let killed = cluster.kill_primary_for("redkit:auth:{revocations}");
    assert_eq!(killed, doomed);
    let failover = cluster.wait_failover(killed, Duration::from_secs(30)).await;
    // The load goes on once the cluster is whole: from here on it must all succeed.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let settled: Vec<usize> = users
        .iter()
        .map(|(_, _, l)| l.borrow().answers.len())
        .collect();
    tokio::time::sleep(Duration::from_secs(2)).await;
    // The load stops first; then the streams have 5 s to deliver what was acknowledged.
    stop_load.set(true);
    for task in loads {
        task.await.unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let behind = users.iter().any(|(_, _, ledger)| {
            let ledger = ledger.borrow();
            ledger.acked_events.last() > ledger.delivered.last()
        });
        if !behind || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop_follow.set(true);
    for task in followers {
        task.await.unwrap();
    }
    let mut counts = BTreeMap::<(&str, u16), u32>::new();
    let mut ledgers = Vec::new();
    for (id, tokens, ledger) in &users {
        let ledger = ledger.take();
        for answer in &ledger.answers {
            *counts.entry(*answer).or_default() += 1;
        }
        // Nothing stale once the cluster is back: B reads each key as its last acknowledged
        // write (the load's last writes all came after the failover, and were all answered).
        let access = tokens.borrow().access.clone();
        for (key, n) in &ledger.acked_writes {
            let read = request(b.addr, "GET", &format!("/cache/{key}"), &access, "").await;
            assert_eq!(
                (read.status, read.json()),
                (200, serde_json::json!({"key": key, "value": n})),
                "{key}"
            );
        }
        // Every acknowledged event delivered, none twice, in order.
        let delivered = &ledger.delivered;
        assert!(
            delivered.windows(2).all(|w| w[0] < w[1]),
            "user {id}: duplicate or out of order: {delivered:?}"
        );
        let missing: Vec<_> = ledger
            .acked_events
            .iter()
            .filter(|n| delivered.binary_search(n).is_err())
            .collect();
        assert!(
            missing.is_empty(),
            "user {id}: acknowledged, never delivered: {missing:?}"
        );
        assert_eq!(ledger.resets, 0, "user {id}: history reaches back");
        assert!(ledger.resumes >= 5, "user {id}: {} resumes", ledger.resumes);
        assert!(ledger.acked_events.len() > 10, "user {id}: too little load");
        ledgers.push(ledger);
    }
    eprintln!("failover in {failover:?}: {counts:?}");
    let unexpected: Vec<_> = counts
        .iter()
        .filter(|((_, status), _)| !matches!(status, 200 | 201 | 202 | 204 | 404 | 503))
        .collect();
    assert!(unexpected.is_empty(), "{unexpected:?}");
    assert!(
        counts.iter().any(|((_, status), _)| *status == 503),
        "the failover was never seen: {counts:?}"
    );
    for (ledger, from) in ledgers.iter().zip(settled) {
        let late: Vec<_> = ledger.answers[from..]
            .iter()
            .filter(|(_, status)| *status == 503)
            .collect();
        assert!(late.is_empty(), "still 503 after the failover: {late:?}");
        assert!(ledger.answers.len() > from, "no load after the failover");
    }
}
