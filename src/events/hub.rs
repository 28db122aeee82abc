//! Local fan-out: every SSE client of this process, by channel, each behind a bounded queue.
//!
//! The hub is plain shared state (`Arc` + a short `std` mutex), not an actor: joining, leaving and
//! fanning out are a few pointer copies each, done from whichever task has the event, with no
//! mailbox hop. A client is a bounded [`mpsc`] sender of pre-encoded frames plus a flag; no task,
//! no timer and no buffer of its own, so an idle client costs a few hundred bytes here.

use std::{
    collections::{HashMap, VecDeque},
    convert::Infallible,
    pin::Pin,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
};

use bytes::Bytes;
use futures_util::Stream;
use tokio::sync::mpsc;

use super::{
    auth::{Caller, EventsAuth},
    history::ReplaySlot,
    wire::{EventId, HEARTBEAT, encode_control},
};
use crate::clock::Clock;

/// One outgoing SSE frame queued for clients: pre-encoded bytes shared by every client, and the event id for de-duplication
/// at the history/live handover (`None` for heartbeats).
#[derive(Debug, Clone)]
pub(crate) struct Outgoing {
    pub(crate) id: Option<EventId>,
    pub(crate) bytes: Bytes,
}

struct Client {
    tx: mpsc::Sender<Outgoing>,
    overflowed: Arc<AtomicBool>,
    principal: Option<Caller>,
}

struct Channel {
    clients: HashMap<u64, Client>,
    /// Last id fanned out from Redis; `None` until the channel's subscription is baselined.
    last_id: Option<EventId>,
    /// The id just before this channel's first client joined (wall clock, milliseconds): a
    /// baseline taken late, after Redis was unreachable at the join, starts no later than this.
    joined: EventId,
}

impl Channel {
    fn new(now_ms: u64) -> Self {
        Self {
            clients: HashMap::new(),
            last_id: None,
            joined: EventId {
                ms: now_ms.saturating_sub(1),
                seq: u64::MAX,
            },
        }
    }
}

#[derive(Default)]
struct Inner {
    channels: HashMap<String, Channel>,
    next_client: u64,
    closed: bool,
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
}

/// A newly registered client: its id and the receiving half of its queue.
pub(crate) struct Joined {
    pub(crate) id: u64,
    pub(crate) rx: mpsc::Receiver<Outgoing>,
    pub(crate) overflowed: Arc<AtomicBool>,
}

impl Hub {
    pub(crate) fn new(queue_size: usize, clock: Arc<dyn Clock>) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            queue_size: queue_size.max(1),
            counters: Counters::default(),
            clock,
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
    pub(crate) fn join(&self, channel: &str, principal: Option<Caller>) -> Option<Joined> {
        let mut inner = self.lock();
        if inner.closed {
            return None;
        }
        let (tx, rx) = mpsc::channel(self.queue_size);
        let overflowed = Arc::new(AtomicBool::new(false));
        inner.next_client += 1;
        let id = inner.next_client;
        inner
            .channels
            .entry(channel.to_owned())
            .or_insert_with(|| Channel::new(self.now_ms()))
            .clients
            .insert(
                id,
                Client {
                    tx,
                    overflowed: overflowed.clone(),
                    principal,
                },
            );
        self.counters.clients.fetch_add(1, Ordering::Relaxed);
        Some(Joined { id, rx, overflowed })
    }

    /// Removes a client; answers whether the channel is now empty and was dropped (the caller
    /// unsubscribes it). A client that was cut (slow consumer) or swept (token lapsed) is already
    /// gone: its leaving still drops the channel it emptied.
    pub(crate) fn leave(&self, channel: &str, id: u64) -> bool {
        let mut inner = self.lock();
        let Some(entry) = inner.channels.get_mut(channel) else {
            return false;
        };
        if entry.clients.remove(&id).is_some() {
            self.counters.clients.fetch_sub(1, Ordering::Relaxed);
        }
        if entry.clients.is_empty() {
            inner.channels.remove(channel);
            return true;
        }
        false
    }

    /// Local clients of `channel`.
    pub(crate) fn count(&self, channel: &str) -> usize {
        self.lock()
            .channels
            .get(channel)
            .map_or(0, |c| c.clients.len())
    }

