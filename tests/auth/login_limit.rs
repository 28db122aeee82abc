//! The login route's failed-attempt limit: 5 failures per (username, client IP) per 15 minutes.

use actix_web::test::TestRequest;
use serde_json::json;

use crate::common::{Backend, app, call, services};

fn login(username: &str, password: &str, ip: &str) -> TestRequest {
    TestRequest::post()
        .uri("/auth/login")
        .peer_addr(format!("{ip}:40000").parse().unwrap())
        .set_json(json!({"username": username, "password": password}))
}

/// Five wrong passwords are 401s; the sixth attempt, even with the right password, is a 429
/// `quota-exceeded` with `Retry-After`; another username or another address is not affected.
async fn failed_logins_are_limited(backend: Backend) {
    let services = services(&backend.config());
    let app = app(&services).await;
    let register = TestRequest::post().uri("/auth/register").set_json(
        json!({"username": "victim", "email": "v@example.com", "password": "correct horse"}),
    );
    assert_eq!(call(&app, register).await.status, 201);

    for attempt in 1..=5 {
        let reply = call(&app, login("victim", "wrong password", "10.0.0.1")).await;
        assert_eq!(reply.problem(401)["status"], 401, "attempt {attempt}");
    }
    let blocked = call(&app, login("victim", "correct horse", "10.0.0.1")).await;
    let body = blocked.problem(429);
    assert_eq!(body["type"], "https://redkit.dev/problems/quota-exceeded");
    assert!(body["detail"].as_str().unwrap().contains("login"), "{body}");
    // The oldest failure leaves the 15-minute window 900 s after it was made, less the time
    // the five attempts took (under a second unless the machine stalls): 900 rounded up, or 899.
    let retry: u64 = blocked.header("retry-after").unwrap().parse().unwrap();
    assert!((899..=900).contains(&retry), "{retry}");

    // The same user from another address, and another user from the same address, still log in.
    assert_eq!(
        call(&app, login("victim", "correct horse", "10.0.0.2"))
            .await
            .status,
        200
    );
    let other = TestRequest::post().uri("/auth/register").set_json(
        json!({"username": "bystander", "email": "b@example.com", "password": "correct horse"}),
    );
    assert_eq!(call(&app, other).await.status, 201);
    assert_eq!(
        call(&app, login("bystander", "correct horse", "10.0.0.1"))
            .await
            .status,
        200
    );
    // Unknown users count too (no username enumeration through the limiter).
    for _ in 0..5 {
        call(&app, login("nobody", "x", "10.0.0.3"))
            .await
            .problem(401);
    }
    call(&app, login("nobody", "x", "10.0.0.3"))
        .await
        .problem(429);
}

fn register(username: &str) -> TestRequest {
    TestRequest::post().uri("/auth/register").set_json(json!({
        "username": username, "email": format!("{username}@example.com"),
        "password": "correct horse",
    }))
}

/// 20 concurrent wrong-password logins for one user from one address: exactly 5
/// are checked (401), 15 are refused (429); the limit is spent before the password is verified.
async fn concurrent_guesses_are_limited(backend: Backend) {
    let services = services(&backend.config());
    let app = app(&services).await;
    assert_eq!(call(&app, register("victim")).await.status, 201);
    let replies = futures_util::future::join_all(
        (0..20).map(|_| call(&app, login("victim", "wrong password", "10.0.0.7"))),
    )
    .await;
    let count = |status| replies.iter().filter(|r| r.status == status).count();
    assert_eq!((count(401), count(429)), (5, 15));
}

/// A right password gives its unit back: ten logins in a row succeed, and five
/// wrong ones are still allowed after them.
async fn successful_logins_are_refunded(backend: Backend) {
    let services = services(&backend.config());
    let app = app(&services).await;
    assert_eq!(call(&app, register("regular")).await.status, 201);
    for i in 0..10 {
        let reply = call(&app, login("regular", "correct horse", "10.0.0.8")).await;
        assert_eq!(reply.status, 200, "login {i}");
    }
    for _ in 0..5 {
        call(&app, login("regular", "wrong password", "10.0.0.8"))
            .await
            .problem(401);
    }
    call(&app, login("regular", "wrong password", "10.0.0.8"))
        .await
        .problem(429);
}

