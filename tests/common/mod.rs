//! Test harness: a private `redis-server` per test, and redkit apps on either backend.
#![allow(dead_code, unreachable_pub)]

pub mod cluster;
pub mod durations;
pub mod proxy;
pub mod sse;
pub mod static_tokens;
pub mod tls;

pub use cluster::RedisCluster;

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use actix_web::{
    body::MessageBody,
    dev::{Service, ServiceResponse},
    test,
};
use redkit::{Config, config::RedisSettings, http::Services};

/// A `redis-server` this harness started: its own temp dir and unix socket, no persistence.
/// Killed on drop; its log is printed when the test failed.
pub struct RedisServer {
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a fresh server and waits until it answers `PING`.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut server = Self { dir, child: None };
        server.spawn();
        server
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("redis.sock")
    }

    /// The unix socket the server listens on.
    pub fn socket_path(&self) -> PathBuf {
        self.socket()
    }

    fn spawn(&mut self) {
        let dir = self.dir.path();
        let child = Command::new("redis-server")
            .args(["--port", "0", "--unixsocket"])
            .arg(self.socket())
            .args([
                "--unixsocketperm",
                "700",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
            ])
            .arg(dir)
            .arg("--logfile")
            .arg(dir.join("redis.log"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (the CI script installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(mut conn) = self.client().get_connection()
                && redis::cmd("PING").query::<String>(&mut conn).is_ok()
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "redis-server did not start: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The server's process id, while it runs.
    #[allow(dead_code)]
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The URL redkit connects with.
    pub fn url(&self) -> String {
        format!("unix://{}", self.socket().display())
    }

    /// A plain client for inspecting the server from the test.
    pub fn client(&self) -> redis::Client {
        redis::Client::open(self.url()).expect("redis url")
    }

    /// A synchronous connection for inspection.
    pub fn conn(&self) -> redis::Connection {
        self.client()
            .get_connection()
            .expect("connect to test redis")
    }

    /// Kills the server (SIGKILL) and waits for it to be gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_file(self.socket());
    }

    /// Starts the server again on the same socket (empty: nothing is persisted).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Every key in the server, with its PTTL.
    pub fn keys_with_ttl(&self) -> Vec<(String, i64)> {
        let mut conn = self.conn();
        let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut conn).unwrap();
        keys.into_iter()
            .map(|k| {
                let ttl: i64 = redis::cmd("PTTL").arg(&k).query(&mut conn).unwrap();
                (k, ttl)
            })
            .collect()
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
    }

    /// The directory holding the socket and the log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- redis-server log ({}) ---\n{}",
                self.dir.path().display(),
                self.log()
            );
        }
        self.kill();
    }
}

/// Which backend a suite case runs on.
pub enum Backend {
    /// In-process backends.
    Memory,
    /// A private redis-server.
    Redis(RedisServer),
    /// A private Redis Cluster (3 primaries, unless a test asks for replicas).
    Cluster(RedisCluster),
}

impl Backend {
    pub fn memory() -> Self {
        Self::Memory
    }

    pub fn redis() -> Self {
        Self::Redis(RedisServer::start())
    }

    /// A private 3-primary cluster without replicas (what every suite case runs on).
    pub fn cluster() -> Self {
        Self::Cluster(RedisCluster::start(3, 0))
    }

    /// A private cluster of 3 primaries with one replica each (`--cluster-node-timeout 5000`),
    /// for failover tests.
    pub fn cluster_with_replicas() -> Self {
        Self::Cluster(RedisCluster::start(3, 1))
    }

    /// Whether redkit runs on Redis here, one server or a cluster (L2 and pub/sub shared
    /// between instances).
    pub fn is_redis(&self) -> bool {
        matches!(self, Self::Redis(_) | Self::Cluster(_))
    }

    /// Whether redkit runs on a Redis Cluster here.
    pub fn is_cluster(&self) -> bool {
        matches!(self, Self::Cluster(_))
    }

    /// The single redis-server, on the `Redis` backend only.
    pub fn server(&mut self) -> Option<&mut RedisServer> {
        match self {
            Self::Redis(server) => Some(server),
            Self::Memory | Self::Cluster(_) => None,
        }
    }

    /// The cluster, on the `Cluster` backend only.
    pub fn cluster_mut(&mut self) -> Option<&mut RedisCluster> {
        match self {
            Self::Cluster(cluster) => Some(cluster),
            Self::Memory | Self::Redis(_) => None,
        }
    }

