use std::{future::Future, sync::Arc, time::Duration};

use actix::{Actor, Addr};
use bytes::Bytes;
use serde::{Serialize, de::DeserializeOwned};

use super::{
    Acquire, CacheActor, CacheConfig, CacheError, CacheStats, Delete, FlushPattern, Lease, Set,
    error::validate_key,
    l1::L1,
    stats::{L1Feed, Stats},
    store::{MemoryL2, NEGATIVE_MARKER, RedisStore, Store},
};
use crate::connection::{FeedEvent, InvalidationFeed, RedisHandle};

/// Which tier answered a lookup; sent to HTTP clients as `X-Cache`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Tier {
    /// The in-process tier.
    L1,
    /// The shared tier (Redis, or the memory backend's store).
    L2,
    /// Neither: the value was loaded (or is absent).
    Miss,
}

impl Tier {
    /// The `X-Cache` header value: `HIT-L1`, `HIT-L2` or `MISS`.
    pub fn header_value(self) -> &'static str {
        match self {
            Self::L1 => "HIT-L1",
            Self::L2 => "HIT-L2",
            Self::Miss => "MISS",
        }
    }
}

/// A raw cache hit: the stored JSON bytes and the tier that held them.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Hit {
    /// The JSON bytes, exactly as stored.
    pub json: Bytes,
    /// Where they came from.
    pub tier: Tier,
}

/// The result of [`CacheHandle::remember`]: the value (`None`: the source has none, possibly
/// remembered as a negative entry) and where it came from.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Remembered<T> {
    /// The value, or `None` when the loader found nothing.
    pub value: Option<T>,
    /// Which tier answered, or [`Tier::Miss`] when it was loaded.
    pub tier: Tier,
}

pub(crate) struct Inner {
    pub(crate) l1: L1,
    pub(crate) store: Store,
    pub(crate) stats: Arc<Stats>,
    pub(crate) config: CacheConfig,
    /// Keeps L1 coherent with Redis; stops when the cache is dropped.
    _feed: Option<InvalidationFeed>,
}

/// How long a writer waits for the feed to report its own write before it leaves L1 to the
/// next read (the echo takes well under a millisecond on a live feed).
const ECHO_WAIT: Duration = Duration::from_millis(250);

impl Inner {
    /// After this instance's write of `key` reached L2: waits (bounded) for the feed to report
    /// it, then fills L1 from a fresh L2 read, which no reported change has overtaken.
    pub(crate) async fn refill_after_echo(
        &self,
        key: &str,
        echo: tokio::sync::oneshot::Receiver<()>,
    ) {
        // The sender is dropped when the echo (or a flush, or a feed change) is reported.
        if tokio::time::timeout(ECHO_WAIT, echo).await.is_err() {
            return;
        }
        let ticket = self.l1.ticket(key);
        match self.store.get(key, true).await {
            Ok(Some((bytes, left))) => {
                let value = (bytes.as_ref() != NEGATIVE_MARKER).then_some(bytes);
                let ttl = left.unwrap_or(self.config.l1_ttl());
                self.l1.fill(key, value, ttl, ticket);
            }
            Ok(None) => {}
            Err(err) => tracing::debug!(error = %err, "cache: refilling L1 after a write failed"),
        }
    }
}

/// A cloneable handle to the two-tier cache. Reads run in the caller's task (L1, then L2);
/// writes and loads go through the [`CacheActor`].
#[derive(Clone)]
pub struct CacheHandle {
    inner: Arc<Inner>,
    addr: Addr<CacheActor>,
}

