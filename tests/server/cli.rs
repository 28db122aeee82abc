//! The `redkit` binary: configuration errors, `--help`, and graceful shutdown on SIGTERM.

use std::{
    collections::{BTreeMap, BTreeSet},
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use crate::common::{RedisServer, Reply, http, sse::Sse};

fn redkit() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_redkit"));
    for var in [
        "BIND",
        "REDIS_URL",
        "REDIS_CLUSTER_NODES",
        "REDIS_CA_CERT",
        "DATABASE_URL",
        "WORKERS",
        "LOG_FORMAT",
        "RUST_LOG",
        "KEY_PREFIX",
        "SECRET_KEY",
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

/// `--help` and the README's configuration table list the same options, each with an
/// environment variable, and agree on every variable and default: neither can drift.
#[test]
fn help_and_readme_table_agree() {
    let out = redkit().arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = help_options(&String::from_utf8(out.stdout).unwrap());
    let readme = readme_options(include_str!("../../README.md"));
    let names = |m: &BTreeMap<String, (String, Option<String>)>| m.keys().cloned().collect();
    let (in_help, in_readme): (BTreeSet<String>, BTreeSet<String>) = (names(&help), names(&readme));
    assert_eq!(
        in_help.difference(&in_readme).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "options of --help missing from the README table"
    );
    assert_eq!(
        in_readme.difference(&in_help).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "README table rows that --help does not know"
    );
    for (flag, (var, default)) in &help {
        let (readme_var, readme_default) = &readme[flag];
        assert_eq!(var, readme_var, "{flag}: variable");
        let readme_default = readme_default.as_deref().unwrap_or_default();
        match default {
            // The README may add a word after the value: "`0` (off)".
            Some(default) => assert!(
                readme_default.starts_with(&format!("`{default}`")),
                "{flag}: --help says default {default}, the README {readme_default:?}"
            ),
            None => assert!(
                !readme_default.starts_with('`'),
                "{flag}: no default in --help, the README says {readme_default:?}"
            ),
        }
    }
    let serve = redkit().args(["serve", "--help"]).output().unwrap();
    assert!(
        String::from_utf8(serve.stdout)
            .unwrap()
            .contains("--redis-url")
    );
}

/// Each `--flag` of a long `--help` (not `--help` or `--version`), with its variable and default.
fn help_options(help: &str) -> BTreeMap<String, (String, Option<String>)> {
    let mut options = BTreeMap::new();
    let mut current: Option<(String, Option<String>, Option<String>)> = None;
    let mut finish = |current: Option<(String, Option<String>, Option<String>)>| {
        if let Some((flag, var, default)) = current {
            let var = var.unwrap_or_else(|| panic!("{flag} has no environment variable"));
            options.insert(flag, (var, default));
        }
    };
    for line in help.lines() {
        let indent = line.len() - line.trim_start().len();
        let head = line.trim_start();
        if (2..=6).contains(&indent) && head.starts_with('-') {
            finish(current.take());
            let flag = head
                .split([' ', ','])
                .find(|w| w.starts_with("--"))
                .unwrap();
            if flag != "--help" && flag != "--version" {
                current = Some((flag.to_owned(), None, None));
            }
        } else if let Some((_, var, default)) = current.as_mut() {
            if let Some(rest) = head.strip_prefix("[env: ") {
                *var = Some(rest.split(['=', ']']).next().unwrap().to_owned());
            } else if let Some(rest) = head.strip_prefix("[default: ") {
                *default = Some(rest.trim_end_matches(']').to_owned());
            }
        }
    }
    finish(current);
    options
}

/// The rows of the README's configuration table: each `--flag` with its variable and its
/// default cell (a row may list two flags and their two variables).
fn readme_options(readme: &str) -> BTreeMap<String, (String, Option<String>)> {
    let mut options = BTreeMap::new();
    let rows = readme
        .lines()
        .skip_while(|l| !l.starts_with("| flag | variable | default |"))
        .skip(2)
        .take_while(|l| l.starts_with('|'));
    for row in rows {
        let cells: Vec<&str> = row.trim_matches('|').split(" | ").map(str::trim).collect();
        let ticked = |cell: &str| -> Vec<String> {
            cell.split('`')
                .skip(1)
                .step_by(2)
                .map(str::to_owned)
                .collect()
        };
        let (flags, vars) = (ticked(cells[0]), ticked(cells[1]));
        assert_eq!(flags.len(), vars.len(), "README row {row:?}");
        for (flag, var) in flags.into_iter().zip(vars) {
            options.insert(flag, (var, Some(cells[2].to_owned())));
        }
    }
    assert!(
        !options.is_empty(),
        "the README's configuration table is gone"
    );
    options
}

/// Bad configuration exits non-zero with one human-readable line, never a panic.
#[test]
fn bad_configuration_is_one_line() {
    let (code, err) = run(redkit().env("REDIS_URL", "http://nope"));
    assert_one_line_error(code, &err, "REDIS_URL");
    // One Redis or a cluster, not both.
    let (code, err) = run(redkit().env("REDIS_URL", "redis://127.0.0.1:1").env(
        "REDIS_CLUSTER_NODES",
        "redis://127.0.0.1:2,redis://127.0.0.1:3",
    ));
    assert_one_line_error(code, &err, "exclude each other: give one");
    let (code, err) = run(redkit().env("DATABASE_URL", "postgres://x"));
    assert_one_line_error(code, &err, "DATABASE_URL");
    let (code, err) = run(redkit().args(["--bind", "not-an-address"]));
    assert_one_line_error(code, &err, "--bind");
    let (code, err) = run(redkit().args(["--workers", "many"]));
    assert_one_line_error(code, &err, "--workers");
    let (code, err) = run(redkit().args(["--log-format", "xml"]));
    assert_one_line_error(code, &err, "--log-format");
    // A brace in the prefix would become, or break, every key's cluster hash tag.
    let (code, err) = run(redkit().env("KEY_PREFIX", "{app}:"));
    assert_one_line_error(code, &err, "must not contain `{` or `}`");
    let (code, err) = run(redkit().args(["--session-limit-policy", "evict-newest"]));
    assert_one_line_error(code, &err, "--session-limit-policy");
    let (code, err) = run(redkit().args(["--refresh-reuse-grace", "604801"]));
    assert_one_line_error(code, &err, "--refresh-reuse-grace");
    // TLS: a CA file that cannot be read, or that holds no certificate.
    let (code, err) = run(redkit().args([
        "--redis-url",
        "rediss://127.0.0.1:1",
        "--redis-ca-cert",
        "/nonexistent/ca.pem",
    ]));
    assert_one_line_error(code, &err, "cannot read --redis-ca-cert/REDIS_CA_CERT");
    let not_pem = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
    let (code, err) = run(redkit()
        .env("REDIS_URL", "rediss://127.0.0.1:1")
        .env("REDIS_CA_CERT", not_pem));
    assert_one_line_error(code, &err, "no PEM certificate");
}

/// No password or secret reaches the output of a failing configuration, of a start-up failure
/// after Redis was configured, or of `--help` with the variables set.
#[test]
fn no_secret_in_any_output() {
    const SECRET: &str = "hunter2-secret";
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = taken.local_addr().unwrap().to_string();
    let with_password = format!("redis://:{SECRET}@127.0.0.1:1");
    /// Variables, then arguments.
    type Case<'a> = (Vec<(&'a str, String)>, Vec<&'a str>);
    let cases: Vec<Case<'_>> = vec![
        // A malformed cluster seed, with and without a scheme.
        (
            vec![("REDIS_CLUSTER_NODES", format!("http://u:{SECRET}@h:1"))],
            vec![],
        ),
        (
            vec![("REDIS_CLUSTER_NODES", format!("u:{SECRET}@h:1"))],
            vec![],
        ),
        (
            vec![("REDIS_CLUSTER_NODES", format!("redis://:{SECRET}@h:port"))],
            vec![],
        ),
        (
            vec![("REDIS_URL", format!("redis://:{SECRET}@[::1"))],
            vec![],
        ),
        // A good URL with another option wrong, or the port taken (Redis is unreachable too).
        (
            vec![("REDIS_URL", with_password.clone())],
            vec!["--workers", "0"],
        ),
        (
            vec![("REDIS_URL", with_password.clone())],
            vec!["--bind", &taken],
        ),
        (
            vec![(
                "REDIS_CLUSTER_NODES",
                format!("redis://:{SECRET}@127.0.0.1:1,redis://:{SECRET}@127.0.0.1:2"),
            )],
            vec!["--bind", &taken],
        ),
        (vec![("SECRET_KEY", SECRET.to_owned())], vec![]),
    ];
    for (env, args) in &cases {
        let mut cmd = redkit();
        cmd.args(args);
        for (var, value) in env {
            cmd.env(var, value);
        }
        let out = cmd.stdin(Stdio::null()).output().unwrap();
        assert_ne!(out.status.code(), Some(0), "{env:?} {args:?} should fail");
        let output = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!output.is_empty(), "{env:?} {args:?}: no output");
        assert!(!output.contains(SECRET), "{env:?} {args:?}: {output}");
    }
    let help = redkit()
        .arg("--help")
        .env("REDIS_URL", &with_password)
        .env("REDIS_CLUSTER_NODES", &with_password)
        .env("SECRET_KEY", SECRET)
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("REDIS_URL"), "{help}");
    assert!(!help.contains(SECRET), "{help}");
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
    assert_eq!(get(port, "/health", &[]).status, 200);

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
    let response = get(port, "/products/1", &[("x-request-id", "trace-me-42")]);
    assert_eq!(response.header("x-request-id"), Some("trace-me-42"));
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

