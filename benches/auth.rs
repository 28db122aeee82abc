//! Cost of authentication on the hot path: an `AuthUser` handler (signature + claims + local
//! revocation view) against the same handler without auth, same run, same wire bytes, over
//! loopback keep-alive connections; plus the Redis commands the authenticated run caused
//! (`INFO commandstats` before and after), against a private redis-server.
//!
//! Run: `cargo bench --bench auth` (release build; ~15 s).

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use std::{collections::BTreeMap, time::Duration};

use actix_web::{App, HttpResponse, HttpServer, web};
use common::RedisServer;
use redkit::{
    Config,
    auth::{AuthUser, ClientInfo, SecretKey, ViewState},
    config::RedisSettings,
    http::Services,
};

const CASE: Duration = Duration::from_secs(3);
const CONNECTIONS: usize = 32;

/// Keep-alive GETs of `path` with `token` on `CONNECTIONS` connections for `CASE`; answers
/// requests per second (every answer must be a 200).
fn run(addr: std::net::SocketAddr, path: &str, token: &str) -> f64 {
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {token}\r\n\r\n");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let result = rt.block_on(support::load(addr, request.as_bytes(), CONNECTIONS, CASE));
    assert_eq!(
        result.non_200 + result.errors,
        0,
        "{path}: every request must be a 200"
    );
    result.per_sec
}

fn main() {
    let redis = RedisServer::start();
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
        plain.push(run(addr, "/bench/plain", &token));
        let before = redis.command_calls();
        let rps = run(addr, "/bench/auth", &token);
        let after = redis.command_calls();
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
