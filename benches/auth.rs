//! Cost of authentication on the hot path: an `AuthUser` handler against the same handler without
//! auth, same run, over loopback keep-alive connections; plus the Redis commands the
//! authenticated runs caused (`INFO commandstats` before and after), against a private
//! redis-server. Two authenticated cases:
//!
//! - `one token`: every request carries the same access token, so after the first it is found in
//!   the verified-token memo (a map lookup and the expiry check), then checked against the local
//!   revocation view. This is the cost for a client that sends its token many times.
//! - `distinct tokens`: [`DISTINCT_TOKENS`] valid tokens of the same session (same claims but
//!   each its own `jti`), sent round robin: more than the memo holds, so every request verifies
//!   the HS256 signature and the claims, then the revocation view.
//!
//! Run: `cargo bench --bench auth` (release build; ~20 s). `REDKIT_BENCH_SMOKE=1` (CI): 0.5 s per
//! case, 1 round; the same checks (every request a 200, no Redis command per request).

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

fn case() -> Duration {
    support::sized(Duration::from_secs(3), Duration::from_millis(500))
}

fn rounds() -> usize {
    support::sized(2, 1)
}

const CONNECTIONS: usize = 32;
/// More tokens than the verified-token memo holds (16,384, `src/auth/tokens.rs`), which it clears
/// when full: sent round robin, each comes back after a clear, so every request is verified.
const DISTINCT_TOKENS: usize = 20_000;
/// The bench's signing secret.
const SECRET: [u8; 32] = [7u8; 32];

/// Keep-alive GETs of `path` with the tokens `make` writes, on `CONNECTIONS` connections for
/// [`case`]; answers requests per second and the number of requests (every answer must be a 200).
fn run(addr: std::net::SocketAddr, path: &str, make: support::MakeRequest) -> (f64, u64) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let result = rt.block_on(support::load_with(addr, make, CONNECTIONS, case()));
    assert_eq!(
        result.non_200 + result.errors,
        0,
        "{path}: every request must be a 200"
    );
    assert!(result.requests > 0, "{path}: no request answered");
    (result.per_sec, result.requests)
}

/// GETs of `path` carrying `tokens` in turn.
fn requests(path: &str, tokens: &[String]) -> support::MakeRequest {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let requests: Vec<String> = tokens
        .iter()
        .map(|token| {
            format!("GET {path} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {token}\r\n\r\n")
        })
        .collect();
    let next = AtomicUsize::new(0);
    std::sync::Arc::new(move |buf: &mut Vec<u8>| {
        let n = next.fetch_add(1, Ordering::Relaxed) % requests.len();
        buf.extend_from_slice(requests[n].as_bytes());
    })
}

/// `count` access tokens with `token`'s claims (its user, session, times), each its own `jti`,
/// signed with the bench's secret: valid tokens redkit has never seen.
fn distinct_tokens(token: &str, count: usize) -> Vec<String> {
    use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
    let mut validation = Validation::new(Algorithm::HS256);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.validate_aud = false;
    let claims = jsonwebtoken::decode::<serde_json::Value>(
        token,
        &DecodingKey::from_secret(&SECRET),
        &validation,
    )
    .expect("the login's access token")
    .claims;
    let key = EncodingKey::from_secret(&SECRET);
    (0..count)
        .map(|n| {
            let mut claims = claims.clone();
            claims["jti"] = serde_json::Value::String(format!("bench{n:027}"));
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key).expect("sign")
        })
        .collect()
}

fn main() {
    let redis = RedisServer::start();
    let mut config = Config::for_tests();
    config.redis = Some(RedisSettings::new(redis.url()));
    config.auth.secret = SecretKey::given(&SECRET).unwrap();

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
    let one = std::slice::from_ref(&token);
    let tokens = distinct_tokens(&token, DISTINCT_TOKENS);
    assert_eq!(
        tokens
            .iter()
            .collect::<std::collections::HashSet<_>>()
            .len(),
        DISTINCT_TOKENS
    );

    // Plain, one token, distinct tokens, each round.
    let mut rates = [Vec::new(), Vec::new(), Vec::new()];
    let mut diff: BTreeMap<String, i64> = BTreeMap::new();
    let mut authed_requests = 0;
    for _ in 0..rounds() {
        rates[0].push(run(addr, "/bench/plain", requests("/bench/plain", one)).0);
        for (i, tokens) in [(1, one), (2, &tokens[..])] {
            let before = redis.command_calls();
            let (rps, count) = run(addr, "/bench/auth", requests("/bench/auth", tokens));
            let after = redis.command_calls();
            authed_requests += count;
            rates[i].push(rps);
            for (name, calls) in &after {
                let d = *calls as i64 - *before.get(name).unwrap_or(&0) as i64;
                if d != 0 && name != "info" {
                    *diff.entry(name.clone()).or_default() += d;
                }
            }
        }
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let [p, one, distinct] = rates.each_ref().map(|r| mean(r));
    println!(
        "auth bench{}: 1 server worker, {CONNECTIONS} keep-alive connections, {:?} per case, {} rounds",
        if support::smoke() {
            " (smoke run: checks only, rates mean nothing)"
        } else {
            ""
        },
        case(),
        rounds()
    );
    println!(
        "  plain handler                          {p:>10.0} req/s  {:.0?}",
        rates[0]
    );
    println!(
        "  AuthUser, one token (memo hit)         {one:>10.0} req/s  {:.0?}  ratio to plain {:.3} (target >= 0.85)",
        rates[1],
        one / p
    );
    println!(
        "  AuthUser, {DISTINCT_TOKENS} distinct tokens (HS256 + claims) {distinct:>10.0} req/s  {:.0?}  ratio to plain {:.3}",
        rates[2],
        distinct / p
    );
    let total: i64 = diff.values().sum();
    println!(
        "  redis commands during the authenticated runs: {total} for {authed_requests} requests ({:.6} per request); by command: {diff:?}",
        total as f64 / authed_requests as f64
    );
    println!("  (a PING per second is the Redis actor's watchdog, not the requests)");
    // Verifying is local: no command per request. The watchdog pings once a second (and the
    // liveness checks of the push connections a few times more): far fewer than one per 100
    // requests however slow the build.
    assert!(
        total.unsigned_abs() * 100 < authed_requests,
        "authenticated requests reached Redis: {total} commands for {authed_requests} requests"
    );
}
