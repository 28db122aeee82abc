use std::{collections::HashMap, sync::Arc, time::Duration};

use actix::{Actor, ActorFutureExt, AsyncContext, Context, Handler, ResponseActFuture, WrapFuture};
use tokio::sync::{oneshot, watch};

use super::{
    Acquire, CacheError, Delete, FlushPattern, InvalidateTag, Lease, LoadGuard, MAX_TTL, Refresh,
    Release, Set,
    glob::Glob,
    inner::Inner,
    l1::{L1, Ticket, Window},
    stats::Stats,
};
use crate::connection::RedisError;

/// A load in progress for one key.
enum Flight {
    /// The leader is running its loader; waiters get its result.
    Loading {
        waiters: Vec<oneshot::Sender<Option<Option<bytes::Bytes>>>>,
        stale: bool,
        /// Taken before the load began: an invalidation since refuses its L1 fill.
        ticket: Ticket,
    },
    /// The result is in L1 and on its way to L2; writes to the key wait for it to land first.
    Storing {
        value: Option<bytes::Bytes>,
        done: watch::Receiver<bool>,
        generation: u64,
    },
}

/// Owns the cache's write path: single-flight loads and every invalidation.
///
/// Reads never pass through here (see the [module docs](super)). Writes do, so that one place
/// orders them against loads in flight: a load that a write overtakes is not cached (it would be
/// stale), and a write waits for an earlier load's L2 store to land before it runs. Changes made
/// by other instances and programs reach L1 through the invalidation feed instead (see the
/// [module docs](super)); loads and writes here carry an L1 ticket so that such a change
/// overtaking them is not undone by their fill.
pub struct CacheActor {
    inner: Arc<Inner>,
    flights: HashMap<String, Flight>,
    /// Latest write sequence per key: only the newest write to a key updates L1.
    writes: HashMap<String, u64>,
    next_seq: u64,
}

impl CacheActor {
    pub(super) fn new(inner: Arc<Inner>) -> Self {
        Self {
            inner,
            flights: HashMap::new(),
            writes: HashMap::new(),
            next_seq: 0,
        }
    }

    /// Marks loads of matching keys stale and collects the L2 stores the write must wait for.
    fn barrier(&mut self, matches: impl Fn(&str) -> bool) -> Vec<watch::Receiver<bool>> {
        let mut pending = Vec::new();
        for (key, flight) in &mut self.flights {
            if !matches(key) {
                continue;
            }
            match flight {
                Flight::Loading { stale, .. } => *stale = true,
                Flight::Storing { done, .. } => pending.push(done.clone()),
            }
        }
        pending
    }

    fn sequence(&mut self, key: &str) -> u64 {
        self.next_seq += 1;
        self.writes.insert(key.to_owned(), self.next_seq);
        self.next_seq
    }

    /// Whether `seq` is still the newest write to `key` (and forgets it if so).
    fn is_latest(&mut self, key: &str, seq: u64) -> bool {
        if self.writes.get(key) == Some(&seq) {
            self.writes.remove(key);
            true
        } else {
            false
        }
    }

    /// Runs `write` once the L2 stores in `pending` landed, dropping what `drop_l1` drops from
    /// L1 both at once (readers here stop seeing it before L2 answers) and after the write (a
    /// fill that raced it cannot leave it behind).
    fn drop_around<T: 'static>(
        &mut self,
        pending: Vec<watch::Receiver<bool>>,
        write: impl Future<Output = Result<T, RedisError>> + 'static,
        drop_l1: impl Fn(&L1) + 'static,
    ) -> ResponseActFuture<Self, Result<T, CacheError>> {
        drop_l1(&self.inner.l1);
        let write = async move {
            wait_all(pending).await;
            write.await
        };
        Box::pin(write.into_actor(self).map(move |result, act, _| {
            drop_l1(&act.inner.l1);
            result.map_err(|err| {
                Stats::bump(&act.inner.stats.l2_errors);
                CacheError::Unavailable(err)
            })
        }))
    }
}

async fn wait_all(pending: Vec<watch::Receiver<bool>>) {
    for mut done in pending {
        // An error means the store task is gone, which also means it is over.
        let _ = done.wait_for(|d| *d).await;
    }
}

impl Actor for CacheActor {
    type Context = Context<Self>;
}

impl Handler<Set> for CacheActor {
    type Result = ResponseActFuture<Self, Result<(), CacheError>>;