impl std::fmt::Debug for CacheHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheHandle")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl CacheHandle {
    /// Starts the cache actor on the current arbiter, with Redis as L2 when `redis` is given
    /// and the in-process store otherwise.
    ///
    /// With Redis and L1 on, it also starts the invalidation feed (see the
    /// [module docs](super)): L1 is bypassed until the feed is armed.
    pub fn start(config: CacheConfig, redis: Option<RedisHandle>) -> Self {
        let stats = Arc::new(Stats::default());
        let mut l1 = L1::new(config.l1_max_bytes(), config.l1_ttl(), Arc::clone(&stats));
        let mut feed = None;
        let store = match redis {
            Some(redis) => {
                if l1.enabled() {
                    l1 = l1.fed();
                    feed = start_feed(&redis, &config, &l1, &stats);
                }
                Store::Redis(RedisStore::new(
                    redis,
                    config.key_prefix(),
                    config.namespace(),
                ))
            }
            None => Store::Memory(MemoryL2::new(config.memory_l2_max_bytes())),
        };
        let inner = Arc::new(Inner {
            l1,
            store,
            stats,
            config,
            _feed: feed,
        });
        let addr = CacheActor::new(Arc::clone(&inner)).start();
        Self { inner, addr }
    }

    /// The actor's address, for those who want to send messages themselves.
    pub fn addr(&self) -> &Addr<CacheActor> {
        &self.addr
    }

    /// The configuration in use.
    pub fn config(&self) -> &CacheConfig {
        &self.inner.config
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> CacheStats {
        self.inner.stats.snapshot(self.inner.l1.weighted_size())
    }

    /// Looks `key` up in L1, then L2 (filling L1). A cached `null`, `[]`, `0` or `""` is a hit.
    ///
    /// # Errors
    /// [`CacheError::InvalidKey`]; [`CacheError::Unavailable`] when L1 misses and L2 cannot be
    /// asked (the answer would be a guess).
    pub async fn get_raw(&self, key: &str) -> Result<Option<Hit>, CacheError> {
        validate_key(key)?;
        if let Some(value) = self.inner.l1.get(key) {
            Stats::bump(&self.inner.stats.l1_hits);
            return Ok(value.map(|json| Hit {
                json,
                tier: Tier::L1,
            }));
        }
        match self.read_l2(key).await? {
            Some(value) => Ok(value.map(|json| Hit {
                json,
                tier: Tier::L2,
            })),
            None => {
                Stats::bump(&self.inner.stats.misses);
                Ok(None)
            }
        }
    }

    /// Looks `key` up and deserializes it as `T`.
    ///
    /// # Errors
    /// As [`get_raw`](Self::get_raw), and [`CacheError::Serde`] when the value is not a `T`.
    pub async fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, CacheError> {
        match self.get_raw(key).await? {
            Some(hit) => Ok(Some(serde_json::from_slice(&hit.json)?)),
            None => Ok(None),
        }
    }

    /// Whether `key` holds a value (a negative entry does not count).
    ///
    /// # Errors
    /// As [`get_raw`](Self::get_raw).
    pub async fn exists(&self, key: &str) -> Result<bool, CacheError> {
        validate_key(key)?;
        if let Some(value) = self.inner.l1.get(key) {
            return Ok(value.is_some());
        }
        if !self.inner.store.readable() {
            return Err(self.unavailable());
        }
        self.inner
            .store
            .exists(key)
            .await
            .map_err(|err| self.l2_failed(err))
    }

    /// Stores `value` as JSON under `key` for `ttl`.
    ///
    /// # Errors
    /// [`CacheError::InvalidKey`], [`CacheError::InvalidTtl`], [`CacheError::Serde`], or
    /// [`CacheError::Unavailable`] when L2 cannot be written (L1 then drops the key).
    pub async fn set<T: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
        ttl: Duration,
    ) -> Result<(), CacheError> {
        let json = serde_json::to_vec(value)?;
        self.set_json(key, Bytes::from(json), ttl).await
    }

    /// Stores JSON bytes under `key` for `ttl`; the bytes are checked to be one JSON value.
    ///
    /// # Errors
    /// As [`set`](Self::set), and [`CacheError::InvalidValue`] when `json` is not JSON.
    pub async fn set_json(&self, key: &str, json: Bytes, ttl: Duration) -> Result<(), CacheError> {
        validate_key(key)?;
        if ttl < Duration::from_secs(1) {
            return Err(CacheError::InvalidTtl);
        }
        if serde_json::from_slice::<serde::de::IgnoredAny>(&json).is_err() {
            return Err(CacheError::InvalidValue);
        }
        self.fail_fast_when_down()?;
        self.send(Set {
            key: key.to_owned(),
            value: json,
            ttl,
        })
        .await?
    }

    /// Removes `key` from both tiers; answers whether it was there.
    ///
    /// # Errors
    /// [`CacheError::InvalidKey`]; [`CacheError::Unavailable`] when L2 cannot be written.
    pub async fn delete(&self, key: &str) -> Result<bool, CacheError> {
        validate_key(key)?;
        if let Err(err) = self.fail_fast_when_down() {
            // Still drop our own copy: it may be about to go stale.
            self.inner.l1.invalidate(key);
            return Err(err);
        }
        self.send(Delete {
            key: key.to_owned(),
        })
        .await?
    }

    /// Removes every key matching the Redis glob `pattern` (`*`, `?`, `[...]`, `\`), applied
    /// inside the cache namespace only; answers how many L2 held.
    ///
    /// # Errors
    /// [`CacheError::InvalidPattern`] for an empty, overlong or control-character pattern;
    /// [`CacheError::Unavailable`] when L2 cannot be written.
    pub async fn flush_pattern(&self, pattern: &str) -> Result<u64, CacheError> {
        super::glob::validate_pattern(pattern).map_err(CacheError::InvalidPattern)?;
        self.fail_fast_when_down()?;
        self.send(FlushPattern {
            pattern: pattern.to_owned(),
        })
        .await?
    }

    /// Empties the cache namespace; answers how many keys L2 held.
    ///
    /// # Errors
    /// As [`flush_pattern`](Self::flush_pattern).
    pub async fn flush_namespace(&self) -> Result<u64, CacheError> {
        self.flush_pattern("*").await
    }

    /// Answers the value of `key`, running `loader` on a miss and caching its answer for `ttl`
    /// (a `None` answer is cached as a negative entry for the configured negative TTL).
    ///
    /// Concurrent calls for one cold key run the loader once in this process; the others wait
    /// for its result. When L2 fails, the call degrades to L1 and the loader (logged, counted).
    ///
    /// # Errors
    /// The loader's error, or [`CacheError`] (converted into `E`) for an invalid key or a value
    /// that does not (de)serialize as `T`.
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
        })
    }

    /// [`remember`](Self::remember) on JSON bytes: no (de)serialization on a hit, so a handler
    /// can send the cached bytes as they are.
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
        validate_key(key)?;
        if ttl < Duration::from_secs(1) {
            return Err(CacheError::InvalidTtl.into());
        }
        if let Some(value) = self.inner.l1.get(key) {
            Stats::bump(&self.inner.stats.l1_hits);
            return Ok(Remembered {
                value,
                tier: Tier::L1,
            });
        }
        match self.read_l2(key).await {
            Ok(Some(value)) => {
                return Ok(Remembered {
                    value,
                    tier: Tier::L2,
                });
            }
            Ok(None) => {}
            // Degrade: the loader can answer without L2.
            Err(CacheError::Unavailable(_)) => {}
            Err(other) => return Err(other.into()),
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
                    });
                }
                Lease::Follower(rx) => {
                    if let Ok(Some(value)) = rx.await {
                        Stats::bump(&self.inner.stats.coalesced);
                        return Ok(Remembered {
                            value,
                            tier: Tier::Miss,
                        });
                    }
                    // The leader failed or gave up: acquire again.
                }
                Lease::Leader(mut guard) => {
                    // unwrap: a caller becomes leader at most once, then returns.
                    let load = loader.take().unwrap();
                    // Before the load: a change to the key from now on forbids the L2 fill.
                    guard.fill = self.inner.store.fill_guard(key).await;
                    Stats::bump(&self.inner.stats.loads);
                    // On error (or cancellation) the guard drops unreported and waiters retry.
                    let value = load().await?;
                    let ttl = if value.is_some() {
                        ttl
                    } else {
                        self.inner.config.negative_ttl()
                    };
                    guard.complete(value.clone(), ttl).await;
                    return Ok(Remembered {
                        value,
                        tier: Tier::Miss,
                    });
                }
            }
        }
    }

    /// Reads L2 and fills L1. `Ok(None)`: a miss; `Ok(Some(None))`: a negative entry.
    async fn read_l2(&self, key: &str) -> Result<Option<Option<Bytes>>, CacheError> {
        if !self.inner.store.readable() {
            Stats::bump(&self.inner.stats.l2_errors);
            return Err(self.unavailable());
        }
        // Before the read: a change reported after it keeps this value out of L1.
        let ticket = self.inner.l1.ticket(key);
        match self.inner.store.get(key, self.inner.l1.enabled()).await {
            Ok(Some((bytes, left))) => {
                Stats::bump(&self.inner.stats.l2_hits);
                let value = (bytes.as_ref() != NEGATIVE_MARKER).then_some(bytes);
                let ttl = left.unwrap_or(self.inner.config.l1_ttl());
                self.inner.l1.fill(key, value.clone(), ttl, ticket);
                Ok(Some(value))
            }
            Ok(None) => Ok(None),
            Err(err) => Err(self.l2_failed(err)),
        }
    }

    fn l2_failed(&self, err: crate::connection::RedisError) -> CacheError {
        Stats::bump(&self.inner.stats.l2_errors);
        tracing::warn!(error = %err, "cache: L2 read failed; degrading to L1 and loader");
        CacheError::Unavailable(err)
    }

    fn unavailable(&self) -> CacheError {
        CacheError::Unavailable(crate::connection::RedisError::Unavailable(
            redis::RedisError::from((redis::ErrorKind::Io, "redis is down (watchdog)")),
        ))
    }

    fn fail_fast_when_down(&self) -> Result<(), CacheError> {
        if self.inner.store.readable() {
            Ok(())
        } else {
            Err(self.unavailable())
        }
    }

    /// Fails when a write could not reach L2 right now (Redis known to be down).
    ///
    /// # Errors
    /// [`CacheError::Unavailable`].
    pub fn ensure_writable(&self) -> Result<(), CacheError> {
        self.fail_fast_when_down()
    }

    async fn send<M>(&self, msg: M) -> Result<M::Result, CacheError>
    where
        M: actix::Message + Send + 'static,
        M::Result: Send,
        CacheActor: actix::Handler<M>,
    {
        self.addr.send(msg).await.map_err(|_| CacheError::ActorGone)
    }

    /// Whether L1 is enabled.
    pub fn l1_enabled(&self) -> bool {
        self.inner.l1.enabled()
    }

    /// The invalidation feed's state (`Off` on the memory backend or with L1 off).
    pub fn feed(&self) -> L1Feed {
        self.stats().l1_feed
    }
}

