//! The harness itself: a private cluster starts with every slot covered, routes keys, fails over,
//! and is gone when dropped.

use super::*;

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