    /// Every key in Redis (every primary of a cluster) with its PTTL; `None` on memory.
    pub fn keys_with_ttl(&self) -> Option<Vec<(String, i64)>> {
        match self {
            Self::Memory => None,
            Self::Redis(server) => Some(server.keys_with_ttl()),
            Self::Cluster(cluster) => Some(cluster.keys_with_ttl()),
        }
    }

    /// Calls per command so far (summed over a cluster's nodes); `None` on memory.
    pub fn command_calls(&self) -> Option<std::collections::BTreeMap<String, u64>> {
        match self {
            Self::Memory => None,
            Self::Redis(server) => Some(server.command_calls()),
            Self::Cluster(cluster) => Some(cluster.command_calls()),
        }
    }

    /// Kills Redis (every node of a cluster); false on memory, where there is nothing to kill.
    pub fn kill_redis(&mut self) -> bool {
        match self {
            Self::Memory => false,
            Self::Redis(server) => {
                server.kill();
                true
            }
            Self::Cluster(cluster) => {
                for node in 0..cluster.nodes().len() {
                    cluster.kill(node);
                }
                true
            }
        }
    }

    /// Freezes Redis (SIGSTOP; every node of a cluster): connections stay open, nothing
    /// answers. Nothing on memory.
    pub fn freeze(&self) {
        self.signal_redis("STOP");
    }

    /// Thaws what [`freeze`](Self::freeze) froze (SIGCONT).
    pub fn thaw(&self) {
        self.signal_redis("CONT");
    }

    fn signal_redis(&self, sig: &str) {
        match self {
            Self::Memory => {}
            Self::Redis(server) => server.signal(sig),
            Self::Cluster(cluster) => {
                for pid in cluster.pids() {
                    signal(pid, sig);
                }
            }
        }
    }

    /// Test defaults for this backend: in-memory SQLite, and this backend's Redis if any.
    pub fn config(&self) -> Config {
        let mut config = Config::for_tests();
        // Suites of other features send hundreds of requests from one address: no global limit
        // (the rate-limit suite configures its own policies).
        config.rate_limit =
            redkit::ratelimit::RateLimitConfig::parse(&["default=off"], &[] as &[&str]).unwrap();
        match self {
            Self::Memory => {}
            Self::Redis(server) => {
                let mut settings = RedisSettings::new(server.url());
                settings.response_timeout = Duration::from_millis(500);
                settings.connect_timeout = Duration::from_millis(500);
                config.redis = Some(settings);
            }
            Self::Cluster(cluster) => set_cluster_nodes(&mut config, &cluster.urls()),
        }
        config
    }
}

/// Starts the services for `config` on the current actix system.
pub fn services(config: &Config) -> Services {
    Services::start(config).expect("services start")
}

/// The redkit app as an in-process service (no socket).
pub async fn app(
    services: &Services,
) -> impl Service<
    actix_http::Request,
    Response = ServiceResponse<impl MessageBody>,
    Error = actix_web::Error,
> {
    feed_ready(services).await;
    test::init_service(redkit::http::app(services.clone())).await
}

/// Waits (at most 3 s) until the cache's invalidation feed is armed, so that L1 serves from the
/// first request, as it does on a long-running instance; returns at once without a feed, or
/// when Redis does not answer (tests of outages).
pub async fn feed_ready(services: &Services) {
    use redkit::cache::L1Feed;
    let deadline = Instant::now() + Duration::from_secs(3);
    while services.cache.feed() == L1Feed::Down && Instant::now() < deadline {
        if let Some(redis) = &services.redis
            && redis.ping().await.is_err()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A response read whole: status, headers and body.
pub struct Reply {
    pub status: u16,
    pub headers: actix_web::http::header::HeaderMap,
    pub body: bytes::Bytes,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts an `application/problem+json` body of this status, and returns it.
    pub fn problem(&self, status: u16) -> serde_json::Value {
        assert_eq!(
            self.status,
            status,
            "body: {}",
            String::from_utf8_lossy(&self.body)
        );
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json")
        );
        let body = self.json();
        assert_eq!(body["status"], status);
        assert!(
            body["type"]
                .as_str()
                .unwrap()
                .starts_with(redkit::http::PROBLEM_BASE)
        );
        assert!(body["title"].is_string());
        body
    }
}

/// Sends `req` to `app` and reads the whole response.
pub async fn call<S, B>(app: &S, req: test::TestRequest) -> Reply
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    let res = test::call_service(app, req.to_request()).await;
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let body = test::read_body(res).await;
    Reply {
        status,
        headers,
        body,
    }
}

