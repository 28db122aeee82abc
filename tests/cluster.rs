//! Redis Cluster (issue 12): the harness itself (a private cluster starts with every slot
//! covered, routes keys, fails over, is gone when dropped), two redkit instances on one cluster,
//! and a primary's failover survived.

#![cfg(feature = "server")]

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

/// A 3-primary cluster starts with all 16384 slots served, a key round-trips through the
/// cluster client, and dropping the harness kills every node.
#[test]
fn cluster_starts_routes_and_dies_on_drop() {
    let start = Instant::now();
    let cluster = RedisCluster::start(3, 0);
    eprintln!("3-primary cluster ready in {:?}", start.elapsed());
    assert_eq!(cluster.nodes().len(), 3);
    assert_eq!(cluster.primaries().len(), 3);
    for node in cluster.nodes() {
        assert_ne!(node.port(), 6379);
        assert!(u32::from(node.port()) + 10000 <= 65535);
        let info: String = redis::cmd("CLUSTER")
            .arg("INFO")
            .query(&mut node.conn().unwrap())
            .unwrap();
        assert!(info.contains("cluster_state:ok"), "{info}");
        assert!(
            info.contains(&format!("cluster_slots_assigned:{SLOTS}")),
            "{info}"
        );
        assert!(
            info.contains(&format!("cluster_slots_ok:{SLOTS}")),
            "{info}"
        );
        assert!(info.contains("cluster_known_nodes:3"), "{info}");
    }
    // Keys in different slots land on different primaries and read back through the client.
    let mut conn = cluster.conn();
    let keys = ["{a}k", "{b}k", "{c}k", "{d}k", "{e}k", "{f}k"];
    for (i, key) in keys.iter().enumerate() {
        redis::cmd("SET").arg(key).arg(i).exec(&mut conn).unwrap();
    }
    for (i, key) in keys.iter().enumerate() {
        let value: usize = redis::cmd("GET").arg(key).query(&mut conn).unwrap();
        assert_eq!(value, i);
        let owner = cluster.primary_for(key);
        let direct: usize = redis::cmd("GET")
            .arg(key)
            .query(&mut cluster.nodes()[owner].conn().unwrap())
            .unwrap();
        assert_eq!(direct, i, "{key} is on node {owner}");
    }
    let owners: std::collections::BTreeSet<usize> =
        keys.iter().map(|k| cluster.primary_for(k)).collect();
    assert!(
        owners.len() >= 2,
        "six hash tags all on one primary: {owners:?}"
    );
    assert_eq!(cluster.keys_with_ttl().len(), keys.len());
    // The harness's own slot arithmetic agrees with the server's.
    for key in [
        "",
        "a",
        "{user:42}:x",
        "x{}y",
        "{}{z}",
        "redkit:cache:k",
        "{a}k",
    ] {
        let server: u16 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query(&mut cluster.nodes()[0].conn().unwrap())
            .unwrap();
        assert_eq!(slot_of(key), server, "{key:?}");
    }

    let pids = cluster.pids();
    assert_eq!(pids.len(), 3);
    drop(cluster);
    for pid in pids {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "node {pid} still runs after drop"
        );
    }
}

/// With one replica per primary, killing a key's primary promotes its replica: the cluster is
/// whole again and the key (written before, replicated) is still readable.
#[tokio::test]
async fn killed_primary_fails_over_to_its_replica() {
    let start = Instant::now();
    let mut cluster = RedisCluster::start(3, 1);
    eprintln!("3+3 cluster ready in {:?}", start.elapsed());
    assert_eq!(cluster.nodes().len(), 6);
    assert_eq!(cluster.primaries().len(), 3);
    // SET then WAIT on one connection to the key's primary: its replica has the write before
    // the primary dies (WAIT counts the acks of this connection's own writes).
    let owner = cluster.primary_for("{user:1}x");
    let mut direct = cluster.nodes()[owner].conn().unwrap();
    redis::cmd("SET")
        .arg("{user:1}x")
        .arg("kept")
        .exec(&mut direct)
        .unwrap();
    let acked: i64 = redis::cmd("WAIT")
        .arg(1)
        .arg(2000)
        .query(&mut direct)
        .unwrap();
    assert_eq!(acked, 1);
    let killed = cluster.kill_primary_for("{user:1}x");
    assert_eq!(killed, owner);
    let took = cluster.wait_failover(killed, Duration::from_secs(25)).await;
    eprintln!("failover done {took:?} after the kill");
    let promoted = cluster.primary_for("{user:1}x");
    assert_ne!(promoted, killed);
    assert_eq!(cluster.primaries().len(), 3);
    let value: String = redis::cmd("GET")
        .arg("{user:1}x")
        .query(&mut cluster.conn())
        .unwrap();
    assert_eq!(value, "kept");
    // The killed node comes back as a replica of the promoted one.
    cluster.restart(killed);
    cluster.wait_ready_async(Duration::from_secs(25)).await;
    assert_eq!(cluster.primaries().len(), 3);
    assert!(!cluster.primaries().contains(&killed));
}

// ---------------------------------------------------------------------------------------------
// redkit on the cluster: two instances (item 3 of the brief) and a primary's failover (item 4).

/// How long a change may take to reach the other instance here: generous next to the 100 ms
/// target (measured by `benches/cluster.rs`), as in `tests/fleet.rs`.
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

