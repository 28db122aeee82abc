//! Auth: registration, login, token verification (every way a token can be bad, each with its
//! logged reason), refresh rotation, revocation across instances, and Redis outages.

use std::{
    io::Write,
    sync::Arc,
    time::{Duration, Instant},
};

use actix_web::{App, HttpResponse, test, web};
use base64::Engine;
use redkit::{
    auth::{AuthUser, ViewState},
    clock::ManualClock,
    http::Services,
};
use serde_json::{Value, json};

use crate::common::{Backend, bearer, call, login, register_and_login, services, with_test_secret};

// ---------- log capture: the reason of each 401 is logged, never sent ----------

thread_local! {
    static LOGS: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Writes into the current thread's log buffer: each test (and its actix system) runs on its
/// own thread, so tests running in parallel do not see each other's lines.
struct ThreadWriter;

impl Write for ThreadWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOGS.with(|l| l.borrow_mut().extend_from_slice(buf));
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

struct LogBuf;

impl LogBuf {
    fn take(&self) -> String {
        String::from_utf8(LOGS.with(|l| std::mem::take(&mut *l.borrow_mut()))).unwrap()
    }
}

/// Captures this thread's logs through one global subscriber (a per-test scoped subscriber
/// races with tracing's callsite interest cache when tests run in parallel).
fn capture() -> (LogBuf, ()) {
    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| {
        let subscriber = tracing_subscriber::fmt()
            .with_writer(|| ThreadWriter)
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .finish();
        tracing::subscriber::set_global_default(subscriber).unwrap();
    });
    LogBuf.take();
    (LogBuf, ())
}

// ---------- helpers ----------

/// The redkit app plus `/whoami`, a route that only needs the extractor (no session I/O).
async fn app_with_whoami(
    services: &Services,
) -> impl actix_web::dev::Service<
    actix_http::Request,
    Response = actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>,
    Error = actix_web::Error,
> {
    let services = services.clone();
    test::init_service(
        App::new()
            .configure(move |cfg| services.configure(cfg))
            .route(
                "/whoami",
                web::get().to(|user: AuthUser| async move {
                    HttpResponse::Ok().body(user.0.user_id.to_string())
                }),
            ),
    )
    .await
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn payload_of(token: &str) -> Value {
    let part = token.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(part)
            .unwrap(),
    )
    .unwrap()
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Signs `claims` with the test secret and `alg`.
fn sign(claims: &Value, alg: jsonwebtoken::Algorithm) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(alg),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(crate::common::TEST_SECRET),
    )
    .unwrap()
}

/// Valid access claims for the session of `real` (an issued access token), with `patch`
/// applied (`null` removes a claim).
fn claims(real: &str, patch: Value) -> Value {
    let p = payload_of(real);
    let t = now();
    let mut c = json!({
        "sub": p["sub"], "sid": p["sid"], "jti": "forged-jti", "typ": "access",
        "iat": t, "nbf": t, "exp": t + 600, "iss": "redkit", "aud": "redkit",
    });
    for (k, v) in patch.as_object().unwrap() {
        if v.is_null() {
            c.as_object_mut().unwrap().remove(k);
        } else {
            c[k] = v.clone();
        }
    }
    c
}

fn start(backend: &Backend) -> Services {
    services(&with_test_secret(backend.config()))
}

/// Waits until the revocation view of `services` is in sync (Redis) — memory is at once.
async fn wait_in_sync(services: &Services) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while services.auth.view_state() != ViewState::InSync {
        assert!(Instant::now() < deadline, "view never synced");
        actix_web::rt::time::sleep(Duration::from_millis(5)).await;
    }
}

fn services_of(config: &redkit::Config) -> Services {
    services(config)
}

mod login;
mod outages;
mod refresh;
