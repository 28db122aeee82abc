//! Local fan-out: every SSE client of this process, by channel, each behind a bounded queue.
//!
//! The hub is plain shared state (`Arc` + a short `std` mutex), not an actor: joining, leaving and
//! fanning out are a few pointer copies each, done from whichever task has the event, with no
//! mailbox hop. A client is the sending half of a bounded [queue](super::queue) of shared
//! frames; no task, no timer and no buffer of its own, so an idle client costs a few hundred
//! bytes here. A
//! multi-channel stream is one client registered in each of its channels under one id, with one
//! queue: whatever cuts it from one channel (a full queue) cuts it from all.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard, atomic::Ordering},
};

use bytes::Bytes;

use super::{
    auth::{Caller, EventsAuth},
    frame::{Frame, Kind, Outgoing, presence_frame},
    queue::{Receiver, Refused, Sender, Wakes, queue},
    wire::{EventId, HEARTBEAT, encode_control},
};
use crate::clock::Clock;

struct Client {
    tx: Sender,
    /// The caller whose token must stay valid (private streams only; boxed: most clients have
    /// none, and every client's entry is this struct).
    principal: Option<Box<Caller>>,
    /// Whether the client asked for `join`/`leave` frames.
    presence: bool,
    /// A multi-channel client's channels (it is registered in each under the same id).
    group: Option<Arc<[Arc<str>]>>,
    /// Whether this registration counts the client (a multi-channel client counts once: in its
    /// first channel) and takes its heartbeats.
    primary: bool,
}

struct Channel {
    name: Arc<str>,
    clients: HashMap<u64, Client>,
    /// Last id fanned out from Redis; `None` until the channel's subscription is baselined.
    last_id: Option<EventId>,
    /// The id just before this channel's first client joined (wall clock, milliseconds): a
    /// baseline taken late, after Redis was unreachable at the join, starts no later than this.
    joined: EventId,
}

impl Channel {
    fn new(name: &str, now_ms: u64) -> Self {
        Self {
            name: Arc::from(name),
            clients: HashMap::new(),
            last_id: None,
            joined: EventId {
                ms: now_ms.saturating_sub(1),
                seq: u64::MAX,
            },
        }
    }

    /// Queues `frame` to every client (to those that asked for presence, for a presence frame);
    /// a client whose queue is full is cut. Answers how many got it, how many primary
    /// registrations left, and the multi-channel clients cut (to remove from their other
    /// channels).
    fn deliver(&mut self, frame: &Outgoing) -> Delivered {
        let mut out = Delivered::default();
        let mut wakes = Wakes::default();
        let presence_only = frame.kind == Kind::Presence;
        self.clients.retain(|id, client| {
            if presence_only && !client.presence {
                return true;
            }
            match client.tx.push(frame) {
                Ok(waker) => {
                    wakes.add(&client.tx, waker);
                    out.delivered += 1;
                    true
                }
                Err(Refused::Full) => {
                    client.tx.set_overflowed();
                    out.cut += 1;
                    out.left += usize::from(client.primary);
                    if let Some(group) = &client.group {
                        out.cut_groups.push((*id, group.clone()));
                    }
                    false
                }
                Err(Refused::Closed) => {
                    // A multi-channel client's stream is gone: its guard leaves every channel.
                    if client.group.is_some() {
                        return true;
                    }
                    out.left += 1;
                    false
                }
            }
        });
        wakes.flush();
        out
    }
}

#[derive(Default)]
struct Delivered {
    delivered: usize,
    cut: usize,
    left: usize,
    cut_groups: Vec<(u64, Arc<[Arc<str>]>)>,
}

#[derive(Default)]
struct Inner {
    channels: HashMap<String, Channel>,
    next_client: u64,
    closed: bool,
}

impl Inner {
    /// Removes cut multi-channel clients from their other channels; answers how many primary
    /// registrations that removed.
    fn remove_groups(&mut self, cut: &[(u64, Arc<[Arc<str>]>)]) -> usize {
        let mut left = 0;
        for (id, group) in cut {
            for channel in group.iter() {
                if let Some(entry) = self.channels.get_mut(&**channel)
                    && let Some(client) = entry.clients.remove(id)
                {
                    left += usize::from(client.primary);
                }
            }
        }
        left
    }
}

