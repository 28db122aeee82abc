//! Refresh rotation, `/auth/me` and sessions, and the writes that need a token.

use super::*;

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
    let app = crate::common::app(&services).await;
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
    let app = crate::common::app(&services).await;
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
    let app = crate::common::app(&services).await;
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

/// Body-less POSTs authenticated by the cookie (`/auth/logout`,
/// `/auth/logout-all`, `/events/ticket`) need this site's own `Origin`: none, or another
/// site's (a sibling subdomain included), is a 403 `cross-origin` that changes nothing; the
/// same request with the right `Origin`, or with a bearer token, goes through.
async fn cookie_posts_need_same_origin(backend: Backend) {
    let services = start(&backend);
    let app = crate::common::app(&services).await;
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

/// Behind a TLS-terminating proxy (plain HTTP to us, no `X-Forwarded-Proto`),
/// `secure_cookie` still marks the access cookie `Secure`; without it, it is not.
async fn secure_cookie_behind_proxy(backend: Backend) {
    for secure in [false, true] {
        let mut config = with_test_secret(backend.config());
        config.auth.secure_cookie = secure;
        let services = services_of(&config);
        let app = crate::common::app(&services).await;
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
    let app = crate::common::app(&services).await;
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
    refresh_rotation,
    concurrent_refresh,
    me_and_sessions,
    writes_need_token
);
