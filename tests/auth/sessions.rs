//! Sessions that never log a user out by accident: the refresh-token reuse grace window (one
//! successor whatever the instance, replays after the window or two generations back caught),
//! the session cap's policies and its order, idle expiry on a test clock, and what
//! `GET /auth/sessions` shows. Memory, one Redis and a cluster; two instances where there is
//! Redis.

use std::{
    collections::HashSet,
    sync::Arc,
    time::{Duration, Instant},
};

use actix_web::{body::MessageBody, dev::ServiceResponse, test};
use redkit::{
    Config,
    auth::{SessionLimitPolicy, ViewState},
    clock::ManualClock,
    db::DatabaseLocation,
    http::Services,
};
use serde_json::{Value, json};

use crate::common::{Backend, Reply, bearer, call};

// ---------- harness ----------

/// Two instances on the backend, sharing one users database (a file: logins hash on two
/// threads, as in production); on memory both names are the one instance (nothing is shared).
struct Fleet {
    a: Services,
    b: Services,
    clock: Arc<ManualClock>,
    _db: tempfile::TempDir,
}

/// Starts a [`Fleet`] on a test clock, with `tune` applied to the configuration.
async fn fleet(backend: &Backend, tune: impl Fn(&mut Config)) -> Fleet {
    let clock = Arc::new(ManualClock::starting_now());
    let db = tempfile::tempdir().unwrap();
    let mut config = crate::common::with_test_secret(backend.config());
    config.database = DatabaseLocation::File(db.path().join("users.db"));
    config.auth.clock = clock.clone();
    tune(&mut config);
    let a = crate::common::services(&config);
    let b = if backend.is_redis() {
        crate::common::services(&config)
    } else {
        a.clone()
    };
    for s in [&a, &b] {
        let deadline = Instant::now() + Duration::from_secs(5);
        while s.auth.view_state() != ViewState::InSync {
            assert!(Instant::now() < deadline, "view never synced");
            actix_web::rt::time::sleep(Duration::from_millis(5)).await;
        }
    }
    Fleet {
        a,
        b,
        clock,
        _db: db,
    }
}

trait App:
    actix_web::dev::Service<
        actix_http::Request,
        Response = ServiceResponse<Self::Body>,
        Error = actix_web::Error,
    >
{
    type Body: MessageBody;
}

impl<S, B> App for S
where
    S: actix_web::dev::Service<
            actix_http::Request,
            Response = ServiceResponse<B>,
            Error = actix_web::Error,
        >,
    B: MessageBody,
{
    type Body = B;
}

async fn register(app: &impl App, username: &str) {
    let reply = call(
        app,
        test::TestRequest::post()
            .uri("/auth/register")
            .set_json(json!({
                "username": username, "email": format!("{username}@example.com"),
                "password": "correct horse",
            })),
    )
    .await;
    assert_eq!(reply.status, 201, "{:?}", reply.body);
}

fn login_request(username: &str) -> test::TestRequest {
    test::TestRequest::post()
        .uri("/auth/login")
        .set_json(json!({"username": username, "password": "correct horse"}))
}

/// A token pair from a 200 answer.
fn pair(reply: &Reply) -> (String, String) {
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    let body = reply.json();
    (
        body["access_token"].as_str().unwrap().to_owned(),
        body["refresh_token"].as_str().unwrap().to_owned(),
    )
}

async fn login(app: &impl App, username: &str) -> (String, String) {
    pair(&call(app, login_request(username)).await)
}

async fn refresh(app: &impl App, token: &str) -> Reply {
    call(
        app,
        test::TestRequest::post()
            .uri("/auth/refresh")
            .set_json(json!({ "refresh_token": token })),
    )
    .await
}

async fn me(app: &impl App, access: &str) -> u16 {
    call(
        app,
        test::TestRequest::get()
            .uri("/auth/me")
            .insert_header(bearer(access)),
    )
    .await
    .status
}

fn claims(token: &str) -> Value {
    use base64::Engine;
    let part = token.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(part)
            .unwrap(),
    )
    .unwrap()
}

