//! Coalescing: the Redis decisions that arrive together go to Redis in one script call.
//!
//! The first request to arrive while no flush is scheduled spawns one (a task on the caller's own
//! runtime thread, so no cross-thread hop); every request arriving before it runs joins the same
//! batch. Under load the worker parses many requests per turn of its event loop, and they all
//! ride one `EVALSHA`: one round trip, one script invocation and one `MGET` for all of them,
//! where Redis's per-call overhead (a few µs) would otherwise be paid per request. When idle a
//! batch holds one request and waits for nothing: the flush runs as soon as the caller yields.
//! Several batches may be in flight at once (the connection is multiplexed).
//!
//! On a Redis Cluster every key of one script call must live in one slot. Each request's keys
//! share its identity's hash tag (`rl:{ip:1.2.3.4}:...`), so a batch is split per slot
//! ([`by_slot`]) when `per_slot` is set: one call per slot group, all sent at once. A standalone
//! Redis takes the whole batch in one call.
//!
//! Measured by `benches/ratelimit.rs` (the shipped policy on an L1-hit route, 20,000 clients):
//! see the README's table for the throughput ratio and Redis CPU per request it buys.

use std::sync::{
    Arc, Mutex, PoisonError,
    atomic::{AtomicU64, Ordering},
};

use tokio::sync::oneshot;

use super::{
    Clock, Decision,
    algo::{Ask, PolicyArgs},
    lease::Leases,
    lua::{self, MAX_DECISIONS, MAX_POLICIES},
};
use crate::connection::RedisHandle;

/// What a flush answers one request: the time it was decided at, its asks (given back), and its
/// decisions in order (stopping at the first enforcing denial) with the units each spent; or the
/// asks given back because Redis could not answer.
pub(crate) type Reply = Result<(u64, Vec<Ask>, Vec<(Decision, u64)>), Vec<Ask>>;

struct Pending {
    asks: Vec<Ask>,
    slot: u16,
    reply: oneshot::Sender<Reply>,
}

#[derive(Default)]
struct Open {
    pending: Vec<Pending>,
    scheduled: bool,
}

struct Shared {
    redis: RedisHandle,
    clock: Arc<dyn Clock>,
    per_slot: bool,
    open: Mutex<Open>,
    /// Unique prefix of the sorted-set members a call writes (sliding log): per process, then
    /// per call.
    member_prefix: String,
    calls: AtomicU64,
    failed_calls: AtomicU64,
    /// Settled by the flush before any of its requests hears back, so a request denied in the
    /// same call finds the units a reservation ahead of it was granted.
    leases: Arc<Leases>,
}

/// The batcher of one limiter's Redis decisions (cloneable; clones share the batch).
#[derive(Clone)]
pub(crate) struct Coalescer(Arc<Shared>);

impl Coalescer {
    /// A batcher deciding on `redis`; `per_slot` splits batches per cluster slot.
    pub(crate) fn new(
        redis: RedisHandle,
        clock: Arc<dyn Clock>,
        member_prefix: String,
        per_slot: bool,
        leases: Arc<Leases>,
    ) -> Self {
        Self(Arc::new(Shared {
            redis,
            clock,
            per_slot,
            open: Mutex::new(Open::default()),
            member_prefix,
            calls: AtomicU64::new(0),
            failed_calls: AtomicU64::new(0),
            leases,
        }))
    }

    /// Decides one request's `asks` (all-or-nothing) with the requests arriving at the same time.
    ///
    /// # Errors
    /// The asks, given back, when Redis could not answer (the caller falls back); none when the
    /// flush itself was dropped (its runtime shutting down).
    pub(crate) async fn decide(&self, asks: Vec<Ask>) -> Reply {
        let slot = asks.first().map_or(0, |ask| lua::slot(&ask.key));
        let (reply, answer) = oneshot::channel();
        let start = {
            let mut open = self.0.open.lock().unwrap_or_else(PoisonError::into_inner);
            open.pending.push(Pending { asks, slot, reply });
            !std::mem::replace(&mut open.scheduled, true)
        };
        if start {
            // A task of its own: a caller dropped mid-wait (client gone) cannot strand the others.
            tokio::spawn(flush(Claim(Some(self.0.clone()))));
        }
        answer.await.unwrap_or_else(|_| Err(Vec::new()))
    }

