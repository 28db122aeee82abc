//! A client's queue of frames: bounded, filled by the hub, read by the client's response body;
//! and the batched wake-up of the readers a fan-out filled.
//!
//! Not tokio's `mpsc`: a bounded `mpsc` channel is 766 bytes of heap per client (heaptrack: the
//! cache-padded channel and its first block of 32 slots), and each `try_send` wakes its reader,
//! from the fan-out's thread. Here a queue is one small allocation (no frame storage until a
//! frame arrives), and `push` hands back the reader's waker instead of waking it: the fan-out
//! groups the wakers by the actix worker that runs each reader and hands each worker its list
//! once ([`Wakes`]), so a worker wakes its own clients on its own thread (a local run-queue push)
//! instead of each of 10,000 clients being woken across threads (a lock on the worker's shared
//! queue each). `benches/events.rs` (10,000 clients, two workers, two runs each against tokio's
//! `mpsc` woken from the fan-out): RSS growth 12.70 / 12.78 KiB per client against 13.35 / 13.39,
//! deliveries per second 205,130 / 211,398 against 176,623 / 176,286, server CPU in the burst
//! 1.16 / 1.13 s against 1.35 / 1.29 s; the p99 of a lone event is unchanged (65.8 / 67.6 ms
//! against 66.3 / 93.4 ms).

use std::{
    collections::VecDeque,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll, Waker},
};

use super::frame::Outgoing;

struct State {
    frames: VecDeque<Outgoing>,
    /// The reader's waker while it waits for a frame.
    waker: Option<Waker>,
    /// Live [`Sender`]s: the hub's registrations of the client (one per channel).
    senders: usize,
    /// The reader ([`Receiver`]) was dropped.
    receiver_gone: bool,
}

struct Queue {
    state: Mutex<State>,
    cap: usize,
    /// Set when the client was cut for a full queue (its stream then ends with
    /// `event: overflow`).
    overflowed: AtomicBool,
    /// The actix worker whose thread reads this queue (`None`: not read on an arbiter).
    worker: Option<Arc<Worker>>,
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Every update is a single push, pop or flag: a poisoned lock is still consistent.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Why [`Sender::push`] did not queue a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The queue holds its bound.
    Full,
    /// The reader is gone.
    Closed,
}

/// A client's queue: the sending half (one per hub registration) and the reading half.
pub(crate) fn queue(cap: usize) -> (Sender, Receiver) {
    let queue = Arc::new(Queue {
        state: Mutex::new(State {
            frames: VecDeque::new(),
            waker: None,
            senders: 1,
            receiver_gone: false,
        }),
        cap: cap.max(1),
        overflowed: AtomicBool::new(false),
        worker: Worker::current(),
    });
    (Sender(queue.clone()), Receiver(queue))
}

/// The hub's end of a client's queue. The queue ends (after what it holds) when the last sender
/// is dropped.
pub(crate) struct Sender(Arc<Queue>);

