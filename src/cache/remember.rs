//! [`CacheHandle::remember`]: a value loaded once on a miss (per process, concurrent callers
//! coalesced), cached in both tiers, degrading to the loader when L2 fails.
//!
//! # Fail-safe, timeouts and eager refresh
//! - A loaded value is kept in L2 for its TTL plus the fail-safe window (see `envelope.rs`).
//!   Past its TTL it is *stale*: a read loads again, and answers the stale value
//!   ([`Tier::Stale`]) when the loader fails, passes the hard timeout, or (with a stale value at
//!   hand) the soft timeout. After a failure the loader of that key is left alone for the
//!   throttle period (per process); the stale value answered meanwhile is kept in process
//!   (`failsafe.rs`), so later stale answers skip L2 while the feed reports no change to the
//!   key, and still answer while L2 cannot.
//! - When L2 cannot answer, the last good value this instance read from L2 or loaded
//!   (`l1/lastgood.rs`) is the stale value at hand, within its fail-safe window: answered when
//!   the loader fails, passes a timeout or is throttled.
//! - A loader whose future owns what it uses (`'static`, [`remember_json_owned`]) can outlive
//!   its caller: at the soft timeout its load goes on in the background and fills both tiers;
//!   a hit past the eager refresh point starts one background reload (one per key and
//!   process), so that a key read steadily never misses.
//!
//! [`remember_json_owned`]: CacheHandle::remember_json_owned

use std::{future::Future, time::Duration};

use bytes::Bytes;
use serde::{Serialize, de::DeserializeOwned};

use self::lead::{Borrowed, Mode, Owned, Stale};
use super::{
    Acquire, CacheError, CacheHandle, Lease, LoadGuard, Remembered, Tier, error::validate_key,
    handle::validate_ttl, inner::L2Read, l1::Window, stats::Stats,
};

mod lead;

impl CacheHandle {
    /// Answers the value of `key`, running `loader` on a miss and caching its answer for `ttl`
    /// (a `None` answer is cached as a negative entry for the configured negative TTL).
    ///
    /// Concurrent calls for one cold key run the loader once in this process; the others wait
    /// for its result. When L2 fails, the call degrades to L1 and the loader (logged, counted).
    /// Past its TTL, a loaded value is served stale when the loader fails (see the
    /// [cache docs](crate::cache)).
    ///
    /// # Errors
    /// The loader's error, or [`CacheError`] (converted into `E`) for an invalid key or a value
    /// that does not (de)serialize as `T`, or [`CacheError::LoaderTimeout`].
    pub async fn remember<T, E, F, Fut>(
        &self,
        key: &str,
        ttl: Duration,
        loader: F,
    ) -> Result<Remembered<T>, E>
    where
        T: Serialize + DeserializeOwned,
        E: From<CacheError>,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Option<T>, E>>,
    {
        let mut loaded = None;
        let raw = self
            .remember_json(key, ttl, || async {
                let Some(value) = loader().await? else {
                    return Ok::<_, E>(None);
                };
                let json = serde_json::to_vec(&value).map_err(CacheError::from)?;
                loaded = Some(value);
                Ok(Some(Bytes::from(json)))
            })
            .await?;
        let value = match (loaded, raw.value) {
            (Some(value), _) => Some(value),
            (None, Some(json)) => Some(serde_json::from_slice(&json).map_err(CacheError::from)?),
            (None, None) => None,
        };
        Ok(Remembered {
            value,
            tier: raw.tier,
            age: raw.age,
        })
    }

    /// [`remember`](Self::remember) on JSON bytes: no (de)serialization on a hit, so a handler
    /// can send the cached bytes as they are. The loader borrows from the caller, so its load
    /// never outlives the call: no soft timeout, no eager refresh (see
    /// [`remember_json_owned`](Self::remember_json_owned)).
    ///
    /// # Errors
    /// As [`remember`](Self::remember).
    pub async fn remember_json<E, F, Fut>(
        &self,
        key: &str,
        ttl: Duration,
        loader: F,
    ) -> Result<Remembered<Bytes>, E>
    where
        E: From<CacheError>,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Option<Bytes>, E>>,
    {
        self.remember_in::<Borrowed, E, F, Fut>(key, (ttl, &[]), loader)
            .await
    }

    /// [`remember_json`](Self::remember_json) for a loader whose future owns what it uses
    /// (`'static`; the closure itself may borrow, it is called only to load): such a load can
    /// outlive its caller, which adds the soft timeout (with a stale value at hand, answer it
    /// and let the load finish in the background, filling both tiers) and eager refresh (a hit
    /// past the configured fraction of the TTL starts one background reload). Must run on an
    /// actix system (it spawns there).
    ///
    /// # Errors
    /// As [`remember`](Self::remember).
    pub async fn remember_json_owned<E, F, Fut>(
        &self,
        key: &str,
        ttl: Duration,
        loader: F,
    ) -> Result<Remembered<Bytes>, E>
    where
        E: From<CacheError> + 'static,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Option<Bytes>, E>> + 'static,
    {
        self.remember_in::<Owned, E, F, Fut>(key, (ttl, &[]), loader)
            .await
    }