/// Starts the feed that applies every change under the cache namespace to `l1`.
fn start_feed(
    redis: &RedisHandle,
    config: &CacheConfig,
    l1: &L1,
    stats: &Arc<Stats>,
) -> Option<InvalidationFeed> {
    use std::sync::atomic::Ordering;

    // Bypassed (`L1::fed`) until the feed is armed.
    stats.feed.store(L1Feed::Down.as_u8(), Ordering::Relaxed);
    let namespace = config.namespace();
    let (l1, stats) = (l1.clone(), Arc::clone(stats));
    let listener = {
        let namespace = namespace.clone();
        move |event: FeedEvent| match event {
            FeedEvent::Invalidated(keys) => {
                for key in keys {
                    // Keys outside the namespace or not UTF-8 were never cached here.
                    if let Some(key) = key.strip_prefix(namespace.as_bytes())
                        && let Ok(key) = std::str::from_utf8(key)
                    {
                        l1.invalidate_reported(key);
                        Stats::bump(&stats.l1_invalidations);
                    }
                }
            }
            FeedEvent::FlushedAll => {
                l1.invalidate_all_reported();
                Stats::bump(&stats.l1_invalidations);
            }
            FeedEvent::Down => {
                l1.set_live(false);
                let was = stats.feed.swap(L1Feed::Down.as_u8(), Ordering::Relaxed);
                if was == L1Feed::Up.as_u8() {
                    Stats::bump(&stats.l1_feed_flushes);
                }
            }
            FeedEvent::Up => {
                l1.set_live(true);
                stats.feed.store(L1Feed::Up.as_u8(), Ordering::Relaxed);
            }
        }
    };
    match redis.invalidation_feed(vec![namespace], listener) {
        Ok(feed) => Some(feed),
        Err(err) => {
            // L1 stays bypassed: correct, only slower.
            tracing::error!(error = %err, "cache: the invalidation feed cannot start; L1 stays bypassed");
            None
        }
    }
}
