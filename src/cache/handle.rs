//! The cache's handle: reads in the caller's task (L1, then L2), writes through the actor.
//! `remember` (loads, coalesced) is in `remember`.

use std::{sync::Arc, time::Duration};

use actix::{Actor, Addr};
use bytes::Bytes;
use serde::{Serialize, de::DeserializeOwned};

use super::{
    CacheActor, CacheConfig, CacheError, CacheStats, Delete, FlushPattern, Hit, Set, Tier,
    config::MAX_TTL,
    error::validate_key,
    inner::{Inner, L2Read, start_feed},
    l1::L1,
    stats::{L1Feed, Stats},
    store::{L2Store, MemoryStore, RedisStore},
};
use crate::connection::RedisHandle;

/// A cloneable handle to the two-tier cache. Reads run in the caller's task (L1, then L2);
/// writes and loads go through the [`CacheActor`].
#[derive(Clone)]
pub struct CacheHandle {
    pub(super) inner: Arc<Inner>,
    addr: Addr<CacheActor>,
}

impl std::fmt::Debug for CacheHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheHandle")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

/// Checks a TTL: from one second to [`MAX_TTL`].
pub(super) fn validate_ttl(ttl: Duration) -> Result<(), CacheError> {
    if ttl < Duration::from_secs(1) || ttl > MAX_TTL {
        return Err(CacheError::InvalidTtl);
    }
    Ok(())
}

impl CacheHandle {
    /// Starts the cache actor on the current arbiter, with Redis as L2 when `redis` is given
    /// and the in-process store otherwise.
    ///
    /// With Redis and L1 on, it also starts the invalidation feed (see the
    /// [module docs](super)): L1 is bypassed until the feed is armed.
    pub fn start(config: CacheConfig, redis: Option<RedisHandle>) -> Self {
        let stats = Arc::new(Stats::default());
        let mut l1 = L1::new(config.l1_max_bytes, config.l1_ttl, Arc::clone(&stats));
        let mut feed = None;
        let tokens = Arc::default();
        let store: Arc<dyn L2Store> = match redis {
            Some(redis) => {
                if l1.enabled() {
                    l1 = l1.fed().keeping_last_good(config.fail_safe_max);
                    feed = start_feed(&redis, &config, &l1, &stats, &tokens);
                }
                Arc::new(RedisStore::new(
                    redis,
                    &config.key_prefix,
                    config.namespace(),
                ))
            }
            None => Arc::new(MemoryStore::new(config.memory_l2_max_bytes)),
        };
        let inner = Arc::new(Inner {
            l1,
            store,
            stats,
            config,
            _feed: feed,
            throttles: super::failsafe::Throttles::default(),
            refreshing: std::sync::Mutex::default(),
            tokens,
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
            L2Read::Fresh { value, .. } => Ok(value.map(|json| Hit {
                json,
                tier: Tier::L2,
            })),
            // A plain read has no loader to fail: past its TTL, a value is gone.
            L2Read::Stale { .. } | L2Read::Dropped { .. } | L2Read::Miss => {
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
        // Its first bytes tell a positive, fresh entry, unless it is tagged.
        let head = self.inner.store.head(key).await;
        match head.map(|head| head.map_or(Some(false), |h| super::envelope::holds_fresh_value(&h)))
        {
            Ok(Some(exists)) => Ok(exists),
            // A tagged entry: its tags decide.
            Ok(None) => Ok(matches!(
                self.read_l2(key).await?,
                L2Read::Fresh { value: Some(_), .. }
            )),
            Err(err) => Err(self.l2_failed(err)),
        }
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
        self.set_json_tagged(key, json, ttl, &[]).await
    }

    /// [`set`](Self::set) with tags: [`invalidate_tag`](Self::invalidate_tag) of any of them
    /// drops the entry.
    ///
    /// # Errors
    /// As [`set`](Self::set), and [`CacheError::InvalidTag`] for a bad tag or more than
    /// [`MAX_TAGS`](super::MAX_TAGS).
    pub async fn set_tagged<T: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
        ttl: Duration,
        tags: &[&str],
    ) -> Result<(), CacheError> {
        let json = serde_json::to_vec(value)?;
        self.set_json_tagged(key, Bytes::from(json), ttl, tags)
            .await
    }

    /// [`set_json`](Self::set_json) with tags (see [`set_tagged`](Self::set_tagged)).
    ///
    /// # Errors
    /// As [`set_tagged`](Self::set_tagged).
    pub async fn set_json_tagged(
        &self,
        key: &str,
        json: Bytes,
        ttl: Duration,
        tags: &[&str],
    ) -> Result<(), CacheError> {
        validate_key(key)?;
        super::validate_tags(tags)?;
        validate_ttl(ttl)?;
        if serde_json::from_slice::<serde::de::IgnoredAny>(&json).is_err() {
            return Err(CacheError::InvalidValue);
        }
        self.fail_fast_when_down()?;
        self.send(Set {
            key: key.to_owned(),
            value: json,
            ttl,
            tags: tags.iter().map(|&tag| tag.to_owned()).collect(),
        })
        .await?
    }

    /// Drops every entry written with `tag` before this call, from L2 and from every
    /// instance's L1 (through the invalidation feed), at one Redis command whatever the number
    /// of entries; entries written after it live.
    ///
    /// # Errors
    /// [`CacheError::InvalidTag`]; [`CacheError::Unavailable`] when L2 cannot be written.
    pub async fn invalidate_tag(&self, tag: &str) -> Result<(), CacheError> {
        super::validate_tag(tag)?;
        if let Err(err) = self.fail_fast_when_down() {
            self.inner.l1.drop_tag(tag);
            return Err(err);
        }
        self.send(super::InvalidateTag {
            tag: tag.to_owned(),
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
        if let Err(err) = self.fail_fast_when_down() {
            // As `delete`: what it was asked to drop must not be answered from here.
            self.inner.l1.remove_matching(pattern);
            return Err(err);
        }
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

    /// Reads L2 and fills L1 with a fresh value.
    pub(super) async fn read_l2(&self, key: &str) -> Result<L2Read, CacheError> {
        if !self.inner.store.readable() {
            Stats::bump(&self.inner.stats.l2_errors);
            return Err(self.unavailable());
        }
        match self.inner.read_l2_and_fill(key).await {
            Ok(read) => {
                if matches!(read, L2Read::Fresh { .. }) {
                    Stats::bump(&self.inner.stats.l2_hits);
                }
                Ok(read)
            }
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

    pub(super) async fn send<M>(&self, msg: M) -> Result<M::Result, CacheError>
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