    /// [`remember_json_owned`](Self::remember_json_owned) writing the loaded value with `tags`:
    /// [`invalidate_tag`](Self::invalidate_tag) of any of them drops it. The tags' tokens are
    /// read before the load begins (one more round trip per load), so a tag dropped during the
    /// load drops its result too.
    ///
    /// # Errors
    /// As [`remember`](Self::remember), and [`CacheError::InvalidTag`].
    pub async fn remember_json_tagged<E, F, Fut>(
        &self,
        key: &str,
        ttl: Duration,
        tags: &[&str],
        loader: F,
    ) -> Result<Remembered<Bytes>, E>
    where
        E: From<CacheError> + 'static,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Option<Bytes>, E>> + 'static,
    {
        self.remember_in::<Owned, E, F, Fut>(key, (ttl, tags), loader)
            .await
    }

    /// Reads the tokens of `tags` into `guard`, for an entry living `ttl` plus the fail-safe
    /// window; false when they cannot be read (the load's value must then not be cached: an
    /// entry without its tags would survive their drop).
    async fn tag_guard(&self, guard: &mut LoadGuard, tags: &[String], ttl: Duration) -> bool {
        if tags.is_empty() {
            return true;
        }
        let life = ttl
            .saturating_add(self.inner.config.fail_safe_max)
            .min(super::MAX_TTL);
        match self.inner.store.tag_tokens(tags, life).await {
            Ok(tokens) => {
                guard.tags = tokens;
                true
            }
            Err(err) => {
                tracing::warn!(error = %err, "cache: tag tokens unreadable; the load is not cached");
                false
            }
        }
    }

    async fn remember_in<M, E, F, Fut>(
        &self,
        key: &str,
        (ttl, tags): (Duration, &[&str]),
        loader: F,
    ) -> Result<Remembered<Bytes>, E>
    where
        M: Mode<E, Fut>,
        E: From<CacheError>,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Option<Bytes>, E>>,
    {
        validate_key(key)?;
        validate_ttl(ttl)?;
        if let Some((value, due)) = self.inner.l1.get_refreshing(key) {
            Stats::bump(&self.inner.stats.l1_hits);
            if due {
                M::refresh(self, key, (ttl, tags), loader);
            }
            return Ok(Remembered {
                value,
                tier: Tier::L1,
                age: None,
            });
        }
        // Boxed: the rest of the lookup is a large future (about 2 KiB with its loads and
        // waits). Unboxed, every caller's future carries it, hits included: the products
        // route's handler future measured 2,240 bytes (240 now), which actix allocates and moves
        // on every request, past the allocator's per-thread caches. Side by side
        // (`REDKIT_BENCH_ONLY=l1 cargo bench --bench http`, LTO, L1-hit ratio to a static
        // handler, with the request id change in `metrics::observe`): complete app 0.851 /
        // 0.849 before, 0.882 / 0.878 after; route alone (`REDKIT_BENCH_MIDDLEWARE=none`) 0.925
        // / 0.936 before, 0.943 / 0.939 after. A miss pays one allocation more.
        Box::pin(self.past_l1::<M, E, F, Fut>(key, (ttl, tags), loader)).await
    }

