//! The invalidation feed: a dedicated RESP3 connection on which Redis reports every change to
//! keys under some prefixes (server-assisted client-side caching, `CLIENT TRACKING ... BCAST`).
//!
//! # Behavior
//! - The connection is a redis-rs [`ConnectionManager`](redis::aio::ConnectionManager) on RESP3 with a push sender: it
//!   reconnects by itself (with backoff) after a drop; no hand-made reconnect loop here.
//! - Tracking is armed with `CLIENT TRACKING OFF` then `CLIENT TRACKING ON BCAST PREFIX <p>...`
//!   in the same round trip as `CLIENT ID`; the listener hears [`FeedEvent::Up`] only once that answered. Redis forgets
//!   tracking with the connection, so it is re-armed after every reconnect.
//! - Liveness: every [`FEED_CHECK_INTERVAL`] the feed asks `CLIENT ID` with a deadline (the
//!   response timeout). No answer in time, or another id than the armed connection's (the
//!   manager reconnected without our noticing, so nothing is tracked), and the listener hears
//!   [`FeedEvent::Down`] before the feed re-arms; after no answer the connection is also
//!   replaced by a new one (redis-rs never reconnects on a timeout, so a half-open socket
//!   would otherwise stay). A `Disconnection` push (the socket closed) does
//!   the same at once.
//! - `NOLOOP` is not used: the listener also hears about this process's own writes (harmless,
//!   and it keeps one connection's changes ordered with everyone else's).
//! - `SWAPDB` changes every key of the database at once and Redis reports none of it. The feed
//!   keeps a *sentinel* key of its own in its database (random name, outside the tracked
//!   prefixes, [`SENTINEL_TTL`]), set when it arms and extended by each liveness check in the
//!   same round trip: when the extension finds it gone (the database was swapped, flushed, or
//!   the key evicted), the listener hears [`FeedEvent::FlushedAll`] and the sentinel is set
//!   again. A swap is thus applied within one check interval plus the deadline. A cluster has
//!   no `SWAPDB` (one database), so it has no sentinel.
//!
//! On a Redis Cluster the connection is redis-rs's async cluster connection (one multiplexed
//! connection per node): tracking is armed on every node it knows (the replicas too, as far as
//! `CLUSTER SLOTS` listed them: Redis leaves out a replica until it has replicated something),
//! and the feed is up only while every primary tracks. The liveness check asks, within the
//! deadline, `CLIENT TRACKINGINFO` of every primary the connection knows (Redis ≥ 6.2) and
//! `CLUSTER SLOTS` of one node:
//! - a primary that answers tracking off (redis-rs replaced its connection, which Redis does not
//!   track) makes the feed go down and re-arm;
//! - primaries listed by `CLUSTER SLOTS` that the connection does not know as primaries (a node
//!   that took slots by resharding, a promoted replica), or known primaries no longer listed (a
//!   failed one), make the feed go down and replace its connection, which learns the topology
//!   anew, then re-arm on every node. redis-rs refreshes a cluster connection's topology only when
//!   a command meets `MOVED` or a connection fails (1.8 has no periodic refresh), and the feed
//!   sends no keyed command, so it checks for itself. Replicas are not compared: one appearing
//!   in `CLUSTER SLOTS` changes nothing until it is promoted, which changes the primaries.
//! - A failed arming replaces the connection too (a node in its view may be gone for good), at
//!   most once per check interval.
//!
//! A change on a primary the feed does not track yet (a slot just moved to a new node, a replica
//! promoted before the feed knew it) is heard of only once the feed re-armed, which flushes L1:
//! staleness up to one check interval plus the deadline and the re-arm.

use std::{sync::Arc, time::Duration};

use redis::{PushInfo, PushKind, Value};
use tokio::{sync::mpsc, task::JoinHandle};

use self::cluster::{ClusterCheck, check_cluster};
use super::{
    RedisError,
    target::{Connection, Target},
};

mod cluster;

