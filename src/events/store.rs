//! Where events are kept: one trait, [`EventStore`], with its two implementations, chosen once
//! when the events capability starts: Redis (`store/redis.rs`: a Stream per channel, published
//! with `SPUBLISH` on the stream's own shard, tickets as keys any instance redeems once), or this
//! process (`store/memory.rs`: a ring per channel fanned out to the hub directly, tickets in a
//! map). Each call boxes its future: one allocation beside the round trip or the lock it stands
//! for; live delivery never reaches this module.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::BoxFuture;

use super::{EventsError, hub::Hub, read::Read, wire::EventId};

mod memory;
mod redis;

pub(crate) use self::{memory::MemoryStore, redis::RedisStore};

/// Largest replay one resuming client is sent, in bytes of encoded events; beyond, `reset`.
/// The catch-up after an outage is bounded the same way.
pub const MAX_REPLAY_BYTES: usize = 1024 * 1024;

/// What a store call answers.
pub(crate) type StoreFuture<'a, T> = BoxFuture<'a, Result<T, EventsError>>;

/// A channel's history and the tickets that stand for tokens. See the module docs.
pub(crate) trait EventStore: Send + Sync {
    /// Appends an event and delivers it: published through Redis to every instance, or fanned
    /// out to `hub` directly (under the ring's lock, so local order is id order).
    fn publish<'a>(
        &'a self,
        hub: &'a Hub,
        channel: &'a str,
        kind: &'a str,
        data: &'a str,
    ) -> StoreFuture<'a, EventId>;

    /// The events after `last` for a resuming client, or [`Replay::Reset`] if history does not
    /// reach back to `last` (`read`: [`Read::Resume`] wants `last` itself in history,
    /// [`Read::Since`] only nothing after it trimmed), or if more than `max_events` events (or
    /// more than `max_bytes`, at most [`MAX_REPLAY_BYTES`]) follow it: a client that far behind
    /// refetches its state rather than pinning a large replay.
    fn replay<'a>(
        &'a self,
        channel: &'a str,
        last: EventId,
        bounds: (usize, usize),
        read: Read,
    ) -> StoreFuture<'a, Replay>;

    /// The newest id of `channel`'s history when this process holds it (memory: `0-0` without
    /// one), where a multi-channel stream joining now starts; `None` on Redis, where live
    /// delivery's own position is the start.
    fn newest_local(&self, channel: &str) -> Option<EventId>;

    /// How many events history holds for `channel`.
    fn len<'a>(&'a self, channel: &'a str) -> StoreFuture<'a, u64>;

    /// Stores `token` under `ticket` for [`TICKET_TTL`](super::TICKET_TTL); false if the ticket
    /// is taken.
    fn put_ticket<'a>(&'a self, ticket: &'a str, token: &'a str) -> StoreFuture<'a, bool>;

    /// Takes the token stored under `ticket`: `None` if unknown, taken or expired.
    fn take_ticket<'a>(&'a self, ticket: &'a str) -> StoreFuture<'a, Option<String>>;
}

/// What a resuming client gets from history.
#[derive(Debug)]
pub(crate) enum Replay {
    /// The id is unknown or older than what history holds: the client must refetch state.
    Reset,
    /// The encoded events after the id, oldest first (possibly none), and on Redis the slot
    /// that shares them with every resume of the same position: hold it while sending them.
    Events(Arc<Replayed>, Option<Arc<ReplaySlot>>),
}

/// One position's replay (channel and `Last-Event-ID`) on Redis: the events read so far, behind
/// an async lock so that resumes arriving together wait for one read instead of each reading
/// (and holding) a copy.
pub(crate) type ReplaySlot = tokio::sync::Mutex<Option<Arc<Replayed>>>;

/// Encoded events of one replay, and their size.
#[derive(Debug, Default)]
pub(crate) struct Replayed {
    pub(crate) events: Vec<(EventId, Bytes)>,
    pub(crate) bytes: usize,
}

impl Replayed {
    fn new(events: Vec<(EventId, Bytes)>) -> Self {
        let bytes = events.iter().map(|(_, b)| b.len()).sum();
        Self { events, bytes }
    }
}

/// The Redis key (and pub/sub channel) of `channel`.
pub(crate) fn stream_key(prefix: &str, channel: &str) -> String {
    format!("{prefix}events:{channel}")
}

/// Locks `mutex`; every update under the stores' locks is a single insert, remove or push, so a
/// poisoned lock still holds consistent data.
fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
