//! Live events end to end: real SSE clients over TCP against a running server, both backends.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use redkit::{Config, auth::ViewState, clock::ManualClock, events::Caller, http::Services};

use crate::common::{
    Backend, services,
    sse::{Frame, Sse},
    static_tokens::StaticTokens,
};

const TOKEN: &str = "alice-token";
const BOB: &str = "bob-token";
const WAIT: Duration = Duration::from_secs(5);
/// How long a stream is watched for anything after its last expected event: three heartbeats
/// of the suites' 200 ms, so a duplicate queued behind a heartbeat is seen.
const QUIET: Duration = Duration::from_millis(700);

/// A redkit server on 127.0.0.1:0. Its events tokens are a static table (alice, bob) for the
/// suites whose subject is not auth, or real logins through the production verifier
/// (`auth::EventsBridge`) for those that test who may publish and read.
struct TestApp {
    addr: SocketAddr,
    services: Services,
    /// Alice's access token.
    token: String,
    /// Bob's access token.
    bob: String,
    /// Alice's private channel.
    alice: String,
    server: crate::common::TestServer,
}

impl TestApp {
    fn start(config: &Config) -> Self {
        let services = services(config);
        let tokens = Arc::new(StaticTokens::new());
        let far = redkit_now() + 3600;
        tokens.insert(TOKEN, Caller::new("alice", "s-alice", far));
        tokens.insert(BOB, Caller::new("bob", "s-bob", far));
        services.events.set_auth(tokens);
        let server = crate::common::TestServer::start(services.clone(), 1);
        Self {
            addr: server.addr,
            services,
            token: TOKEN.to_owned(),
            bob: BOB.to_owned(),
            alice: "user:alice".to_owned(),
            server,
        }
    }

    /// An app with the production auth: alice and bob registered and logged in through it.
    async fn with_logins(config: &Config) -> Self {
        let services = services(&crate::common::with_test_secret(config.clone()));
        let server = crate::common::TestServer::start(services.clone(), 1);
        let mut tokens = Vec::new();
        for name in ["alice", "bob"] {
            let body = format!(
                r#"{{"username":"{name}","email":"{name}@example.com","password":"correct horse"}}"#
            );
            let (status, reply) =
                http(server.addr, "POST", "/auth/register", &[], Some(&body)).await;
            assert_eq!(status, 201, "{reply}");
            let id = serde_json::from_str::<serde_json::Value>(&reply).unwrap()["id"]
                .as_i64()
                .unwrap();
            let body = format!(r#"{{"username":"{name}","password":"correct horse"}}"#);
            let (status, reply) = http(server.addr, "POST", "/auth/login", &[], Some(&body)).await;
            assert_eq!(status, 200, "{reply}");
            let token = serde_json::from_str::<serde_json::Value>(&reply).unwrap()["access_token"]
                .as_str()
                .unwrap()
                .to_owned();
            tokens.push((id, token));
        }
        let [(alice, token), (_, bob)] = <[_; 2]>::try_from(tokens).unwrap();
        Self {
            addr: server.addr,
            services,
            token,
            bob,
            alice: format!("user:{alice}"),
            server,
        }
    }

    /// `POST /events/{channel}` with the test token: (status, body).
    async fn try_publish(&self, channel: &str, body: &str) -> (u16, String) {
        http(
            self.addr,
            "POST",
            &format!("/events/{channel}"),
            &[("authorization", &format!("Bearer {}", self.token))],
            Some(body),
        )
        .await
    }

    async fn publish(&self, channel: &str, body: &str) -> String {
        let reply = self.try_publish(channel, body).await;
        assert_eq!(reply.0, 202, "{}", reply.1);
        published_id(&reply.1)
    }

    /// Publishes as soon as Redis answers again (503 until then); the event's id.
    async fn publish_when_back(&self, channel: &str, body: &str) -> String {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let (status, reply) = self.try_publish(channel, body).await;
            if status == 202 {
                return published_id(&reply);
            }
            assert_eq!(status, 503, "{reply}");
            assert!(
                tokio::time::Instant::now() < deadline,
                "publish never recovered"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn sse(&self, path: &str, headers: &[(&str, &str)]) -> Sse {
        Sse::open(self.addr, path, headers).await
    }

    async fn wait_subscribers(&self, channel: &str, n: usize) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let info = self.services.events.info(channel).await;
            if info.as_ref().is_ok_and(|i| i.subscribers == n) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "subscribers never reached {n}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

fn redkit_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A one-shot request (JSON when it has a body); answers status and body.
async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> (u16, String) {
    let mut headers = headers.to_vec();
    if body.is_some() {
        headers.push(("content-type", "application/json"));
    }
    let reply =
        crate::common::http(addr, method, path, &headers, body.unwrap_or("").as_bytes()).await;
    (
        reply.status,
        String::from_utf8(reply.body.to_vec()).unwrap(),
    )
}

fn config(backend: &Backend) -> Config {
    let mut config = backend.config();
    // These suites publish hundreds of events from one address; the publish policy has its own test.
    config.rate_limit = redkit::ratelimit::RateLimitConfig::parse(
        &["default=off", "POST /events/{channel}=off"],
        &[] as &[&str],
    )
    .unwrap();
    config.events.heartbeat = Duration::from_millis(200);
    config
}

/// The ids and `n`s of `events`, for comparing whole streams at once.
fn ids_and_ns(events: &[Frame]) -> Vec<(String, u64)> {
    events
        .iter()
        .map(|e| (e.id.clone().unwrap_or_default(), data_n(e)))
        .collect()
}

/// `ids` numbered from `first`: what [`ids_and_ns`] of a burst published as `{"n":first..}` is.
fn numbered(ids: &[String], first: u64) -> Vec<(String, u64)> {
    ids.iter().cloned().zip(first..).collect()
}

fn data_n(event: &Frame) -> u64 {
    let value: serde_json::Value = serde_json::from_str(&event.data.join("\n")).unwrap();
    value["n"].as_u64().unwrap()
}

/// The id in a 202 publish answer.
fn published_id(reply: &str) -> String {
    let json: serde_json::Value = serde_json::from_str(reply).unwrap();
    json["id"].as_str().unwrap().to_owned()
}

/// Waits until `channel`'s stream key has `n` Redis subscribers (instances, not clients); the
/// channels are sharded (`SSUBSCRIBE`), so `SHARDNUMSUB` counts them.
async fn wait_numsub(server: &crate::common::RedisServer, channel: &str, n: u64) {
    let numsub = || {
        let reply: (String, u64) = ::redis::cmd("PUBSUB")
            .arg("SHARDNUMSUB")
            .arg(format!("redkit:events:{channel}"))
            .query(&mut server.conn())
            .unwrap();
        reply.1
    };
    assert!(
        crate::common::eventually(WAIT, || async { numsub() == n }).await,
        "{channel} never had {n} subscribers (now {})",
        numsub()
    );
}

mod delivery;
mod handle;
mod instances;
mod limits;