/// The id a cluster feed reports for itself: a cluster has one connection per node, whose
/// replacement shows as a `Disconnection` push or as tracking off in `CLIENT TRACKINGINFO`.
const CLUSTER_ID: i64 = -1;

/// How often the feed proves its connection alive.
pub const FEED_CHECK_INTERVAL: Duration = Duration::from_millis(500);
/// Life of the feed's sentinel key, extended by every liveness check.
pub const SENTINEL_TTL: Duration = Duration::from_secs(60);
/// Pause between two failed attempts to arm tracking (the manager's own backoff comes first).
const REARM_PAUSE: Duration = Duration::from_millis(100);

/// What an [`InvalidationFeed`] tells its listener, in the order it learns it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FeedEvent {
    /// These keys (whole Redis keys, prefix included) changed or expired.
    Invalidated(Vec<Vec<u8>>),
    /// Every key may have changed (`FLUSHDB`/`FLUSHALL`: Redis sends a null payload).
    FlushedAll,
    /// The feed is lost or could not be shown alive: changes from now on may go unreported.
    Down,
    /// Tracking is armed: every change from now on is reported.
    Up,
}

/// A running feed; stops (and closes its connection) when dropped.
#[derive(Debug)]
pub struct InvalidationFeed {
    task: JoinHandle<()>,
}

