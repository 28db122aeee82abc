//! Auth: registration, login, token verification (every way a token can be bad, each with its
//! logged reason), refresh rotation, revocation across instances, and Redis outages.

#![cfg(feature = "server")]

mod common;

use std::{
    io::Write,
    sync::Arc,
    time::{Duration, Instant},
};

use actix_web::{App, HttpResponse, test, web};
use base64::Engine;
use common::{Backend, bearer, call, login, register_and_login, services, with_test_secret};
use redkit::{
    auth::{AuthUser, ViewState},
    clock::ManualClock,
    http::Services,
};
use serde_json::{Value, json};

// ---------- log capture: the reason of each 401 is logged, never sent ----------

thread_local! {
    static LOGS: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Writes into the current thread's log buffer: each test (and its actix system) runs on its
/// own thread, so tests running in parallel do not see each other's lines.
struct ThreadWriter;

impl Write for ThreadWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOGS.with(|l| l.borrow_mut().extend_from_slice(buf));
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

struct LogBuf;

impl LogBuf {
    fn take(&self) -> String {
        String::from_utf8(LOGS.with(|l| std::mem::take(&mut *l.borrow_mut()))).unwrap()
    }
}

/// Captures this thread's logs through one global subscriber (a per-test scoped subscriber
/// races with tracing's callsite interest cache when tests run in parallel).
fn capture() -> (LogBuf, ()) {
    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| {
        let subscriber = tracing_subscriber::fmt()
            .with_writer(|| ThreadWriter)
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .finish();
        tracing::subscriber::set_global_default(subscriber).unwrap();
    });
    LogBuf.take();
    (LogBuf, ())
}

// ---------- helpers ----------

/// The redkit app plus `/whoami`, a route that only needs the extractor (no session I/O).
async fn app_with_whoami(
    services: &Services,
) -> impl actix_web::dev::Service<
    actix_http::Request,
    Response = actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>,
    Error = actix_web::Error,
> {
    let services = services.clone();
    test::init_service(
        App::new()
            .configure(move |cfg| services.configure(cfg))
            .route(
                "/whoami",
                web::get().to(|user: AuthUser| async move {
                    HttpResponse::Ok().body(user.0.user_id.to_string())
                }),
            ),
    )
    .await
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn payload_of(token: &str) -> Value {
    let part = token.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(part)
            .unwrap(),
    )
    .unwrap()
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Signs `claims` with the test secret and `alg`.
fn sign(claims: &Value, alg: jsonwebtoken::Algorithm) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(alg),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(common::TEST_SECRET),
    )
    .unwrap()
}

/// Valid access claims for the session of `real` (an issued access token), with `patch`
/// applied (`null` removes a claim).
fn claims(real: &str, patch: Value) -> Value {
    let p = payload_of(real);
    let t = now();
    let mut c = json!({
        "sub": p["sub"], "sid": p["sid"], "jti": "forged-jti", "typ": "access",
        "iat": t, "nbf": t, "exp": t + 600, "iss": "redkit", "aud": "redkit",
    });
    for (k, v) in patch.as_object().unwrap() {
        if v.is_null() {
            c.as_object_mut().unwrap().remove(k);
        } else {
            c[k] = v.clone();
        }
    }
    c
}

fn start(backend: &Backend) -> Services {
    services(&with_test_secret(backend.config()))
}

/// Waits until the revocation view of `services` is in sync (Redis) — memory is at once.
async fn wait_in_sync(services: &Services) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while services.auth.view_state() != ViewState::InSync {
        assert!(Instant::now() < deadline, "view never synced");
        actix_web::rt::time::sleep(Duration::from_millis(5)).await;
    }
}

// ---------- registration and login ----------

/// Register answers 201 with the user; duplicates 409; bad passwords and usernames 422.
async fn register_rules(backend: Backend) {
    let services = start(&backend);
    let app = common::app(&services).await;
    let reg = |u: &str, p: &str| {
        test::TestRequest::post()
            .uri("/auth/register")
            .set_json(json!({
                "username": u, "email": "a@example.com", "password": p,
            }))
    };
    let reply = call(&app, reg("alice", "correct horse")).await;
    assert_eq!(reply.status, 201);
    assert_eq!(
        reply.json(),
        json!({"id": 1, "username": "alice", "email": "a@example.com"})
    );
    call(&app, reg("alice", "another password"))
        .await
        .problem(409);
    let long = "x".repeat(1025);
    for (user, password) in [
        ("bob", "short"),
        ("bob", long.as_str()),
        ("ab", "correct horse"),
        ("Bob", "correct horse"),
        ("bob!", "correct horse"),
        (&*"b".repeat(33), "correct horse"),
    ] {
        call(&app, reg(user, password)).await.problem(422);
    }
    assert_eq!(call(&app, reg("bob", &"x".repeat(1024))).await.status, 201);
}

/// Unknown user and wrong password answer the same 401 body; the right one a bearer pair.
async fn login_rules(backend: Backend) {
    let services = start(&backend);
    let app = common::app(&services).await;
    let (access, refresh) = register_and_login(&app, "alice").await;
    assert_eq!(payload_of(&access)["typ"], "access");
    assert_eq!(payload_of(&refresh)["typ"], "refresh");
    let try_login = |u: &str, p: &str| {
        test::TestRequest::post()
            .uri("/auth/login")
            .set_json(json!({"username": u, "password": p}))
    };
    let ok = call(&app, try_login("alice", "correct horse")).await;
    assert_eq!(ok.status, 200);
    let body = ok.json();
    assert_eq!(body["token_type"], "bearer");
    assert_eq!(body["expires_in"], 1800);
    let wrong = call(&app, try_login("alice", "wrong horse")).await;
    let unknown = call(&app, try_login("nobody", "wrong horse")).await;
    assert_eq!(wrong.problem(401), unknown.problem(401));
    assert_eq!(wrong.body, unknown.body);
}

