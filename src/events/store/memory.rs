//! The memory backend's [`EventStore`]: a ring of encoded events per channel, and tickets in a
//! map, for one instance.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;

use super::{EventStore, Replay, Replayed, StoreFuture, lock};
use crate::events::{
    TICKET_TTL,
    hub::Hub,
    read::Read,
    wire::{EventId, encode_event},
};

/// One channel's history.
struct Ring {
    events: VecDeque<(EventId, Bytes)>,
    last: EventId,
    /// The newest id no longer held (trimmed or expired): history reaches back to any id not
    /// before it.
    dropped: EventId,
    written: tokio::time::Instant,
}

/// The histories, and when expired ones were last dropped.
struct Rings {
    map: HashMap<String, Ring>,
    swept: tokio::time::Instant,
}

impl Rings {
    /// Drops the histories idle for `ttl` (as Redis expires their keys): channels come and go
    /// (`user:{id}`), and a history nobody publishes to again would otherwise stay for the life of
    /// the process. Called on publish; it sweeps when `ttl` or a minute (the shorter) has passed
    /// since the last sweep.
    fn sweep(&mut self, now: tokio::time::Instant, ttl: Duration) {
        if now.duration_since(self.swept) < ttl.min(SWEEP_EVERY) {
            return;
        }
        self.swept = now;
        self.map
            .retain(|_, ring| now.duration_since(ring.written) < ttl);
    }
}

/// The longest time between two sweeps of expired histories.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// Events kept in this process. See the module docs.
pub(crate) struct MemoryStore {
    rings: Mutex<Rings>,
    max_len: usize,
    ttl: Duration,
    /// Ticket → (token, expiry).
    tickets: Mutex<HashMap<String, (String, tokio::time::Instant)>>,
}

impl MemoryStore {
    /// Histories of at most `max_len` events, forgotten after `ttl` without a publish.
    pub(crate) fn new(max_len: usize, ttl: Duration) -> Self {
        Self {
            rings: Mutex::new(Rings {
                map: HashMap::new(),
                swept: tokio::time::Instant::now(),
            }),
            max_len,
            ttl,
            tickets: Mutex::default(),
        }
    }

    /// Publishes at `now` (a parameter so that the expiry test can move it).
    fn publish_at(
        &self,
        now: tokio::time::Instant,
        hub: &Hub,
        (channel, kind, data): (&str, &str, &str),
    ) -> EventId {
        let mut rings = lock(&self.rings);
        rings.sweep(now, self.ttl);
        let ring = rings.map.entry(channel.to_owned()).or_insert_with(|| Ring {
            events: VecDeque::new(),
            last: EventId::ZERO,
            dropped: EventId::ZERO,
            written: now,
        });
        if now.duration_since(ring.written) >= self.ttl {
            // Expired like the Redis key would have: history starts over.
            ring.events.clear();
            ring.dropped = ring.last;
        }
        let id = ring.last.next(hub.now_ms());
        let bytes = encode_event(id, kind, data);
        ring.last = id;
        ring.written = now;
        ring.events.push_back((id, bytes.clone()));
        while ring.events.len() > self.max_len {
            if let Some((id, _)) = ring.events.pop_front() {
                ring.dropped = id;
            }
        }
        hub.fan_out(channel, id, &bytes, false);
        id
    }

    fn replay_now(
        &self,
        channel: &str,
        last: EventId,
        (max_events, max_bytes): (usize, usize),
        read: Read,
    ) -> Replay {
        let max_bytes = max_bytes.min(super::MAX_REPLAY_BYTES);
        // The events allowed and one more, to tell "exactly the cap" from "more". The ring's
        // frames are shared, not copied.
        let fetch = max_events.saturating_add(1);
        let found: Option<Vec<(EventId, Bytes)>> = {
            let rings = lock(&self.rings);
            match rings.map.get(channel) {
                Some(ring) if ring.written.elapsed() < self.ttl => {
                    let reaches = match read {
                        Read::Resume => ring.events.iter().any(|(id, _)| *id == last),
                        Read::Since | Read::Page => last >= ring.dropped,
                    };
                    reaches.then(|| {
                        ring.events
                            .iter()
                            .filter(|(id, _)| *id > last)
                            .take(fetch)
                            .cloned()
                            .collect()
                    })
                }
                // No history: nothing follows the start of a channel.
                _ => (read == Read::Since && last == EventId::ZERO).then(Vec::new),
            }
        };
        let Some(events) = found else {
            return Replay::Reset;
        };
        let bytes: usize = events.iter().map(|(_, b)| b.len()).sum();
        if events.len() > max_events || bytes > max_bytes {
            return Replay::Reset;
        }
        Replay::Events(Arc::new(Replayed::new(events)), None)
    }