fn sid(token: &str) -> String {
    claims(token)["sid"].as_str().unwrap().to_owned()
}

/// Every string Redis holds (values, hash fields and values, set and zset members).
fn redis_strings(backend: &Backend) -> Vec<String> {
    let Some(keys) = backend.keys_with_ttl() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut read = |conn: &mut dyn ::redis::ConnectionLike, key: &str| {
        let kind: String = ::redis::cmd("TYPE").arg(key).query(conn).unwrap();
        let values: Vec<String> = match kind.as_str() {
            "string" => vec![::redis::cmd("GET").arg(key).query(conn).unwrap()],
            "hash" => ::redis::cmd("HGETALL").arg(key).query(conn).unwrap(),
            "set" => ::redis::cmd("SMEMBERS").arg(key).query(conn).unwrap(),
            "zset" => ::redis::cmd("ZRANGE")
                .arg(key)
                .arg(0)
                .arg(-1)
                .query(conn)
                .unwrap(),
            _ => Vec::new(),
        };
        out.extend(values);
    };
    match backend {
        Backend::Redis(server) => {
            let mut conn = server.conn();
            for (key, _) in &keys {
                read(&mut conn, key);
            }
        }
        Backend::Cluster(cluster) => {
            let mut conn = cluster.conn();
            for (key, _) in &keys {
                read(&mut conn, key);
            }
        }
        Backend::Memory => {}
    }
    out
}

// ---------- the grace window ----------

/// A spent refresh token presented again within the window answers 200 with the byte-identical
/// successor and a working access token, on either instance, up to the window's last
/// millisecond; the successor is nowhere in Redis; a token two generations back (its successor
/// spent too) and a replay at the window's end revoke the session everywhere. Counted apart in
/// the stats and `/metrics`.
async fn grace_replay_answers_the_successor(backend: Backend) {
    let f = fleet(&backend, |_| {}).await;
    let app_a = crate::common::app(&f.a).await;
    let app_b = crate::common::app(&f.b).await;
    register(&app_a, "alice").await;
    let (_, r1) = login(&app_a, "alice").await;
    let (_, r2) = pair(&refresh(&app_a, &r1).await);
    f.clock.advance(Duration::from_secs(10));
    let (a2b, r2b) = pair(&refresh(&app_b, &r1).await);
    assert_eq!(r2b, r2, "the replay's successor differs");
    assert_eq!(me(&app_b, &a2b).await, 200);
    f.clock.advance(Duration::from_millis(19_999));
    let (a2a, r2a) = pair(&refresh(&app_a, &r1).await);
    assert_eq!(r2a, r2);
    assert_eq!(me(&app_a, &a2a).await, 200);
    // Nobody reading Redis finds the successor (nor its signature).
    let signature = r2.rsplit('.').next().unwrap();
    for value in redis_strings(&backend) {
        assert!(!value.contains(signature), "successor stored: {value}");
    }
    // Its successor spent: the first token is now two generations back, inside its window.
    let (a3, _) = pair(&refresh(&app_b, &r2).await);
    refresh(&app_a, &r1).await.problem(401);
    let revoked = Instant::now();
    for app_is_b in [false, true] {
        loop {
            let status = if app_is_b {
                me(&app_b, &a3).await
            } else {
                me(&app_a, &a3).await
            };
            if status == 401 {
                break;
            }
            assert!(revoked.elapsed() < Duration::from_millis(100), "{status}");
            actix_web::rt::time::sleep(Duration::from_millis(1)).await;
        }
    }
    // A second session: a replay at the window's end is a reuse.
    let (_, s1) = login(&app_b, "alice").await;
    let (a_s2, s2) = pair(&refresh(&app_b, &s1).await);
    f.clock.advance(Duration::from_secs(30));
    refresh(&app_a, &s1).await.problem(401);
    refresh(&app_b, &s2).await.problem(401);
    assert_eq!(me(&app_a, &a_s2).await, 401);
    let (a, b) = (f.a.auth.session_stats(), f.b.auth.session_stats());
    if backend.is_redis() {
        assert_eq!((a.grace_answers, b.grace_answers), (1, 1));
        assert_eq!((a.reuse_revocations, b.reuse_revocations), (2, 0));
    } else {
        assert_eq!((a.grace_answers, a.reuse_revocations), (2, 2));
    }
    let metrics = call(&app_a, test::TestRequest::get().uri("/metrics")).await;
    let text = String::from_utf8_lossy(&metrics.body).into_owned();
    assert!(
        text.contains(&format!(
            "\nauth_refresh_grace_answers_total {}\n",
            a.grace_answers
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "\nauth_refresh_reuse_revocations_total {}\n",
            a.reuse_revocations
        )),
        "{text}"
    );
}