/// `?cookie=true` sets an HttpOnly, SameSite=Strict, Path=/ cookie that authenticates.
async fn login_cookie(backend: Backend) {
    let services = start(&backend);
    let app = common::app(&services).await;
    register_and_login(&app, "alice").await;
    let reply = call(
        &app,
        test::TestRequest::post()
            .uri("/auth/login?cookie=true")
            .set_json(json!({"username": "alice", "password": "correct horse"})),
    )
    .await;
    let cookie = reply.header("set-cookie").unwrap().to_owned();
    assert!(cookie.starts_with("redkit_access="), "{cookie}");
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(attr), "{cookie} lacks {attr}");
    }
    let value = cookie.split(';').next().unwrap();
    let me = call(
        &app,
        test::TestRequest::get()
            .uri("/auth/me")
            .insert_header(("cookie", value)),
    )
    .await;
    assert_eq!(me.status, 200);
    assert_eq!(me.json()["username"], "alice");
}

// ---------- every way a token can be bad ----------

/// Each bad token answers 401 problem+json with `WWW-Authenticate: Bearer
/// error="invalid_token"`, and its reason is logged (not sent).
async fn bad_tokens(backend: Backend) {
    let (logs, _guard) = capture();
    let services = start(&backend);
    let app = app_with_whoami(&services).await;
    let (access, refresh) = register_and_login(&app, "alice").await;
    let t = now();
    let hs256 = jsonwebtoken::Algorithm::HS256;
    let parts: Vec<&str> = access.split('.').collect();
    let mut sig = parts[2].as_bytes().to_vec();
    sig[10] = if sig[10] == b'A' { b'B' } else { b'A' };
    let tampered_sig = format!(
        "{}.{}.{}",
        parts[0],
        parts[1],
        String::from_utf8(sig).unwrap()
    );
    let mut other = payload_of(&access);
    other["sub"] = json!("2");
    let tampered_payload = format!(
        "{}.{}.{}",
        parts[0],
        b64(other.to_string().as_bytes()),
        parts[2]
    );
    let body = b64(claims(&access, json!({})).to_string().as_bytes());
    let alg_none = format!("{}.{body}.", b64(br#"{"alg":"none","typ":"JWT"}"#));
    let rs256 = format!(
        "{}.{body}.{}",
        b64(br#"{"alg":"RS256","typ":"JWT"}"#),
        parts[2]
    );
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "baseline forged but valid",
            sign(&claims(&access, json!({})), hs256),
            "ok",
        ),
        ("tampered signature", tampered_sig, "bad-signature"),
        ("tampered payload", tampered_payload, "bad-signature"),
        ("alg none", alg_none, "wrong-algorithm"),
        (
            "HS512 header",
            sign(&claims(&access, json!({})), jsonwebtoken::Algorithm::HS512),
            "wrong-algorithm",
        ),
        ("RS256 header", rs256, "wrong-algorithm"),
        (
            "expired beyond leeway",
            sign(
                &claims(
                    &access,
                    json!({"iat": t - 700, "nbf": t - 700, "exp": t - 6}),
                ),
                hs256,
            ),
            "expired",
        ),
        (
            "nbf in the future",
            sign(&claims(&access, json!({"nbf": t + 60})), hs256),
            "not-yet-valid",
        ),
        (
            "exp as string",
            sign(
                &claims(&access, json!({"exp": (t + 600).to_string()})),
                hs256,
            ),
            "malformed-claims",
        ),
        (
            "exp as float",
            sign(
                &claims(&access, json!({"exp": (t + 600) as f64 + 0.5})),
                hs256,
            ),
            "malformed-claims",
        ),
        (
            "exp negative",
            sign(&claims(&access, json!({"exp": -1})), hs256),
            "malformed-claims",
        ),
        (
            "exp huge",
            sign(
                &claims(&access, json!({"exp": 99_999_999_999_999_i64})),
                hs256,
            ),
            "lifetime-too-long",
        ),
        (
            "exp beyond i64",
            sign(&claims(&access, json!({"exp": u64::MAX})), hs256),
            "malformed-claims",
        ),
        (
            "missing exp",
            sign(&claims(&access, json!({"exp": null})), hs256),
            "missing-claim:exp",
        ),
        (
            "missing jti",
            sign(&claims(&access, json!({"jti": null})), hs256),
            "missing-claim:jti",
        ),
        (
            "missing typ",
            sign(&claims(&access, json!({"typ": null})), hs256),
            "missing-claim:typ",
        ),
        (
            "wrong iss",
            sign(&claims(&access, json!({"iss": "evil"})), hs256),
            "wrong-issuer",
        ),
        (
            "wrong aud",
            sign(&claims(&access, json!({"aud": "evil"})), hs256),
            "wrong-audience",
        ),
        ("refresh used as access", refresh.clone(), "wrong-type"),
        (
            "two segments",
            format!("{}.{}", parts[0], parts[1]),
            "malformed",
        ),
        (
            "four segments",
            format!("{access}.{}", parts[2]),
            "malformed",
        ),
        ("64 KiB token", "a".repeat(64 * 1024), "too-long"),
        ("not base64", "!!!.???.***".to_owned(), "malformed"),
    ];
    for (name, token, reason) in cases {
        logs.take();
        let reply = call(
            &app,
            test::TestRequest::get()
                .uri("/whoami")
                .insert_header(bearer(&token)),
        )
        .await;
        let logged = logs.take();
        if reason == "ok" {
            assert_eq!(reply.status, 200, "{name}");
            continue;
        }
        let problem = reply.problem(401);
        assert_eq!(
            reply.header("www-authenticate"),
            Some("Bearer error=\"invalid_token\""),
            "{name}"
        );
        assert!(
            logged.contains(&format!("reason=\"{reason}\"")),
            "{name}: expected reason {reason}, log: {logged}"
        );
        assert!(
            !problem.to_string().contains(reason),
            "{name}: reason leaked"
        );
    }
    // Access token used as a refresh token.
    logs.take();
    let reply = call(
        &app,
        test::TestRequest::post()
            .uri("/auth/refresh")
            .set_json(json!({"refresh_token": access})),
    )
    .await;
    reply.problem(401);
    assert!(logs.take().contains("reason=\"wrong-type\""));
    // No token at all: a bare challenge.
    let reply = call(&app, test::TestRequest::get().uri("/whoami")).await;
    reply.problem(401);
    assert_eq!(reply.header("www-authenticate"), Some("Bearer"));
}

/// Logged-out, logged-out-all and revoked-session tokens are refused, each reason logged.
async fn revoked_tokens(backend: Backend) {
    let (logs, _guard) = capture();
    let services = start(&backend);
    wait_in_sync(&services).await;
    let app = app_with_whoami(&services).await;
    let get = |token: &str| {
        test::TestRequest::get()
            .uri("/whoami")
            .insert_header(bearer(token))
    };
    let post = |uri: &str, token: &str| {
        test::TestRequest::post()
            .uri(uri)
            .insert_header(bearer(token))
    };

    let (a1, _) = register_and_login(&app, "alice").await;
    let (a2, _) = login(&app, "alice", "correct horse").await;
    let (a3, r3) = login(&app, "alice", "correct horse").await;
    assert_eq!(call(&app, get(&a1)).await.status, 200);

    // logout: this session's access token is denylisted.
    assert_eq!(call(&app, post("/auth/logout", &a1)).await.status, 204);
    logs.take();
    call(&app, get(&a1)).await.problem(401);
    assert!(logs.take().contains("reason=\"revoked-token\""));

    // DELETE /auth/sessions/{sid}: that session is revoked.
    let sid2 = payload_of(&a2)["sid"].as_str().unwrap().to_owned();
    let reply = call(
        &app,
        test::TestRequest::delete()
            .uri(&format!("/auth/sessions/{sid2}"))
            .insert_header(bearer(&a3)),
    )
    .await;
    assert_eq!(reply.status, 204);
    logs.take();
    call(&app, get(&a2)).await.problem(401);
    assert!(logs.take().contains("reason=\"revoked-session\""));

    // logout-all: every session, refresh tokens included.
    let (a4, _) = login(&app, "alice", "correct horse").await;
    assert_eq!(call(&app, post("/auth/logout-all", &a4)).await.status, 204);
    for token in [&a3, &a4] {
        logs.take();
        call(&app, get(token)).await.problem(401);
        assert!(logs.take().contains("reason=\"revoked-session\""));
    }
    logs.take();
    let reply = call(
        &app,
        test::TestRequest::post()
            .uri("/auth/refresh")
            .set_json(json!({"refresh_token": r3})),
    )
    .await;
    reply.problem(401);
    let logged = logs.take();
    assert!(logged.contains("reason=\"revoked-session\""), "{logged}");
    // A fresh login after logout-all works.
    let (a5, _) = login(&app, "alice", "correct horse").await;
    assert_eq!(call(&app, get(&a5)).await.status, 200);
}

/// Without the session's per-sid entry, a token older than logout-all is still refused by
/// the user's "revoked before" time.
async fn revoked_before(backend: Backend) {
    let (logs, _guard) = capture();
    let clock = Arc::new(ManualClock::starting_now());
    let mut config = with_test_secret(backend.config());
    config.auth.clock = clock.clone();
    let services = services(&config);
    wait_in_sync(&services).await;
    let app = app_with_whoami(&services).await;
    let (access, _) = register_and_login(&app, "alice").await;
    // A token for a session the index does not know (forged with a fresh sid), issued earlier.
    let t = clock.now_secs_for_test();
    let old = sign(
        &claims(
            &access,
            json!({"sid": "unindexed", "iat": t, "nbf": t, "exp": t + 600}),
        ),
        jsonwebtoken::Algorithm::HS256,
    );
    assert_eq!(
        call(
            &app,
            test::TestRequest::get()
                .uri("/whoami")
                .insert_header(bearer(&old))
        )
        .await
        .status,
        200
    );
    clock.advance(Duration::from_secs(2));
    let reply = call(
        &app,
        test::TestRequest::post()
            .uri("/auth/logout-all")
            .insert_header(bearer(&access)),
    )
    .await;
    assert_eq!(reply.status, 204);
    logs.take();
    call(
        &app,
        test::TestRequest::get()
            .uri("/whoami")
            .insert_header(bearer(&old)),
    )
    .await
    .problem(401);
    assert!(logs.take().contains("reason=\"revoked-user\""));
}

trait NowSecs {
    fn now_secs_for_test(&self) -> i64;
}

impl NowSecs for ManualClock {
    fn now_secs_for_test(&self) -> i64 {
        redkit::clock::Clock::now_secs(self)
    }
}

/// Services on a test clock, in sync, with alice logged in: (clock, services, her access token).
async fn alice_on_test_clock(backend: &Backend) -> (Arc<ManualClock>, Services, String) {
    let clock = Arc::new(ManualClock::starting_now());
    let mut config = with_test_secret(backend.config());
    config.auth.clock = clock.clone();
    let services = services(&config);
    wait_in_sync(&services).await;
    let access = {
        let app = app_with_whoami(&services).await;
        register_and_login(&app, "alice").await.0
    };
    (clock, services, access)
}

/// An access token dies 30 minutes (plus leeway) after issue: time moved by a test clock.
async fn access_expires(backend: Backend) {
    let (logs, _guard) = capture();
    let (clock, services, access) = alice_on_test_clock(&backend).await;
    let app = app_with_whoami(&services).await;
    let get = || {
        test::TestRequest::get()
            .uri("/whoami")
            .insert_header(bearer(&access))
    };
    clock.advance(Duration::from_secs(30 * 60 + 4));
    assert_eq!(call(&app, get()).await.status, 200, "within leeway");
    clock.advance(Duration::from_secs(2));
    logs.take();
    call(&app, get()).await.problem(401);
    assert!(logs.take().contains("reason=\"expired\""));
}

/// A token is verified once per request: the rate limiter's identity hook keeps the principal
/// it verified, and `AuthUser` in the same request reuses it (shown by expiring the token in
/// between: the same request still extracts, a new one with the same token is refused).
async fn verified_once_per_request(backend: Backend) {
    use actix_web::FromRequest;
    let (clock, services, access) = alice_on_test_clock(&backend).await;
    let request = || {
        test::TestRequest::get()
            .uri("/whoami")
            .insert_header(bearer(&access))
            .app_data(services.auth.clone())
            .to_http_request()
    };
    let req = request();
    let user = services.auth.verified_user(&req).expect("a valid token");
    clock.advance(Duration::from_secs(31 * 60));
    let extracted = AuthUser::extract(&req)
        .await
        .expect("verified earlier in this request");
    assert_eq!(extracted.0.user_id, user);
    // The same handle asked again in this request (a second limiter) reuses it too.
    assert_eq!(services.auth.verified_user(&req), Some(user));
    // Another handle (a scope's own, same secret and clock) verifies afresh: expired.
    let mut config = with_test_secret(backend.config());
    config.auth.clock = clock.clone();
    let other = common::services(&config);
    assert_eq!(other.auth.verified_user(&req), None);
    let fresh = request();
    assert_eq!(services.auth.verified_user(&fresh), None);
    assert!(AuthUser::extract(&fresh).await.is_err());
}

// ---------- refresh ----------

/// Services without a refresh reuse grace window (strict rotation).
fn strict_rotation(backend: &Backend) -> Services {
    let mut config = with_test_secret(backend.config());
    config.auth.refresh_reuse_grace = Duration::ZERO;
    services(&config)
}

/// Refresh rotates (without a grace window): the new pair works, the old refresh token is
/// spent, and presenting it again revokes the whole session (the new tokens too).
async fn refresh_rotation(backend: Backend) {
    let (logs, _guard) = capture();
    let services = strict_rotation(&backend);
    wait_in_sync(&services).await;
    let app = app_with_whoami(&services).await;
    let (_, r1) = register_and_login(&app, "alice").await;
    let refresh = |t: &str| {
        test::TestRequest::post()
            .uri("/auth/refresh")
            .set_json(json!({"refresh_token": t}))
    };
    let reply = call(&app, refresh(&r1)).await;
    assert_eq!(reply.status, 200);
    let a2 = reply.json()["access_token"].as_str().unwrap().to_owned();
    let r2 = reply.json()["refresh_token"].as_str().unwrap().to_owned();
    assert_eq!(payload_of(&a2)["sid"], payload_of(&r1)["sid"]);
    assert_eq!(
        call(
            &app,
            test::TestRequest::get()
                .uri("/whoami")
                .insert_header(bearer(&a2))
        )
        .await
        .status,
        200
    );
    logs.take();
    call(&app, refresh(&r1)).await.problem(401);
    assert!(logs.take().contains("reason=\"refresh-reused\""));
    logs.take();
    call(
        &app,
        test::TestRequest::get()
            .uri("/whoami")
            .insert_header(bearer(&a2)),
    )
    .await
    .problem(401);
    assert!(logs.take().contains("reason=\"revoked-session\""));
    call(&app, refresh(&r2)).await.problem(401);
}

/// Ten concurrent refreshes with one token, without a grace window: exactly one 200.
async fn concurrent_refresh(backend: Backend) {
    let services = strict_rotation(&backend);
    wait_in_sync(&services).await;
    let app = common::app(&services).await;
    let (_, refresh) = register_and_login(&app, "alice").await;
    let calls = (0..10).map(|_| {
        call(
            &app,
            test::TestRequest::post()
                .uri("/auth/refresh")
                .set_json(json!({"refresh_token": refresh})),
        )
    });
    let replies = futures_util::future::join_all(calls).await;
    let ok = replies.iter().filter(|r| r.status == 200).count();
    let unauthorized = replies.iter().filter(|r| r.status == 401).count();
    assert_eq!((ok, unauthorized), (1, 9));
}

// ---------- me, sessions, protected writes ----------

/// `/auth/me` and `/auth/sessions` describe the caller; another user's session is a 404.
async fn me_and_sessions(backend: Backend) {
    let (logs, _guard) = capture();
    let services = start(&backend);
    let app = common::app(&services).await;
    let (a1, _) = register_and_login(&app, "alice").await;
    let (a2, _) = login(&app, "alice", "correct horse").await;
    let (b1, _) = register_and_login(&app, "bob").await;
    let me = call(
        &app,
        test::TestRequest::get()
            .uri("/auth/me")
            .insert_header(bearer(&a1))
            .insert_header(("user-agent", "tests/1.0")),
    )
    .await;
    assert_eq!(me.status, 200, "{} {:?}", logs.take(), me.body);
    let me = me.json();
    assert_eq!(me["id"], 1);
    assert_eq!(me["username"], "alice");
    assert_eq!(me["email"], "alice@example.com");
    assert_eq!(me["session"]["sid"], payload_of(&a1)["sid"]);
    assert!(me["session"]["created_at"].is_i64());
    let list = call(
        &app,
        test::TestRequest::get()
            .uri("/auth/sessions")
            .insert_header(bearer(&a2)),
    )
    .await;
    let list = list.json();
    let sessions = list["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 2);
    assert_eq!(sessions.iter().filter(|s| s["current"] == true).count(), 1);
    let bob_sid = payload_of(&b1)["sid"].as_str().unwrap().to_owned();
    call(
        &app,
        test::TestRequest::delete()
            .uri(&format!("/auth/sessions/{bob_sid}"))
            .insert_header(bearer(&a1)),
    )
    .await
    .problem(404);
    assert_eq!(
        call(
            &app,
            test::TestRequest::get()
                .uri("/auth/me")
                .insert_header(bearer(&b1))
        )
        .await
        .status,
        200
    );
}

/// Catalog and cache writes need a valid access token.
async fn writes_need_token(backend: Backend) {
    let services = start(&backend);
    let app = common::app(&services).await;
    let (access, refresh) = register_and_login(&app, "alice").await;
    let product = json!({"name": "Pen", "price": 1.5});
    let anon = call(
        &app,
        test::TestRequest::post()
            .uri("/products")
            .set_json(&product),
    )
    .await;
    anon.problem(401);
    let with_refresh = call(
        &app,
        test::TestRequest::post()
            .uri("/products")
            .insert_header(bearer(&refresh))
            .set_json(&product),
    )
    .await;
    with_refresh.problem(401);
    let ok = call(
        &app,
        test::TestRequest::post()
            .uri("/products")
            .insert_header(bearer(&access))
            .set_json(&product),
    )
    .await;
    assert_eq!(ok.status, 201);
    for req in [
        test::TestRequest::put().uri("/cache/k").set_json(json!(1)),
        test::TestRequest::delete().uri("/cache/k"),
        test::TestRequest::delete().uri("/cache?pattern=*"),
        test::TestRequest::put()
            .uri("/products/1")
            .set_json(json!({"price": 2.0})),
        test::TestRequest::delete().uri("/products/1"),
    ] {
        call(&app, req).await.problem(401);
    }
    let put = call(
        &app,
        test::TestRequest::put()
            .uri("/cache/k")
            .insert_header(bearer(&access))
            .set_json(json!(1)),
    )
    .await;
    assert_eq!(put.status, 200);
    // Reads stay public.
    assert_eq!(
        call(&app, test::TestRequest::get().uri("/cache/k"))
            .await
            .status,
        200
    );
}

/// Issue 16 (10): body-less POSTs authenticated by the cookie (`/auth/logout`,
/// `/auth/logout-all`, `/events/ticket`) need this site's own `Origin`: none, or another
/// site's (a sibling subdomain included), is a 403 `cross-origin` that changes nothing; the
/// same request with the right `Origin`, or with a bearer token, goes through.
async fn cookie_posts_need_same_origin(backend: Backend) {
    let services = start(&backend);
    let app = common::app(&services).await;
    let (access, _) = register_and_login(&app, "alice").await;
    let cookie = format!("redkit_access={access}");
    let post = |path: &str, origin: Option<&str>| {
        let req = test::TestRequest::post()
            .uri(path)
            .insert_header(("host", "shop.example"))
            .insert_header(("cookie", cookie.as_str()));
        match origin {
            Some(origin) => req.insert_header(("origin", origin)),
            None => req,
        }
    };
    for path in ["/events/ticket", "/auth/logout-all", "/auth/logout"] {
        for origin in [
            None,
            Some("http://evil.example"),
            Some("http://a.shop.example"),
        ] {
            let reply = call(&app, post(path, origin)).await;
            assert_eq!(
                reply.problem(403)["type"],
                "https://redkit.dev/problems/cross-origin",
                "{path} from {origin:?}"
            );
        }
    }
    // Nothing was revoked: the token still works, by bearer without any Origin too.
    let ticket = call(
        &app,
        test::TestRequest::post()
            .uri("/events/ticket")
            .insert_header(bearer(&access)),
    )
    .await;
    assert_eq!(ticket.status, 200);
    let ticket = call(&app, post("/events/ticket", Some("http://shop.example"))).await;
    assert_eq!(ticket.status, 200);
    let logout = call(&app, post("/auth/logout", Some("http://shop.example"))).await;
    assert_eq!(logout.status, 204);
}

/// Issue 16 (10): behind a TLS-terminating proxy (plain HTTP to us, no `X-Forwarded-Proto`),
/// `secure_cookie` still marks the access cookie `Secure`; without it, it is not.
async fn secure_cookie_behind_proxy(backend: Backend) {
    for secure in [false, true] {
        let mut config = with_test_secret(backend.config());
        config.auth.secure_cookie = secure;
        let services = services_of(&config);
        let app = common::app(&services).await;
        let (_, _) = register_and_login(&app, "alice").await;
        let reply = call(
            &app,
            test::TestRequest::post()
                .uri("/auth/login?cookie=true")
                .set_json(json!({"username": "alice", "password": "correct horse"})),
        )
        .await;
        assert_eq!(reply.status, 200);
        let set_cookie = reply.header("set-cookie").unwrap().to_owned();
        assert!(set_cookie.starts_with("redkit_access="), "{set_cookie}");
        assert_eq!(set_cookie.contains("; Secure"), secure, "{set_cookie}");
    }
}

/// A user holds at most `max_sessions_per_user` live sessions: with 3, five logins (a second
/// apart) leave the three newest listed, the two oldest revoked (their refresh tokens refused),
/// and the newest still refreshes.
async fn sessions_per_user_are_capped(backend: Backend) {
    let clock = Arc::new(ManualClock::starting_now());
    let mut config = with_test_secret(backend.config());
    config.auth.clock = clock.clone();
    config.auth.max_sessions_per_user = 3;
    let services = services(&config);
    wait_in_sync(&services).await;
    let app = common::app(&services).await;
    let mut pairs = vec![register_and_login(&app, "alice").await];
    for _ in 0..4 {
        clock.advance(Duration::from_secs(1));
        pairs.push(login(&app, "alice", "correct horse").await);
    }
    let sid = |access: &str| payload_of(access)["sid"].as_str().unwrap().to_owned();
    let list = call(
        &app,
        test::TestRequest::get()
            .uri("/auth/sessions")
            .insert_header(bearer(&pairs[4].0)),
    )
    .await;
    assert_eq!(list.status, 200, "{:?}", list.body);
    let listed: Vec<String> = list.json()["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["sid"].as_str().unwrap().to_owned())
        .collect();
    let newest: Vec<String> = pairs[2..].iter().map(|(access, _)| sid(access)).collect();
    assert_eq!(listed, newest);
    let refresh = |token: &str| {
        test::TestRequest::post()
            .uri("/auth/refresh")
            .set_json(json!({ "refresh_token": token }))
    };
    for (_, old) in &pairs[..2] {
        call(&app, refresh(old)).await.problem(401);
    }
    assert_eq!(call(&app, refresh(&pairs[4].1)).await.status, 200);
}

/// A user's sessions, index and login counter are keyed by the user's hash tag (one
/// slot on a cluster), every key has a TTL, a reused refresh token revokes and deletes its
/// session (strict rotation), and logout-all revokes and deletes every session of the user
/// (not another user's).
async fn sessions_keyed_by_user(backend: Backend) {
    let services = strict_rotation(&backend);
    wait_in_sync(&services).await;
    let app = app_with_whoami(&services).await;
    let prefix = with_test_secret(backend.config()).auth.key_prefix;
    let sid = |t: &str| payload_of(t)["sid"].as_str().unwrap().to_owned();
    let (a1, r1) = register_and_login(&app, "alice").await;
    let (a2, _) = login(&app, "alice", "correct horse").await;
    let (a3, _) = login(&app, "alice", "correct horse").await;
    let (b1, _) = register_and_login(&app, "bob").await;
    let whoami = |t: &str| {
        test::TestRequest::get()
            .uri("/whoami")
            .insert_header(bearer(t))
    };
    let refresh = |t: &str| {
        test::TestRequest::post()
            .uri("/auth/refresh")
            .set_json(json!({ "refresh_token": t }))
    };
    assert_eq!(call(&app, refresh(&r1)).await.status, 200);
    call(&app, refresh(&r1)).await.problem(401);
    call(&app, whoami(&a1)).await.problem(401);
    // (user keys of `uid`, the global revocation keys), each key asserted to have a TTL.
    let keys = |uid: u32| {
        backend.keys_with_ttl().map(|mut keys| {
            keys.sort();
            // Each kind within its bounds (ms): a user's keys live as long as a refresh token
            // (604,800 s; the test takes seconds), the login limiter's a window (900 s),
            // revocation records as long as an access token plus leeway (1,805 s).
            for (key, ttl) in &keys {
                let bounds = if key.contains("{user:") {
                    604_700_000..=604_860_000
                } else if key.contains(":rl:") {
                    1..=900_000
                } else {
                    1..=1_805_000
                };
                assert!(
                    bounds.contains(ttl),
                    "{key}: TTL {ttl} ms, not in {bounds:?}"
                );
            }
            let tag = format!("{{user:{uid}}}");
            let user: Vec<String> = keys
                .iter()
                .filter(|(k, _)| k.contains(&tag))
                .map(|(k, _)| k.clone())
                .filter(|k| !k.starts_with(&format!("{prefix}rl:")))
                .collect();
            let revocations: Vec<String> = keys
                .iter()
                .filter(|(k, _)| k.contains("{revocations}"))
                .map(|(k, _)| k.clone())
                .collect();
            (user, revocations)
        })
    };
    let mut alice = vec![
        format!("{prefix}session:{{user:1}}:{}", sid(&a2)),
        format!("{prefix}session:{{user:1}}:{}", sid(&a3)),
    ];
    alice.push(format!("{prefix}session_seq:{{user:1}}"));
    alice.sort();
    alice.push(format!("{prefix}user_sessions:{{user:1}}"));
    if let Some((user, revocations)) = keys(1) {
        assert_eq!(user, alice);
        assert_eq!(
            revocations,
            vec![format!("{prefix}auth:{{revocations}}:sid")]
        );
    }
    let reply = call(
        &app,
        test::TestRequest::post()
            .uri("/auth/logout-all")
            .insert_header(bearer(&a3)),
    )
    .await;
    assert_eq!(reply.status, 204);
    for token in [&a2, &a3] {
        call(&app, whoami(token)).await.problem(401);
    }
    assert_eq!(call(&app, whoami(&b1)).await.status, 200);
    if let Some((user, revocations)) = keys(1) {
        assert_eq!(user, vec![format!("{prefix}session_seq:{{user:1}}")]);
        assert_eq!(
            revocations,
            vec![
                format!("{prefix}auth:{{revocations}}:sid"),
                format!("{prefix}auth:{{revocations}}:user"),
            ]
        );
        let (bob, _) = keys(2).unwrap();
        assert_eq!(
            bob,
            vec![
                format!("{prefix}session:{{user:2}}:{}", sid(&b1)),
                format!("{prefix}session_seq:{{user:2}}"),
                format!("{prefix}user_sessions:{{user:2}}"),
            ]
        );
    }
}

backend_suite!(
    sessions_keyed_by_user,
    sessions_per_user_are_capped,
    secure_cookie_behind_proxy,
    cookie_posts_need_same_origin,
    register_rules,
    login_rules,
    login_cookie,
    bad_tokens,
    revoked_tokens,
    revoked_before,
    access_expires,
    verified_once_per_request,
    refresh_rotation,
    concurrent_refresh,
    me_and_sessions,
    writes_need_token,
);

// ---------- Redis only: instances and outages ----------

/// A token revoked through one instance is refused by another sharing the Redis within 100 ms.
#[actix_web::test]
async fn revocation_reaches_other_instance_within_100ms() {
    revocation_reaches_other_instance(Backend::redis()).await;
}

/// Issue 12: on a Redis Cluster too, a token revoked through one instance is refused by another
/// within 100 ms (the revocation feed reaches every instance).
#[actix_web::test]
async fn revocation_reaches_other_instance_on_a_cluster_within_100ms() {
    revocation_reaches_other_instance(Backend::cluster()).await;
}

async fn revocation_reaches_other_instance(backend: Backend) {
    let a = start(&backend);
    let b = start(&backend);
    wait_in_sync(&a).await;
    wait_in_sync(&b).await;
    let app_a = app_with_whoami(&a).await;
    let app_b = app_with_whoami(&b).await;
    let (access, _) = register_and_login(&app_a, "alice").await;
    let whoami = || {
        test::TestRequest::get()
            .uri("/whoami")
            .insert_header(bearer(&access))
    };
    assert_eq!(call(&app_b, whoami()).await.status, 200);
    let reply = call(
        &app_a,
        test::TestRequest::post()
            .uri("/auth/logout")
            .insert_header(bearer(&access)),
    )
    .await;
    assert_eq!(reply.status, 204);
    let revoked_at = Instant::now();
    loop {
        if call(&app_b, whoami()).await.status == 401 {
            break;
        }
        assert!(
            revoked_at.elapsed() < Duration::from_millis(100),
            "instance B still accepts"
        );
        actix_web::rt::time::sleep(Duration::from_millis(1)).await;
    }
    assert!(revoked_at.elapsed() < Duration::from_millis(100));
    // B rejects it without asking Redis: its view is in sync.
    assert_eq!(b.auth.view_state(), ViewState::InSync);
}

/// A revocation subscriber whose server stops answering without closing the socket (SIGSTOP:
/// half-open) leaves `InSync` within its liveness deadline (check interval + response timeout),
/// and is rebuilt once the server answers again.
#[actix_web::test]
async fn half_open_subscriber_leaves_in_sync() {
    let mut backend = Backend::redis();
    let mut config = with_test_secret(backend.config());
    let mut settings = config.redis.clone().unwrap();
    settings.response_timeout = Duration::from_millis(300);
    config.redis = Some(settings);
    let services = services(&config);
    wait_in_sync(&services).await;
    let resyncs = services.auth.view_resyncs();
    backend.server().unwrap().pause();
    let paused = Instant::now();
    // 500 ms between checks, 300 ms to answer, and slack for a loaded machine.
    let deadline = paused + Duration::from_millis(500 + 300 + 700);
    while services.auth.view_state() == ViewState::InSync {
        if Instant::now() >= deadline {
            backend.server().unwrap().resume();
            panic!("a half-open subscriber left the view in sync");
        }
        actix_web::rt::time::sleep(Duration::from_millis(5)).await;
    }
    backend.server().unwrap().resume();
    wait_in_sync(&services).await;
    assert_eq!(services.auth.view_resyncs(), resyncs + 1);
}

/// Redis down: login, refresh and logout answer 503 with Retry-After. A token the view knows
/// is revoked is 401 throughout; a valid one verifies locally for the feed's liveness deadline
/// (`Detached`), then, since another instance may have revoked it meanwhile, is asked of Redis:
/// 503 with Retry-After (never 401) until Redis answers. Redis restarts empty (no persistence):
/// the view is rebuilt, and still refuses the token it knew was revoked.
#[actix_web::test]
async fn redis_down_verifies_against_redis_after_the_deadline() {
    let mut backend = Backend::redis();
    let services = start(&backend);
    wait_in_sync(&services).await;
    let app = app_with_whoami(&services).await;
    let (access, refresh) = register_and_login(&app, "alice").await;
    let (revoked, _) = login(&app, "alice", "correct horse").await;
    assert_eq!(
        call(
            &app,
            test::TestRequest::post()
                .uri("/auth/logout")
                .insert_header(bearer(&revoked))
        )
        .await
        .status,
        204
    );
    backend.server().unwrap().kill();
    let deadline = Instant::now() + Duration::from_secs(3);
    while services.auth.view_state() != ViewState::Detached {
        assert!(Instant::now() < deadline, "subscription loss not noticed");
        actix_web::rt::time::sleep(Duration::from_millis(5)).await;
    }
    for req in [
        test::TestRequest::post()
            .uri("/auth/login")
            .set_json(json!({"username": "alice", "password": "correct horse"})),
        test::TestRequest::post()
            .uri("/auth/refresh")
            .set_json(json!({"refresh_token": refresh})),
        test::TestRequest::post()
            .uri("/auth/logout")
            .insert_header(bearer(&access)),
    ] {
        let reply = call(&app, req).await;
        reply.problem(503);
        assert!(reply.header("retry-after").is_some());
    }
    let whoami = |t: &str| {
        test::TestRequest::get()
            .uri("/whoami")
            .insert_header(bearer(t))
    };
    call(&app, whoami(&revoked)).await.problem(401);
    let deadline = Instant::now() + Duration::from_secs(3);
    while services.auth.view_state() != ViewState::Stale {
        assert!(Instant::now() < deadline, "the view never went stale");
        actix_web::rt::time::sleep(Duration::from_millis(5)).await;
    }
    let reply = call(&app, whoami(&access)).await;
    reply.problem(503);
    assert_eq!(reply.header("retry-after"), Some("1"));
    call(&app, whoami(&revoked)).await.problem(401);
    backend.server().unwrap().restart();
    wait_in_sync(&services).await;
    assert_eq!(call(&app, whoami(&access)).await.status, 200);
    call(&app, whoami(&revoked)).await.problem(401);
}

/// A view that was never in sync fails closed: a valid token answers 503, never 200.
#[actix_web::test]
async fn never_synced_view_fails_closed() {
    let backend = Backend::redis();
    let services = start(&backend);
    wait_in_sync(&services).await;
    let app = app_with_whoami(&services).await;
    let (access, _) = register_and_login(&app, "alice").await;
    // A second instance whose Redis is unreachable from the start.
    let mut config = with_test_secret(Backend::memory().config());
    let dir = tempfile::tempdir().unwrap();
    let mut settings = redkit::config::RedisSettings::new(format!(
        "unix://{}",
        dir.path().join("nothing.sock").display()
    ));
    settings.response_timeout = Duration::from_millis(100);
    settings.connect_timeout = Duration::from_millis(100);
    config.redis = Some(settings);
    let offline = services_of(&config);
    let app2 = app_with_whoami(&offline).await;
    assert_eq!(offline.auth.view_state(), ViewState::Syncing);
    let reply = call(
        &app2,
        test::TestRequest::get()
            .uri("/whoami")
            .insert_header(bearer(&access)),
    )
    .await;
    reply.problem(503);
    assert!(reply.header("retry-after").is_some());
}

fn services_of(config: &redkit::Config) -> Services {
    services(config)
}

// ---------- the binary ----------

/// A 16-byte secret makes the server refuse to start, with one line, exit code non-zero.
#[::core::prelude::v1::test]
fn short_secret_refuses_to_start() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_redkit"))
        .env("SECRET_KEY", "0123456789abcdef")
        .env("DATABASE_URL", "sqlite::memory:")
        .env("BIND", "127.0.0.1:0")
        .env_remove("REDIS_URL")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    let line = stderr.lines().last().unwrap();
    assert!(line.contains("16 bytes") && line.contains("32"), "{stderr}");
}

/// `redkit user add` creates a user from a password on stdin; a duplicate fails.
#[::core::prelude::v1::test]
fn cli_user_add() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("db.sqlite").display());
    let run = |password: &str| {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_redkit"))
            .args([
                "user",
                "add",
                "--username",
                "ops",
                "--email",
                "ops@example.com",
            ])
            .args(["--database-url", &url])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
        child.wait_with_output().unwrap()
    };
    let first = run("correct horse");
    assert!(first.status.success(), "{first:?}");
    assert_eq!(
        String::from_utf8_lossy(&first.stdout).trim(),
        "created user ops (id 1)"
    );
    let dup = run("correct horse");
    assert!(!dup.status.success());
    assert!(String::from_utf8_lossy(&dup.stderr).contains("already taken"));
    let short = run("short");
    assert!(!short.status.success());
}

