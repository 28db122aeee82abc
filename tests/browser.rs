//! The demo page, driven in real headless Chromium through chromedriver (WebDriver): log in,
//! subscribe, publish through the API, and see the event arrive in the page.
//!
//! Chromium is required: the CI script installs Debian's `chromium` and `chromium-driver`; a
//! machine without them fails this test rather than skipping it.

mod common;

use std::{
    net::SocketAddr,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use common::{Backend, TestServer, http, services};
use serde_json::{Value, json};

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A chromedriver process and one headless Chromium session.
struct Browser {
    driver: Child,
    addr: SocketAddr,
    session: String,
    _profile: tempfile::TempDir,
}

fn find(binary: &str, fallback: &str) -> String {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {binary}")])
        .output()
        .unwrap();
    let path = String::from_utf8_lossy(&found.stdout).trim().to_owned();
    if !path.is_empty() {
        return path;
    }
    assert!(
        std::path::Path::new(fallback).exists(),
        "{binary} is required for the browser test: apt-get install chromium chromium-driver (.ci/run does)"
    );
    fallback.to_owned()
}

impl Browser {
    async fn start() -> Self {
        let driver_bin = find("chromedriver", "/usr/bin/chromedriver");
        let chromium = find("chromium", "/usr/bin/chromium");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = Command::new(driver_bin)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let ready = common::eventually(Duration::from_secs(10), || async {
            tokio::net::TcpStream::connect(addr).await.is_ok()
        })
        .await;
        assert!(ready, "chromedriver did not start");
        let profile = tempfile::tempdir().unwrap();
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-quic", "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--window-size=1280,900",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            },
        }}});
        let mut browser = Self {
            driver,
            addr,
            session: String::new(),
            _profile: profile,
        };
        let created = browser.wd("POST", "/session", Some(caps)).await;
        browser.session = created["sessionId"]
            .as_str()
            .expect("a WebDriver session")
            .to_owned();
        browser
    }

    async fn wd(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let reply = http(
            self.addr,
            method,
            path,
            &[("content-type", "application/json")],
            body.as_bytes(),
        )
        .await;
        let value = reply.json();
        assert_eq!(reply.status, 200, "WebDriver {method} {path}: {value}");
        value["value"].clone()
    }

    async fn session(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        self.wd(method, &format!("/session/{}{path}", self.session), body)
            .await
    }

    async fn element(&self, css: &str) -> String {
        let found = self
            .session(
                "POST",
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        found[ELEMENT].as_str().unwrap().to_owned()
    }

    async fn type_into(&self, css: &str, text: &str) {
        let el = self.element(css).await;
        self.session("POST", &format!("/element/{el}/clear"), Some(json!({})))
            .await;
        self.session(
            "POST",
            &format!("/element/{el}/value"),
            Some(json!({"text": text})),
        )
        .await;
    }

    async fn click(&self, css: &str) {
        let el = self.element(css).await;
        self.session("POST", &format!("/element/{el}/click"), Some(json!({})))
            .await;
    }

    async fn text(&self, css: &str) -> String {
        let el = self.element(css).await;
        self.session("GET", &format!("/element/{el}/text"), None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Waits until the text of `css` contains `needle`; answers the last text seen.
    async fn wait_text(&self, css: &str, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = self.text(css).await;
            if text.contains(needle) || Instant::now() > deadline {
                return text;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn screenshot(&self, name: &str) -> std::path::PathBuf {
        let png = self.session("GET", "/screenshot", None).await;
        let bytes = base64_decode(png.as_str().unwrap());
        assert_eq!(&bytes[1..4], b"PNG");
        let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, bytes).unwrap();
        println!("screenshot: {}", path.display());
        path
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn base64_decode(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for b in text
        .bytes()
        .filter(|b| *b != b'=' && !b.is_ascii_whitespace())
    {
        let v = ALPHABET.iter().position(|a| *a == b).expect("base64") as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

/// Log in on the page, subscribe, publish through the API: the event shows up in the page.
async fn demo_page_shows_published_events(backend: Backend) {
    let server = TestServer::start(services(&backend.config()), 2);
    let addr = server.addr;
    let register = json!({"username": "demo_user", "email": "demo@example.com", "password": "correct horse battery"});
    let reply = http(
        addr,
        "POST",
        "/auth/register",
        &[("content-type", "application/json")],
        register.to_string().as_bytes(),
    )
    .await;
    assert_eq!(reply.status, 201, "{:?}", reply.json());

    let browser = Browser::start().await;
    browser
        .session(
            "POST",
            "/url",
            Some(json!({"url": format!("http://{addr}/")})),
        )
        .await;
    browser.type_into("#username", "demo_user").await;
    browser
        .type_into("#password", "correct horse battery")
        .await;
    browser.click("#login").await;
    let status = browser
        .wait_text("#auth-status", "Logged in as demo_user")
        .await;
    assert!(status.contains("Logged in as demo_user"), "{status}");

    browser.type_into("#channel", "demo").await;
    browser.click("#subscribe").await;
    let status = browser
        .wait_text("#stream-status", "Connected to demo")
        .await;
    assert!(status.contains("Connected to demo"), "{status}");

    let login = json!({"username": "demo_user", "password": "correct horse battery"});
    let tokens = http(
        addr,
        "POST",
        "/auth/login",
        &[("content-type", "application/json")],
        login.to_string().as_bytes(),
    )
    .await;
    let token = tokens.json()["access_token"].as_str().unwrap().to_owned();
    let bearer = format!("Bearer {token}");
    let published = http(
        addr,
        "POST",
        "/events/demo",
        &[
            ("content-type", "application/json"),
            ("authorization", &bearer),
        ],
        br#"{"text":"from the API, line one\nline two"}"#,
    )
    .await;
    assert_eq!(published.status, 202, "{:?}", published.json());
    let id = published.json()["id"].as_str().unwrap().to_owned();

    let events = browser.wait_text("#events", "from the API").await;
    assert!(events.contains(&format!("#{id} message")), "{events}");
    assert!(
        events.contains(r#"{"text":"from the API, line one\nline two"}"#),
        "{events}"
    );
    // The live stats panel counts this page's stream.
    let clients = browser.wait_text("#stat-clients", "1").await;
    assert_eq!(clients, "1");
    let shot = browser
        .screenshot(if backend.is_redis() {
            "demo-redis"
        } else {
            "demo-memory"
        })
        .await;
    assert!(std::fs::metadata(shot).unwrap().len() > 10_000);
    browser.session("DELETE", "", None).await;
    server.stop().await;
}

backend_suite!(demo_page_shows_published_events);

/// The page shows a dropped connection, and after it resumes (Last-Event-ID) it holds the event
/// published while it was away, exactly once: the server restarts on the same address and
/// replays from the channel's history in Redis.
#[actix_web::test]
async fn demo_page_resumes_without_losing_events() {
    let backend = Backend::redis();
    let config = || {
        let mut config = common::with_test_secret(backend.config());
        config.events.retry = Duration::from_millis(300);
        config
    };
    let server = TestServer::start(services(&config()), 1);
    let addr = server.addr;
    let browser = Browser::start().await;
    browser
        .session(
            "POST",
            "/url",
            Some(json!({"url": format!("http://{addr}/")})),
        )
        .await;
    browser.type_into("#channel", "resume").await;
    browser.click("#subscribe").await;
    assert!(
        browser
            .wait_text("#stream-status", "Connected to resume")
            .await
            .contains("Connected")
    );

    // A publisher instance sharing the Redis (its own port), with its own user.
    let publisher = TestServer::start(services(&config()), 1);
    let register = json!({"username": "pub_user", "email": "p@example.com", "password": "correct horse battery"});
    let headers = [("content-type", "application/json")];
    assert_eq!(
        http(
            publisher.addr,
            "POST",
            "/auth/register",
            &headers,
            register.to_string().as_bytes()
        )
        .await
        .status,
        201
    );
    let login = json!({"username": "pub_user", "password": "correct horse battery"});
    let tokens = http(
        publisher.addr,
        "POST",
        "/auth/login",
        &headers,
        login.to_string().as_bytes(),
    )
    .await;
    let bearer = format!("Bearer {}", tokens.json()["access_token"].as_str().unwrap());
    let publish = |text: &'static str| {
        let bearer = bearer.clone();
        async move {
            let body = format!(r#"{{"text":"{text}"}}"#);
            let reply = http(
                publisher.addr,
                "POST",
                "/events/resume",
                &[
                    ("content-type", "application/json"),
                    ("authorization", &bearer),
                ],
                body.as_bytes(),
            )
            .await;
            assert_eq!(reply.status, 202, "{:?}", reply.json());
        }
    };
    publish("before-the-drop").await;
    assert!(
        browser
            .wait_text("#events", "before-the-drop")
            .await
            .contains("before-the-drop")
    );

    // The page's server goes away: the page says so.
    server.services.events.shutdown();
    server.stop().await;
    let status = browser.wait_text("#stream-status", "Connection lost").await;
    assert!(status.contains("Connection lost"), "{status}");
    publish("while-away").await;

    // Back on the same address: the browser reconnects with Last-Event-ID and gets the replay.
    let restarted = TestServer::start_at(services(&config()), 1, addr);
    let events = browser.wait_text("#events", "while-away").await;
    assert!(events.contains("while-away"), "{events}");
    assert_eq!(events.matches("before-the-drop").count(), 1, "{events}");
    assert_eq!(events.matches("while-away").count(), 1, "{events}");
    let status = browser
        .wait_text("#stream-status", "Connected to resume")
        .await;
    assert!(status.contains("Connected"), "{status}");
    browser.screenshot("demo-resumed").await;
    browser.session("DELETE", "", None).await;
    restarted.stop().await;
    publisher.stop().await;
}
