//! [`CacheHandle::remember`]: a value loaded once on a miss (per process, concurrent callers
//! coalesced), cached in both tiers, degrading to the loader when L2 fails.

use std::{future::Future, time::Duration};

use bytes::Bytes;
use serde::{Serialize, de::DeserializeOwned};

use super::{
    Acquire, CacheError, CacheHandle, Lease, Remembered, Tier, error::validate_key, stats::Stats,
};

impl CacheHandle {
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
                    // A load that ended between this caller's L2 miss and its lease stored its
                    // value in L2 (a flight ends only once that store landed), and L1 may no
                    // longer hold it: the feed reports this process's own writes too, which
                    // clear L1. So L2 once more before loading (one `GET` per real miss): under
                    // load, 500 concurrent cold reads loaded the row twice without it. The
                    // callers waiting on this lease get the value from it: with L1 off, each
                    // would otherwise take the lease in turn and read L2 again.
                    if let Ok(Some(value)) = self.read_l2(key).await {
                        guard.share(value.clone());
                        return Ok(Remembered {
                            value,
                            tier: Tier::L2,
                        });
                    }
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
}
