//! Subscriber connections: a RESP3 push connection per feature that needs one, with a liveness
//! check, opened by the layer from the same settings as the command connection.
//!
//! # Behavior
//! - The connection is redis-rs's: a `ConnectionManager` with automatic
//!   resubscription on one Redis, an async cluster connection (one connection per node) on a
//!   cluster. A dropped socket is reconnected by redis-rs; no reconnect loop here.
//! - Liveness: every [`PUSH_CHECK_INTERVAL`] a `PING` (on a cluster: to every node) must be
//!   answered within the response timeout. A half-open connection (the peer vanished without a
//!   FIN, or stopped answering) never makes redis-rs reconnect, since a timeout is not a
//!   dropped connection: so on a missed deadline the connection is dropped and a new one is
//!   opened (a new generation; pushes still queued from the old one are discarded). An error
//!   answer (a node refusing: killed, restarting) is not silence: that node's connection
//!   dropped, which its `Disconnection` push reports, and the others' subscriptions are kept.
//! - The owner hears [`PushEvent::Lost`] whenever messages may have been missed: a
//!   `Disconnection` push, or a missed deadline. It resubscribes what it needs (idempotent) and
//!   catches up from Redis. Subscriptions made through this type on a replaced connection are
//!   gone; only the owner knows which still matter.
//! - Sharded channels ([`Subscriber::subscribe_sharded`]) are subscribed one `SSUBSCRIBE` per
//!   channel, so never across slots (Redis refuses a cross-slot `SSUBSCRIBE` with `CROSSSLOT`).

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use redis::{PushInfo, PushKind, Value};
use tokio::{sync::mpsc, task::JoinHandle};

use super::{
    RedisError,
    target::{Connection, Subscription, Target},
};

/// How often a subscriber connection proves itself alive.
pub const PUSH_CHECK_INTERVAL: Duration = Duration::from_millis(500);

/// What a [`Subscriber`] tells its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PushEvent {
    /// A message published on a subscribed channel (plain or sharded).
    Message {
        /// The channel, as subscribed.
        channel: Vec<u8>,
        /// The message.
        payload: Vec<u8>,
    },
    /// The server dropped a sharded channel (its slot moved to another node): resubscribe it.
    ShardMoved(Vec<u8>),
    /// Messages may have been missed (the connection dropped, or did not answer its liveness
    /// check in time): resubscribe and catch up.
    Lost,
}

/// The receiving end of a [`Subscriber`]'s events.
pub type PushEvents = mpsc::UnboundedReceiver<PushEvent>;

/// A subscriber connection (see the [module docs](self)). Cheap to clone; the connection and
/// its liveness task end when the last clone is dropped.
#[derive(Clone)]
pub struct Subscriber {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Subscriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscriber")
            .field("name", &self.inner.name)
            .finish_non_exhaustive()
    }
}

struct Inner {
    name: &'static str,
    target: Target,
    /// The current generation and its connection.
    conn: Mutex<(u64, Connection)>,
    raw: mpsc::UnboundedSender<(u64, PushInfo)>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(task) = self
            .task
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
        {
            task.abort();
        }
    }
}

/// Opens a subscriber named `name` (for logs) on `target`, and starts its liveness task on the
/// current Tokio runtime. Lazy: never waits for Redis.
pub(super) fn start(
    target: &Target,
    name: &'static str,
) -> Result<(Subscriber, PushEvents), RedisError> {
    let (raw, raw_rx) = mpsc::unbounded_channel();
    let conn = open(target, &raw, 0)?;
    let (events, events_rx) = mpsc::unbounded_channel();
    let inner = Arc::new(Inner {
        name,
        target: target.clone(),
        conn: Mutex::new((0, conn)),
        raw,
        task: Mutex::new(None),
    });
    let task = tokio::spawn(run(Arc::downgrade(&inner), raw_rx, events));
    *inner
        .task
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(task);
    Ok((Subscriber { inner }, events_rx))
}

/// A push connection of generation `generation`, whose pushes are tagged with it.
fn open(
    target: &Target,
    raw: &mpsc::UnboundedSender<(u64, PushInfo)>,
    generation: u64,
) -> Result<Connection, RedisError> {
    let raw = raw.clone();
    target.push(move |push: PushInfo| raw.send((generation, push)))
}

impl Subscriber {
    fn connection(&self) -> Connection {
        self.inner
            .conn
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .1
            .clone()
    }

    async fn send(&self, what: Subscription, channels: &[&[u8]]) -> Result<(), RedisError> {
        if channels.is_empty() {
            return Ok(());
        }
        let mut conn = self.connection();
        let timeout = self.inner.target.response_timeout;
        match tokio::time::timeout(timeout, conn.subscription(what, channels)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(err)) => Err(RedisError::classify(err)),
            Err(_) => Err(RedisError::Timeout(timeout)),
        }
    }

    /// Subscribes plain channels (`SUBSCRIBE`; on a cluster a `PUBLISH` reaches every node).
    ///
    /// # Errors
    /// [`RedisError`] when Redis refused or did not answer within the response timeout.
    pub async fn subscribe(&self, channels: &[&[u8]]) -> Result<(), RedisError> {
        self.send(Subscription::Subscribe, channels).await
    }

    /// Unsubscribes plain channels.
    ///
    /// # Errors
    /// As [`subscribe`](Self::subscribe).
    pub async fn unsubscribe(&self, channels: &[&[u8]]) -> Result<(), RedisError> {
        self.send(Subscription::Unsubscribe, channels).await
    }

    /// Subscribes a sharded channel (`SSUBSCRIBE`, Redis 7): on a cluster, on the node that
    /// owns the channel's slot. One channel per command, so never across slots.
    ///
    /// # Errors
    /// As [`subscribe`](Self::subscribe).
    pub async fn subscribe_sharded(&self, channel: &[u8]) -> Result<(), RedisError> {
        self.send(Subscription::SSubscribe, &[channel]).await
    }

    /// Unsubscribes a sharded channel.
    ///
    /// # Errors
    /// As [`subscribe`](Self::subscribe).
    pub async fn unsubscribe_sharded(&self, channel: &[u8]) -> Result<(), RedisError> {
        self.send(Subscription::SUnsubscribe, &[channel]).await
    }
}

