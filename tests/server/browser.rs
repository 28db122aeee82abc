//! The demo page, driven in real headless Chromium through chromedriver (WebDriver): log in,
//! subscribe, publish through the API, and see the event arrive in the page.
//!
//! Chromium is required: the CI script installs Debian's `chromium` and `chromium-driver`; a
//! machine without them fails this test rather than skipping it.
//!
//! WebDriver is spoken directly, over the harness's HTTP client: the eight commands used here
//! take about 100 lines. fantoccini, the maintained client, would add 19 crates to the build
//! (its `webdriver` dependency brings ICU's text segmenter and its data) for them.

use std::{
    net::SocketAddr,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use base64::Engine;
use serde_json::{Value, json};

use crate::common::{Backend, TestServer, http, services};

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
        let ready = crate::common::eventually(Duration::from_secs(10), || async {
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

    /// Loads the demo page of the server at `addr`.
    async fn open(&self, addr: SocketAddr) {
        self.session(
            "POST",
            "/url",
            Some(json!({"url": format!("http://{addr}/")})),
        )
        .await;
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
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().unwrap())
            .expect("a base64 PNG");
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

/// Registers `username` on the server at `addr` and logs in; answers `Bearer <access token>`.
async fn registered_bearer(addr: SocketAddr, username: &str) -> String {
    let headers = [("content-type", "application/json")];
    let register = json!({"username": username, "email": format!("{username}@example.com"),
        "password": "correct horse battery"});
    let reply = http(
        addr,
        "POST",
        "/auth/register",
        &headers,
        register.to_string().as_bytes(),
    )
    .await;
    assert_eq!(reply.status, 201, "{:?}", reply.json());
    let login = json!({"username": username, "password": "correct horse battery"});
    let tokens = http(
        addr,
        "POST",
        "/auth/login",
        &headers,
        login.to_string().as_bytes(),
    )
    .await;
    assert_eq!(tokens.status, 200, "{:?}", tokens.json());
    format!("Bearer {}", tokens.json()["access_token"].as_str().unwrap())
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
    browser.open(addr).await;
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
        .screenshot(match &backend {
            Backend::Memory => "demo-memory",
            Backend::Redis(_) => "demo-redis",
            Backend::Cluster(_) => "demo-cluster",
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
        let mut config = crate::common::with_test_secret(backend.config());
        config.events.retry = Duration::from_millis(300);
        config
    };
    let server = TestServer::start(services(&config()), 1);
    let addr = server.addr;
    let browser = Browser::start().await;
    browser.open(addr).await;
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
    let bearer = registered_bearer(publisher.addr, "pub_user").await;
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

/// What the page's charts hold, per chart: the times of its points, each series' last value, and
/// for each series its label, number of points, largest value, and how many canvas pixels have
/// the series' colour.
const CHART_STATE: &str = r#"
const hex = (c) => [1, 3, 5].map((i) => parseInt(c.slice(i, i + 2), 16));
const out = {};
for (const [name, u] of Object.entries(window.redkitCharts)) {
  const ctx = u.ctx, { width, height } = ctx.canvas;
  const pixels = ctx.getImageData(0, 0, width, height).data;
  out[name] = {
    xs: u.data[0],
    last: u.data.slice(1).map((values) => values.length ? values[values.length - 1] : null),
    series: u.series.slice(1).map((s, i) => {
      const values = u.data[i + 1].filter((v) => v != null);
      const rgb = hex(typeof s.stroke === "function" ? s.stroke(u, i + 1) : s.stroke);
      let painted = 0;
      for (let p = 0; p < pixels.length; p += 4) {
        if (pixels[p + 3] > 200 && rgb.every((c, k) => Math.abs(pixels[p + k] - c) < 24)) painted++;
      }
      return { label: s.label, points: values.length, max: values.length ? Math.max(...values) : null, painted };
    }),
  };
}
return out;
"#;

impl Browser {
    async fn charts(&self) -> Value {
        self.session(
            "POST",
            "/execute/sync",
            Some(json!({"script": CHART_STATE, "args": []})),
        )
        .await
    }

    /// Waits until `check` holds for the charts' state; answers the last state seen.
    async fn wait_charts(&self, check: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let state = self.charts().await;
            if check(&state) || Instant::now() > deadline {
                return state;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// The largest value a chart's series holds over the window (0 when it has no point).
fn series_max(state: &Value, chart: &str, label: &str) -> f64 {
    series(state, chart, label)["max"].as_f64().unwrap_or(0.0)
}

fn series<'a>(state: &'a Value, chart: &str, label: &str) -> &'a Value {
    state[chart]["series"]
        .as_array()
        .unwrap_or_else(|| panic!("no chart {chart}: {state}"))
        .iter()
        .find(|s| s["label"] == label)
        .unwrap_or_else(|| panic!("no series {label} in {chart}: {state}"))
}

/// Every series the traffic below must make non-zero: (chart, series label).
const DRIVEN: [(&str, &str); 12] = [
    ("requests", "2xx"),
    ("requests", "4xx"),
    ("requests", "429"),
    ("cache", "L1 hit %"),
    ("cache", "L2 hit %"),
    ("cache", "miss %"),
    ("ratelimit", "allowed"),
    ("ratelimit", "denied"),
    ("events", "clients"),
    ("events", "deliveries/s"),
    ("redis", "latency ms"),
    ("redis", "up"),
];

/// The live charts draw what happens: with the page open and subscribed, L1 hits, L2 hits
/// (values another instance stored), a miss (404), two allowed calls and a 429 denial of a
/// route policy, and a published event make each of those series non-zero and painted on its
/// canvas, while 5xx and fail-open stay at zero; after the server restarts on the same address
/// the stream reconnects and the charts go on scrolling; when Redis dies the Redis chart shows it
/// down and the rate limiter's in-process fallback decisions are drawn; the charts keep the
/// last five minutes (300 points).
///
/// The screenshots are kept in `target/tmp/screenshots/`: `demo-charts.png` (the README's
/// `assets/demo-charts.png` is a copy of it) and `demo-charts-redis-down.png`.
#[actix_web::test]
async fn demo_page_charts_live_traffic() {
    let mut backend = Backend::redis();
    let mut base = crate::common::with_test_secret(backend.config());
    base.rate_limit = redkit::ratelimit::RateLimitConfig::parse(
        &["default=off", "POST /expensive-operation=2/60s"],
        &[] as &[&str],
    )
    .unwrap();
    let config = || base.clone();
    let server = TestServer::start(services(&config()), 1);
    let addr = server.addr;
    // A second instance on the same Redis: what it stores is an L2 hit for the first.
    let other = TestServer::start(services(&config()), 1);
    let bearer = registered_bearer(addr, "chart_user").await;
    let authed = [
        ("content-type", "application/json"),
        ("authorization", bearer.as_str()),
    ];

    let browser = Browser::start().await;
    browser
        .session(
            "POST",
            "/window/rect",
            Some(json!({"width": 1280, "height": 1100})),
        )
        .await;
    browser.open(addr).await;
    browser.type_into("#channel", "charts").await;
    browser.click("#subscribe").await;
    let status = browser
        .wait_text("#stream-status", "Connected to charts")
        .await;
    assert!(status.contains("Connected to charts"), "{status}");
    assert!(
        browser
            .wait_text("#stats-status", "Live.")
            .await
            .contains("Live.")
    );

    // Cache: three L1 hits, two L2 hits, a miss (unequal shares: their lines do not overlap).
    let put = |addr, key: &'static str| async move {
        let path = format!("/cache/{key}");
        let reply = http(addr, "PUT", &path, &authed, br#"{"n":1}"#).await;
        assert_eq!(reply.status, 200, "{:?}", reply.json());
    };
    put(addr, "mine").await;
    for _ in 0..3 {
        let hit = http(addr, "GET", "/cache/mine", &[], b"").await;
        assert_eq!(hit.header("x-cache"), Some("HIT-L1"));
    }
    for key in ["theirs-1", "theirs-2"] {
        put(other.addr, key).await;
        let hit = http(addr, "GET", &format!("/cache/{key}"), &[], b"").await;
        assert_eq!(hit.status, 200);
        assert_eq!(hit.header("x-cache"), Some("HIT-L2"));
    }
    assert_eq!(
        http(addr, "GET", "/cache/nothing", &[], b"").await.status,
        404
    );
    // Rate limiting: two allowed, one denied.
    for expected in [200, 200, 429] {
        let reply = http(addr, "POST", "/expensive-operation", &[], b"").await;
        assert_eq!(reply.status, expected);
    }
    // An event for the page's subscription.
    let published = http(
        addr,
        "POST",
        "/events/charts",
        &authed,
        br#"{"text":"chart me"}"#,
    )
    .await;
    assert_eq!(published.status, 202, "{:?}", published.json());
    assert!(
        browser
            .wait_text("#events", "chart me")
            .await
            .contains("chart me")
    );
    // A few more seconds of varying traffic, so that the lines (and the screenshot) move.
    for round in 1..=3 {
        tokio::time::sleep(Duration::from_millis(900)).await;
        for _ in 0..2 * round {
            assert_eq!(http(addr, "GET", "/cache/mine", &[], b"").await.status, 200);
        }
        assert_eq!(
            http(addr, "GET", "/cache/nothing", &[], b"").await.status,
            404
        );
        let body = format!(r#"{{"round":{round}}}"#);
        let published = http(addr, "POST", "/events/charts", &authed, body.as_bytes()).await;
        assert_eq!(published.status, 202);
    }

    let state = browser
        .wait_charts(|state| {
            state["requests"]["xs"].as_array().unwrap().len() >= 8
                && DRIVEN.iter().all(|(chart, label)| {
                    series_max(state, chart, label) > 0.0
                        && series(state, chart, label)["painted"].as_u64() > Some(0)
                })
        })
        .await;
    for (chart, label) in DRIVEN {
        assert!(
            series_max(&state, chart, label) > 0.0,
            "{chart}/{label}: {state}"
        );
        assert!(
            series(&state, chart, label)["painted"].as_u64().unwrap() > 0,
            "{chart}/{label} not drawn: {state}"
        );
    }
    assert_eq!(series_max(&state, "requests", "5xx"), 0.0, "{state}");
    assert_eq!(series_max(&state, "ratelimit", "fallback"), 0.0, "{state}");
    assert_eq!(series_max(&state, "events", "clients"), 1.0, "{state}");
    assert_eq!(series_max(&state, "redis", "up"), 1.0, "{state}");
    // One point a second.
    let xs: Vec<f64> = serde_json::from_value(state["requests"]["xs"].clone()).unwrap();
    assert!(xs.len() >= 2, "{state}");
    for pair in xs.windows(2) {
        let step = pair[1] - pair[0];
        assert!((0.5..=1.6).contains(&step), "points {step} s apart: {xs:?}");
    }
    let shot = browser.screenshot("demo-charts").await;
    assert!(std::fs::metadata(shot).unwrap().len() > 30_000);

    // The server restarts on the same address: the stream reconnects and points keep coming.
    server.services.events.shutdown();
    server.stop().await;
    let status = browser.wait_text("#stats-status", "lost").await;
    assert!(status.contains("Stats stream lost"), "{status}");
    let stopped = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let restarted = TestServer::start_at(services(&config()), 1, addr);
    assert!(
        browser
            .wait_text("#stats-status", "Live.")
            .await
            .contains("Live.")
    );
    let points_since = |state: &Value| {
        state["requests"]["xs"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|x| x.as_f64().unwrap() > stopped)
            .count()
    };
    let state = browser.wait_charts(|state| points_since(state) >= 2).await;
    assert!(points_since(&state) >= 2, "{state}");

    // Redis goes away: the Redis chart shows it down, and the route policy decides in process.
    backend.server().unwrap().kill();
    let reply = http(addr, "POST", "/expensive-operation", &[], b"").await;
    assert_eq!(reply.status, 200);
    let last = |state: &Value, chart: &str, label: &str| {
        let values = state[chart]["series"]
            .as_array()
            .unwrap()
            .iter()
            .position(|s| s["label"] == label)
            .map(|i| state[chart]["last"][i].clone());
        values.unwrap_or(Value::Null)
    };
    let state = browser
        .wait_charts(|state| {
            last(state, "redis", "up") == 0.0 && series_max(state, "ratelimit", "fallback") > 0.0
        })
        .await;
    assert_eq!(last(&state, "redis", "up"), 0.0, "{state}");
    assert_eq!(last(&state, "redis", "latency ms"), Value::Null, "{state}");
    assert!(series_max(&state, "ratelimit", "fallback") > 0.0, "{state}");
    assert!(series(&state, "ratelimit", "fallback")["painted"].as_u64() > Some(0));
    assert!(
        browser
            .wait_text("#stat-redis", "DOWN")
            .await
            .contains("DOWN")
    );
    browser.screenshot("demo-charts-redis-down").await;

    // Five minutes scroll by: fed 310 more seconds of snapshots (a real one, advanced one second
    // and one 2xx at a time), every chart keeps the last 300 points.
    let script = r#"const done = arguments[arguments.length - 1];
      fetch("/stats").then((r) => r.json()).then((s) => {
        for (let i = 0; i < 310; i++) { s.time_ms += 1000; s.http.status_2xx += 1; plot(s); }
        const u = redkitCharts.requests;
        done({ lengths: Object.values(redkitCharts).map((c) => c.data[0].length),
               span: u.data[0][299] - u.data[0][0], last2xx: u.data[1][299] });
      });"#;
    let scrolled = browser
        .session(
            "POST",
            "/execute/async",
            Some(json!({"script": script, "args": []})),
        )
        .await;
    assert_eq!(
        scrolled["lengths"],
        json!([300, 300, 300, 300, 300]),
        "{scrolled}"
    );
    let span = scrolled["span"].as_f64().unwrap();
    assert!((span - 299.0).abs() < 1e-6, "{scrolled}");
    assert_eq!(scrolled["last2xx"], 1.0, "{scrolled}");
    browser.session("DELETE", "", None).await;
    restarted.stop().await;
    other.stop().await;
}