impl Clone for Sender {
    fn clone(&self) -> Self {
        self.0.lock().senders += 1;
        Self(self.0.clone())
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        let waker = {
            let mut state = self.0.lock();
            state.senders -= 1;
            if state.senders == 0 {
                state.waker.take()
            } else {
                None
            }
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

impl Sender {
    /// Queues `frame` unless the queue is full or its reader gone. Answers the reader's waker
    /// when it was waiting: the caller wakes it (see [`Wakes`]).
    pub(crate) fn push(&self, frame: &Outgoing) -> Result<Option<Waker>, Refused> {
        let mut state = self.0.lock();
        if state.receiver_gone {
            return Err(Refused::Closed);
        }
        if state.frames.len() >= self.0.cap {
            return Err(Refused::Full);
        }
        state.frames.push_back(frame.clone());
        Ok(state.waker.take())
    }

    /// Free places in the queue.
    pub(crate) fn capacity(&self) -> usize {
        self.0.cap.saturating_sub(self.0.lock().frames.len())
    }

    /// Marks the client as cut for a full queue.
    pub(crate) fn set_overflowed(&self) {
        self.0.overflowed.store(true, Ordering::Release);
    }

    /// The worker that reads this queue.
    pub(crate) fn worker(&self) -> Option<&Arc<Worker>> {
        self.0.worker.as_ref()
    }
}

/// The response body's end of a client's queue.
pub(crate) struct Receiver(Arc<Queue>);

impl Drop for Receiver {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.receiver_gone = true;
        state.waker = None;
        // Frames still queued are freed now, not with the last registration.
        state.frames = VecDeque::new();
    }
}

impl Receiver {
    /// The next frame; `None` once every sender is gone and the queue is drained.
    pub(crate) fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Outgoing>> {
        let mut state = self.0.lock();
        if let Some(frame) = state.frames.pop_front() {
            if state.frames.is_empty() && state.frames.capacity() > 4 {
                // An idle client keeps no burst-sized buffer.
                state.frames = VecDeque::new();
            }
            return Poll::Ready(Some(frame));
        }
        if state.senders == 0 {
            return Poll::Ready(None);
        }
        match &mut state.waker {
            Some(waker) => waker.clone_from(cx.waker()),
            None => state.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    /// The next frame if one is queued.
    #[cfg(test)]
    pub(crate) fn try_recv(&mut self) -> Option<Outgoing> {
        self.0.lock().frames.pop_front()
    }

    /// Whether the client was cut for a full queue.
    pub(crate) fn overflowed(&self) -> bool {
        self.0.overflowed.load(Ordering::Acquire)
    }
}

/// An actix worker (arbiter) that reads client queues: the wakers handed to it, woken on its own
/// thread.
pub(crate) struct Worker {
    arbiter: actix::ArbiterHandle,
    pending: Mutex<Pending>,
}

#[derive(Default)]
struct Pending {
    wakers: Vec<Waker>,
    /// A flush is sent to the arbiter and has not run yet.
    scheduled: bool,
}

thread_local! {
    static CURRENT: std::cell::RefCell<Option<Arc<Worker>>> = const { std::cell::RefCell::new(None) };
}

impl Worker {
    /// This thread's worker, when it runs an arbiter.
    fn current() -> Option<Arc<Self>> {
        let arbiter = actix::Arbiter::try_current()?;
        CURRENT.with(|current| {
            let mut current = current.borrow_mut();
            match &*current {
                // A thread runs one arbiter at a time; a stopped one is replaced.
                Some(worker) if worker.arbiter.alive() => Some(worker.clone()),
                _ => {
                    let worker = Arc::new(Self {
                        arbiter,
                        pending: Mutex::new(Pending::default()),
                    });
                    *current = Some(worker.clone());
                    Some(worker)
                }
            }
        })
    }

    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Hands `wakers` to this worker's thread (one message per batch in flight).
    fn hand(self: &Arc<Self>, mut wakers: Vec<Waker>) {
        let kick = {
            let mut pending = self.lock();
            if pending.wakers.is_empty() {
                std::mem::swap(&mut pending.wakers, &mut wakers);
            } else {
                pending.wakers.append(&mut wakers);
            }
            !std::mem::replace(&mut pending.scheduled, true)
        };
        if kick {
            let worker = self.clone();
            if !self.arbiter.spawn_fn(move || worker.flush()) {
                // The arbiter stopped: wake from here.
                self.flush();
            }
        }
    }

    fn flush(&self) {
        let wakers = {
            let mut pending = self.lock();
            pending.scheduled = false;
            std::mem::take(&mut pending.wakers)
        };
        for waker in wakers {
            waker.wake();
        }
    }
}

/// The wakers one fan-out collected, by worker; [`flush`](Self::flush) hands them over.
#[derive(Default)]
pub(crate) struct Wakes {
    by_worker: Vec<(Arc<Worker>, Vec<Waker>)>,
}

impl Wakes {
    /// Adds the waker `push` answered for `sender`'s reader.
    pub(crate) fn add(&mut self, sender: &Sender, waker: Option<Waker>) {
        let Some(waker) = waker else { return };
        let Some(worker) = sender.worker() else {
            waker.wake();
            return;
        };
        match self
            .by_worker
            .iter_mut()
            .find(|(w, _)| Arc::ptr_eq(w, worker))
        {
            Some((_, wakers)) => wakers.push(waker),
            None => self.by_worker.push((worker.clone(), vec![waker])),
        }
    }

    /// Hands each worker its wakers.
    pub(crate) fn flush(self) {
        for (worker, wakers) in self.by_worker {
            worker.hand(wakers);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use bytes::Bytes;

    use super::*;
    use crate::events::frame::{Frame, Kind};

    struct Count(AtomicUsize);

    impl std::task::Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn frame() -> Outgoing {
        Arc::new(Frame::new(Kind::Heartbeat, None, Bytes::from_static(b"x")))
    }

    /// A full queue and a gone reader refuse a frame; the reader's waker comes back to the
    /// pusher, not woken; the queue ends after the last sender, once drained.
    #[test]
    fn bounded_handing_back_the_waker_and_ending_with_its_senders() {
        let (tx, mut rx) = queue(2);
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        assert!(rx.poll_recv(&mut cx).is_pending());
        let handed = tx.push(&frame()).unwrap();
        assert!(handed.is_some());
        assert_eq!(count.0.load(Ordering::Relaxed), 0);
        assert!(tx.push(&frame()).unwrap().is_none());
        assert!(matches!(tx.push(&frame()), Err(Refused::Full)));
        assert_eq!(tx.capacity(), 0);
        let second = tx.clone();
        drop(tx);
        assert!(rx.poll_recv(&mut cx).is_ready());
        assert!(rx.poll_recv(&mut cx).is_ready());
        assert!(rx.poll_recv(&mut cx).is_pending());
        drop(second);
        assert_eq!(
            count.0.load(Ordering::Relaxed),
            1,
            "the last sender wakes the reader"
        );
        assert!(matches!(rx.poll_recv(&mut cx), Poll::Ready(None)));
        let (tx, rx) = queue(2);
        drop(rx);
        assert!(matches!(tx.push(&frame()), Err(Refused::Closed)));
    }

    /// Off an arbiter, a collected waker is woken at once.
    #[test]
    fn wakes_without_a_worker_are_immediate() {
        let (tx, mut rx) = queue(4);
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        assert!(rx.poll_recv(&mut Context::from_waker(&waker)).is_pending());
        let mut wakes = Wakes::default();
        wakes.add(&tx, tx.push(&frame()).unwrap());
        wakes.flush();
        assert_eq!(count.0.load(Ordering::Relaxed), 1);
    }
}