async fn run(
    inner: std::sync::Weak<Inner>,
    mut raw: mpsc::UnboundedReceiver<(u64, PushInfo)>,
    events: mpsc::UnboundedSender<PushEvent>,
) {
    let ping = redis::cmd("PING");
    let mut ticker = tokio::time::interval(PUSH_CHECK_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        tokio::select! {
            push = raw.recv() => {
                let Some((generation, push)) = push else { return };
                let Some(inner) = inner.upgrade() else { return };
                let current = inner.conn.lock().unwrap_or_else(std::sync::PoisonError::into_inner).0;
                drop(inner);
                if generation != current {
                    continue;
                }
                if let Some(event) = event(push) {
                    if event == PushEvent::Lost {
                        tracing::warn!("subscriber connection dropped; redis-rs reconnects it, owner resyncs");
                    }
                    if events.send(event).is_err() {
                        return;
                    }
                }
            }
            _ = ticker.tick() => {
                let Some(strong) = inner.upgrade() else { return };
                let (generation, mut conn) = strong.conn.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
                let deadline = strong.target.response_timeout;
                let name = strong.name;
                drop(strong);
                let alive = tokio::time::timeout(deadline, conn.on_every_node(&ping)).await;
                match alive {
                    Ok(Ok(())) => continue,
                    // A node that answers with an error, or refuses (killed, restarting): its
                    // connection dropped, which redis-rs reports (a `Disconnection` push, so
                    // `Lost`) and mends itself; the other nodes' subscriptions are intact.
                    // Replacing every node's connection would drop them all, once per check,
                    // for as long as the node is down (a failover takes seconds).
                    Ok(Err(err)) if !err.is_timeout() => continue,
                    // Silence: a half-open connection, which nothing else would notice.
                    Ok(Err(_)) | Err(_) => {}
                }
                drop(conn);
                tracing::warn!(subscriber = name, ?deadline, "subscriber connection did not answer in time; replacing it");
                let Some(strong) = inner.upgrade() else { return };
                match open(&strong.target, &strong.raw, generation + 1) {
                    Ok(fresh) => {
                        *strong.conn.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = (generation + 1, fresh);
                    }
                    Err(err) => tracing::warn!(subscriber = name, error = %err, "cannot reopen subscriber connection"),
                }
                drop(strong);
                if events.send(PushEvent::Lost).is_err() {
                    return;
                }
            }
        }
    }
}

/// What one push means for the owner, if anything.
fn event(push: PushInfo) -> Option<PushEvent> {
    match push.kind {
        PushKind::Message | PushKind::SMessage => {
            let mut data = push.data.into_iter();
            let channel = bytes(data.next()?)?;
            let payload = bytes(data.next()?)?;
            Some(PushEvent::Message { channel, payload })
        }
        PushKind::SUnsubscribe => {
            Some(PushEvent::ShardMoved(bytes(push.data.into_iter().next()?)?))
        }
        PushKind::Disconnection => Some(PushEvent::Lost),
        _ => None,
    }
}

fn bytes(value: Value) -> Option<Vec<u8>> {
    match value {
        Value::BulkString(bytes) => Some(bytes),
        Value::SimpleString(text) => Some(text.into_bytes()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Plain and sharded messages become `Message`; a disconnection is `Lost`; a server-side
    /// `sunsubscribe` (slot moved) names its channel; subscription confirmations are nothing.
    #[test]
    fn pushes_map_to_events() {
        let push = |kind, data| PushInfo { kind, data };
        let msg = vec![
            Value::BulkString(b"ch".to_vec()),
            Value::BulkString(b"hi".to_vec()),
        ];
        let expected = Some(PushEvent::Message {
            channel: b"ch".to_vec(),
            payload: b"hi".to_vec(),
        });
        assert_eq!(event(push(PushKind::Message, msg.clone())), expected);
        assert_eq!(event(push(PushKind::SMessage, msg)), expected);
        assert_eq!(
            event(push(PushKind::Disconnection, vec![])),
            Some(PushEvent::Lost)
        );
        assert_eq!(
            event(push(
                PushKind::SUnsubscribe,
                vec![Value::BulkString(b"ch".to_vec()), Value::Int(0)]
            )),
            Some(PushEvent::ShardMoved(b"ch".to_vec()))
        );
        assert_eq!(
            event(push(
                PushKind::Subscribe,
                vec![Value::BulkString(b"ch".to_vec()), Value::Int(1)]
            )),
            None
        );
    }
}