    /// [`remember_in`](Self::remember_in) after an L1 miss: L2, the fail-safe, the load.
    async fn past_l1<M, E, F, Fut>(
        &self,
        key: &str,
        (ttl, tags): (Duration, &[&str]),
        loader: F,
    ) -> Result<Remembered<Bytes>, E>
    where
        M: Mode<E, Fut>,
        E: From<CacheError>,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Option<Bytes>, E>>,
    {
        // Taken before L2 is read: a stale copy kept from this read is good while it holds.
        let ticket = self.inner.l1.ticket(key);
        // A failing loader's stale copy, L2 unchanged since (its stripe saw no invalidation):
        // answered without reading L2.
        if let Some(copy) = self.inner.throttles.copy(key, true)
            && self.inner.l1.enabled()
            && self.inner.l1.current(copy.ticket)
        {
            let (value, window) = copy.now(std::time::Instant::now());
            return Ok(self.stale(Stale { value, window }));
        }
        let mut stale = None;
        match self.read_l2(key).await {
            Ok(L2Read::Fresh { value, refresh, .. }) => {
                if refresh {
                    M::refresh(self, key, (ttl, tags), loader);
                }
                return Ok(Remembered {
                    value,
                    tier: Tier::L2,
                    age: None,
                });
            }
            Ok(L2Read::Stale { value, window, .. }) => stale = Some(Stale { value, window }),
            Ok(L2Read::Miss | L2Read::Dropped { .. }) => {}
            // Degrade: the loader can answer without L2; if it fails too, the last good value
            // this instance read or loaded (or the stale copy a failure left), within the
            // fail-safe window, answers.
            Err(CacheError::Unavailable(_)) => {
                stale = self
                    .inner
                    .l1
                    .last_good(key)
                    .or_else(|| {
                        let copy = self.inner.throttles.copy(key, false)?;
                        Some(copy.now(std::time::Instant::now()))
                    })
                    .map(|(value, window)| Stale { value, window });
            }
            Err(other) => return Err(other.into()),
        }
        // Checked here, off the hit path: they matter only to what a load writes.
        super::validate_tags(tags)?;
        if let Some(stale) = stale.take_if(|_| self.inner.throttled(key)) {
            self.inner
                .throttles
                .keep(key, (&stale.value, stale.window), ticket);
            return Ok(self.stale(stale));
        }
        Stats::bump(&self.inner.stats.misses);
        let mut loader = Some(loader);
        loop {
            match self
                .send(Acquire {
                    key: key.to_owned(),
                })
                .await?
            {
                Lease::Ready(value) => {
                    return Ok(Remembered {
                        value,
                        tier: Tier::Miss,
                        age: None,
                    });
                }
                Lease::Follower(rx) => {
                    let limit = self.wait_limit(stale.is_some());
                    let waited = match limit {
                        Some(limit) => tokio::time::timeout(limit, rx).await.ok(),
                        None => Some(rx.await),
                    };
                    match (waited, stale) {
                        (Some(Ok(Some(value))), _) => {
                            Stats::bump(&self.inner.stats.coalesced);
                            return Ok(Remembered {
                                value,
                                tier: Tier::Miss,
                                age: None,
                            });
                        }
                        // The leader failed (it counted it), or is too slow.
                        (_, Some(stale)) => return Ok(self.stale(stale)),
                        (None, None) => return Err(CacheError::LoaderTimeout.into()),
                        // The leader failed or gave up: acquire again.
                        (Some(_), None) => stale = None,
                    }
                }
                Lease::Leader(mut guard) => {
                    // A load that ended between this caller's L2 miss and its lease stored its
                    // value in L2 (a flight ends only once that store landed), and L1 may no
                    // longer hold it: the feed reports this process's own writes too, which
                    // clear L1. So L2 once more before loading (one `GET` per real miss): under
                    // load, 500 concurrent cold reads loaded the row twice without it. The
                    // callers waiting on this lease get the value from it: with L1 off, each
                    // would otherwise take the lease in turn and read L2 again.
                    let seen = match self.read_l2(key).await {
                        Ok(L2Read::Fresh { value, .. }) => {
                            guard.share(value.clone());
                            return Ok(Remembered {
                                value,
                                tier: Tier::L2,
                                age: None,
                            });
                        }
                        Ok(L2Read::Stale { value, window, raw }) => {
                            stale = Some(Stale { value, window });
                            Some(raw)
                        }
                        Ok(L2Read::Dropped { raw }) => Some(raw),
                        Ok(L2Read::Miss) | Err(_) => None,
                    };
                    // unwrap: a caller becomes leader at most once, then returns.
                    let load = loader.take().unwrap();
                    let tags: Vec<String> = tags.iter().map(|&tag| tag.to_owned()).collect();
                    let cacheable = self.tag_guard(&mut guard, &tags, ttl).await;
                    if cacheable {
                        // Before the load: a change to the key from now on forbids the L2 fill.
                        guard.fill = self
                            .inner
                            .store
                            .fill_guard(key)
                            .await
                            .map(|g| g.expecting(seen.as_deref()));
                    } else {
                        // Answer the callers, cache nothing; a failure still answers what is
                        // stale at hand (L2 down: the last good value).
                        guard.store = false;
                    }
                    Stats::bump(&self.inner.stats.loads);
                    let load = Box::pin(load());
                    let led = self.lead::<M, E, Fut>(key, ttl, guard, load, stale).await;
                    if !cacheable
                        && let Ok(Remembered {
                            value: Some(value),
                            tier: Tier::Miss,
                            ..
                        }) = &led
                    {
                        // Not cached, yet the newest good value (L2 down: see `l1/lastgood.rs`).
                        let window = Window {
                            loaded_ago: Duration::ZERO,
                            left: ttl.saturating_add(self.inner.config.fail_safe_max),
                        };
                        let tags = (!tags.is_empty()).then(|| tags.into());
                        self.inner.l1.keep_good(key, value, (window, tags), ticket);
                    }
                    return led;
                }
            }
        }
    }

    /// How long a caller waits for a load: the soft timeout with a stale value at hand (when
    /// the load can go on without its caller), else the hard timeout; `None`: no limit.
    fn wait_limit(&self, stale: bool) -> Option<Duration> {
        let config = &self.inner.config;
        let nonzero = |d: Duration| (!d.is_zero()).then_some(d);
        let soft = nonzero(config.loader_soft_timeout).filter(|_| stale);
        match (soft, nonzero(config.loader_hard_timeout)) {
            (Some(soft), Some(hard)) => Some(soft.min(hard)),
            (soft, hard) => soft.or(hard),
        }
    }
}
