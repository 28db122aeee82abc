//! The cluster feed's liveness check: does every primary track, and are the primaries the
//! connection knows the ones the cluster lists (see the [feed's docs](super)).

use redis::{Cmd, Value};

use super::super::target::Connection;

/// What a cluster's liveness check found.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum ClusterCheck {
    /// Every primary the connection knows tracks, and they are the primaries the cluster lists.
    Tracking,
    /// This primary (`host:port`) answered tracking off, or an error.
    NotTracking(String),
    /// The cluster lists primaries the connection does not know as such, or no longer lists
    /// some it knows.
    Topology {
        /// Listed, unknown to the connection (`host:port`).
        unknown: Vec<String>,
        /// Known to the connection, no longer listed.
        gone: Vec<String>,
    },
}

/// Asks every primary the connection knows whether it tracks, and one node which primaries
/// serve the cluster's slots, at once.
pub(super) async fn check_cluster(
    conn: &Connection,
    trackinginfo: &Cmd,
    slots: &Cmd,
) -> redis::RedisResult<ClusterCheck> {
    let (mut on_nodes, mut on_one) = (conn.clone(), conn.clone());
    let (infos, listed) = futures_util::future::join(
        on_nodes.per_primary(trackinginfo),
        slots.query_async::<Value>(&mut on_one),
    )
    .await;
    let infos = infos?;
    let listed = listed_primaries(&listed?);
    let known: Vec<&str> = infos.iter().map(|(addr, _)| addr.as_str()).collect();
    let unknown: Vec<String> = listed
        .iter()
        .filter(|(host, port)| !known.iter().any(|k| same_node(k, host, *port)))
        .map(|(host, port)| format!("{host}:{port}"))
        .collect();
    let gone: Vec<String> = known
        .iter()
        .filter(|k| !listed.iter().any(|(host, port)| same_node(k, host, *port)))
        .map(|k| (*k).to_owned())
        .collect();
    if !unknown.is_empty() || !gone.is_empty() {
        return Ok(ClusterCheck::Topology { unknown, gone });
    }
    Ok(infos
        .into_iter()
        .find(|(_, info)| !tracking_on(info))
        .map_or(ClusterCheck::Tracking, |(addr, _)| {
            ClusterCheck::NotTracking(addr)
        }))
}

/// Whether redis-rs's node address `known` (`host:port`) is the node listed as `host`, `port`
/// by `CLUSTER SLOTS`; a listed empty host stands for the answering node's, which redis-rs took
/// (then only the port is compared).
fn same_node(known: &str, host: &str, port: u16) -> bool {
    let Some((known_host, known_port)) = known.rsplit_once(':') else {
        return false;
    };
    known_port.parse() == Ok(port) && (host.is_empty() || known_host == host)
}

/// Every primary (`host`, `port`) that `CLUSTER SLOTS` lists as serving slots (the first node
/// of each range), without repeats; nodes listed with host `?` (unknown) are left out, as
/// redis-rs leaves them out.
fn listed_primaries(slots: &Value) -> Vec<(String, u16)> {
    let mut nodes = Vec::new();
    let Value::Array(ranges) = slots else {
        return nodes;
    };
    for range in ranges {
        let Value::Array(items) = range else { continue };
        if let Some(node) = items.get(2) {
            let Value::Array(fields) = node else { continue };
            let host = match fields.first() {
                Some(Value::BulkString(bytes)) => String::from_utf8_lossy(bytes).into_owned(),
                Some(Value::SimpleString(text)) => text.clone(),
                _ => String::new(),
            };
            let Some(Value::Int(port)) = fields.get(1) else {
                continue;
            };
            let Ok(port) = u16::try_from(*port) else {
                continue;
            };
            if host != "?" && !nodes.contains(&(host.clone(), port)) {
                nodes.push((host, port));
            }
        }
    }
    nodes
}

/// Whether a `CLIENT TRACKINGINFO` reply (a map, RESP3) has the flag `on`.
fn tracking_on(info: &Value) -> bool {
    let text = |v: &Value, want: &str| match v {
        Value::BulkString(bytes) => bytes == want.as_bytes(),
        Value::SimpleString(text) => text == want,
        _ => false,
    };
    let Value::Map(fields) = info else {
        return false;
    };
    fields.iter().any(|(key, flags)| {
        text(key, "flags")
            && match flags {
                Value::Set(flags) | Value::Array(flags) => flags.iter().any(|f| text(f, "on")),
                _ => false,
            }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(text: &str) -> Value {
        Value::BulkString(text.as_bytes().to_vec())
    }

    #[test]
    fn cluster_slots_list_every_primary_once_and_compare_with_redis_rs_addresses() {
        let node = |host: &str, port: i64| Value::Array(vec![bulk(host), Value::Int(port)]);
        let slots = Value::Array(vec![
            Value::Array(vec![
                Value::Int(0),
                Value::Int(99),
                node("127.0.0.1", 7000),
                node("127.0.0.1", 7003),
            ]),
            Value::Array(vec![Value::Int(100), Value::Int(100), node("", 7001)]),
            Value::Array(vec![
                Value::Int(101),
                Value::Int(200),
                node("127.0.0.1", 7000),
            ]),
            Value::Array(vec![Value::Int(201), Value::Int(300), node("?", 7009)]),
        ]);
        assert_eq!(
            listed_primaries(&slots),
            vec![("127.0.0.1".to_owned(), 7000), (String::new(), 7001)]
        );
        assert!(same_node("127.0.0.1:7000", "127.0.0.1", 7000));
        assert!(same_node("10.0.0.1:7001", "", 7001));
        assert!(!same_node("127.0.0.1:7000", "127.0.0.1", 7001));
        assert!(!same_node("10.0.0.2:7000", "127.0.0.1", 7000));
        assert!(same_node("::1:7000", "::1", 7000));
    }

    #[test]
    fn tracking_is_on_only_with_the_on_flag() {
        let info = |flags: &[&str]| {
            Value::Map(vec![
                (
                    bulk("flags"),
                    Value::Set(flags.iter().map(|f| bulk(f)).collect()),
                ),
                (bulk("redirect"), Value::Int(-1)),
            ])
        };
        assert!(tracking_on(&info(&["on", "bcast"])));
        assert!(!tracking_on(&info(&["off"])));
        assert!(!tracking_on(&Value::Array(vec![bulk("flags"), bulk("on")])));
        assert!(!tracking_on(&Value::Nil));
    }
}