/// Generates one `#[actix_web::test]` per case and backend: `memory::case`, `redis::case` and
/// `cluster::case` (a private 3-primary Redis Cluster per case), each calling `case(Backend)`
/// from the enclosing module.
#[macro_export]
macro_rules! backend_suite {
    ($($case:ident),* $(,)?) => {
        mod memory {
            $(
                #[actix_web::test]
                async fn $case() {
                    super::$case($crate::common::Backend::memory()).await;
                }
            )*
        }
        mod redis {
            $(
                #[actix_web::test]
                async fn $case() {
                    super::$case($crate::common::Backend::redis()).await;
                }
            )*
        }
        mod cluster {
            $(
                #[actix_web::test]
                async fn $case() {
                    super::$case($crate::common::Backend::cluster()).await;
                }
            )*
        }
    };
}

impl RedisServer {
    /// Freezes the server (SIGSTOP): connections stay open, nothing answers.
    pub fn pause(&self) {
        self.signal("STOP");
    }

    /// Thaws a paused server (SIGCONT).
    pub fn resume(&self) {
        self.signal("CONT");
    }

    fn signal(&self, sig: &str) {
        signal(self.child.as_ref().expect("server running").id(), sig);
    }
}

/// Sends `sig` (`STOP`, `CONT`) to process `pid`.
fn signal(pid: u32, sig: &str) {
    let status = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success());
}

/// A redkit app served over real TCP on 127.0.0.1 (port chosen by the OS), with its own workers.
pub struct TestServer {
    pub addr: std::net::SocketAddr,
    pub services: Services,
    handle: actix_web::dev::ServerHandle,
}

impl TestServer {
    /// Serves `services` with `workers` worker threads. Call from an actix system (actix_web::test).
    pub fn start(services: Services, workers: usize) -> Self {
        Self::start_at(services, workers, ([127, 0, 0, 1], 0).into())
    }

    /// As [`start`](Self::start), on a given address (e.g. the one a stopped server used).
    pub fn start_at(services: Services, workers: usize, addr: std::net::SocketAddr) -> Self {
        // Callers that need L1 from the first request await `feed_ready` first.
        let factory = {
            let services = services.clone();
            move || redkit::http::app(services.clone())
        };
        let server = actix_web::HttpServer::new(factory)
            .workers(workers)
            .disable_signals()
            .shutdown_timeout(1)
            .h1_allow_half_closed(false)
            .bind(addr)
            .unwrap();
        let addr = server.addrs()[0];
        let server = server.run();
        let handle = server.handle();
        actix_web::rt::spawn(server);
        Self {
            addr,
            services,
            handle,
        }
    }

    pub async fn stop(self) {
        self.handle.stop(true).await;
    }
}