    /// Every channel with at least one local client, and its last fanned-out id.
    pub(crate) fn channels(&self) -> Vec<(String, Option<EventId>)> {
        self.lock()
            .channels
            .iter()
            .map(|(name, c)| (name.clone(), c.last_id))
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
        let before = entry.clients.len();
        let mut result = FanOut::default();
        entry.clients.retain(|_, client| {
            let frame = Outgoing {
                id: Some(id),
                bytes: bytes.clone(),
            };
            match client.tx.try_send(frame) {
                Ok(()) => {
                    result.delivered += 1;
                    true
                }
                Err(mpsc::error::TrySendError::Full(_)) => {
                    client.overflowed.store(true, Ordering::Release);
                    result.cut += 1;
                    false
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            }
        });
        // An emptied channel stays registered until its clients' guards leave (and unsubscribe).
        let c = &self.counters;
        c.deliveries
            .fetch_add(result.delivered as u64, Ordering::Relaxed);
        c.slow_consumers
            .fetch_add(result.cut as u64, Ordering::Relaxed);
        c.clients
            .fetch_sub((before - entry.clients.len()) as u64, Ordering::Relaxed);
        result
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
        entry.last_id = Some(entry.last_id.map_or(newest, |last| last.max(newest)));
        let before = entry.clients.len();
        let (mut sent, mut cut) = (0, 0);
        entry.clients.retain(|_, client| {
            let frame = Outgoing {
                id: None,
                bytes: encode_control("reset"),
            };
            match client.tx.try_send(frame) {
                Ok(()) => {
                    sent += 1;
                    true
                }
                Err(mpsc::error::TrySendError::Full(_)) => {
                    client.overflowed.store(true, Ordering::Release);
                    cut += 1;
                    false
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            }
        });
        let c = &self.counters;
        c.slow_consumers.fetch_add(cut, Ordering::Relaxed);
        c.clients
            .fetch_sub((before - entry.clients.len()) as u64, Ordering::Relaxed);
        sent
    }

    /// Queues a heartbeat comment to every client that has room (a full queue is not cut for a
    /// heartbeat: the next event will do that).
    pub(crate) fn heartbeat(&self) {
        let beat = Outgoing {
            id: None,
            bytes: Bytes::from_static(HEARTBEAT),
        };
        for entry in self.lock().channels.values() {
            for client in entry.clients.values() {
                let _ = client.tx.try_send(beat.clone());
            }
        }
    }

    /// Closes the streams of private clients whose token expired (`now` in Unix seconds) or whose
    /// session `auth` no longer accepts. Answers how many were closed.
    pub(crate) fn sweep(&self, auth: &dyn EventsAuth, now: u64) -> usize {
        let mut closed = 0;
        for entry in self.lock().channels.values_mut() {
            entry.clients.retain(|_, client| {
                let keep = client
                    .principal
                    .as_ref()
                    .is_none_or(|p| p.expires_at > now && auth.still_valid(p));
                if !keep {
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
            self.counters
                .clients
                .fetch_sub(entry.clients.len() as u64, Ordering::Relaxed);
            entry.clients.clear();
        }
    }

    /// Whether [`close`](Self::close) was called.
    pub(crate) fn is_closed(&self) -> bool {
        self.lock().closed
    }
}

/// Called when a stream is dropped, with the channel and whether it was its last local client.
pub(crate) type OnLeave = Box<dyn Fn(&str, bool) + Send + Sync>;

/// Unregisters a client when its stream is dropped (client gone, or stream ended).
struct LeaveGuard {
    hub: Arc<Hub>,
    channel: Box<str>,
    id: u64,
    on_leave: Option<Arc<OnLeave>>,
}

impl Drop for LeaveGuard {
    fn drop(&mut self) {
        let last = self.hub.leave(&self.channel, self.id);
        if let Some(on_leave) = &self.on_leave {
            on_leave(&self.channel, last);
        }
    }
}

/// A subscriber's event stream: the SSE bytes to send, in order (the `retry:` hint, a replay from
/// history, then live events and heartbeats). Ends after `event: overflow` when the client fell
/// too far behind, or cleanly when the server shuts down or a private stream's token lapses.
/// Use it as a streaming response body ([`into_response`](Self::into_response)).
pub struct EventStream {
    prelude: VecDeque<Bytes>,
    /// The shared replay the prelude sends (on Redis): held until the prelude is sent, so that
    /// resumes of the same position arriving meanwhile share it.
    replayed: Option<Arc<ReplaySlot>>,
    rx: mpsc::Receiver<Outgoing>,
    /// Live events up to this id were already replayed from history.
    skip_through: Option<EventId>,
    overflowed: Arc<AtomicBool>,
    done: bool,
    _guard: LeaveGuard,
    /// The stream's place under the connection caps, released with it.
    _slot: Option<super::ConnectionSlot>,
}

impl std::fmt::Debug for EventStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventStream")
            .field("channel", &self._guard.channel)
            .field("skip_through", &self.skip_through)
            .finish_non_exhaustive()
    }
}

impl EventStream {
    pub(crate) fn new(
        hub: Arc<Hub>,
        channel: &str,
        joined: Joined,
        on_leave: Option<Arc<OnLeave>>,
    ) -> Self {
        Self {
            prelude: VecDeque::new(),
            replayed: None,
            rx: joined.rx,
            skip_through: None,
            overflowed: joined.overflowed,
            done: false,
            _slot: None,
            _guard: LeaveGuard {
                hub,
                channel: channel.into(),
                id: joined.id,
                on_leave,
            },
        }
    }

    /// Queues frames to send before anything live, the last id they cover, and the shared
    /// replay they come from.
    pub(crate) fn set_prelude(
        &mut self,
        frames: Vec<Bytes>,
        skip_through: Option<EventId>,
        replayed: Option<Arc<ReplaySlot>>,
    ) {
        self.prelude.extend(frames);
        self.skip_through = skip_through;
        self.replayed = replayed;
    }

    /// This stream holding `slot` (from [`EventsHandle::take_slot`](super::EventsHandle::take_slot))
    /// until it ends.
    #[must_use]
    pub fn with_slot(mut self, slot: super::ConnectionSlot) -> Self {
        self._slot = Some(slot);
        self
    }

    /// The streaming `200 text/event-stream` response for this stream.
    pub fn into_response(self) -> actix_web::HttpResponse {
        actix_web::HttpResponse::Ok()
            .content_type("text/event-stream")
            .insert_header(("cache-control", "no-cache"))
            .insert_header(("x-accel-buffering", "no"))
            .streaming(self)
    }
}

impl Stream for EventStream {
    type Item = Result<Bytes, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if let Some(bytes) = this.prelude.pop_front() {
            if this.prelude.is_empty() {
                this.replayed = None;
            }
            return Poll::Ready(Some(Ok(bytes)));
        }
        if this.done {
            return Poll::Ready(None);
        }
        loop {
            match this.rx.poll_recv(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(frame)) => {
                    if let (Some(id), Some(through)) = (frame.id, this.skip_through) {
                        if id <= through {
                            continue;
                        }
                        this.skip_through = None;
                    }
                    return Poll::Ready(Some(Ok(frame.bytes)));
                }
                Poll::Ready(None) => {
                    this.done = true;
                    if this.overflowed.load(Ordering::Acquire) {
                        return Poll::Ready(Some(Ok(encode_control("overflow"))));
                    }
                    return Poll::Ready(None);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn joined_ms(hub: &Hub, channel: &str) -> u64 {
        hub.lock().channels[channel].joined.ms
    }

    /// A late baseline starts at the first client's arrival on Redis's clock: with Redis's
    /// clock 5 s behind ours, events Redis stamps after the arrival are not skipped.
    #[test]
    fn late_baseline_is_taken_on_redis_clock() {
        let hub = Hub::new(8, Arc::new(crate::clock::SystemClock));
        let _client = hub.join("behind", None).unwrap();
        let joined = joined_ms(&hub, "behind");
        let far = EventId {
            ms: u64::MAX,
            seq: 0,
        };
        hub.baseline("behind", far, Some(-5_000));
        assert_eq!(hub.last_id("behind").unwrap().ms, joined - 5_000);

        let _client = hub.join("on-time", None).unwrap();
        let joined = joined_ms(&hub, "on-time");
        hub.baseline("on-time", far, Some(0));
        assert_eq!(hub.last_id("on-time").unwrap().ms, joined);

        // Not late: the stream's newest id, whatever the clocks say.
        let _client = hub.join("live", None).unwrap();
        let newest = EventId { ms: 42, seq: 7 };
        hub.baseline("live", newest, None);
        assert_eq!(hub.last_id("live"), Some(newest));
    }
}
