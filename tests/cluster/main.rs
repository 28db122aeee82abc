//! Redis Cluster: the harness itself (a private cluster starts with every slot
//! covered, routes keys, fails over, is gone when dropped), two redkit instances on one cluster,
//! and a primary's failover survived.

#![cfg(feature = "server")]

#[macro_use]
#[path = "../common/mod.rs"]
mod common;

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use actix_web::test::TestRequest;
use common::{
    Backend, Reply, TestServer,
    cluster::{RedisCluster, SLOTS, slot_of},
    sse::Sse,
    static_tokens::StaticTokens,
};
use redkit::{config::DatabaseLocation, events::Caller};
use serde_json::json;

// ---------------------------------------------------------------------------------------------
// redkit on the cluster: two instances and a primary's failover.

/// How long a change may take to reach the other instance here: generous next to the 100 ms
/// target (measured by `benches/cluster.rs`), as in `tests/cache/fleet.rs`.
const REACH: Duration = Duration::from_secs(1);

/// Bound on every single HTTP request of these tests: a hang is a failure, not a slow pass.
const REQUEST_BOUND: Duration = Duration::from_secs(4);

/// The backend's config with the test secret, no global limit and no publish limit.
fn fleet_config(backend: &Backend) -> redkit::Config {
    let mut config = common::with_test_secret(backend.config());
    config.rate_limit = redkit::ratelimit::RateLimitConfig::parse(
        &["default=off", "POST /events/{channel}=off"],
        &[] as &[&str],
    )
    .unwrap();
    config
}

/// One request over TCP, bounded by [`REQUEST_BOUND`].
async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Reply {
    tokio::time::timeout(
        REQUEST_BOUND,
        common::http(addr, method, path, headers, body.as_bytes()),
    )
    .await
    .unwrap_or_else(|_| panic!("{method} {path} did not answer within {REQUEST_BOUND:?}"))
}

/// Registers `username` and logs in over TCP; answers (access, refresh).
async fn login(addr: SocketAddr, username: &str) -> (String, String) {
    let json = [("content-type", "application/json")];
    let body = format!(
        r#"{{"username":"{username}","email":"{username}@example.com","password":"correct horse"}}"#
    );
    let reply = request(addr, "POST", "/auth/register", &json, &body).await;
    assert_eq!(reply.status, 201, "{:?}", reply.body);
    let body = format!(r#"{{"username":"{username}","password":"correct horse"}}"#);
    let reply = request(addr, "POST", "/auth/login", &json, &body).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    let body = reply.json();
    (
        body["access_token"].as_str().unwrap().to_owned(),
        body["refresh_token"].as_str().unwrap().to_owned(),
    )
}

/// The shortest key in the cluster whose name contains `needle`: how redkit names the Redis key
/// of a cache key or channel, learned rather than assumed.
fn key_containing(cluster: &RedisCluster, needle: &str) -> String {
    let keys = cluster.keys_with_ttl();
    keys.iter()
        .map(|(k, _)| k.clone())
        .filter(|k| k.contains(needle))
        .min_by_key(String::len)
        .unwrap_or_else(|| panic!("no key contains {needle:?}: {keys:?}"))
}

/// `count` names (`<prefix><n>`) whose Redis key (`anchor_key` with `anchor` replaced by the
/// name) is served by primary `node`, each in a different slot.
fn names_on(
    cluster: &RedisCluster,
    anchor_key: &str,
    anchor: &str,
    node: usize,
    prefix: &str,
    count: usize,
) -> Vec<String> {
    let mut names = Vec::new();
    let mut slots = Vec::new();
    for n in 0..10_000 {
        let name = format!("{prefix}{n}");
        let slot = slot_of(&anchor_key.replacen(anchor, &name, 1));
        if !slots.contains(&slot) && cluster.owner_of_slot(slot) == node {
            slots.push(slot);
            names.push(name);
            if names.len() == count {
                return names;
            }
        }
    }
    panic!("no {count} names on node {node}");
}

/// Opens `path` and asserts a 200 event stream whose first frame is the `retry:` hint.
async fn open_stream(addr: SocketAddr, path: &str) -> Sse {
    Sse::open(addr, path, &[]).await.opened().await
}

/// The data of the next event on `stream` (heartbeats skipped); panics if the stream ends or
/// nothing comes within `limit`.
async fn next_data(stream: &mut Sse, limit: Duration) -> String {
    stream
        .next_data(limit)
        .await
        .unwrap_or_else(|| panic!("no event within {limit:?} (ended: {})", stream.ended))
}

/// Publishes `body` on `channel` through `addr`, retrying while it answers 503 (at most
/// `limit`); asserts the final 202.
async fn publish(addr: SocketAddr, token: &str, channel: &str, body: &str, limit: Duration) {
    let bearer = format!("Bearer {token}");
    let headers = [
        ("authorization", bearer.as_str()),
        ("content-type", "application/json"),
    ];
    let deadline = Instant::now() + limit;
    loop {
        let reply = request(addr, "POST", &format!("/events/{channel}"), &headers, body).await;
        if reply.status == 202 {
            return;
        }
        reply.problem(503);
        assert!(
            Instant::now() < deadline,
            "publish on {channel} still 503 after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The events token of [`Fleet`]'s instances.
const PUBLISHER: &str = "publisher-token";

/// One instance of `config` served over TCP with `workers` workers, its invalidation feed armed,
/// taking [`PUBLISHER`] as an events token (these tests are about the cluster, not logins).
async fn serve_instance(config: &redkit::Config, workers: usize) -> TestServer {
    let services = common::services(config);
    let tokens = Arc::new(StaticTokens::new());
    tokens.insert(
        PUBLISHER,
        Caller::new("publisher", "s-publisher", u64::MAX / 2),
    );
    services.events.set_auth(tokens);
    common::feed_ready(&services).await;
    TestServer::start(services, workers)
}

/// Two instances on one cluster, each served over TCP, sharing one SQLite file (users).
struct Fleet {
    backend: Backend,
    _dir: tempfile::TempDir,
    a: TestServer,
    b: TestServer,
}

impl Fleet {
    async fn start(backend: Backend) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = fleet_config(&backend);
        config.database = DatabaseLocation::File(dir.path().join("users.sqlite"));
        Self {
            a: serve_instance(&config, 1).await,
            b: serve_instance(&config, 1).await,
            backend,
            _dir: dir,
        }
    }

    fn cluster(&mut self) -> &mut RedisCluster {
        self.backend.cluster_mut().expect("a cluster backend")
    }
}

/// Waits (at most 5 s) until some primary has a subscriber on the sharded channel of redkit's
/// `channel` (`PUBSUB SHARDCHANNELS`): the subscription behind a stream is established in Redis.
async fn wait_subscribed(cluster: &RedisCluster, channel: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !cluster.has_shard_channel(channel) {
        assert!(
            Instant::now() < deadline,
            "{channel}: no sharded subscription in 5 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

mod chaos;
mod coherence;
mod connections;
mod failover;
mod harness;
mod soak;