/// One request over a fresh connection (`Connection: close`), read whole, with reqwest: no
/// redirect followed, no header added but reqwest's `Accept: */*` when `headers` has none, at
/// most 30 s.
pub async fn http(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Reply {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("HTTP method");
    let url = format!("http://{addr}{path}");
    let mut req = client(Duration::from_secs(30))
        .request(method.clone(), &url)
        .header("connection", "close");
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    if !body.is_empty() || method != reqwest::Method::GET {
        req = req.body(body.to_vec());
    }
    let mut res = req
        .send()
        .await
        .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let mut body = bytes::BytesMut::new();
    while let Some(chunk) = res
        .chunk()
        .await
        .unwrap_or_else(|e| panic!("{method} {url}: body: {e}"))
    {
        assert!(
            body.len() + chunk.len() <= BODY_LIMIT,
            "{method} {url}: body over {BODY_LIMIT} bytes"
        );
        body.extend_from_slice(&chunk);
    }
    Reply {
        status: res.status().as_u16(),
        headers: actix_headers(res.headers()),
        body: body.freeze(),
    }
}

/// The most a test reads of one response body.
const BODY_LIMIT: usize = 64 * 1024 * 1024;

/// A client that follows no redirect, keeps no idle connection and gives up after `timeout`
/// (`Duration::MAX`: never).
pub fn client(timeout: Duration) -> reqwest::Client {
    let builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(0);
    let builder = if timeout == Duration::MAX {
        builder
    } else {
        builder.timeout(timeout)
    };
    builder.build().expect("an HTTP client")
}

/// `headers` as actix's header map, the type the tests assert on.
pub fn actix_headers(headers: &reqwest::header::HeaderMap) -> actix_web::http::header::HeaderMap {
    use actix_web::http::header::{HeaderName, HeaderValue};
    let mut out = actix_web::http::header::HeaderMap::new();
    for (name, value) in headers {
        out.append(
            HeaderName::from_bytes(name.as_str().as_bytes()).expect("a header name"),
            HeaderValue::from_bytes(value.as_bytes()).expect("a header value"),
        );
    }
    out
}

/// Polls `check` every 50 ms until it holds or `limit` passes; answers whether it held.
pub async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The token secret tests sign with (32 bytes).
pub const TEST_SECRET: &[u8] = b"test-secret-test-secret-test-sec";

/// `config` with the fixed test secret, so tests can forge tokens.
pub fn with_test_secret(mut config: Config) -> Config {
    config.auth.secret = redkit::auth::SecretKey::given(TEST_SECRET).expect("32-byte secret");
    config
}

/// Registers `username` (password `correct horse`) and logs in; answers (access, refresh).
pub async fn register_and_login<S, B>(app: &S, username: &str) -> (String, String)
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    let reply = call(
        app,
        test::TestRequest::post()
            .uri("/auth/register")
            .set_json(serde_json::json!({
                "username": username, "email": format!("{username}@example.com"),
                "password": "correct horse",
            })),
    )
    .await;
    assert_eq!(reply.status, 201, "{:?}", reply.body);
    login(app, username, "correct horse").await
}

/// Logs in; answers (access, refresh).
pub async fn login<S, B>(app: &S, username: &str, password: &str) -> (String, String)
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    let reply = call(
        app,
        test::TestRequest::post()
            .uri("/auth/login")
            .set_json(serde_json::json!({"username": username, "password": password})),
    )
    .await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    let body = reply.json();
    (
        body["access_token"].as_str().unwrap().to_owned(),
        body["refresh_token"].as_str().unwrap().to_owned(),
    )
}

/// `Authorization: Bearer <token>`.
pub fn bearer(token: &str) -> (actix_web::http::header::HeaderName, String) {
    (
        actix_web::http::header::AUTHORIZATION,
        format!("Bearer {token}"),
    )
}

thread_local! {
    /// The access token write requests of the current test carry (each test has its own thread).
    static TOKEN: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// Registers and logs in a `writer` user; later `with_token` requests of this test carry its
/// access token (catalog and cache writes need one).
pub async fn authorize<S, B>(app: &S)
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    let (access, _) = register_and_login(app, "writer").await;
    TOKEN.with(|t| *t.borrow_mut() = Some(access));
}

/// `req` with the current test's bearer token, if `authorize` ran.
pub fn with_token(req: test::TestRequest) -> test::TestRequest {
    match TOKEN.with(|t| t.borrow().clone()) {
        Some(token) => req.insert_header(bearer(&token)),
        None => req,
    }
}

impl RedisServer {
    /// Calls per command since start, from `INFO commandstats` (commands run inside scripts
    /// included).
    pub fn command_calls(&self) -> std::collections::BTreeMap<String, u64> {
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query(&mut self.conn())
            .unwrap();
        info.lines()
            .filter_map(|line| {
                let (name, rest) = line.strip_prefix("cmdstat_")?.split_once(':')?;
                let calls = rest
                    .strip_prefix("calls=")?
                    .split(',')
                    .next()?
                    .parse()
                    .ok()?;
                Some((name.to_owned(), calls))
            })
            .collect()
    }
}

/// Test defaults (as [`Backend::config`]) pointed at a cluster given by its seed URLs: for a
/// process that has the URLs but not the harness (a bench's child server).
pub fn cluster_settings_config(nodes: &[String]) -> Config {
    let mut config = Config::for_tests();
    config.rate_limit =
        redkit::ratelimit::RateLimitConfig::parse(&["default=off"], &[] as &[&str]).unwrap();
    set_cluster_nodes(&mut config, nodes);
    config
}

/// Points `config` at the cluster of these seed nodes, with the tests' short timeouts.
fn set_cluster_nodes(config: &mut Config, nodes: &[String]) {
    let mut settings = RedisSettings::cluster(nodes.iter().cloned());
    settings.response_timeout = Duration::from_millis(500);
    settings.connect_timeout = Duration::from_millis(500);
    config.redis = Some(settings);
}