/// A client that subscribes to SSE and never reads is cut by the write timeout: once its socket
/// buffers are full, the server's kernel gives up on the unacknowledged data after
/// `WRITE_TIMEOUT`, and the connection, its stream and its SSE slot are released. Without the
/// timeout the stalled reader holds all three forever (the response body is no longer polled
/// while the socket cannot be written, so no queue limit or heartbeat can notice).
#[test]
fn stalled_sse_reader_is_cut_by_the_write_timeout() {
    const EVENTS: usize = 120;
    let dir = tempfile::tempdir().unwrap();
    let (mut child, port, _lines) = serve(
        &dir,
        &[
            ("WRITE_TIMEOUT", "1"),
            ("EVENTS_HEARTBEAT_MS", "100"),
            // Larger than the events published: the hub never cuts the client as a slow
            // consumer, so only the write timeout can end its stream.
            ("EVENTS_QUEUE", "1000"),
            ("SSE_MAX_PER_IP", "1"),
            ("RATE_LIMITS", "default=off;POST /events/{channel}=off"),
        ],
    );
    let (status, body) = request(
        port,
        "POST",
        "/auth/register",
        &[],
        r#"{"username":"pub","email":"pub@example.com","password":"correct horse"}"#,
    );
    assert_eq!(status, 201, "{body}");
    let (status, body) = request(
        port,
        "POST",
        "/auth/login",
        &[],
        r#"{"username":"pub","password":"correct horse"}"#,
    );
    assert_eq!(status, 200, "{body}");
    let login: serde_json::Value = serde_json::from_str(&body).unwrap();
    let bearer = format!("Bearer {}", login["access_token"].as_str().unwrap());
    let auth = [("authorization", bearer.as_str())];

    // The stalled reader: a tiny receive window, one request, never a read.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket
        .connect(&std::net::SocketAddr::from(([127, 0, 0, 1], port)).into())
        .unwrap();
    let mut stalled = std::net::TcpStream::from(socket);
    std::io::Write::write_all(
        &mut stalled,
        b"GET /events/stall HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .unwrap();
    let clients = |port| events_stats(port)["clients"].as_u64().unwrap();
    assert!(
        poll_until(Duration::from_secs(10), || clients(port) == 1),
        "the subscriber never registered"
    );
    // It holds this address's only SSE slot.
    assert_eq!(subscribe_status(port, "/events/stall"), 429);

    // ~7 MiB of events: far more than the socket buffers on both ends hold.
    let event = format!("\"{}\"", "x".repeat(60_000));
    for _ in 0..EVENTS {
        let (status, body) = request(port, "POST", "/events/stall", &auth, &event);
        assert_eq!(status, 202, "{body}");
    }
    let cut = poll_until(Duration::from_secs(30), || clients(port) == 0);
    let stats = events_stats(port);
    // The slot left with the connection: the address may subscribe again.
    let reopened = if cut {
        subscribe_status(port, "/events/stall")
    } else {
        0
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(cut, "the stalled reader is still connected: {stats}");
    assert_eq!(stats["clients"], 0, "{stats}");
    assert_eq!(stats["published"], EVENTS as u64, "{stats}");
    // How many events reached the stream before the kernel cut it depends on how fast they were
    // published against the 1 s timeout (111 of 120 on one loaded run); none after the cut.
    let delivered = stats["deliveries"].as_u64().unwrap_or(0);
    assert!((1..=EVENTS as u64).contains(&delivered), "{stats}");
    assert_eq!(stats["slow_consumers"], 0, "not cut by the queue: {stats}");
    assert_eq!(reopened, 200);
    drop(stalled);
}

/// A subscriber that closes its connection frees its stream and its SSE slot at once, not at the
/// next heartbeat (a minute here): a browser tab closed and reopened finds its place under the
/// per-address cap. Three rounds, so a slot freed late once cannot pass for one freed on time.
#[test]
fn a_closed_sse_connection_frees_its_slot_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, port, _lines) = serve(
        &dir,
        &[("EVENTS_HEARTBEAT_MS", "60000"), ("SSE_MAX_PER_IP", "1")],
    );
    let clients = |port| events_stats(port)["clients"].as_u64().unwrap();
    let mut outcomes = Vec::new();
    for _ in 0..3 {
        // The last round's reopened stream, closed when its reader was dropped, leaves first.
        poll_until(Duration::from_secs(2), || clients(port) == 0);
        let mut stream = std::net::TcpStream::connect(local(port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        std::io::Write::write_all(
            &mut stream,
            b"GET /events/closing HTTP/1.1\r\nHost: x\r\n\r\n",
        )
        .unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            assert_eq!(std::io::Read::read(&mut stream, &mut byte).unwrap(), 1);
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head).into_owned();
        let open = poll_until(Duration::from_secs(5), || clients(port) == 1);
        let capped = subscribe_status(port, "/events/closing");
        // A clean close, as a browser's: everything received is read first, so the kernel ends
        // the connection with a FIN (closing on unread data would send a reset, which the server
        // noticed even before).
        stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut rest = [0u8; 1024];
        while std::io::Read::read(&mut stream, &mut rest).is_ok_and(|n| n > 0) {}
        drop(stream);
        let started = Instant::now();
        let freed = poll_until(Duration::from_secs(2), || clients(port) == 0);
        let freed_in = started.elapsed();
        let reopened = subscribe_status(port, "/events/closing");
        outcomes.push((
            head.starts_with("HTTP/1.1 200"),
            open,
            capped,
            freed,
            reopened,
        ));
        if !freed {
            break;
        }
        eprintln!("slot freed {freed_in:?} after the close");
    }
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(outcomes, vec![(true, true, 429, true, 200); 3]);
}

/// Opens `GET path` (an SSE subscription), reads the response head only and answers its status.
fn subscribe_status(port: u16, path: &str) -> u16 {
    blocking(async { Sse::open(local(port), path, &[]).await.status })
}

/// Runs `task` to its end on a runtime of its own: these tests drive a child process from plain
/// `#[test]` threads.
fn blocking<T>(task: impl std::future::Future<Output = T>) -> T {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(task)
}

/// `127.0.0.1:port`.
fn local(port: u16) -> std::net::SocketAddr {
    ([127, 0, 0, 1], port).into()
}

/// The `events` counters of `GET /stats`.
fn events_stats(port: u16) -> serde_json::Value {
    let (status, body) = request(port, "GET", "/stats", &[], "");
    assert_eq!(status, 200, "{body}");
    let stats: serde_json::Value = serde_json::from_str(&body).unwrap();
    stats["events"].clone()
}

/// Polls `check` every 50 ms until it holds or `limit` passes; answers whether it held.
fn poll_until(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One request with a JSON `body` and `headers`; answers the status and the body.
fn request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let mut headers = headers.to_vec();
    headers.push(("content-type", "application/json"));
    let reply = blocking(http(local(port), method, path, &headers, body.as_bytes()));
    (
        reply.status,
        String::from_utf8_lossy(&reply.body).into_owned(),
    )
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

/// One `GET` with `headers`.
fn get(port: u16, path: &str, headers: &[(&str, &str)]) -> Reply {
    blocking(http(local(port), "GET", path, headers, b""))
}