/// A 200 KB username is refused (401) before any limiter or store sees it: no
/// Redis key holds it, and it spends nothing.
async fn oversized_username_makes_no_key(backend: Backend) {
    let services = services(&backend.config());
    let app = app(&services).await;
    let huge = "a".repeat(200 * 1024);
    for _ in 0..6 {
        let reply = call(&app, login(&huge, "x", "10.0.0.9")).await;
        assert_eq!(
            reply.problem(401)["type"],
            "https://redkit.dev/problems/invalid-credentials"
        );
    }
    if let Some(keys) = backend.keys_with_ttl() {
        let longest = keys
            .into_iter()
            .map(|(key, _)| key.len())
            .max()
            .unwrap_or(0);
        assert!(longest < 200, "a key of {longest} bytes");
    }
}

/// Argon2 work is bounded: with a queue of 2, 20 concurrent logins for unknown
/// users are either checked (401) or refused at once with a 503 `Retry-After: 1` problem.
async fn hash_queue_is_bounded(backend: Backend) {
    let mut config = backend.config();
    config.auth.hash_queue = 2;
    let services = services(&config);
    let app = app(&services).await;
    let replies = futures_util::future::join_all((0..20).map(|i| {
        call(
            &app,
            login(&format!("ghost{i}"), "x", &format!("10.1.0.{i}")),
        )
    }))
    .await;
    let checked = replies.iter().filter(|r| r.status == 401).count();
    let busy: Vec<_> = replies.iter().filter(|r| r.status == 503).collect();
    assert_eq!(checked + busy.len(), 20);
    assert!(checked >= 2, "{checked} checked");
    assert!(busy.len() >= 10, "{} refused", busy.len());
    let body = busy[0].problem(503);
    assert_eq!(
        body["detail"],
        "Too many logins are being checked right now; retry shortly."
    );
    assert_eq!(busy[0].header("retry-after"), Some("1"));
}

/// The session records the client address the limiter counts: through a trusted proxy, the
/// address its `X-Forwarded-For` names; from an untrusted peer, the peer, whatever it claims.
async fn sessions_record_the_limiters_client_address(backend: Backend) {
    let mut config = backend.config();
    config.rate_limit =
        redkit::ratelimit::RateLimitConfig::parse(&["default=off"], &["10.0.0.0/8"]).unwrap();
    let services = services(&config);
    let app = app(&services).await;
    assert_eq!(call(&app, register("alice")).await.status, 201);
    let session_ip = |peer: &str, forwarded: &str| {
        login("alice", "correct horse", peer).insert_header(("x-forwarded-for", forwarded))
    };
    for (peer, forwarded, recorded) in [
        ("10.0.0.5", "203.0.113.7", "203.0.113.7"),
        ("192.0.2.1", "203.0.113.8", "192.0.2.1"),
    ] {
        let reply = call(&app, session_ip(peer, forwarded)).await;
        assert_eq!(reply.status, 200, "{peer}");
        let token = reply.json()["access_token"].as_str().unwrap().to_owned();
        let me = TestRequest::get()
            .uri("/auth/sessions")
            .insert_header(crate::common::bearer(&token));
        let list = call(&app, me).await.json();
        let current: Vec<_> = list["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["current"] == true)
            .collect();
        assert_eq!(current.len(), 1, "{list}");
        assert_eq!(current[0]["ip"], recorded, "{peer}");
    }
}

backend_suite!(
    failed_logins_are_limited,
    concurrent_guesses_are_limited,
    successful_logins_are_refunded,
    oversized_username_makes_no_key,
    hash_queue_is_bounded,
    sessions_record_the_limiters_client_address,
);