/// A write through instance A reaches B's L1 for keys on every primary: B served each old value
/// from L1, and reads the new one within `REACH`.
#[actix_web::test]
async fn l1_stays_coherent_across_instances_on_every_shard() {
    let mut fleet = Fleet::start(Backend::cluster()).await;
    let b = fleet.b.addr;
    // Writes go through A's cache handle (what `PUT /cache/{key}` calls): the login an HTTP
    // write needs is the auth suite's and the failover test's subject.
    let cache_a = fleet.a.services.cache.clone();
    let write = |key: &str, value: serde_json::Value| {
        let cache = cache_a.clone();
        let key = format!("api:{key}");
        async move {
            cache
                .set(&key, &value, Duration::from_secs(300))
                .await
                .unwrap()
        }
    };
    write("coh-anchor", json!({"v": 0})).await;
    let cluster = fleet.cluster();
    let anchor = key_containing(cluster, "coh-anchor");
    let mut keys = Vec::new();
    for node in cluster.primaries() {
        keys.extend(names_on(
            cluster,
            &anchor,
            "coh-anchor",
            node,
            &format!("coh{node}-"),
            3,
        ));
    }
    assert_eq!(keys.len(), 9);
    for key in &keys {
        let path = format!("/cache/{key}");
        write(key, json!({"v": 1})).await;
        let first = request(b, "GET", &path, &[], "").await;
        assert_eq!(
            (first.status, first.json()["value"].clone()),
            (200, json!({"v": 1})),
            "{key}"
        );
        let hit = request(b, "GET", &path, &[], "").await;
        assert_eq!(hit.header("x-cache"), Some("HIT-L1"), "{key}");
    }
    for key in &keys {
        let path = format!("/cache/{key}");
        write(key, json!({"v": 2})).await;
        let deadline = Instant::now() + REACH;
        loop {
            let seen = request(b, "GET", &path, &[], "").await;
            assert_eq!(seen.status, 200, "{key}");
            if seen.json()["value"] == json!({"v": 2}) {
                break;
            }
            assert_eq!(seen.json()["value"], json!({"v": 1}), "{key}");
            assert!(
                Instant::now() < deadline,
                "{key}: B still serves v1 after {REACH:?}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// How long a change may take to reach another instance's L1 after the cluster's topology
/// changed under it: the feed notices at its next check (0.5 s) and re-arms (L1 flushed).
const TOPOLOGY_REACH: Duration = Duration::from_secs(3);

/// Reads `path` through `addr` until it answers `value` from `tier` (`X-Cache`), at most 5 s;
/// every answer meanwhile is a 200 with `value`.
async fn until_served_from(addr: SocketAddr, path: &str, value: &serde_json::Value, tier: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let seen = request(addr, "GET", path, &[], "").await;
        assert_eq!((seen.status, &seen.json()["value"]), (200, value), "{path}");
        if seen.header("x-cache") == Some(tier) {
            return;
        }
        assert!(Instant::now() < deadline, "{path} never served from {tier}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// [`until_served_from`] L1 (`HIT-L1`).
async fn until_l1_holds(addr: SocketAddr, path: &str, value: &serde_json::Value) {
    until_served_from(addr, path, value, "HIT-L1").await;
}

/// Reads `path` through `addr` until it answers `new` (at most `limit`); every answer before is
/// a 200 with `old`.
async fn until_changed(
    addr: SocketAddr,
    path: &str,
    old: &serde_json::Value,
    new: &serde_json::Value,
    limit: Duration,
) {
    let deadline = Instant::now() + limit;
    loop {
        let seen = request(addr, "GET", path, &[], "").await;
        assert_eq!(seen.status, 200, "{path}");
        if seen.json()["value"] == *new {
            return;
        }
        assert_eq!(seen.json()["value"], *old, "{path}");
        assert!(
            Instant::now() < deadline,
            "{path}: still {old} {limit:?} after the write"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Resharding, both ways: a node joins after the instances started and a cached key's slot
/// moves to it (its keys migrated); A, which serves the key from L1 before and after the move,
/// answers B's later write within [`TOPOLOGY_REACH`]: the feed learns the new node and tracks it
/// too. Then the slot moves back and the node, left without slots (Redis 7 makes it a replica),
/// leaves the cluster (`CLUSTER FORGET` everywhere, then it stops), as `redis-cli --cluster
/// del-node` removes a node: A answers B's next write within [`TOPOLOGY_REACH`] again, serves it
/// from L1, and its feed stays up on the smaller cluster (no flush of L1 over three liveness
/// checks: it does not keep reaching for the node that left).
#[actix_web::test]
async fn l1_stays_coherent_as_a_node_joins_takes_a_slot_and_leaves() {
    let mut fleet = Fleet::start(Backend::cluster()).await;
    let a = fleet.a.addr;
    let cache_b = fleet.b.services.cache.clone();
    let ttl = Duration::from_secs(300);
    let path = "/cache/reshard-key";
    let (v1, v2, v3) = (json!({"v": 1}), json!({"v": 2}), json!({"v": 3}));
    cache_b.set("api:reshard-key", &v1, ttl).await.unwrap();
    until_l1_holds(a, path, &v1).await;
    // A steady cluster keeps the feed up: three liveness checks find every node tracking and
    // the topology unchanged (no flush of L1).
    let feed_steady = |fleet: &Fleet| {
        let cache = fleet.a.services.cache.clone();
        async move {
            let flushes = cache.stats().l1_feed_flushes;
            tokio::time::sleep(Duration::from_millis(1600)).await;
            assert_eq!(cache.stats().l1_feed_flushes, flushes, "the feed went down");
        }
    };
    feed_steady(&fleet).await;
    let cluster = fleet.cluster();
    let slot = slot_of(&key_containing(cluster, "reshard-key"));
    let home = cluster.owner_of_slot(slot);
    let new = cluster.add_node();
    cluster.migrate_slot(slot, new);
    assert_eq!(cluster.owner_of_slot(slot), new);
    // The move itself deletes the key on its old node, an invalidation A hears (or A's feed
    // goes down, bypassing L1): A reads the key from Redis, now from the new node, then holds it
    // in L1 again. (Without waiting for the read from Redis, A's L1 may still hold the entry of
    // before the move, which the late invalidation then drops: a pass by luck.)
    until_served_from(a, path, &v1, "HIT-L2").await;
    until_l1_holds(a, path, &v1).await;
    cache_b.set("api:reshard-key", &v2, ttl).await.unwrap();
    until_changed(a, path, &v1, &v2, TOPOLOGY_REACH).await;
    // And L1 serves again: the feed is up on the new topology.
    until_l1_holds(a, path, &v2).await;
    // The node leaves.
    let cluster = fleet.cluster();
    cluster.migrate_slot(slot, home);
    cluster.remove_node(new);
    assert_eq!(cluster.primaries().len(), 3);
    until_served_from(a, path, &v2, "HIT-L2").await;
    until_l1_holds(a, path, &v2).await;
    cache_b.set("api:reshard-key", &v3, ttl).await.unwrap();
    until_changed(a, path, &v2, &v3, TOPOLOGY_REACH).await;
    until_l1_holds(a, path, &v3).await;
    feed_steady(&fleet).await;
    let hit = request(a, "GET", path, &[], "").await;
    assert_eq!(
        (
            hit.status,
            hit.header("x-cache"),
            hit.json()["value"].clone()
        ),
        (200, Some("HIT-L1"), v3)
    );
}

/// The bound README "Consistency" gives on staleness when the feed's connection is lost: one
/// liveness check interval (0.5 s) plus its deadline (`REDIS_TIMEOUT_MS`, 1 s by default).
const FEED_LOSS_BOUND: Duration = Duration::from_millis(1500);

/// A primary's failover (3 primaries + 3 replicas): A caches a key, the key's primary is killed;
/// once a replica took over, A serves the key from Redis (the promoted replica), then from L1
/// again, and B writes the key. From B's acknowledgement on, A never answers the old value later
/// than [`FEED_LOSS_BOUND`], only the new one (or a 503 problem while its own connection catches
/// up with the topology), and its L1 serves the new one.
#[actix_web::test]
async fn l1_stays_coherent_through_a_primary_failover() {
    let mut fleet = Fleet::start(Backend::cluster_with_replicas()).await;
    let a = fleet.a.addr;
    let cache_b = fleet.b.services.cache.clone();
    let ttl = Duration::from_secs(300);
    let path = "/cache/failover-key";
    let (v1, v2) = (json!({"v": 1}), json!({"v": 2}));
    cache_b.set("api:failover-key", &v1, ttl).await.unwrap();
    until_l1_holds(a, path, &v1).await;
    let cluster = fleet.cluster();
    let key = key_containing(cluster, "failover-key");
    cluster.wait_replicated();
    let killed = cluster.kill_primary_for(&key);
    let took = cluster.wait_failover(killed, Duration::from_secs(25)).await;
    eprintln!("failover took {took:?}");
    // A's L1 is filled again after the failover: first an answer not from L1 (A's feed lost
    // the node, so L1 was flushed and bypassed; 503 while A's connection catches up), then from
    // L1: the feed is up again, and the promoted replica's change must reach A.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut refilled = Vec::new();
    loop {
        let reply = request(a, "GET", path, &[], "").await;
        let tier = if reply.status == 503 {
            reply.problem(503);
            "503"
        } else {
            assert_eq!((reply.status, &reply.json()["value"]), (200, &v1));
            reply.header("x-cache").unwrap_or("none")
        };
        refilled.push(tier.to_owned());
        if tier == "HIT-L1" && refilled.len() > 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "A's L1 not refilled 10 s after the failover: {refilled:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_ne!(
        refilled[0], "HIT-L1",
        "A's L1 kept the entry of before the kill"
    );
    eprintln!("A after the failover: {refilled:?}");
    // B's write, retried while B's own connection still points at the dead primary.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match cache_b.set("api:failover-key", &v2, ttl).await {
            Ok(_) => break,
            Err(err) => assert!(Instant::now() < deadline, "B cannot write: {err}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let acked = Instant::now();
    let mut seen = Vec::new();
    loop {
        let reply = request(a, "GET", path, &[], "").await;
        let since = acked.elapsed();
        if reply.status == 503 {
            reply.problem(503);
            seen.push("503");
        } else {
            assert_eq!(reply.status, 200, "{:?}", reply.body);
            let value = reply.json()["value"].clone();
            if value == v2 {
                if reply.header("x-cache") == Some("HIT-L1") {
                    break;
                }
                seen.push("v2");
            } else {
                assert_eq!(value, v1);
                assert!(
                    since <= FEED_LOSS_BOUND && !seen.contains(&"v2"),
                    "A served the old value {since:?} after B's write: {seen:?}"
                );
                seen.push("v1");
            }
        }
        assert!(
            since < Duration::from_secs(10),
            "A's L1 does not serve the new value 10 s after B's write: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!(
        "A after B's write: {seen:?}, L1 back {:?} after it",
        acked.elapsed()
    );
    // Once the nodes agree on the new topology (the feed may re-arm once more meanwhile: its
    // connection may have learned the topology from a node that still listed the dead
    // primary), the feed stays up: no flush of L1 over three checks, replicas included (Redis
    // lists each in CLUSTER SLOTS only once it has replicated something).
    tokio::time::sleep(Duration::from_secs(1)).await;
    let flushes = fleet.a.services.cache.stats().l1_feed_flushes;
    tokio::time::sleep(Duration::from_millis(1600)).await;
    assert_eq!(fleet.a.services.cache.stats().l1_feed_flushes, flushes);
}

/// A limit of 10 per client is exact across two instances on the cluster: of 40 concurrent
/// requests per client (20 through each instance), exactly 10 are admitted, for clients whose
/// counters sit on different primaries.
#[actix_web::test]
async fn rate_limit_is_exact_across_two_instances() {
    let backend = Backend::cluster();
    let mut config = fleet_config(&backend);
    config.rate_limit = redkit::ratelimit::RateLimitConfig::parse(
        &["default=off", "POST /expensive-operation=10/60s"],
        &[] as &[&str],
    )
    .unwrap();
    let (a, b) = (common::services(&config), common::services(&config));
    let (app_a, app_b) = (common::app(&a).await, common::app(&b).await);
    let clients = [
        "10.1.0.1", "10.1.0.2", "10.1.0.3", "10.1.0.4", "10.1.0.5", "10.1.0.6",
    ];
    let post = |ip: &str| {
        TestRequest::post()
            .uri("/expensive-operation")
            .peer_addr(format!("{ip}:40000").parse().unwrap())
    };
    for ip in clients {
        let replies = futures_util::future::join_all((0..40).map(|i| {
            let app = if i % 2 == 0 { &app_a } else { &app_b };
            common::call(app, post(ip))
        }))
        .await;
        let admitted = replies.iter().filter(|r| r.status == 200).count();
        let denied = replies.iter().filter(|r| r.status == 429).count();
        assert_eq!((admitted, denied), (10, 30), "{ip}");
    }
    // The counters of the six clients are spread over more than one primary.
    let Backend::Cluster(cluster) = &backend else {
        unreachable!()
    };
    let owners: std::collections::BTreeSet<usize> = cluster
        .keys_with_ttl()
        .iter()
        .filter(|(k, _)| k.contains("10.1.0."))
        .map(|(k, _)| cluster.owner_of_slot(slot_of(k)))
        .collect();
    assert!(
        owners.len() >= 2,
        "every client's counter on one primary: {owners:?}"
    );
}

/// The clients each node lists (`CLIENT LIST`, but the connection asking), by kind: `command`
/// (RESP2, redis-rs's cluster connection), `feed` (tracking on: the L1 invalidation feed) or
/// `subscriber` (RESP3 without tracking: the events and revocation subscribers), sorted.
fn clients_per_node(cluster: &RedisCluster) -> Vec<Vec<&'static str>> {
    cluster
        .nodes()
        .iter()
        .map(|node| {
            let list: String = redis::cmd("CLIENT")
                .arg("LIST")
                .query(&mut node.conn().unwrap())
                .unwrap();
            let mut kinds: Vec<&'static str> = list
                .lines()
                .filter(|line| !line.contains(" cmd=client|list"))
                .map(|line| {
                    let field = |name: &str| {
                        line.split(' ')
                            .find_map(|f| f.strip_prefix(name))
                            .unwrap_or_default()
                            .to_owned()
                    };
                    match (field("resp=").as_str(), field("flags=").contains('t')) {
                        ("2", _) => "command",
                        (_, true) => "feed",
                        _ => "subscriber",
                    }
                })
                .collect();
            kinds.sort_unstable();
            kinds
        })
        .collect()
}

/// How many connections each node has accepted since it started (`INFO stats`
/// `total_connections_received`), this query's own included.
fn connections_received(cluster: &RedisCluster) -> Vec<u64> {
    cluster
        .nodes()
        .iter()
        .map(|node| {
            let info: String = redis::cmd("INFO")
                .arg("stats")
                .query(&mut node.conn().unwrap())
                .unwrap();
            info.lines()
                .find_map(|l| l.strip_prefix("total_connections_received:"))
                .and_then(|n| n.trim().parse().ok())
                .expect("total_connections_received")
        })
        .collect()
}

/// Item 3: per process, one command connection per node and the push connections the features
/// need per node (the L1 invalidation feed, the events subscriber, the revocation subscriber),
/// whatever the number of clients and requests: 300 concurrent cache reads over every shard, 30
/// SSE clients on channels of every shard, publishes, logins and `/health` leave every node with
/// the same 4 connections of this instance as when it had served nothing, and no node accepted
/// any connection meanwhile but the test's own queries (none opened and closed per request).
#[actix_web::test]
async fn connections_per_node_stay_bounded_under_load() {
    let mut backend = Backend::cluster();
    let dir = tempfile::tempdir().unwrap();
    let mut config = fleet_config(&backend);
    config.database = DatabaseLocation::File(dir.path().join("users.sqlite"));
    let server = serve_instance(&config, 2).await;
    let addr = server.addr;
    // Something on every node's connections: a write and a subscription.
    let cache = server.services.cache.clone();
    cache
        .set("api:conn-anchor", &json!(0), Duration::from_secs(300))
        .await
        .unwrap();
    publish(addr, PUBLISHER, "conn-anchor", r#"{"n":0}"#, Duration::ZERO).await;
    let cluster = backend.cluster_mut().unwrap();
    let key_anchor = key_containing(cluster, "conn-anchor");
    let mut keys = Vec::new();
    let mut channels = Vec::new();
    for node in cluster.primaries() {
        keys.extend(names_on(
            cluster,
            &key_anchor,
            "conn-anchor",
            node,
            &format!("ck{node}-"),
            4,
        ));
        channels.extend(names_on(
            cluster,
            &key_anchor,
            "conn-anchor",
            node,
            &format!("cc{node}-"),
            2,
        ));
    }
    for key in &keys {
        cache
            .set(&format!("api:{key}"), &json!(key), Duration::from_secs(300))
            .await
            .unwrap();
    }
    // One SSE client per node's channels first: every push connection is open.
    let mut streams = Vec::new();
    for channel in &channels {
        streams.push(open_stream(addr, &format!("/events/{channel}")).await);
        wait_subscribed(cluster, channel).await;
    }
    let each = vec!["command", "feed", "subscriber", "subscriber"];
    assert_eq!(clients_per_node(cluster), vec![each.clone(); 3]);
    let received = connections_received(cluster);
    // The load.
    for channel in channels.iter().cycle().take(24) {
        streams.push(open_stream(addr, &format!("/events/{channel}")).await);
    }
    let reads = futures_util::future::join_all((0..300).map(|i| {
        let path = format!("/cache/{}", keys[i % keys.len()]);
        async move { request(addr, "GET", &path, &[], "").await.status }
    }))
    .await;
    assert_eq!(reads, vec![200; 300]);
    for (n, channel) in channels.iter().enumerate() {
        publish(
            addr,
            PUBLISHER,
            channel,
            &format!(r#"{{"n":{n}}}"#),
            Duration::ZERO,
        )
        .await;
    }
    for (i, stream) in streams.iter_mut().enumerate() {
        let n = i % channels.len();
        assert_eq!(
            next_data(stream, REACH).await,
            format!(r#"{{"n":{n}}}"#),
            "client {i}"
        );
    }
    for user in ["conn-ann", "conn-bob"] {
        login(addr, user).await;
    }
    assert_eq!(request(addr, "GET", "/health", &[], "").await.status, 200);
    // One more each: the query asking.
    let expected: Vec<u64> = received.iter().map(|n| n + 1).collect();
    assert_eq!(connections_received(cluster), expected);
    assert_eq!(clients_per_node(cluster), vec![each; 3]);
    drop(streams);
    drop(server);
}

/// Events published through A reach an SSE subscriber on B, for channels on every primary.
#[actix_web::test]
async fn events_from_one_instance_reach_subscribers_on_the_other() {
    let mut fleet = Fleet::start(Backend::cluster()).await;
    let (a, b) = (fleet.a.addr, fleet.b.addr);
    let token = PUBLISHER;
    publish(a, token, "ev-anchor", r#"{"n":0}"#, Duration::ZERO).await;
    let cluster = fleet.cluster();
    let anchor = key_containing(cluster, "ev-anchor");
    let mut channels = Vec::new();
    for node in cluster.primaries() {
        channels.extend(names_on(
            cluster,
            &anchor,
            "ev-anchor",
            node,
            &format!("ev{node}-"),
            2,
        ));
    }
    assert_eq!(channels.len(), 6);
    let mut streams = Vec::new();
    for channel in &channels {
        streams.push(open_stream(b, &format!("/events/{channel}")).await);
    }
    for channel in &channels {
        wait_subscribed(fleet.cluster(), channel).await;
    }
    for (n, channel) in channels.iter().enumerate() {
        publish(
            a,
            token,
            channel,
            &format!(r#"{{"n":{n}}}"#),
            Duration::ZERO,
        )
        .await;
    }
    for (n, stream) in streams.iter_mut().enumerate() {
        assert_eq!(next_data(stream, REACH).await, format!(r#"{{"n":{n}}}"#));
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

/// After a primary restarts (its push connections cut), subscriptions to channels in different
/// slots of that primary are all re-established: one `SSUBSCRIBE` naming channels of several
/// slots is refused with CROSSSLOT, so a client that resubscribes them in one command loses them.
#[actix_web::test]
async fn channels_in_different_slots_resubscribe_after_a_node_restart() {
    let mut fleet = Fleet::start(Backend::cluster()).await;
    let (a, b) = (fleet.a.addr, fleet.b.addr);
    let token = PUBLISHER;
    publish(a, token, "rs-anchor", r#"{"n":0}"#, Duration::ZERO).await;
    let cluster = fleet.cluster();
    let anchor = key_containing(cluster, "rs-anchor");
    let victim = cluster.owner_of_slot(slot_of(&anchor));
    let other = *cluster.primaries().iter().find(|&&p| p != victim).unwrap();
    // Three channels in three slots of the restarted node, one on another node.
    let mut channels = names_on(cluster, &anchor, "rs-anchor", victim, "rs-dead-", 3);
    channels.extend(names_on(
        cluster,
        &anchor,
        "rs-anchor",
        other,
        "rs-live-",
        1,
    ));
    let mut streams = Vec::new();
    for channel in &channels {
        streams.push(open_stream(b, &format!("/events/{channel}")).await);
    }
    for channel in &channels {
        wait_subscribed(fleet.cluster(), channel).await;
    }
    let cluster = fleet.cluster();
    cluster.kill(victim);
    cluster.restart(victim);
    cluster.wait_ready_async(Duration::from_secs(25)).await;
    // Every channel is subscribed again on its node, each in its own slot.
    for channel in &channels {
        wait_subscribed(fleet.cluster(), channel).await;
    }
    for (n, channel) in channels.iter().enumerate() {
        publish(a, token, channel, &format!(r#"{{"n":{n}}}"#), REACH).await;
    }
    for (n, stream) in streams.iter_mut().enumerate() {
        assert_eq!(
            next_data(stream, REACH).await,
            format!(r#"{{"n":{n}}}"#),
            "{}",
            channels[n]
        );
    }
}

/// One request of a failover probe, numbered.
type Probe<'a> =
    dyn FnMut(usize) -> std::pin::Pin<Box<dyn std::future::Future<Output = Reply>>> + 'a;

/// Sends `probe`'s requests every 200 ms: answers (statuses seen, when `ok` was first answered) once
/// `ok` came 5 times in a row; any status but `ok` must be a 503 problem; panics if `ok` is not
/// back `limit` after `since`.
async fn probe_until_steady(
    probe: &mut Probe<'_>,
    ok: u16,
    since: Instant,
    limit: Duration,
) -> (Vec<u16>, Duration) {
    let mut statuses = Vec::new();
    let mut recovered_at = None;
    let mut steady = 0;
    for n in 0.. {
        let reply = probe(n).await;
        if reply.status != ok {
            reply.problem(503);
        }
        statuses.push(reply.status);
        match (reply.status == ok, recovered_at) {
            (true, None) => recovered_at = Some(since.elapsed()),
            (true, Some(_)) => steady += 1,
            (false, Some(at)) => panic!("failed again after recovering at {at:?}: {statuses:?}"),
            (false, None) => assert!(
                since.elapsed() < limit,
                "not recovered {limit:?} after the kill: {statuses:?}"
            ),
        }
        if steady == 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    (statuses, recovered_at.unwrap())
}

/// Killing the primary that serves some cache keys and channels (3 primaries + 3 replicas,
/// `--cluster-node-timeout 5000`): reads and publishes that need it answer 503 problems (never a
/// 500, never a hang: each request is bounded), and work again within 25 s of the kill; SSE
/// subscribers of two channels on it (different slots) and one elsewhere keep their streams and
/// receive what is published after recovery; a value written before the kill is still read.
#[actix_web::test]
async fn primary_failover_answers_503_then_recovers_within_25_s() {
    let mut backend = Backend::cluster_with_replicas();
    let config = fleet_config(&backend);
    let server = serve_instance(&config, 2).await;
    let cache = server.services.cache.clone();
    let addr = server.addr;
    let ttl = Duration::from_secs(300);
    cache
        .set("api:fo-anchor", &json!({"v": 0}), ttl)
        .await
        .unwrap();
    publish(addr, PUBLISHER, "fo-chan", r#"{"n":0}"#, Duration::ZERO).await;
    let cluster = backend.cluster_mut().unwrap();
    let cache_anchor = key_containing(cluster, "fo-anchor");
    let chan_anchor = key_containing(cluster, "fo-chan");
    let victim = cluster.owner_of_slot(slot_of(&cache_anchor));
    let other = *cluster.primaries().iter().find(|&&p| p != victim).unwrap();
    let kept = names_on(cluster, &cache_anchor, "fo-anchor", victim, "fo-kept-", 1).remove(0);
    // Absent keys, one per probe (never read before, so never in L1).
    let dead_absent = names_on(cluster, &cache_anchor, "fo-anchor", victim, "fo-da-", 300);
    let live_absent = names_on(cluster, &cache_anchor, "fo-anchor", other, "fo-la-", 300);
    let mut dead_channels = names_on(cluster, &chan_anchor, "fo-chan", victim, "fo-cd-", 3);
    let probe_channel = dead_channels.pop().unwrap();
    let mut channels = dead_channels;
    channels.extend(names_on(
        cluster,
        &chan_anchor,
        "fo-chan",
        other,
        "fo-cl-",
        1,
    ));
    let mut streams = Vec::new();
    for channel in &channels {
        streams.push(open_stream(addr, &format!("/events/{channel}")).await);
    }
    for channel in &channels {
        wait_subscribed(backend.cluster_mut().unwrap(), channel).await;
    }
    cache
        .set(&format!("api:{kept}"), &json!({"v": 1}), ttl)
        .await
        .unwrap();
    let cluster = backend.cluster_mut().unwrap();
    cluster.wait_replicated();

    let killed_at = Instant::now();
    cluster.kill(victim);
    // The first requests come before any failover can start (node timeout 5 s).
    let first = request(
        addr,
        "GET",
        &format!("/cache/{}", dead_absent[299]),
        &[],
        "",
    )
    .await;
    first.problem(503);
    // A key on a live primary: 404, or at worst a 503 problem (redis-rs refreshes the topology
    // after the lost connection); recorded, as the issue asks only for never a 500 or a hang.
    let live = request(
        addr,
        "GET",
        &format!("/cache/{}", live_absent[299]),
        &[],
        "",
    )
    .await;
    if live.status != 404 {
        live.problem(503);
    }
    eprintln!(
        "a key on a live primary right after the kill: {}",
        live.status
    );
    let limit = Duration::from_secs(25);
    let (reads, read_back) = probe_until_steady(
        &mut |n| {
            let path = format!("/cache/{}", dead_absent[n % 299]);
            Box::pin(async move { request(addr, "GET", &path, &[], "").await })
        },
        404,
        killed_at,
        limit,
    )
    .await;
    let bearer = format!("Bearer {PUBLISHER}");
    let (publishes, publish_back) = probe_until_steady(
        &mut |_| {
            let (path, bearer) = (format!("/events/{probe_channel}"), bearer.clone());
            Box::pin(async move {
                let headers = [
                    ("authorization", bearer.as_str()),
                    ("content-type", "application/json"),
                ];
                request(addr, "POST", &path, &headers, r#"{"probe":true}"#).await
            })
        },
        202,
        killed_at,
        limit,
    )
    .await;
    eprintln!(
        "reads back {read_back:?} after the kill ({reads:?}), publishes {publish_back:?} ({publishes:?})"
    );
    assert!(read_back <= limit && publish_back <= limit);
    // Keys on the other primaries: read again (each probe is bounded; the cluster itself refuses
    // commands while no primary serves the victim's slots, so this is checked after recovery).
    let live = request(addr, "GET", &format!("/cache/{}", live_absent[0]), &[], "").await;
    assert_eq!(live.status, 404);
    // The value written before the kill was replicated and is read from the promoted replica.
    let read = request(addr, "GET", &format!("/cache/{kept}"), &[], "").await;
    assert_eq!(
        (read.status, read.json()["value"].clone()),
        (200, json!({"v": 1}))
    );
    // The streams opened before the kill stay open and get what is published now.
    for channel in &channels {
        wait_subscribed(backend.cluster_mut().unwrap(), channel).await;
    }
    for (n, channel) in channels.iter().enumerate() {
        publish(addr, PUBLISHER, channel, &format!(r#"{{"n":{n}}}"#), REACH).await;
    }
    for (n, stream) in streams.iter_mut().enumerate() {
        let data = next_data(stream, Duration::from_secs(5)).await;
        assert_eq!(data, format!(r#"{{"n":{n}}}"#), "{}", channels[n]);
    }
    server.stop().await;
}

/// A user logged in before its session's primary is killed keeps a valid access token and a
/// valid refresh token once a replica took over (3 primaries + 3 replicas).
#[actix_web::test]
async fn tokens_and_sessions_survive_a_primary_failover() {
    let mut backend = Backend::cluster_with_replicas();
    let config = fleet_config(&backend);
    let services = common::services(&config);
    common::feed_ready(&services).await;
    let server = TestServer::start(services, 1);
    let addr = server.addr;
    let (access, refresh) = login(addr, "survivor").await;
    let cluster = backend.cluster_mut().unwrap();
    let session = key_containing(cluster, "session");
    cluster.wait_replicated();
    let killed_at = Instant::now();
    let victim = cluster.owner_of_slot(slot_of(&session));
    cluster.kill(victim);
    cluster.wait_failover(victim, Duration::from_secs(25)).await;
    let bearer = format!("Bearer {access}");
    let deadline = killed_at + Duration::from_secs(25);
    loop {
        let reply = request(addr, "GET", "/auth/me", &[("authorization", &bearer)], "").await;
        if reply.status == 200 {
            assert_eq!(reply.json()["username"], "survivor");
            break;
        }
        reply.problem(503);
        assert!(
            Instant::now() < deadline,
            "/auth/me still 503 25 s after the kill"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let body = format!(r#"{{"refresh_token":"{refresh}"}}"#);
    let json = [("content-type", "application/json")];
    let reply = request(addr, "POST", "/auth/refresh", &json, &body).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    server.stop().await;
}

/// How long an open stream may take to get an event acknowledged once the cluster serves its
/// slot again: the subscriber's liveness check (500 ms), its deadline, the resync and the catch-up,
/// with slack for a loaded machine.
const CATCH_UP: Duration = Duration::from_secs(10);

/// What one SSE client of the failover soak received: each event's id and `n`, in order, and
/// the `event: reset`s among them (by position).
#[derive(Debug, Default)]
struct Received {
    events: Vec<((u64, u64), u64)>,
    resets: Vec<usize>,
    /// The stream was cut as a slow consumer (`event: overflow`).
    overflow: bool,
    ended: bool,
}

/// A stream id (`ms-seq`) as an ordered pair.
fn stream_id(id: &str) -> (u64, u64) {
    let (ms, seq) = id.split_once('-').expect("a stream id");
    (ms.parse().unwrap(), seq.parse().unwrap())
}

/// Reads `stream` into `got` until the event whose data holds `"end":true` (or the stream's
/// end): every event's id and `n`, every reset's position.
async fn read_until_end(mut stream: Sse, got: Arc<std::sync::Mutex<Received>>) {
    while let Some(frame) = stream.next().await {
        let mut got = got.lock().unwrap();
        match frame.event.as_deref() {
            Some("reset") => {
                let at = got.events.len();
                got.resets.push(at);
                continue;
            }
            Some("overflow") => {
                got.overflow = true;
                continue;
            }
            _ => {}
        }
        let Some(id) = &frame.id else {
            continue;
        };
        let data: serde_json::Value =
            serde_json::from_str(frame.data.first().expect("an event's data")).unwrap();
        if data["end"] == json!(true) {
            got.ended = true;
            return;
        }
        got.events
            .push((stream_id(id), data["n"].as_u64().expect("n")));
    }
}

/// One `POST /events/{channel}` with [`PUBLISHER`]'s token, bounded by [`REQUEST_BOUND`]:
/// the acknowledged id (202), or the status (0: no answer in time).
async fn publish_once(addr: SocketAddr, channel: &str, body: &str) -> Result<(u64, u64), u16> {
    let bearer = format!("Bearer {PUBLISHER}");
    let headers = [
        ("authorization", bearer.as_str()),
        ("content-type", "application/json"),
    ];
    let path = format!("/events/{channel}");
    let sent = common::http(addr, "POST", &path, &headers, body.as_bytes());
    match tokio::time::timeout(REQUEST_BOUND, sent).await {
        Ok(reply) if reply.status == 202 => Ok(stream_id(reply.json()["id"].as_str().unwrap())),
        Ok(reply) => Err(reply.status),
        Err(_) => Err(0),
    }
}

/// How long the failover soak runs, and how often it kills a primary: `REDKIT_EVENTS_SOAK_SECS`
/// set (e.g. 240 or 600) runs the long soak (a primary killed every 60 s, restarted as a replica
/// 30 s later); unset, the suite's run (one kill at 2 s, the node back at 14 s, 22 s in all).
fn soak_plan() -> (Duration, Duration, Duration) {
    match std::env::var("REDKIT_EVENTS_SOAK_SECS") {
        Ok(secs) => (
            Duration::from_secs(secs.parse().expect("REDKIT_EVENTS_SOAK_SECS: seconds")),
            Duration::from_secs(60),
            Duration::from_secs(30),
        ),
        Err(_) => (
            Duration::from_secs(22),
            Duration::from_secs(60),
            Duration::from_secs(12),
        ),
    }
}

/// No acknowledged event is lost by an open stream through primary failovers: two instances on
/// 3 primaries + 3 replicas, two SSE clients per channel on B, publishes through A on three
/// channels of three primaries without pause; a primary is killed (and restarted as a replica
/// later) while they run. Every event A acknowledged (202) reaches every client exactly once, in
/// id order, and the streams stay open without `event: reset` (history holds everything here).
#[actix_web::test]
async fn open_streams_lose_no_acknowledged_event_through_failovers() {
    let (length, period, restart_after) = soak_plan();
    let backend = Backend::cluster_with_replicas();
    let dir = tempfile::tempdir().unwrap();
    let mut config = fleet_config(&backend);
    config.database = DatabaseLocation::File(dir.path().join("users.sqlite"));
    config.events.history_len = 1_000_000;
    let a = serve_instance(&config, 1).await;
    let b = serve_instance(&config, 1).await;
    publish(
        a.addr,
        PUBLISHER,
        "soak-anchor",
        r#"{"n":0}"#,
        Duration::ZERO,
    )
    .await;
    let mut backend = backend;
    let cluster = backend.cluster_mut().unwrap();
    let anchor = key_containing(cluster, "soak-anchor");
    let mut channels = Vec::new();
    for node in cluster.primaries() {
        channels.extend(names_on(
            cluster,
            &anchor,
            "soak-anchor",
            node,
            &format!("soak{node}-"),
            1,
        ));
    }
    assert_eq!(channels.len(), 3);
    let keys: Vec<String> = channels
        .iter()
        .map(|c| anchor.replacen("soak-anchor", c, 1))
        .collect();
    let mut readers = Vec::new();
    for channel in &channels {
        for _ in 0..2 {
            let stream = open_stream(b.addr, &format!("/events/{channel}")).await;
            let got = Arc::new(std::sync::Mutex::new(Received::default()));
            actix_web::rt::spawn(read_until_end(stream, got.clone()));
            readers.push(got);
        }
    }
    for channel in &channels {
        wait_subscribed(backend.cluster_mut().unwrap(), channel).await;
    }
    backend.cluster_mut().unwrap().wait_replicated();

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut publishers = Vec::new();
    for channel in channels.clone() {
        let (stop, addr) = (stop.clone(), a.addr);
        publishers.push(actix_web::rt::spawn(async move {
            let (mut acked, mut refused) = (Vec::new(), Vec::new());
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match publish_once(addr, &channel, &format!(r#"{{"n":{n}}}"#)).await {
                    Ok(id) => acked.push((id, n)),
                    Err(status) => {
                        refused.push(status);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
                n += 1;
            }
            (acked, refused)
        }));
    }
    // The chaos: kill the primary of one channel after another, restart each as a replica.
    let started = Instant::now();
    let chaos = tokio::task::spawn_blocking(move || {
        let mut round = 0;
        let mut kills = Vec::new();
        while started.elapsed() + Duration::from_secs(2) < length {
            let round_start = started + period * round;
            let wait_until = |at: Instant| {
                while Instant::now() < at {
                    std::thread::sleep(Duration::from_millis(50));
                }
            };
            wait_until(round_start + Duration::from_secs(2));
            let cluster = backend.cluster_mut().unwrap();
            let victim = cluster.primary_for(&keys[round as usize % keys.len()]);
            cluster.kill(victim);
            kills.push((started.elapsed(), victim));
            wait_until((round_start + restart_after).min(started + length));
            cluster.wait_ready(Duration::from_secs(30));
            cluster.restart(victim);
            cluster.wait_ready(Duration::from_secs(30));
            round += 1;
            wait_until((started + period * round).min(started + length));
        }
        (backend, kills)
    });
    let (backend, kills) = chaos.await.unwrap();
    tokio::time::sleep(length.saturating_sub(started.elapsed())).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut acked = Vec::new();
    for publisher in publishers {
        acked.push(publisher.await.unwrap());
    }
    // The end marker of each channel, once it is acknowledged.
    let stopped_at = Instant::now();
    for channel in &channels {
        publish(
            a.addr,
            PUBLISHER,
            channel,
            r#"{"end":true}"#,
            Duration::from_secs(10),
        )
        .await;
    }
    // Every client has its end marker within `CATCH_UP` of its publication.
    let ended = common::eventually(CATCH_UP, || async {
        readers.iter().all(|got| got.lock().unwrap().ended)
    })
    .await;
    let mut lost_total = 0;
    for (index, got) in readers.iter().enumerate() {
        let got = got.lock().unwrap();
        let (acks, refused) = &acked[index / 2];
        let ids: Vec<(u64, u64)> = got.events.iter().map(|(id, _)| *id).collect();
        let in_order = ids.windows(2).all(|w| w[0] < w[1]);
        let lost: Vec<&((u64, u64), u64)> = acks
            .iter()
            .filter(|(id, _)| ids.binary_search(id).is_err())
            .collect();
        let other: Vec<u16> = refused
            .iter()
            .copied()
            .filter(|s| *s != 503 && *s != 0)
            .collect();
        eprintln!(
            "{} client {}: acknowledged {}, refused {} ({} not 503/timeout), received {}, lost {}, resets {:?}, overflow {}, ended {}, in order {in_order}",
            channels[index / 2],
            index % 2,
            acks.len(),
            refused.len(),
            other.len(),
            got.events.len(),
            lost.len(),
            got.resets,
            got.overflow,
            got.ended
        );
        if let (Some(first), Some(last)) = (lost.first(), lost.last()) {
            eprintln!("  lost n {} ..= {}", first.1, last.1);
        }
        lost_total += lost.len();
        assert!(
            in_order,
            "duplicate or out-of-order ids on {}",
            channels[index / 2]
        );
        assert!(got.resets.is_empty(), "reset on {}", channels[index / 2]);
        assert!(other.is_empty(), "publishes answered {other:?}");
    }
    assert!(
        ended,
        "an end marker missing {CATCH_UP:?} after its publication"
    );
    eprintln!(
        "kills {kills:?}; ran {:?}; end markers reached every client {:?} after the publishers stopped",
        started.elapsed(),
        stopped_at.elapsed()
    );
    assert_eq!(lost_total, 0, "acknowledged events never streamed");
    drop(backend);
}