/// Eight concurrent refreshes of one token, four per instance, all answer 200 with one and the
/// same successor, which then refreshes: the chain never forks.
async fn eight_concurrent_refreshes_one_successor(backend: Backend) {
    let f = fleet(&backend, |_| {}).await;
    let app_a = crate::common::app(&f.a).await;
    let app_b = crate::common::app(&f.b).await;
    register(&app_a, "alice").await;
    let (_, r1) = login(&app_a, "alice").await;
    let calls = (0..8).map(|i| {
        let r1 = r1.clone();
        let (app_a, app_b) = (&app_a, &app_b);
        async move {
            if i % 2 == 0 {
                refresh(app_a, &r1).await
            } else {
                refresh(app_b, &r1).await
            }
        }
    });
    let replies = futures_util::future::join_all(calls).await;
    let successors: HashSet<String> = replies.iter().map(|r| pair(r).1).collect();
    assert_eq!(successors.len(), 1);
    let r2 = successors.into_iter().next().unwrap();
    assert_eq!(refresh(&app_b, &r2).await.status, 200);
    let grace = f.a.auth.session_stats().grace_answers
        + if backend.is_redis() {
            f.b.auth.session_stats().grace_answers
        } else {
            0
        };
    assert_eq!(grace, 7);
}

/// A refresh whose answer is lost is retried (on the other instance) with the same token: the
/// retry answers the very answer that was lost, and the session lives on.
async fn lost_answer_retried_keeps_session(backend: Backend) {
    let f = fleet(&backend, |_| {}).await;
    let app_a = crate::common::app(&f.a).await;
    let app_b = crate::common::app(&f.b).await;
    register(&app_a, "alice").await;
    let (_, r1) = login(&app_a, "alice").await;
    let lost = pair(&refresh(&app_a, &r1).await);
    f.clock.advance(Duration::from_secs(2));
    let (access, r2) = pair(&refresh(&app_b, &r1).await);
    assert_eq!(r2, lost.1);
    assert_eq!(me(&app_a, &access).await, 200);
    let (access3, _) = pair(&refresh(&app_a, &r2).await);
    assert_eq!(me(&app_b, &access3).await, 200);
}

// ---------- the cap ----------

