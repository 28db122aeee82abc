//! Redis only: revocation across instances, outages, and the `redkit` binary's auth commands.

use super::*;

/// A token revoked through one instance is refused by another sharing the Redis within 100 ms.
#[actix_web::test]
async fn revocation_reaches_other_instance_within_100ms() {
    revocation_reaches_other_instance(Backend::redis()).await;
}

/// On a Redis Cluster too, a token revoked through one instance is refused by another
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

/// The per-user session index is pruned at each login: once a session expired,
/// the next login drops it from the index (which used to keep every session ever made).
#[actix_web::test]
async fn session_index_is_pruned() {
    let mut backend = Backend::redis();
    let mut config = with_test_secret(backend.config());
    config.auth.access_ttl = Duration::from_secs(1);
    config.auth.refresh_ttl = Duration::from_secs(1);
    config.auth.refresh_reuse_grace = Duration::ZERO;
    let services = services_of(&config);
    let app = crate::common::app(&services).await;
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
