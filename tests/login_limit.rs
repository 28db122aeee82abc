//! The login route's failed-attempt limit: 5 failures per (username, client IP) per 15 minutes.

mod common;

use actix_web::test::TestRequest;
use common::{Backend, app, call, services};
use serde_json::json;

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
    let retry: u64 = blocked.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=900).contains(&retry), "{retry}");

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

backend_suite!(failed_logins_are_limited);