    fn handle(&mut self, msg: Set, _ctx: &mut Self::Context) -> Self::Result {
        let pending = self.barrier(|k| k == msg.key);
        let seq = self.sequence(&msg.key);
        let ticket = self.inner.l1.ticket(&msg.key);
        // Registered before the write is sent: its echo cannot be missed.
        let echo = self.inner.l1.echo(&msg.key);
        let fed = echo.is_some();
        let inner = Arc::clone(&self.inner);
        let (key, value, ttl, tags) = (msg.key, msg.value, msg.ttl, msg.tags);
        let l1_tags: Option<Arc<[String]>> = (!tags.is_empty()).then(|| tags.clone().into());
        let write = {
            let (key, value) = (key.clone(), value.clone());
            async move {
                wait_all(pending).await;
                let stored = if tags.is_empty() {
                    value
                } else {
                    // A tagged value is an envelope naming its tags' tokens (fresh for its
                    // whole Redis TTL).
                    let tokens = inner.store.tag_tokens(&tags, ttl).await?;
                    super::envelope::encode(&value, ttl, &tokens)
                };
                inner.store.set(&key, stored, ttl).await?;
                if let Some(echo) = echo {
                    inner.refill_after_echo(&key, echo).await;
                }
                Ok(())
            }
        };
        Box::pin(write.into_actor(self).map(move |result, act, _| {
            let latest = act.is_latest(&key, seq);
            match result {
                Ok(()) => {
                    // With a feed, L1 was refilled from L2 after the write's echo; without one
                    // (one instance), the newest write fills it, unless a change was reported
                    // meanwhile, which drops the key instead.
                    if !fed
                        && latest
                        && !act.inner.l1.fill_refreshing(
                            &key,
                            Some(value),
                            ttl,
                            (None, l1_tags),
                            ticket,
                        )
                    {
                        act.inner.l1.invalidate(&key);
                    }
                    Ok(())
                }
                Err(err) => {
                    // L2 now holds an unknown value: drop ours rather than guess.
                    act.inner.l1.invalidate(&key);
                    Stats::bump(&act.inner.stats.l2_errors);
                    Err(CacheError::Unavailable(err))
                }
            }
        }))
    }
}

impl Handler<Delete> for CacheActor {
    type Result = ResponseActFuture<Self, Result<bool, CacheError>>;

    fn handle(&mut self, msg: Delete, _ctx: &mut Self::Context) -> Self::Result {
        let pending = self.barrier(|k| k == msg.key);
        let seq = self.sequence(&msg.key);
        let store = self.inner.store.clone();
        let key = msg.key;
        // Drop L1 at once: readers of this process stop seeing the value before L2 answers.
        self.inner.l1.invalidate(&key);
        let write = {
            let key = key.clone();
            async move {
                wait_all(pending).await;
                store.delete(&key).await
            }
        };
        Box::pin(write.into_actor(self).map(move |result, act, _| {
            if act.is_latest(&key, seq) {
                act.inner.l1.invalidate(&key);
            }
            match result {
                Ok(existed) => Ok(existed),
                Err(err) => {
                    Stats::bump(&act.inner.stats.l2_errors);
                    Err(CacheError::Unavailable(err))
                }
            }
        }))
    }
}

impl Handler<FlushPattern> for CacheActor {
    type Result = ResponseActFuture<Self, Result<u64, CacheError>>;

    fn handle(&mut self, msg: FlushPattern, _ctx: &mut Self::Context) -> Self::Result {
        let glob = Glob::new(msg.pattern.as_bytes());
        let pending = self.barrier(|k| glob.matches(k.as_bytes()));
        let store = self.inner.store.clone();
        let pattern = msg.pattern;
        let flush = {
            let pattern = pattern.clone();
            async move { store.flush(&pattern).await }
        };
        self.drop_around(pending, flush, move |l1| {
            l1.remove_matching(&pattern);
        })
    }
}

impl Handler<InvalidateTag> for CacheActor {
    type Result = ResponseActFuture<Self, Result<(), CacheError>>;

    fn handle(&mut self, msg: InvalidateTag, _ctx: &mut Self::Context) -> Self::Result {
        // Loads in flight may carry the tag: none of them fills L1 (their L2 fill names the
        // old token, so it reads as absent).
        let pending = self.barrier(|_| true);
        let store = self.inner.store.clone();
        let tag = msg.tag;
        let drop_tag = {
            let tag = tag.clone();
            async move { store.drop_tag(&tag).await }
        };
        self.drop_around(pending, drop_tag, move |l1| l1.drop_tag(&tag))
    }
}

impl Handler<Acquire> for CacheActor {
    type Result = actix::MessageResult<Acquire>;

    fn handle(&mut self, msg: Acquire, ctx: &mut Self::Context) -> Self::Result {
        let lease = match self.flights.get_mut(&msg.key) {
            Some(Flight::Loading { waiters, .. }) => {
                let (tx, rx) = oneshot::channel();
                waiters.push(tx);
                Lease::Follower(rx)
            }
            Some(Flight::Storing { value, .. }) => Lease::Ready(value.clone()),
            None => {
                // A load that finished between the caller's miss and now left its value in L1.
                if let Some(value) = self.inner.l1.get(&msg.key) {
                    Lease::Ready(value)
                } else {
                    let ticket = self.inner.l1.ticket(&msg.key);
                    self.flights.insert(
                        msg.key.clone(),
                        Flight::Loading {
                            waiters: Vec::new(),
                            stale: false,
                            ticket,
                        },
                    );
                    Lease::Leader(LoadGuard {
                        key: msg.key,
                        addr: ctx.address(),
                        armed: true,
                        fill: None,
                        tags: Vec::new(),
                        store: true,
                    })
                }
            }
        };
        actix::MessageResult(lease)
    }
}