/// `reject-new`: with a cap of 2, a third login answers 409 `session-limit` on either instance
/// and revokes nobody; once one session logs out, a login goes through.
async fn reject_new_beyond_the_cap(backend: Backend) {
    let f = fleet(&backend, |c| {
        c.auth.max_sessions_per_user = 2;
        c.auth.session_limit_policy = SessionLimitPolicy::RejectNew;
    })
    .await;
    let app_a = crate::common::app(&f.a).await;
    let app_b = crate::common::app(&f.b).await;
    register(&app_a, "alice").await;
    let (a1, r1) = login(&app_a, "alice").await;
    let (a2, r2) = login(&app_b, "alice").await;
    for refused in [
        call(&app_a, login_request("alice")).await,
        call(&app_b, login_request("alice")).await,
    ] {
        let body = refused.problem(409);
        assert_eq!(body["type"], "https://redkit.dev/problems/session-limit");
    }
    let list = call(
        &app_a,
        test::TestRequest::get()
            .uri("/auth/sessions")
            .insert_header(bearer(&a1)),
    )
    .await
    .json();
    let listed: Vec<&str> = list["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["sid"].as_str().unwrap())
        .collect();
    assert_eq!(listed, [sid(&a1), sid(&a2)]);
    assert_eq!(refresh(&app_b, &r1).await.status, 200);
    assert_eq!(refresh(&app_a, &r2).await.status, 200);
    let rejections = f.a.auth.session_stats().limit_rejections
        + if backend.is_redis() {
            f.b.auth.session_stats().limit_rejections
        } else {
            0
        };
    assert_eq!(rejections, 2);
    let logout = call(
        &app_b,
        test::TestRequest::post()
            .uri("/auth/logout")
            .insert_header(bearer(&a1)),
    )
    .await;
    assert_eq!(logout.status, 204);
    login(&app_b, "alice").await;
}

/// `reject-new` holds under concurrency: with a cap of 1, four logins at once over two
/// instances make exactly one session.
async fn reject_new_concurrent_logins(backend: Backend) {
    let f = fleet(&backend, |c| {
        c.auth.max_sessions_per_user = 1;
        c.auth.session_limit_policy = SessionLimitPolicy::RejectNew;
    })
    .await;
    let app_a = crate::common::app(&f.a).await;
    let app_b = crate::common::app(&f.b).await;
    register(&app_a, "alice").await;
    let calls = (0..4).map(|i| {
        let (app_a, app_b) = (&app_a, &app_b);
        async move {
            if i % 2 == 0 {
                call(app_a, login_request("alice")).await
            } else {
                call(app_b, login_request("alice")).await
            }
        }
    });
    let replies = futures_util::future::join_all(calls).await;
    let mut statuses: Vec<u16> = replies.iter().map(|r| r.status).collect();
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 409, 409, 409]);
}

/// With a cap of 1 (`evict-oldest`), two logins a millisecond apart (one per instance where
/// there are two): in every one of 12 trials exactly one session lives, and it is the newest
/// login. On memory the users table is in memory, hashed on one thread in arrival order, so the
/// newest is the second; with Redis the two instances hash at once, so the newest is read from
/// Redis: the session holding the user's last login number.
async fn newest_login_survives_the_cap(backend: Backend) {
    let f = fleet(&backend, |c| {
        c.auth.max_sessions_per_user = 1;
        if !backend.is_redis() {
            c.database = DatabaseLocation::Memory;
        }
    })
    .await;
    let prefix = crate::common::with_test_secret(backend.config())
        .auth
        .key_prefix;
    let app_a = crate::common::app(&f.a).await;
    let app_b = crate::common::app(&f.b).await;
    register(&app_a, "alice").await;
    let mut failures = Vec::new();
    for trial in 0..12 {
        let first = call(&app_a, login_request("alice"));
        let second = async {
            actix_web::rt::time::sleep(Duration::from_millis(1)).await;
            call(&app_b, login_request("alice")).await
        };
        let (first, second) = futures_util::join!(first, second);
        let (first, second) = (pair(&first), pair(&second));
        let alive = (
            refresh(&app_b, &first.1).await.status,
            refresh(&app_a, &second.1).await.status,
        );
        let newest = match &backend {
            Backend::Memory => Some(sid(&second.0)),
            _ => last_login(&backend, &prefix, 1, [sid(&first.0), sid(&second.0)]),
        };
        let expected = if newest == Some(sid(&first.0)) {
            (200, 401)
        } else {
            (401, 200)
        };
        if alive != expected || newest.is_none() {
            failures.push((trial, alive, newest.is_some()));
        }
    }
    assert_eq!(failures, [], "(trial, (first, second), newest known)");
}

/// Which of `sids` holds user `uid`'s last login number, read from Redis.
fn last_login(backend: &Backend, prefix: &str, uid: u32, sids: [String; 2]) -> Option<String> {
    let read = |conn: &mut dyn ::redis::ConnectionLike| {
        let last: Option<u64> = ::redis::cmd("GET")
            .arg(format!("{prefix}session_seq:{{user:{uid}}}"))
            .query(conn)
            .unwrap();
        sids.iter()
            .find(|sid| {
                let seq: Option<u64> = ::redis::cmd("HGET")
                    .arg(format!("{prefix}session:{{user:{uid}}}:{sid}"))
                    .arg("seq")
                    .query(conn)
                    .unwrap();
                seq.is_some() && seq == last
            })
            .cloned()
    };
    match backend {
        Backend::Redis(server) => read(&mut server.conn()),
        Backend::Cluster(cluster) => read(&mut cluster.conn()),
        Backend::Memory => None,
    }
}

