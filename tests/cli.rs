//! The `redkit` binary: configuration errors, `--help`, and graceful shutdown on SIGTERM.

mod common;

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use common::RedisServer;

fn redkit() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_redkit"));
    for var in [
        "BIND",
        "REDIS_URL",
        "DATABASE_URL",
        "WORKERS",
        "LOG_FORMAT",
        "RUST_LOG",
        "KEY_PREFIX",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

/// Runs the binary to completion; answers (exit code, stderr lines).
fn run(cmd: &mut Command) -> (i32, Vec<String>) {
    let out = cmd.stdin(Stdio::null()).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr)
        .lines()
        .map(str::to_owned)
        .collect();
    (out.status.code().unwrap_or(-1), stderr)
}

fn assert_one_line_error(code: i32, stderr: &[String], needle: &str) {
    assert_ne!(code, 0);
    assert_eq!(stderr.len(), 1, "exactly one line expected: {stderr:#?}");
    assert!(
        stderr[0].contains(needle),
        "{:?} should mention {needle:?}",
        stderr[0]
    );
    assert!(!stderr[0].contains("panicked"));
}

/// `--help` documents every option together with its environment variable.
#[test]
fn help_documents_every_option_and_variable() {
    let out = redkit().arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for (flag, var) in [
        ("--bind", "BIND"),
        ("--redis-url", "REDIS_URL"),
        ("--database-url", "DATABASE_URL"),
        ("--workers", "WORKERS"),
        ("--log-format", "LOG_FORMAT"),
        ("--key-prefix", "KEY_PREFIX"),
        ("--l1-max-bytes", "L1_MAX_BYTES"),
        ("--l1-ttl", "L1_TTL"),
        ("--cache-ttl", "CACHE_TTL"),
        ("--cache-max-ttl", "CACHE_MAX_TTL"),
        ("--negative-ttl", "NEGATIVE_TTL"),
        ("--product-ttl", "PRODUCT_TTL"),
        ("--product-list-ttl", "PRODUCT_LIST_TTL"),
        ("--redis-timeout-ms", "REDIS_TIMEOUT_MS"),
        ("--redis-connect-timeout-ms", "REDIS_CONNECT_TIMEOUT_MS"),
        ("--body-limit", "BODY_LIMIT"),
        ("--shutdown-timeout", "SHUTDOWN_TIMEOUT"),
        ("--rate-limit", "RATE_LIMITS"),
        ("--trusted-proxies", "TRUSTED_PROXIES"),
        ("--secret-key", "SECRET_KEY"),
        ("--secret-key-file", "SECRET_KEY_FILE"),
        ("--access-token-ttl", "ACCESS_TOKEN_TTL"),
        ("--refresh-token-ttl", "REFRESH_TOKEN_TTL"),
        ("--token-leeway", "TOKEN_LEEWAY"),
        ("--token-issuer", "TOKEN_ISSUER"),
        ("--events-history-len", "EVENTS_HISTORY_LEN"),
        ("--events-ttl", "EVENTS_TTL"),
        ("--events-queue", "EVENTS_QUEUE"),
        ("--events-heartbeat-ms", "EVENTS_HEARTBEAT_MS"),
        ("--events-retry-ms", "EVENTS_RETRY_MS"),
    ] {
        assert!(help.contains(flag), "--help lacks {flag}");
        // The secret's value is hidden: `[env: SECRET_KEY]`, no `=`.
        assert!(
            help.contains(&format!("[env: {var}=")) || help.contains(&format!("[env: {var}]")),
            "--help lacks the variable {var}"
        );
    }
    let serve = redkit().args(["serve", "--help"]).output().unwrap();
    assert!(
        String::from_utf8(serve.stdout)
            .unwrap()
            .contains("--redis-url")
    );
}

/// Bad configuration exits non-zero with one human-readable line, never a panic.
#[test]
fn bad_configuration_is_one_line() {
    let (code, err) = run(redkit().env("REDIS_URL", "http://nope"));
    assert_one_line_error(code, &err, "REDIS_URL");
    let (code, err) = run(redkit().env("DATABASE_URL", "postgres://x"));
    assert_one_line_error(code, &err, "DATABASE_URL");
    let (code, err) = run(redkit().args(["--bind", "not-an-address"]));
    assert_one_line_error(code, &err, "--bind");
    let (code, err) = run(redkit().args(["--workers", "many"]));
    assert_one_line_error(code, &err, "--workers");
    let (code, err) = run(redkit().args(["--log-format", "xml"]));
    assert_one_line_error(code, &err, "--log-format");
}

