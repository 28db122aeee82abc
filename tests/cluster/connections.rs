//! Connections per node stay bounded, and events cross instances on every primary and through a
//! node restart.

use super::*;

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
