//! The Redis [`EventStore`] (one server or a cluster): a Stream per channel,
//! `<prefix>events:<channel>`, appended and published in one script call; tickets as
//! `<prefix>events-ticket:<ticket>`.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, Weak},
    time::Duration,
};

use super::{EventStore, Replay, ReplaySlot, Replayed, StoreFuture, lock, millis, stream_key};
use crate::{
    connection::RedisHandle,
    events::{
        EventsError, TICKET_TTL,
        hub::Hub,
        read::{After, Read, read_after},
        wire::EventId,
    },
};

/// XADD (trimmed) + PEXPIRE + SPUBLISH in one round trip; the published payload carries the new
/// id so that subscribers and history agree on it. The sharded channel is the stream's key: on a
/// cluster, the message stays on the stream's shard (Redis 7; a plain PUBLISH would cross the
/// whole cluster bus).
const PUBLISH_LUA: &str = r"
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'event', ARGV[2], 'data', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('SPUBLISH', KEYS[1], id .. '\n' .. ARGV[2] .. '\n' .. ARGV[3])
return id
";

/// Events kept in Redis. See the module docs.
pub(crate) struct RedisStore {
    redis: RedisHandle,
    script: redis::Script,
    prefix: String,
    max_len: usize,
    ttl: Duration,
    /// Replays being sent, by channel and `Last-Event-ID`: resumes of one position share one
    /// copy of the events (and read from Redis only what was published since).
    replays: Mutex<HashMap<(String, EventId, Read), Weak<ReplaySlot>>>,
}

impl RedisStore {
    /// Histories of about `max_len` events (trimmed approximately), expiring `ttl` after their
    /// last publish.
    pub(crate) fn new(redis: RedisHandle, prefix: &str, max_len: usize, ttl: Duration) -> Self {
        Self {
            redis,
            script: redis::Script::new(PUBLISH_LUA),
            prefix: prefix.to_owned(),
            max_len,
            ttl,
            replays: Mutex::default(),
        }
    }

    /// The slot every resume of this position shares.
    fn slot(&self, key: (String, EventId, Read)) -> Arc<ReplaySlot> {
        let mut replays = lock(&self.replays);
        if let Some(slot) = replays.get(&key).and_then(Weak::upgrade) {
            return slot;
        }
        replays.retain(|_, w| w.strong_count() > 0);
        let slot = Arc::new(ReplaySlot::default());
        replays.insert(key, Arc::downgrade(&slot));
        slot
    }

    /// [`EventStore::replay`]: Redis sends only what is replayed (never a page beyond the
    /// bounds), and resumes of one position share one copy while any of them is sending it.
    async fn replay_shared(
        &self,
        channel: &str,
        last: EventId,
        (max_events, max_bytes): (usize, usize),
        read: Read,
    ) -> Result<Replay, EventsError> {
        let max_bytes = max_bytes.min(super::MAX_REPLAY_BYTES);
        let slot = self.slot((channel.to_owned(), last, read));
        // Held across one read, itself bounded by the response timeout.
        let mut shared = slot.lock().await;
        let base = shared.clone().unwrap_or_default();
        if base.events.len() > max_events || base.bytes > max_bytes {
            return Ok(Replay::Reset);
        }
        // Only what was published since the shared copy was read; all of it without one.
        let (from, read) = match base.events.last() {
            // From an event the shared copy holds: it is in history, or trimmed (reset).
            Some((id, _)) => (*id, Read::Resume),
            None => (last, read),
        };
        let bounds = (max_events - base.events.len(), max_bytes - base.bytes);
        let target = (self.prefix.as_str(), channel);
        let more = match read_after(&self.redis, target, from, bounds, read).await? {
            After::Reset(_) => return Ok(Replay::Reset),
            After::Events(more) => more,
        };
        let replayed = if more.is_empty() && shared.is_some() {
            base
        } else {
            let mut events = base.events.clone();
            events.extend(more);
            Arc::new(Replayed::new(events))
        };
        *shared = Some(replayed.clone());
        drop(shared);
        Ok(Replay::Events(replayed, Some(slot)))
    }
}

/// A ticket's key: outside `<prefix>events:`, where every channel name (`ticket:…` included) has
/// its stream, so no channel can ever meet a ticket's string.
fn ticket_key(prefix: &str, ticket: &str) -> String {
    format!("{prefix}events-ticket:{ticket}")
}

impl EventStore for RedisStore {
    fn publish<'a>(
        &'a self,
        _hub: &'a Hub,
        channel: &'a str,
        kind: &'a str,
        data: &'a str,
    ) -> StoreFuture<'a, EventId> {
        Box::pin(async move {
            let mut invocation = self.script.key(stream_key(&self.prefix, channel));
            invocation
                .arg(self.max_len)
                .arg(kind)
                .arg(data)
                .arg(millis(self.ttl).max(1));
            let id: String = self.redis.invoke(&invocation).await?;
            id.parse()
                .map_err(|()| EventsError::Internal("redis returned an unparsable stream id"))
        })
    }

    fn replay<'a>(
        &'a self,
        channel: &'a str,
        last: EventId,
        bounds: (usize, usize),
        read: Read,
    ) -> StoreFuture<'a, Replay> {
        Box::pin(self.replay_shared(channel, last, bounds, read))
    }

    fn newest_local(&self, _channel: &str) -> Option<EventId> {
        None
    }

    fn len<'a>(&'a self, channel: &'a str) -> StoreFuture<'a, u64> {
        Box::pin(async move {
            let mut cmd = redis::cmd("XLEN");
            cmd.arg(stream_key(&self.prefix, channel));
            Ok(self.redis.query(&cmd).await?)
        })
    }

    fn put_ticket<'a>(&'a self, ticket: &'a str, token: &'a str) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let mut cmd = redis::cmd("SET");
            cmd.arg(ticket_key(&self.prefix, ticket))
                .arg(token)
                .arg("NX")
                .arg("PX")
                .arg(millis(TICKET_TTL));
            let stored: Option<String> = self.redis.query(&cmd).await?;
            Ok(stored.is_some())
        })
    }

    fn take_ticket<'a>(&'a self, ticket: &'a str) -> StoreFuture<'a, Option<String>> {
        Box::pin(async move {
            let mut cmd = redis::cmd("GETDEL");
            cmd.arg(ticket_key(&self.prefix, ticket));
            Ok(self.redis.query(&cmd).await?)
        })
    }
}