    /// Redis calls that failed since start.
    pub(crate) fn failed_calls(&self) -> u64 {
        self.0.failed_calls.load(Ordering::Relaxed)
    }
}

/// The right to take the open batch, held by a flush task from its spawning. One handle serves
/// every worker, so a flush may be spawned on a runtime that shuts down (a worker restarting)
/// before the task first runs: dropped unpolled, the claim gives every pending request its asks
/// back (each falls back as when Redis fails) and reopens batching. Without it `scheduled` would
/// stay set, and every later request on every worker would wait for a flush that never comes.
struct Claim(Option<Arc<Shared>>);

impl Drop for Claim {
    fn drop(&mut self) {
        if let Some(shared) = self.0.take() {
            let now = shared.clock.now_us();
            for pending in take_batch(&shared) {
                unsettled(&shared, &pending.asks, now);
                let _ = pending.reply.send(Err(pending.asks));
            }
        }
    }
}

/// Takes the open batch and lets the next request schedule a new flush.
fn take_batch(shared: &Shared) -> Vec<Pending> {
    let mut open = shared.open.lock().unwrap_or_else(PoisonError::into_inner);
    open.scheduled = false;
    std::mem::take(&mut open.pending)
}

async fn flush(mut claim: Claim) {
    // unwrap: a claim is made with its `Shared` and emptied only here or on drop.
    let shared = claim.0.take().expect("an unused claim");
    let pending = take_batch(&shared);
    let now = shared.clock.now_us();
    let groups = if shared.per_slot {
        by_slot(pending)
    } else {
        vec![pending]
    };
    let calls = groups
        .into_iter()
        .flat_map(chunks)
        .map(|call| decide_call(&shared, now, call));
    futures_util::future::join_all(calls).await;
}

/// Splits a batch into groups whose keys share one cluster slot, keeping arrival order within a
/// group (requests of one identity are decided in the order they came).
fn by_slot(mut pending: Vec<Pending>) -> Vec<Vec<Pending>> {
    pending.sort_by_key(|p| p.slot);
    let mut groups: Vec<Vec<Pending>> = Vec::new();
    for p in pending {
        match groups.last_mut() {
            Some(group) if group[0].slot == p.slot => group.push(p),
            _ => groups.push(vec![p]),
        }
    }
    groups
}

/// Cuts a group into calls of at most [`MAX_DECISIONS`] decisions and [`MAX_POLICIES`] distinct
/// policies (a request is never split).
fn chunks(group: Vec<Pending>) -> Vec<Vec<Pending>> {
    let mut calls: Vec<Vec<Pending>> = Vec::new();
    let mut size = 0;
    let mut policies: Vec<PolicyArgs> = Vec::new();
    for p in group {
        let n = p.asks.len();
        let mut new: Vec<PolicyArgs> = p.asks.iter().map(Ask::policy).collect();
        new.retain(|policy| !policies.contains(policy));
        new.dedup();
        let fits = size + n <= MAX_DECISIONS && policies.len() + new.len() <= MAX_POLICIES;
        match calls.last_mut() {
            Some(call) if fits => {
                policies.extend(new);
                call.push(p);
                size += n;
            }
            _ => {
                policies = p.asks.iter().map(Ask::policy).collect();
                calls.push(vec![p]);
                size = n;
            }
        }
    }
    calls
}