// ---------- idle expiry and the session list ----------

/// With a 60 s idle limit, refreshes 59 s apart keep a session alive; 61 s without one and the
/// refresh answers 401, the session is revoked (its access token refused on both instances) and
/// no longer listed. However often it refreshes, a session ends at its absolute lifetime.
async fn idle_sessions_expire(backend: Backend) {
    let f = fleet(&backend, |c| {
        c.auth.access_ttl = Duration::from_secs(300);
        c.auth.refresh_ttl = Duration::from_secs(300);
        c.auth.session_idle_timeout = Some(Duration::from_secs(60));
    })
    .await;
    let app_a = crate::common::app(&f.a).await;
    let app_b = crate::common::app(&f.b).await;
    register(&app_a, "alice").await;
    let (_, mut token) = login(&app_a, "alice").await;
    let (other, _) = login(&app_b, "alice").await;
    for _ in 0..2 {
        f.clock.advance(Duration::from_secs(59));
        token = pair(&refresh(&app_b, &token).await).1;
    }
    let (access, token) = pair(&refresh(&app_a, &token).await);
    f.clock.advance(Duration::from_secs(61));
    refresh(&app_b, &token).await.problem(401);
    assert_eq!(me(&app_a, &access).await, 401);
    assert!(
        crate::common::eventually(Duration::from_secs(1), || async {
            me(&app_b, &access).await == 401
        })
        .await
    );
    let idle = f.a.auth.session_stats().idle_revocations
        + if backend.is_redis() {
            f.b.auth.session_stats().idle_revocations
        } else {
            0
        };
    assert_eq!(idle, 1);
    // The other login went idle too: listed by nobody (a fresh login asks).
    let (fresh, mut token) = login(&app_a, "alice").await;
    let list = call(
        &app_b,
        test::TestRequest::get()
            .uri("/auth/sessions")
            .insert_header(bearer(&fresh)),
    )
    .await
    .json();
    assert_eq!(list["sessions"].as_array().unwrap().len(), 1, "{list}");
    assert_eq!(me(&app_a, &other).await, 401, "idle session not revoked");
    // Absolute lifetime: refreshed every 50 s, the session still ends 300 s after login (the
    // refresh token's `exp`, plus the 5 s leeway).
    for _ in 0..5 {
        f.clock.advance(Duration::from_secs(50));
        token = pair(&refresh(&app_b, &token).await).1;
    }
    let login_at = claims(&fresh)["iat"].as_i64().unwrap();
    assert_eq!(claims(&token)["exp"], login_at + 300);
    f.clock.advance(Duration::from_secs(56));
    refresh(&app_a, &token).await.problem(401);
}

