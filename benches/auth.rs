//! Cost of authentication on the hot path: an `AuthUser` handler (signature + claims + local
//! revocation view) against the same handler without auth, same run, same wire bytes, over
//! loopback keep-alive connections; plus the Redis commands the authenticated run caused
//! (`INFO commandstats` before and after), against a private redis-server.
//!
//! Run: `cargo bench --bench auth` (release build; ~15 s).

use std::{
    collections::BTreeMap,
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use actix_web::{App, HttpResponse, HttpServer, web};
use redkit::{
    Config,
    auth::{AuthUser, ClientInfo, SecretKey, ViewState},
    config::RedisSettings,
    http::Services,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CASE: Duration = Duration::from_secs(3);
const CONNECTIONS: usize = 32;

struct Redis {
    child: Child,
    dir: tempfile::TempDir,
}

impl Redis {
    fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let child = Command::new("redis-server")
            .args(["--port", "0", "--unixsocket"])
            .arg(dir.path().join("redis.sock"))
            .args(["--save", "", "--appendonly", "no", "--dir"])
            .arg(dir.path())
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server must be installed");
        let redis = Self { child, dir };
        for _ in 0..500 {
            if redis.conn().is_some() {
                return redis;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("redis-server did not start");
    }

    fn url(&self) -> String {
        format!("unix://{}", self.dir.path().join("redis.sock").display())
    }

    fn conn(&self) -> Option<redis::Connection> {
        redis::Client::open(self.url()).ok()?.get_connection().ok()
    }

    /// Calls per command since start (`INFO commandstats`).
    fn commandstats(&self) -> BTreeMap<String, u64> {
        let mut conn = self.conn().expect("redis");
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query(&mut conn)
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

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Keep-alive GETs of `path` with `token` on `CONNECTIONS` connections for `CASE`; answers
/// requests per second.
fn load(addr: std::net::SocketAddr, path: &str, token: &str) -> f64 {
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {token}\r\n\r\n")
            .into_bytes();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    rt.block_on(async {
        let mut tasks = Vec::new();
        for _ in 0..CONNECTIONS {
            let (request, done, count) = (request.clone(), done.clone(), count.clone());
            tasks.push(tokio::spawn(async move {
                let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
                stream.set_nodelay(true).unwrap();
                let mut buf = vec![0u8; 4096];
                while !done.load(Ordering::Relaxed) {
                    stream.write_all(&request).await.unwrap();
                    let mut have = 0;
                    loop {
                        let n = stream.read(&mut buf[have..]).await.unwrap();
                        assert!(n > 0, "server closed the connection");
                        have += n;
                        if let Some(end) = complete(&buf[..have]) {
                            assert!(
                                buf.starts_with(b"HTTP/1.1 200"),
                                "{}",
                                String::from_utf8_lossy(&buf[..end])
                            );
                            break;
                        }
                    }
                    count.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
        tokio::time::sleep(CASE).await;
        done.store(true, Ordering::Relaxed);
        for t in tasks {
            t.await.unwrap();
        }
    });
    count.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

/// The length of a complete response in `buf`, if there is one.
fn complete(buf: &[u8]) -> Option<usize> {
    let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = std::str::from_utf8(&buf[..head_end]).ok()?;
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    (buf.len() >= head_end + len).then_some(head_end + len)
}

fn main() {
    let redis = Redis::start();
    let mut config = Config::for_tests();
    config.redis = Some(RedisSettings::new(redis.url()));
    config.auth.secret = SecretKey::given(&[7u8; 32]).unwrap();

    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let services = Services::start(&config).expect("services");
            while services.auth.view_state() != ViewState::InSync {
                actix_web::rt::time::sleep(Duration::from_millis(5)).await;
            }
            let auth = services.auth.clone();
            auth.register(
                "bench".into(),
                "bench@example.com".into(),
                "bench password".into(),
            )
            .await
            .expect("register");
            let pair = auth
                .login(
                    "bench".into(),
                    "bench password".into(),
                    ClientInfo::default(),
                )
                .await
                .expect("login");
            let server = HttpServer::new(move || {
                let services = services.clone();
                App::new()
                    .configure(move |cfg| services.configure(cfg))
                    .route(
                        "/bench/plain",
                        web::get().to(|| async { HttpResponse::Ok().body("ok") }),
                    )
                    .route(
                        "/bench/auth",
                        web::get().to(|_user: AuthUser| async { HttpResponse::Ok().body("ok") }),
                    )
            })
            .workers(1)
            .bind(("127.0.0.1", 0))
            .unwrap();
            addr_tx
                .send((server.addrs()[0], pair.access_token))
                .unwrap();
            server.run().await.unwrap();
        });
    });
    let (addr, token) = addr_rx.recv().unwrap();

    let mut plain = Vec::new();
    let mut authed = Vec::new();
    let mut diff: BTreeMap<String, i64> = BTreeMap::new();
    let mut authed_requests = 0.0;
    for _ in 0..2 {
        plain.push(load(addr, "/bench/plain", &token));
        let before = redis.commandstats();
        let rps = load(addr, "/bench/auth", &token);
        let after = redis.commandstats();
        authed_requests += rps * CASE.as_secs_f64();
        authed.push(rps);
        for (name, calls) in &after {
            let d = *calls as i64 - *before.get(name).unwrap_or(&0) as i64;
            if d != 0 && name != "info" {
                *diff.entry(name.clone()).or_default() += d;
            }
        }
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let (p, a) = (mean(&plain), mean(&authed));
    println!(
        "auth bench: 1 server worker, {CONNECTIONS} keep-alive connections, {CASE:?} per case, 2 rounds"
    );
    println!("  plain handler         {p:>10.0} req/s  {plain:.0?}");
    println!("  AuthUser handler      {a:>10.0} req/s  {authed:.0?}");
    println!("  ratio auth/plain      {:>10.3}  (target >= 0.85)", a / p);
    let total: i64 = diff.values().sum();
    println!(
        "  redis commands during the authenticated runs: {total} for {authed_requests:.0} requests ({:.6} per request); by command: {diff:?}",
        total as f64 / authed_requests
    );
    println!("  (a PING per second is the Redis actor's watchdog, not the requests)");
}