async fn decide_call(shared: &Shared, now: u64, call: Vec<Pending>) {
    let n = shared.calls.fetch_add(1, Ordering::Relaxed);
    let prefix = format!("{}{n:x}:", shared.member_prefix);
    let requests = call.iter().map(|p| p.asks.as_slice());
    match lua::decide(&shared.redis, now, &prefix, requests).await {
        Ok(answers) => {
            let call: Vec<(Pending, Vec<(Decision, u64)>)> =
                call.into_iter().zip(answers).collect();
            for (p, decisions) in &call {
                let admitted = decisions.len() == p.asks.len()
                    && decisions
                        .iter()
                        .zip(&p.asks)
                        .all(|((d, _), ask)| d.allowed || ask.shadow);
                for (i, ask) in p.asks.iter().enumerate() {
                    let (granted, remaining, reset) = match decisions.get(i) {
                        Some((d, granted)) if admitted => (*granted, d.remaining, d.reset_us()),
                        _ => (0, 0, 0),
                    };
                    shared.leases.settle(ask, now, granted, remaining, reset);
                }
            }
            for (p, decisions) in call {
                // A receiver gone (its request was dropped) needs nothing.
                let _ = p.reply.send(Ok((now, p.asks, decisions)));
            }
        }
        Err(err) => {
            shared.failed_calls.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %err, requests = call.len(), "rate-limit decisions failed on redis");
            for p in call {
                unsettled(shared, &p.asks, now);
                let _ = p.reply.send(Err(p.asks));
            }
        }
    }
}

/// Clears the pending reservations of `asks`, which Redis did not decide.
fn unsettled(shared: &Shared, asks: &[Ask], now: u64) {
    for ask in asks {
        shared.leases.settle(ask, now, 0, 0, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ratelimit::{Algorithm, algo::Mode};

    fn pending(keys: &[&str]) -> (Pending, oneshot::Receiver<Reply>) {
        let asks: Vec<Ask> = keys
            .iter()
            .map(|key| Ask {
                key: (*key).to_owned(),
                algorithm: Algorithm::Gcra,
                window: 60_000_000,
                limit: 100,
                cost: 1,
                shadow: false,
                mode: Mode::Consume,
                lease: 1,
            })
            .collect();
        let slot = lua::slot(&asks[0].key);
        let (reply, rx) = oneshot::channel();
        (Pending { asks, slot, reply }, rx)
    }

    /// Split per slot, every call's keys share one slot, a request stays whole and in its
    /// group's arrival order, and no call exceeds MAX_DECISIONS decisions.
    #[test]
    fn groups_share_a_slot_and_calls_stay_bounded() {
        let mut batch = Vec::new();
        let mut receivers = Vec::new();
        for i in 0..600 {
            let id = format!("ip:10.0.{}.{}", i % 7, i % 3);
            let keys = [
                format!("redkit:rl:{{{id}}}:gcra:GET /x#{i}"),
                format!("redkit:rl:{{{id}}}:gcra:default"),
            ];
            let (p, rx) = pending(&[&keys[0], &keys[1]]);
            batch.push(p);
            receivers.push(rx);
        }
        let slots: std::collections::HashSet<u16> =
            batch.iter().map(|p| lua::slot(&p.asks[0].key)).collect();
        let groups = by_slot(batch);
        assert_eq!(groups.len(), slots.len());
        let mut total = 0;
        for group in groups {
            let slot = group[0].slot;
            let order: Vec<usize> = group
                .iter()
                .map(|p| p.asks[0].key.rsplit('#').next().unwrap().parse().unwrap())
                .collect();
            assert!(order.windows(2).all(|w| w[0] < w[1]), "{order:?}");
            for call in chunks(group) {
                let decisions: usize = call.iter().map(|p| p.asks.len()).sum();
                assert!(decisions <= MAX_DECISIONS, "{decisions}");
                for p in &call {
                    assert_eq!(p.asks.len(), 2);
                    for ask in &p.asks {
                        assert_eq!(lua::slot(&ask.key), slot, "{}", ask.key);
                    }
                }
                total += call.len();
            }
        }
        assert_eq!(total, 600);
    }
}