/// What [`Hub::fan_out`] did with one event.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FanOut {
    pub(crate) delivered: usize,
    pub(crate) cut: usize,
}

/// Counters of the hub and its actor (monotonic, except `clients`).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) clients: std::sync::atomic::AtomicU64,
    pub(crate) deliveries: std::sync::atomic::AtomicU64,
    pub(crate) slow_consumers: std::sync::atomic::AtomicU64,
    pub(crate) published: std::sync::atomic::AtomicU64,
    pub(crate) resyncs: std::sync::atomic::AtomicU64,
}

/// The registry of local clients. See the module docs.
pub(crate) struct Hub {
    inner: Mutex<Inner>,
    queue_size: usize,
    pub(crate) counters: Counters,
    /// Wall-clock time for join baselines and the memory backend's event ids.
    clock: Arc<dyn Clock>,
    heartbeat: Outgoing,
}

/// A newly registered client: its id and the receiving half of its queue.
pub(crate) struct Joined {
    pub(crate) id: u64,
    pub(crate) rx: Receiver,
}

/// Who a joining client is: the caller a private stream answers to, and whether it asked for
/// presence frames.
#[derive(Debug, Default, Clone)]
pub(crate) struct Member {
    pub(crate) principal: Option<Caller>,
    pub(crate) presence: bool,
}