/// A taken port and an unwritable database path are each one line, exit code 1.
#[test]
fn start_up_failures_are_one_line() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}/catalog.db", dir.path().display());
    let (code, err) = run(redkit().args(["--bind", &addr, "--database-url", &db]));
    assert_eq!(code, 1);
    assert_one_line_error(code, &err, "cannot listen on");

    let (code, err) = run(redkit().args([
        "--bind",
        "127.0.0.1:0",
        "--database-url",
        "sqlite:///nonexistent-dir/x/catalog.db",
    ]));
    assert_eq!(code, 1);
    assert_one_line_error(code, &err, "cannot open database");
}

/// SIGTERM stops the server cleanly: exit 0, a final log line, and no Redis client left behind.
#[test]
fn sigterm_shuts_down_gracefully() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let redis_url = redis.url();
    let (mut child, port, lines) = serve(&dir, &[("REDIS_URL", &redis_url)]);
    // One real request so the Redis connection exists.
    let response = get(port, "/health", "");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let started = Instant::now();
    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break exit;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "did not stop");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(exit.success(), "{exit:?}");
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(
        rest.iter().any(|l| l.contains("redkit stopped")),
        "{rest:#?}"
    );
    let mut conn = redis.conn();
    let clients: String = redis::cmd("CLIENT").arg("LIST").query(&mut conn).unwrap();
    assert_eq!(
        clients.lines().count(),
        1,
        "only the test's own connection remains: {clients}"
    );
}

/// In JSON logs, a line written while serving a request carries that request's id.
#[test]
fn log_lines_carry_the_request_id() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, port, mut lines) = serve(&dir, &[("RUST_LOG", "info,redkit::access=debug")]);
    let response = get(port, "/products/1", "X-Request-Id: trace-me-42\r\n");
    assert!(response.contains("x-request-id: trace-me-42"), "{response}");
    let event = loop {
        let line = lines.next().expect("an access line").unwrap();
        let event: serde_json::Value = serde_json::from_str(&line).unwrap();
        if event["target"] == "redkit::access" {
            break event;
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(event["target"], "redkit::access");
    assert_eq!(event["request_id"], "trace-me-42", "{event}");
    assert_eq!(event["status"], 200);
    assert_eq!(event["route"], "/products/{id}");
}

/// Starts the binary on a free port with JSON logs, a database in `dir` and `env`; waits until it
/// listens. Answers the child, its port and the rest of its log lines.
fn serve(
    dir: &tempfile::TempDir,
    env: &[(&str, &str)],
) -> (
    std::process::Child,
    u16,
    std::io::Lines<BufReader<std::process::ChildStderr>>,
) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut cmd = redkit();
    cmd.args([
        "--bind",
        &format!("127.0.0.1:{port}"),
        "--workers",
        "1",
        "--log-format",
        "json",
    ])
    .env(
        "DATABASE_URL",
        format!("sqlite://{}/c.db", dir.path().display()),
    )
    .stdin(Stdio::null())
    .stderr(Stdio::piped());
    for (name, value) in env {
        cmd.env(name, value);
    }
    let mut child = cmd.spawn().unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let deadline = Instant::now() + Duration::from_secs(10);
    let listening = loop {
        let Some(Ok(line)) = lines.next() else {
            break false;
        };
        let event: serde_json::Value = serde_json::from_str(&line).expect("JSON log lines");
        if event["message"] == "redkit listening" {
            break true;
        }
        if Instant::now() >= deadline {
            break false;
        }
    };
    if !listening {
        let _ = child.kill();
        let _ = child.wait();
        panic!("the server did not start");
    }
    (child, port, lines)
}

/// One `GET` over a fresh connection, with `extra` header lines; answers the raw response.
fn get(port: u16, path: &str, extra: &str) -> String {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\n{extra}Connection: close\r\n\r\n");
    std::io::Write::write_all(&mut stream, request.as_bytes()).unwrap();
    let mut response = String::new();
    std::io::Read::read_to_string(&mut stream, &mut response).unwrap();
    response
}
