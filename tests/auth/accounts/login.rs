//! Registration, login, and every way an access token can be bad (each with its logged reason).

use super::*;

/// Register answers 201 with the user; duplicates 409; bad passwords and usernames 422.
async fn register_rules(backend: Backend) {
    let services = start(&backend);
    let app = crate::common::app(&services).await;
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
    let app = crate::common::app(&services).await;
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
    let app = crate::common::app(&services).await;
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
    let other = crate::common::services(&config);
    assert_eq!(other.auth.verified_user(&req), None);
    let fresh = request();
    assert_eq!(services.auth.verified_user(&fresh), None);
    assert!(AuthUser::extract(&fresh).await.is_err());
}

backend_suite!(
    register_rules,
    login_rules,
    login_cookie,
    bad_tokens,
    revoked_tokens,
    revoked_before,
    access_expires,
    verified_once_per_request
);