/// `GET /auth/sessions` shows each session's creation and last use, client address, user agent,
/// and which one is the caller's, in login order.
async fn session_list_details(backend: Backend) {
    let f = fleet(&backend, |_| {}).await;
    let app_a = crate::common::app(&f.a).await;
    let app_b = crate::common::app(&f.b).await;
    register(&app_a, "alice").await;
    let t0 = claims(&login(&app_a, "alice").await.0)["iat"]
        .as_i64()
        .unwrap();
    let logged = |peer: &str, agent: &str| {
        login_request("alice")
            .peer_addr(peer.parse().unwrap())
            .insert_header(("user-agent", agent))
    };
    let first = pair(&call(&app_a, logged("10.1.2.3:5555", "tests/1.0")).await);
    f.clock.advance(Duration::from_secs(5));
    let second = pair(&call(&app_b, logged("10.9.9.9:4444", "other/2.0")).await);
    f.clock.advance(Duration::from_secs(7));
    let (access, _) = pair(&refresh(&app_b, &first.1).await);
    let list = call(
        &app_a,
        test::TestRequest::get()
            .uri("/auth/sessions")
            .insert_header(bearer(&access)),
    )
    .await;
    assert_eq!(list.status, 200);
    let sessions = &list.json()["sessions"];
    assert_eq!(sessions.as_array().unwrap().len(), 3);
    assert_eq!(
        sessions[1],
        json!({
            "sid": sid(&first.0), "created_at": t0, "last_used_at": t0 + 12,
            "ip": "10.1.2.3", "user_agent": "tests/1.0", "current": true,
        })
    );
    assert_eq!(
        sessions[2],
        json!({
            "sid": sid(&second.0), "created_at": t0 + 5, "last_used_at": t0 + 5,
            "ip": "10.9.9.9", "user_agent": "other/2.0", "current": false,
        })
    );
    // The user's keys (sessions, index, login counter) live the session lifetime (7 days) from
    // the last login; a refresh does not extend them (the absolute limit).
    let keys = backend.keys_with_ttl().unwrap_or_default();
    let user_keys: Vec<&(String, i64)> = keys
        .iter()
        .filter(|(key, _)| key.contains("{user:1}") && key.contains("session"))
        .collect();
    if backend.is_redis() {
        assert_eq!(user_keys.len(), 5, "{keys:?}");
    }
    for (key, ttl) in user_keys {
        assert!(
            (604_700_000..=604_800_000).contains(ttl),
            "{key}: PTTL {ttl}"
        );
    }
}

// ---------- the long run ----------