impl Handler<Refresh> for CacheActor {
    type Result = actix::MessageResult<Refresh>;

    fn handle(&mut self, msg: Refresh, ctx: &mut Self::Context) -> Self::Result {
        if self.flights.contains_key(&msg.key) {
            return actix::MessageResult(None);
        }
        let ticket = self.inner.l1.ticket(&msg.key);
        self.flights.insert(
            msg.key.clone(),
            Flight::Loading {
                waiters: Vec::new(),
                stale: false,
                ticket,
            },
        );
        actix::MessageResult(Some(LoadGuard {
            key: msg.key,
            addr: ctx.address(),
            armed: true,
            fill: None,
            tags: Vec::new(),
            store: true,
        }))
    }
}

impl Handler<Release> for CacheActor {
    type Result = ();

    fn handle(&mut self, msg: Release, ctx: &mut Self::Context) {
        let Some(Flight::Loading {
            waiters,
            stale,
            ticket,
        }) = self.flights.remove(&msg.key)
        else {
            return;
        };
        let Some((value, ttl)) = msg.outcome else {
            // Failed or abandoned: each waiter retries, and one of them becomes the leader.
            for waiter in waiters {
                let _ = waiter.send(None);
            }
            return;
        };
        for waiter in waiters {
            let _ = waiter.send(Some(value.clone()));
        }
        if stale || msg.cached {
            return;
        }
        let key = msg.key;
        let config = &self.inner.config;
        // A loaded value is kept past its TTL for fail-safe, in an envelope that says when it
        // goes stale (see `envelope.rs`); an eager refresh needs the envelope too (every
        // instance must know when the value was written).
        let tags = msg.tags;
        let wrapped = value.is_some()
            && (!config.fail_safe_max.is_zero() || config.eager_refresh > 0.0 || !tags.is_empty());
        let refresh_in =
            (wrapped && config.eager_refresh > 0.0).then(|| ttl.mul_f64(config.eager_refresh));
        let l1_tags: Option<Arc<[String]>> =
            (!tags.is_empty()).then(|| tags.iter().map(|(tag, _)| tag.clone()).collect());
        if let Some(json) = &value {
            // The newest good value, also when L2 cannot be written (see `l1/lastgood.rs`).
            let window = Window {
                loaded_ago: Duration::ZERO,
                left: ttl.saturating_add(config.fail_safe_max),
            };
            self.inner
                .l1
                .keep_good(&key, json, (window, l1_tags.clone()), ticket);
        }
        self.inner
            .l1
            .fill_refreshing(&key, value.clone(), ttl, (refresh_in, l1_tags), ticket);
        // L2 is filled only under the guard taken before the load (see `L2Store::fill`).
        let Some(guard) = msg.fill else {
            return;
        };
        if !self.inner.store.readable() {
            Stats::bump(&self.inner.stats.l2_errors);
            return;
        }
        let (done_tx, done_rx) = watch::channel(false);
        self.next_seq += 1;
        let generation = self.next_seq;
        self.flights.insert(
            key.clone(),
            Flight::Storing {
                value: value.clone(),
                done: done_rx,
                generation,
            },
        );
        let store = self.inner.store.clone();
        let (bytes, ttl) = match value {
            Some(json) if wrapped => (
                super::envelope::encode(&json, ttl, &tags),
                ttl.saturating_add(config.fail_safe_max).min(MAX_TTL),
            ),
            Some(json) => (json, ttl),
            None => (
                bytes::Bytes::from_static(super::store::NEGATIVE_MARKER),
                ttl,
            ),
        };
        let echo = self.inner.l1.echo(&key);
        // The caller's `complete` returns once L1 holds what L2 holds (or L1 gave up).
        let handled = msg.handled;
        let write = {
            let key = key.clone();
            async move { store.fill(&key, bytes, ttl, &guard).await }
        };
        ctx.spawn(write.into_actor(self).map(move |result, act, ctx| {
            if matches!(act.flights.get(&key), Some(Flight::Storing { generation: g, .. }) if *g == generation)
            {
                act.flights.remove(&key);
            }
            let _ = done_tx.send(true);
            match result {
                Ok(true) => {
                    if let Some(echo) = echo {
                        let inner = Arc::clone(&act.inner);
                        ctx.spawn(
                            async move {
                                inner.refill_after_echo(&key, echo).await;
                                drop(handled);
                            }
                            .into_actor(act),
                        );
                    }
                }
                Ok(false) => {
                    // L2 holds another value (or none): ours may be stale.
                    act.inner.l1.invalidate(&key);
                    Stats::bump(&act.inner.stats.fills_refused);
                }
                Err(err) => {
                    act.inner.l1.invalidate(&key);
                    Stats::bump(&act.inner.stats.l2_errors);
                    tracing::warn!(error = %err, "cache: storing a loaded value in L2 failed");
                }
            }
        }));
    }
}
