//! Two instances on one cluster: L1 coherence on every shard, through topology changes and a
//! failover, and an exact shared limit.

use super::*;

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
