//! The leader's load: its timeouts, what it may do beyond its caller's call (finish in the
//! background past the soft timeout, reload early), and how its end is reported through the
//! load guard.

use std::{future::Future, pin::Pin, time::Duration};

use bytes::Bytes;

use crate::cache::{
    CacheError, CacheHandle, FILL_GUARD_TTL, LoadGuard, Remembered, Tier, l1::Window,
    messages::Refresh, stats::Stats,
};

/// Longest a load runs in the background (past its caller's soft timeout, or an eager
/// refresh): a load that takes longer could not fill L2 anyway (see [`FILL_GUARD_TTL`]), and a
/// hung loader must not hold its key's flight for ever. The hard timeout is for callers who
/// wait, and does not apply here.
const BACKGROUND_LIMIT: Duration = Duration::from_secs(FILL_GUARD_TTL.as_secs() / 2);

/// A value past its TTL, kept for fail-safe.
pub(super) struct Stale {
    pub(super) value: Bytes,
    /// Its age (since it was loaded), and how long it may still be served.
    pub(super) window: Window,
}

/// How a load ended in its caller's time.
enum Outcome<E> {
    Done(Result<Option<Bytes>, E>),
    Soft,
    Hard,
}

/// How a load ended, as its guard reports it.
enum Loaded {
    Value(Option<Bytes>),
    Failed,
    TimedOut,
}

impl Loaded {
    /// A load's result, `None` when it passed the hard timeout.
    fn of<E>(result: Option<Result<Option<Bytes>, E>>) -> Self {
        match result {
            Some(Ok(value)) => Self::Value(value),
            Some(Err(_)) => Self::Failed,
            None => Self::TimedOut,
        }
    }
}

/// What a load may do beyond its caller's call: nothing (a borrowing loader), or finish in
/// the background and refresh early (an owned one).
pub(super) trait Mode<E, Fut> {
    /// Whether the load may outlive its caller.
    const OWNED: bool;

    /// Runs the rest of `load` in the background and reports it through `guard` (owned), or
    /// abandons it (the guard's drop wakes the waiters).
    fn finish(cache: &CacheHandle, key: &str, ttl: Duration, guard: LoadGuard, load: Pin<Box<Fut>>);

    /// Starts one background reload of `key` (written with `tags`) with `loader` (owned), or
    /// nothing.
    fn refresh<F: FnOnce() -> Fut>(
        cache: &CacheHandle,
        key: &str,
        entry: (Duration, &[&str]),
        loader: F,
    );
}

/// A loader that borrows from its caller.
pub(super) struct Borrowed;

impl<E, Fut> Mode<E, Fut> for Borrowed {
    const OWNED: bool = false;

    fn finish(_: &CacheHandle, _: &str, _: Duration, _: LoadGuard, _: Pin<Box<Fut>>) {}

    fn refresh<F: FnOnce() -> Fut>(_: &CacheHandle, _: &str, _: (Duration, &[&str]), _: F) {}
}

/// A loader whose future owns what it uses.
pub(super) struct Owned;

impl<E, Fut> Mode<E, Fut> for Owned
where
    E: 'static,
    Fut: Future<Output = Result<Option<Bytes>, E>> + 'static,
{
    const OWNED: bool = true;

    fn finish(
        cache: &CacheHandle,
        key: &str,
        ttl: Duration,
        guard: LoadGuard,
        load: Pin<Box<Fut>>,
    ) {
        let (cache, key) = (cache.clone(), key.to_owned());
        actix::spawn(async move {
            let result = tokio::time::timeout(BACKGROUND_LIMIT, load).await.ok();
            cache.loaded(&key, ttl, guard, Loaded::of(result)).await;
        });
    }

    fn refresh<F: FnOnce() -> Fut>(
        cache: &CacheHandle,
        key: &str,
        (ttl, tags): (Duration, &[&str]),
        loader: F,
    ) {
        // A failing loader is left alone for the throttle period, refreshes included (else
        // every hit past the refresh point would call it again).
        if cache.inner.throttled(key) || !cache.inner.begin_refresh(key) {
            return;
        }
        Stats::bump(&cache.inner.stats.eager_refreshes);
        let load = loader();
        let (cache, key) = (cache.clone(), key.to_owned());
        let tags: Vec<String> = tags.iter().map(|&tag| tag.to_owned()).collect();
        actix::spawn(async move {
            if let Ok(Some(mut guard)) = cache.send(Refresh { key: key.clone() }).await {
                // The reload replaces what L2 holds now, and nothing written since.
                let now = match cache.inner.store.get(&key, false).await {
                    Ok(found) => Some(found.map(|(raw, _)| raw)),
                    Err(_) => None,
                };
                if let Some(now) = now
                    && cache.tag_guard(&mut guard, &tags, ttl).await
                {
                    guard.fill = cache
                        .inner
                        .store
                        .fill_guard(&key)
                        .await
                        .map(|g| g.expecting(now.as_deref()));
                    Stats::bump(&cache.inner.stats.loads);
                    let result = tokio::time::timeout(BACKGROUND_LIMIT, load).await.ok();
                    cache.loaded(&key, ttl, guard, Loaded::of(result)).await;
                }
            }
            cache.inner.end_refresh(&key);
        });
    }
}