impl Drop for InvalidationFeed {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Opens the connection (lazily) and starts the feed's task on the current Tokio runtime.
pub(super) fn start(
    target: &Target,
    prefixes: Vec<String>,
    listener: Arc<dyn Fn(FeedEvent) + Send + Sync>,
) -> Result<InvalidationFeed, RedisError> {
    let (tx, rx) = mpsc::unbounded_channel();
    let conn = target.push(tx)?;
    let sentinel = (!target.is_cluster())
        .then(|| sentinel_name(&prefixes))
        .flatten();
    let task = tokio::spawn(run(
        target.clone(),
        conn,
        rx,
        (prefixes, sentinel),
        target.response_timeout,
        listener,
    ));
    Ok(InvalidationFeed { task })
}

/// A sentinel key name for a feed tracking `prefixes`: the first prefix less its last
/// character, `~feed:` and a random token (so under no tracked prefix, and one per feed);
/// `None` when that name would still be tracked.
fn sentinel_name(prefixes: &[String]) -> Option<String> {
    let first = prefixes.first()?;
    let mut stem = first.clone();
    stem.pop();
    let mut token = [0u8; 8];
    // Should the OS source fail, the process id and the clock still tell feeds apart.
    let _ = getrandom::fill(&mut token);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let token = u64::from_le_bytes(token) ^ u64::from(std::process::id()) ^ (nanos as u64);
    let name = format!("{stem}~feed:{token:016x}");
    (!prefixes.iter().any(|p| name.starts_with(p.as_str()))).then_some(name)
}

async fn run(
    target: Target,
    mut conn: Connection,
    mut pushes: mpsc::UnboundedReceiver<PushInfo>,
    (prefixes, sentinel): (Vec<String>, Option<String>),
    deadline: Duration,
    listener: Arc<dyn Fn(FeedEvent) + Send + Sync>,
) {
    let sentinel_ms = u64::try_from(SENTINEL_TTL.as_millis()).unwrap_or(u64::MAX);
    let mut plant = redis::cmd("SET");
    if let Some(sentinel) = &sentinel {
        plant.arg(sentinel).arg(1).arg("PX").arg(sentinel_ms);
    }
    let mut arm = redis::pipe();
    arm.cmd("CLIENT").arg("ID");
    // After a missed deadline the connection may be the same one, still tracking: Redis refuses
    // the same prefix twice, so tracking is switched off first. What changes in between is
    // covered by the flush that follows `Up`.
    arm.cmd("CLIENT").arg("TRACKING").arg("OFF").ignore();
    {
        let cmd = arm.cmd("CLIENT").arg("TRACKING").arg("ON").arg("BCAST");
        for prefix in &prefixes {
            cmd.arg("PREFIX").arg(prefix);
        }
    }
    arm.ignore();
    if sentinel.is_some() {
        arm.add_command(plant.clone()).ignore();
    }
    let mut off = redis::cmd("CLIENT");
    off.arg("TRACKING").arg("OFF");
    let mut on = redis::cmd("CLIENT");
    on.arg("TRACKING").arg("ON").arg("BCAST");
    for prefix in &prefixes {
        on.arg("PREFIX").arg(prefix);
    }
    let mut check = redis::pipe();
    check.cmd("CLIENT").arg("ID");
    match &sentinel {
        Some(sentinel) => check.cmd("PEXPIRE").arg(sentinel).arg(sentinel_ms),
        // Answers 1, as a sentinel still there would.
        None => check.cmd("ECHO").arg(1),
    };
    let mut trackinginfo = redis::cmd("CLIENT");
    trackinginfo.arg("TRACKINGINFO");
    let mut slots = redis::cmd("CLUSTER");
    slots.arg("SLOTS");
    let mut down_reported = false;
    loop {
        // Arm (again). Pushes that arrive meanwhile are applied: harmless, maybe useful.
        let armed = async {
            if conn.is_cluster() {
                // Every node, replicas included: a promoted replica already tracks.
                conn.on_every_node(&off).await?;
                conn.on_every_node(&on).await?;
                Ok((CLUSTER_ID,))
            } else {
                arm.query_async::<(i64,)>(&mut conn).await
            }
        };
        let id = match tokio::time::timeout(deadline, armed).await {
            Ok(Ok((id,))) => Some(id),
            Ok(Err(err)) => {
                tracing::debug!(error = %err, "invalidation feed: arming tracking failed");
                // A timeout: the manager's own response timeout, as silent as ours. On a
                // cluster, a node of the connection's view may be gone for good (redis-rs
                // would keep it until a command meets MOVED): learn the topology anew.
                if err.is_timeout() || conn.is_cluster() {
                    reopen(&target, &mut conn, &mut pushes);
                }
                None
            }
            Err(_) => {
                reopen(&target, &mut conn, &mut pushes);
                None
            }
        };
        // A cluster's connection replaced after a failed arming.
        let replaced = id.is_none() && conn.is_cluster();
        // A disconnection queued meanwhile may be this very connection's: arm again.
        let intact = drain(&mut pushes, &*listener);
        let Some(id) = id.filter(|_| intact) else {
            if !down_reported {
                listener(FeedEvent::Down);
                down_reported = true;
            }
            // A cluster's connection was just replaced: give it (and the cluster) a check
            // interval before the next one, so that a lasting failure replaces it at most twice
            // a second.
            let pause = if replaced {
                FEED_CHECK_INTERVAL
            } else {
                REARM_PAUSE
            };
            tokio::time::sleep(pause).await;
            continue;
        };
        listener(FeedEvent::Up);
        tracing::info!(client_id = id, "invalidation feed armed");
        let mut ticker = tokio::time::interval(FEED_CHECK_INTERVAL);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        loop {
            tokio::select! {
                push = pushes.recv() => {
                    let Some(push) = push else { return };
                    if !deliver(push, &*listener) {
                        tracing::warn!("invalidation feed lost its connection; L1 bypassed until it is re-armed");
                        break;
                    }
                }
                _ = ticker.tick() => {
                    // Whether the armed connection is still there and tracking.
                    let alive = tokio::time::timeout(deadline, async {
                        if !conn.is_cluster() {
                            let (now, there) = check.query_async::<(i64, i64)>(&mut conn).await?;
                            if now != id {
                                tracing::warn!("invalidation feed: the connection was replaced; re-arming");
                            } else if there == 0 {
                                // Every key may have changed at once (a SWAPDB): Redis said
                                // nothing of it.
                                tracing::warn!("invalidation feed: its sentinel key vanished (SWAPDB, flush or eviction); L1 flushed");
                                listener(FeedEvent::FlushedAll);
                                plant.query_async::<()>(&mut conn).await?;
                            }
                            return Ok::<bool, redis::RedisError>(now == id);
                        }
                        match check_cluster(&conn, &trackinginfo, &slots).await? {
                            ClusterCheck::Tracking => Ok(true),
                            ClusterCheck::NotTracking(node) => {
                                tracing::warn!(%node, "invalidation feed: a node does not track; L1 bypassed until re-armed");
                                Ok(false)
                            }
                            ClusterCheck::Topology { unknown, gone } => {
                                tracing::warn!(?unknown, ?gone, "invalidation feed: the cluster's nodes changed; L1 bypassed, connection replaced");
                                reopen(&target, &mut conn, &mut pushes);
                                Ok(false)
                            }
                        }
                    })
                    .await;
                    match alive {
                        Ok(Ok(true)) => {}
                        Ok(Ok(false)) => break,
                        Ok(Err(err)) => {
                            tracing::warn!(error = %err, "invalidation feed: liveness check failed; L1 bypassed");
                            if err.is_timeout() {
                                // The manager's own response timeout: as silent as ours.
                                reopen(&target, &mut conn, &mut pushes);
                            }
                            break;
                        }
                        Err(_) => {
                            tracing::warn!(?deadline, "invalidation feed: no answer within the deadline; L1 bypassed, connection replaced");
                            // A timeout never makes redis-rs reconnect: a half-open socket would
                            // stay (and the re-arm time out) for ever. A new connection, with its
                            // own push channel so that the old one's pushes are not mistaken
                            // for the new one's.
                            reopen(&target, &mut conn, &mut pushes);
                            break;
                        }
                    }
                }
            }
        }
        listener(FeedEvent::Down);
        down_reported = true;
    }
}

/// Replaces a connection that missed a deadline, with its own push channel so that the old
/// one's pushes are not mistaken for the new one's.
fn reopen(target: &Target, conn: &mut Connection, pushes: &mut mpsc::UnboundedReceiver<PushInfo>) {
    let (tx, rx) = mpsc::unbounded_channel();
    match target.push(tx) {
        Ok(fresh) => {
            *conn = fresh;
            *pushes = rx;
        }
        Err(err) => tracing::warn!(error = %err, "invalidation feed: cannot reopen its connection"),
    }
}

/// Applies the pushes already queued (without waiting); answers false if one of them was a
/// disconnection.
fn drain(
    pushes: &mut mpsc::UnboundedReceiver<PushInfo>,
    listener: &(dyn Fn(FeedEvent) + Send + Sync),
) -> bool {
    let mut intact = true;
    while let Ok(push) = pushes.try_recv() {
        intact &= deliver(push, listener);
    }
    intact
}

/// Hands one push to the listener; answers false for a disconnection.
fn deliver(push: PushInfo, listener: &(dyn Fn(FeedEvent) + Send + Sync)) -> bool {
    match push.kind {
        PushKind::Invalidate => {
            if let Some(event) = invalidation(push.data) {
                listener(event);
            }
            true
        }
        PushKind::Disconnection => false,
        _ => true,
    }
}

/// The event an `invalidate` push stands for: its keys, or a flush for a null payload.
fn invalidation(data: Vec<Value>) -> Option<FeedEvent> {
    match data.into_iter().next()? {
        Value::Nil => Some(FeedEvent::FlushedAll),
        Value::Array(keys) => Some(FeedEvent::Invalidated(
            keys.into_iter()
                .filter_map(|key| match key {
                    Value::BulkString(bytes) => Some(bytes),
                    Value::SimpleString(text) => Some(text.into_bytes()),
                    _ => None,
                })
                .collect(),
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn null_payload_is_a_flush_and_arrays_are_keys() {
        assert_eq!(invalidation(vec![Value::Nil]), Some(FeedEvent::FlushedAll));
        assert_eq!(
            invalidation(vec![Value::Array(vec![
                Value::BulkString(b"a".to_vec()),
                Value::BulkString(b"b".to_vec()),
            ])]),
            Some(FeedEvent::Invalidated(vec![b"a".to_vec(), b"b".to_vec()]))
        );
        assert_eq!(invalidation(vec![]), None);
    }
}