thread_local! {
    /// This test's requests that met a 503 (Redis slower than its response timeout on a loaded
    /// machine) and were retried, as a client does after `Retry-After` (each test runs on its
    /// own thread).
    static RETRIED_503: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// `request` until it answers something other than 503 (at most 20 tries, 50 ms apart).
async fn patient<F, Fut>(request: F) -> Reply
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Reply>,
{
    for _ in 0..19 {
        let reply = request().await;
        if reply.status != 503 {
            return reply;
        }
        RETRIED_503.set(RETRIED_503.get() + 1);
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    request().await
}

async fn patient_refresh(app: &impl App, token: &str) -> Reply {
    patient(|| refresh(app, token)).await
}

/// 10,000 rotations of 8 sessions of one user, stepping at once, over two instances (through
/// the in-process HTTP app of each): 10 % of the answers are dropped and the refresh retried on
/// the other instance, 10 % are racing pairs (one token on both instances at once); every 200th
/// rotation replays a spent token the window must not excuse (after the window, or two
/// generations back). No legitimate refresh is refused, every such replay revokes its session,
/// and the counters agree exactly.
async fn long_run(backend: Backend) {
    const ROTATIONS: u32 = 10_000;
    const SESSIONS: usize = 8;
    struct Chain {
        grand: Option<String>,
        prev: Option<String>,
        cur: String,
    }
    let f = fleet(&backend, |_| {}).await;
    let app_a = crate::common::app(&f.a).await;
    let app_b = crate::common::app(&f.b).await;
    let apps = [&app_a, &app_b];
    register(&app_a, "runner").await;
    let mut chains = Vec::new();
    for _ in 0..SESSIONS {
        let cur = pair(&patient(|| call(&app_a, login_request("runner"))).await).1;
        chains.push(Chain {
            grand: None,
            prev: None,
            cur,
        });
    }
    let mut state = 0x9E37_79B9_7F4A_7C15_u64;
    let mut next = move |n: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % n
    };
    let (mut requests, mut drops, mut races, mut caught) = (0_u64, 0_u64, 0_u64, 0_u64);
    let mut spurious = Vec::new();
    let mut missed = Vec::new();
    let started = Instant::now();
    let mut rotation = 0;
    while rotation < ROTATIONS {
        // A round: every session takes one step, all at once.
        let plans: Vec<(usize, u64)> = (0..SESSIONS)
            .map(|_| (next(2) as usize, next(100)))
            .collect();
        let steps = chains.iter().zip(&plans).map(|(chain, &(first, roll))| {
            let (first, other) = (apps[first], apps[1 - first]);
            let token = chain.cur.clone();
            async move {
                if roll < 10 {
                    // The first answer is lost; the client retries on the other instance.
                    let lost = patient_refresh(first, &token).await;
                    vec![lost, patient_refresh(other, &token).await]
                } else if roll < 20 {
                    let (x, y) = futures_util::join!(
                        patient_refresh(first, &token),
                        patient_refresh(other, &token)
                    );
                    vec![x, y]
                } else {
                    vec![patient_refresh(first, &token).await]
                }
            }
        });
        let answers = futures_util::future::join_all(steps).await;
        for ((chain, (_, roll)), answers) in chains.iter_mut().zip(&plans).zip(answers) {
            rotation += 1;
            match roll {
                0..10 => drops += 1,
                10..20 => races += 1,
                _ => {}
            }
            requests += answers.len() as u64;
            let statuses: Vec<u16> = answers.iter().map(|r| r.status).collect();
            if statuses.iter().any(|s| *s != 200) {
                spurious.push((rotation, statuses));
                continue;
            }
            let successors: HashSet<String> = answers.iter().map(|r| pair(r).1).collect();
            assert_eq!(successors.len(), 1, "forked at rotation {rotation}");
            let successor = successors.into_iter().next().unwrap();
            chain.grand = chain
                .prev
                .replace(std::mem::replace(&mut chain.cur, successor));
        }
        if !spurious.is_empty() {
            break;
        }
        if rotation % 200 == 0 {
            // Quiet (no refresh in flight): a replay the window must not excuse, after the
            // window or two generations back, on a random session.
            let chain = &mut chains[usize::try_from(next(SESSIONS as u64)).unwrap()];
            let stale = if rotation % 400 == 0 {
                f.clock.advance(Duration::from_secs(30));
                chain.prev.clone()
            } else {
                chain.grand.clone()
            };
            let Some(stale) = stale else { continue };
            let first = usize::try_from(next(2)).unwrap();
            caught += 1;
            requests += 2;
            let replay = patient_refresh(apps[first], &stale).await.status;
            let current = patient_refresh(apps[1 - first], &chain.cur).await.status;
            if (replay, current) != (401, 401) {
                missed.push((rotation, replay, current));
            }
            *chain = Chain {
                grand: None,
                prev: None,
                cur: pair(&patient(|| call(apps[first], login_request("runner"))).await).1,
            };
        }
    }
    let elapsed = started.elapsed();
    let retried = RETRIED_503.get();
    let stats = [f.a.auth.session_stats(), f.b.auth.session_stats()];
    let instances = if backend.is_redis() { 2 } else { 1 };
    let grace: u64 = stats[..instances].iter().map(|s| s.grace_answers).sum();
    let reuse: u64 = stats[..instances].iter().map(|s| s.reuse_revocations).sum();
    eprintln!(
        "long run: {ROTATIONS} rotations, {requests} refresh requests ({drops} dropped answers retried, {races} racing pairs, {caught} stale replays) in {:.1} s; grace answers {grace}, reuse revocations {reuse}; 503 answers retried {}",
        elapsed.as_secs_f64(),
        retried
    );
    assert_eq!(spurious, [], "(rotation, statuses): spurious refusals");
    assert_eq!(
        missed,
        [],
        "(rotation, replay, current): replays not caught"
    );
    // A request retried after a 503 may have done its work before the timeout: one more grace
    // answer (a rotation whose answer was lost), or one revocation the retry found done.
    assert!((drops + races..=drops + races + retried).contains(&grace));
    assert!((caught.saturating_sub(retried)..=caught).contains(&reuse));
}

backend_suite!(
    long_run,
    grace_replay_answers_the_successor,
    eight_concurrent_refreshes_one_successor,
    lost_answer_retried_keeps_session,
    reject_new_beyond_the_cap,
    reject_new_concurrent_logins,
    newest_login_survives_the_cap,
    idle_sessions_expire,
    session_list_details,
);