impl CacheHandle {
    /// Runs the leader's load within the timeouts and answers for it.
    pub(super) async fn lead<M, E, Fut>(
        &self,
        key: &str,
        ttl: Duration,
        guard: LoadGuard,
        mut load: Pin<Box<Fut>>,
        stale: Option<Stale>,
    ) -> Result<Remembered<Bytes>, E>
    where
        M: Mode<E, Fut>,
        E: From<CacheError>,
        Fut: Future<Output = Result<Option<Bytes>, E>>,
    {
        let config = &self.inner.config;
        let soft = (M::OWNED && stale.is_some() && !config.loader_soft_timeout.is_zero())
            .then_some(config.loader_soft_timeout);
        let hard = (!config.loader_hard_timeout.is_zero()).then_some(config.loader_hard_timeout);
        let sleep = |limit: Option<Duration>| async move {
            match limit {
                Some(limit) => tokio::time::sleep(limit).await,
                None => std::future::pending().await,
            }
        };
        let outcome = tokio::select! {
            result = &mut load => Outcome::Done(result),
            () = sleep(soft) => Outcome::Soft,
            () = sleep(hard) => Outcome::Hard,
        };
        match outcome {
            Outcome::Done(Ok(value)) => {
                let value = self.loaded(key, ttl, guard, Loaded::Value(value)).await;
                Ok(Remembered {
                    value,
                    tier: Tier::Miss,
                    age: None,
                })
            }
            Outcome::Done(Err(err)) => {
                self.loaded(key, ttl, guard, Loaded::Failed).await;
                match stale {
                    Some(stale) => Ok(self.stale(stale)),
                    None => Err(err),
                }
            }
            Outcome::Soft => {
                Stats::bump(&self.inner.stats.loader_timeouts);
                M::finish(self, key, ttl, guard, load);
                // unwrap: the soft timeout is armed only with a stale value at hand.
                Ok(self.stale(stale.unwrap()))
            }
            Outcome::Hard => {
                Stats::bump(&self.inner.stats.loader_timeouts);
                drop(load);
                self.loaded(key, ttl, guard, Loaded::TimedOut).await;
                match stale {
                    Some(stale) => Ok(self.stale(stale)),
                    None => Err(CacheError::LoaderTimeout.into()),
                }
            }
        }
    }

    /// Reports a load's end through its guard: a value is stored (the throttle of the key
    /// lifted); a failure or a hard timeout is counted and throttles the key's loader. Answers
    /// the value stored.
    async fn loaded(
        &self,
        key: &str,
        ttl: Duration,
        guard: LoadGuard,
        loaded: Loaded,
    ) -> Option<Bytes> {
        match loaded {
            Loaded::Value(value) => {
                self.inner.unthrottle(key);
                let ttl = if value.is_some() {
                    ttl
                } else {
                    self.inner.config.negative_ttl
                };
                guard.complete(value.clone(), ttl).await;
                value
            }
            failed => {
                Stats::bump(&self.inner.stats.loader_failures);
                if matches!(failed, Loaded::TimedOut) {
                    tracing::warn!(key, "cache: the loader passed the hard timeout");
                }
                self.inner.throttle(key);
                // Dropped unreported: waiters serve their stale value or retry.
                drop(guard);
                None
            }
        }
    }

    pub(super) fn stale(&self, stale: Stale) -> Remembered<Bytes> {
        Stats::bump(&self.inner.stats.stale_served);
        Remembered {
            value: Some(stale.value),
            tier: Tier::Stale,
            age: Some(stale.window.loaded_ago),
        }
    }
}