/// Issue 16 (10): the per-user session index is pruned at each login: once a session expired,
/// the next login drops it from the index (which used to keep every session ever made).
#[actix_web::test]
async fn session_index_is_pruned() {
    let mut backend = Backend::redis();
    let mut config = with_test_secret(backend.config());
    config.auth.access_ttl = Duration::from_secs(1);
    config.auth.refresh_ttl = Duration::from_secs(1);
    config.auth.refresh_reuse_grace = Duration::ZERO;
    let services = services_of(&config);
    let app = common::app(&services).await;
    // Sessions live 1 s; the index's TTL restarts at every login, so it never expires here.
    register_and_login(&app, "alice").await;
    actix_web::rt::time::sleep(Duration::from_millis(700)).await;
    login(&app, "alice", "correct horse").await;
    let mut index = || {
        let server = backend.server().unwrap();
        let key = server
            .keys_with_ttl()
            .into_iter()
            .map(|(key, _)| key)
            .find(|key| key.contains("user_sessions:"))
            .unwrap();
        let members: i64 = ::redis::cmd("SCARD")
            .arg(&key)
            .query(&mut server.conn())
            .unwrap();
        members
    };
    assert_eq!(index(), 2);
    // The first session is gone, the second still lives: a third login leaves two entries.
    actix_web::rt::time::sleep(Duration::from_millis(700)).await;
    login(&app, "alice", "correct horse").await;
    assert_eq!(index(), 2);
}