    /// The events `channel`'s history holds at `now` (none once it expired).
    fn len_at(&self, now: tokio::time::Instant, channel: &str) -> u64 {
        lock(&self.rings)
            .map
            .get(channel)
            .filter(|ring| now.duration_since(ring.written) < self.ttl)
            .map_or(0, |ring| ring.events.len() as u64)
    }

    #[cfg(test)]
    fn channels(&self) -> usize {
        lock(&self.rings).map.len()
    }
}

impl EventStore for MemoryStore {
    fn publish<'a>(
        &'a self,
        hub: &'a Hub,
        channel: &'a str,
        kind: &'a str,
        data: &'a str,
    ) -> StoreFuture<'a, EventId> {
        let id = self.publish_at(tokio::time::Instant::now(), hub, (channel, kind, data));
        Box::pin(std::future::ready(Ok(id)))
    }

    fn replay<'a>(
        &'a self,
        channel: &'a str,
        last: EventId,
        bounds: (usize, usize),
        read: Read,
    ) -> StoreFuture<'a, Replay> {
        let replay = self.replay_now(channel, last, bounds, read);
        Box::pin(std::future::ready(Ok(replay)))
    }

    fn newest_local(&self, channel: &str) -> Option<EventId> {
        Some(
            lock(&self.rings)
                .map
                .get(channel)
                .map_or(EventId::ZERO, |ring| ring.last),
        )
    }

    fn len<'a>(&'a self, channel: &'a str) -> StoreFuture<'a, u64> {
        let len = self.len_at(tokio::time::Instant::now(), channel);
        Box::pin(std::future::ready(Ok(len)))
    }

    fn put_ticket<'a>(&'a self, ticket: &'a str, token: &'a str) -> StoreFuture<'a, bool> {
        let now = tokio::time::Instant::now();
        let mut map = lock(&self.tickets);
        map.retain(|_, (_, expires)| *expires > now);
        let fresh = !map.contains_key(ticket);
        if fresh {
            map.insert(ticket.to_owned(), (token.to_owned(), now + TICKET_TTL));
        }
        Box::pin(std::future::ready(Ok(fresh)))
    }

    fn take_ticket<'a>(&'a self, ticket: &'a str) -> StoreFuture<'a, Option<String>> {
        let now = tokio::time::Instant::now();
        let token = lock(&self.tickets)
            .remove(ticket)
            .filter(|(_, expires)| *expires > now)
            .map(|(token, _)| token);
        Box::pin(std::future::ready(Ok(token)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Histories nobody publishes to again are dropped once expired, as Redis expires the keys.
    #[test]
    fn histories_of_idle_channels_are_dropped() {
        let hub = Hub::new(8, std::sync::Arc::new(crate::clock::SystemClock));
        let ttl = Duration::from_secs(30);
        let store = MemoryStore::new(10, ttl);
        let start = tokio::time::Instant::now();
        for channel in ["a", "b", "c"] {
            store.publish_at(start, &hub, (channel, "message", "{}"));
        }
        assert_eq!(store.channels(), 3);
        let later = start + Duration::from_secs(20);
        store.publish_at(later, &hub, ("c", "message", "{}"));
        // Not idle for the TTL yet: kept.
        assert_eq!(store.channels(), 3);
        assert_eq!(store.len_at(later, "a"), 1);
        let later = start + Duration::from_secs(35);
        store.publish_at(later, &hub, ("d", "message", "{}"));
        // `a` and `b` idle for 35 s: dropped; `c` (written 15 s ago) and `d` stay.
        assert_eq!(store.channels(), 2);
        assert_eq!(store.len_at(later, "a"), 0);
        assert_eq!(store.len_at(later, "c"), 2);
    }
}