impl Hub {
    pub(crate) fn new(queue_size: usize, clock: Arc<dyn Clock>) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            queue_size: queue_size.max(1),
            counters: Counters::default(),
            clock,
            heartbeat: Arc::new(Frame::new(
                Kind::Heartbeat,
                None,
                Bytes::from_static(HEARTBEAT),
            )),
        }
    }

    /// The events feature's clock (its config's).
    pub(crate) fn clock(&self) -> &dyn Clock {
        &*self.clock
    }

    /// Wall-clock milliseconds since the Unix epoch, as stream ids count them.
    pub(crate) fn now_ms(&self) -> u64 {
        u64::try_from(self.clock.now_ms()).unwrap_or(0)
    }

    /// Wall-clock seconds since the Unix epoch, as token expiries count them.
    pub(crate) fn now_secs(&self) -> u64 {
        u64::try_from(self.clock.now_secs()).unwrap_or(0)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding this lock leaves maps that are still consistent (every update is
        // a single insert or remove), so a poisoned lock is safe to keep using.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Registers a client on `channel`; `None` once the hub is closed (shutting down).
    #[cfg(test)]
    pub(crate) fn join(&self, channel: &str, principal: Option<Caller>) -> Option<Joined> {
        let channels: Arc<[Arc<str>]> = Arc::from([Arc::from(channel)]);
        self.join_all(
            &channels,
            Member {
                principal,
                presence: false,
            },
        )
    }

    /// Registers one client, with one queue, on every channel of `channels` (one channel: a
    /// single-channel client); `None` once the hub is closed.
    pub(crate) fn join_all(&self, channels: &Arc<[Arc<str>]>, member: Member) -> Option<Joined> {
        let mut inner = self.lock();
        if inner.closed {
            return None;
        }
        let (tx, rx) = queue(self.queue_size);
        inner.next_client += 1;
        let id = inner.next_client;
        let group = (channels.len() > 1).then(|| channels.clone());
        let now_ms = self.now_ms();
        for (i, channel) in channels.iter().enumerate() {
            inner
                .channels
                .entry((**channel).to_owned())
                .or_insert_with(|| Channel::new(channel, now_ms))
                .clients
                .insert(
                    id,
                    Client {
                        tx: tx.clone(),
                        principal: member.principal.clone().map(Box::new),
                        presence: member.presence,
                        group: group.clone(),
                        primary: i == 0,
                    },
                );
        }
        self.counters.clients.fetch_add(1, Ordering::Relaxed);
        Some(Joined { id, rx })
    }

    /// Removes a client from `channels`; answers the channels it left empty, which were dropped
    /// (the caller unsubscribes them). A client that was cut (slow consumer) or swept (token
    /// lapsed) is already gone: its leaving still drops the channels it emptied.
    pub(crate) fn leave(&self, channels: &[Arc<str>], id: u64) -> Vec<Arc<str>> {
        let mut inner = self.lock();
        let mut emptied = Vec::new();
        for channel in channels {
            let Some(entry) = inner.channels.get_mut(&**channel) else {
                continue;
            };
            if let Some(client) = entry.clients.remove(&id)
                && client.primary
            {
                self.counters.clients.fetch_sub(1, Ordering::Relaxed);
            }
            if entry.clients.is_empty() {
                inner.channels.remove(&**channel);
                emptied.push(channel.clone());
            }
        }
        emptied
    }

    /// Local clients of `channel`.
    pub(crate) fn count(&self, channel: &str) -> usize {
        self.lock()
            .channels
            .get(channel)
            .map_or(0, |c| c.clients.len())
    }

    /// Free places in the fullest queue among `channel`'s clients (`usize::MAX` without any):
    /// how many events can be fanned out now without cutting a client.
    pub(crate) fn room(&self, channel: &str) -> usize {
        self.lock().channels.get(channel).map_or(usize::MAX, |c| {
            c.clients
                .values()
                .map(|client| client.tx.capacity())
                .min()
                .unwrap_or(usize::MAX)
        })
    }

    /// Every channel with at least one local client, and its last fanned-out id.
    pub(crate) fn channels(&self) -> Vec<(String, Option<EventId>)> {
        self.lock()
            .channels
            .iter()
            .map(|(name, c)| (name.clone(), c.last_id))
            .collect()
    }

    /// Every channel with at least one local client, and how many.
    pub(crate) fn counts(&self) -> Vec<(String, usize)> {
        self.lock()
            .channels
            .iter()
            .map(|(name, c)| (name.clone(), c.clients.len()))
            .collect()
    }

    /// The last id fanned out on `channel` (`None`: no clients, or not yet baselined).
    pub(crate) fn last_id(&self, channel: &str) -> Option<EventId> {
        self.lock().channels.get(channel).and_then(|c| c.last_id)
    }
    /// Sets the point after which Redis events are fanned out, unless one is already set:
    /// `stream_last`, the stream's newest id when the subscription is made. A subscription made
    /// late (Redis was unreachable when the channel's first client arrived; `late` holds Redis's
    /// clock minus this process's, in milliseconds, as stream ids come from Redis's clock) starts
    /// instead at that client's arrival if it is earlier, so events published between Redis's
    /// return and the subscription are replayed, not skipped.
    pub(crate) fn baseline(&self, channel: &str, stream_last: EventId, late: Option<i64>) {
        if let Some(c) = self.lock().channels.get_mut(channel) {
            let start = match late {
                // The join time on Redis's clock (`skew_ms`: Redis's clock minus ours).
                Some(skew_ms) => {
                    let joined_ms = i64::try_from(c.joined.ms)
                        .unwrap_or(i64::MAX)
                        .saturating_add(skew_ms)
                        .max(0);
                    let joined = EventId {
                        // Not negative: the cast cannot wrap.
                        ms: joined_ms as u64,
                        seq: c.joined.seq,
                    };
                    stream_last.min(joined)
                }
                None => stream_last,
            };
            c.last_id.get_or_insert(start);
        }
    }

    /// Hands one encoded event to every client of `channel`, at most once per id: an id not
    /// after the channel's last (a replay overlapping live delivery) is dropped, and so is any
    /// event of a channel not yet baselined when `require_baseline` is set. A client whose
    /// queue is full is cut (it will see `event: overflow`).
    pub(crate) fn fan_out(
        &self,
        channel: &str,
        id: EventId,
        bytes: &Bytes,
        require_baseline: bool,
    ) -> FanOut {
        let mut inner = self.lock();
        let Some(entry) = inner.channels.get_mut(channel) else {
            return FanOut::default();
        };
        match entry.last_id {
            Some(last) if id <= last => return FanOut::default(),
            None if require_baseline => return FanOut::default(),
            _ => {}
        }
        entry.last_id = Some(id);
        let frame = Arc::new(Frame::new(
            Kind::Event(id),
            Some(entry.name.clone()),
            bytes.clone(),
        ));
        let out = entry.deliver(&frame);
        // An emptied channel stays registered until its clients' guards leave (and unsubscribe).
        let left = out.left + inner.remove_groups(&out.cut_groups);
        let c = &self.counters;
        c.deliveries
            .fetch_add(out.delivered as u64, Ordering::Relaxed);
        c.slow_consumers
            .fetch_add(out.cut as u64, Ordering::Relaxed);
        c.clients.fetch_sub(left as u64, Ordering::Relaxed);
        FanOut {
            delivered: out.delivered,
            cut: out.cut,
        }
    }

    /// Queues a presence frame (`join`/`leave` of `user`) to the clients of `channel` that asked
    /// for presence.
    pub(crate) fn presence(&self, channel: &str, kind: &str, user: &str) {
        let mut inner = self.lock();
        let Some(entry) = inner.channels.get_mut(channel) else {
            return;
        };
        let frame = presence_frame(&entry.name, kind, user);
        let out = entry.deliver(&frame);
        let left = out.left + inner.remove_groups(&out.cut_groups);
        self.counters
            .slow_consumers
            .fetch_add(out.cut as u64, Ordering::Relaxed);
        self.counters
            .clients
            .fetch_sub(left as u64, Ordering::Relaxed);
    }

    /// Sends `event: reset` to every client of `channel` (a client without room for it is
    /// cut) and moves the channel's live delivery on to `newest`: events between its last id
    /// and `newest` are lost to its clients (history no longer holds them, or too many to
    /// catch up), who must refetch their state. Answers how many clients were sent the reset.
    pub(crate) fn reset(&self, channel: &str, newest: EventId) -> usize {
        let mut inner = self.lock();
        let Some(entry) = inner.channels.get_mut(channel) else {
            return 0;
        };
        let newest = entry.last_id.map_or(newest, |last| last.max(newest));
        entry.last_id = Some(newest);
        let frame = Arc::new(Frame::new(
            Kind::Reset(newest),
            Some(entry.name.clone()),
            encode_control("reset"),
        ));
        let out = entry.deliver(&frame);
        let left = out.left + inner.remove_groups(&out.cut_groups);
        let c = &self.counters;
        c.slow_consumers
            .fetch_add(out.cut as u64, Ordering::Relaxed);
        c.clients.fetch_sub(left as u64, Ordering::Relaxed);
        out.delivered
    }

    /// Queues a heartbeat comment to every client that has room (a full queue is not cut for a
    /// heartbeat: the next event will do that); a multi-channel client gets one, not one per
    /// channel.
    pub(crate) fn heartbeat(&self) {
        let mut wakes = Wakes::default();
        for entry in self.lock().channels.values() {
            for client in entry.clients.values().filter(|c| c.primary) {
                if let Ok(waker) = client.tx.push(&self.heartbeat) {
                    wakes.add(&client.tx, waker);
                }
            }
        }
        wakes.flush();
    }

    /// Closes the streams of private clients whose token expired (`now` in Unix seconds) or whose
    /// session `auth` no longer accepts. Answers how many were closed.
    pub(crate) fn sweep(&self, auth: &dyn EventsAuth, now: u64) -> usize {
        let mut closed = 0;
        for entry in self.lock().channels.values_mut() {
            // Every registration of a multi-channel client carries its principal: all of them
            // go in the same sweep, and it is counted once.
            entry.clients.retain(|_, client| {
                let keep = client
                    .principal
                    .as_ref()
                    .is_none_or(|p| p.expires_at > now && auth.still_valid(p));
                if !keep && client.primary {
                    closed += 1;
                }
                keep
            });
        }
        self.counters
            .clients
            .fetch_sub(closed as u64, Ordering::Relaxed);
        closed
    }

    /// Ends every stream (after what is already queued) and refuses new clients.
    pub(crate) fn close(&self) {
        let mut inner = self.lock();
        inner.closed = true;
        for entry in inner.channels.values_mut() {
            let primary = entry.clients.values().filter(|c| c.primary).count();
            self.counters
                .clients
                .fetch_sub(primary as u64, Ordering::Relaxed);
            entry.clients.clear();
        }
    }

    /// Whether [`close`](Self::close) was called.
    pub(crate) fn is_closed(&self) -> bool {
        self.lock().closed
    }
}

#[cfg(test)]
mod tests;
