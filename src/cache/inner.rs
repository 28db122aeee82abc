//! The state the cache handle and actor share, and the invalidation feed that keeps its L1
//! coherent with Redis.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use bytes::Bytes;

use super::{
    CacheConfig, L1Feed,
    envelope::{self, Freshness},
    failsafe::Throttles,
    l1::{L1, Window},
    stats::Stats,
    store::L2Store,
    tags::TokenCache,
};
use crate::connection::{FeedEvent, InvalidationFeed, RedisError, RedisHandle};

pub(crate) struct Inner {
    pub(crate) l1: L1,
    pub(crate) store: Arc<dyn L2Store>,
    pub(crate) stats: Arc<Stats>,
    pub(crate) config: CacheConfig,
    /// Keeps L1 coherent with Redis; stops when the cache is dropped.
    pub(crate) _feed: Option<InvalidationFeed>,
    /// Per key whose loader failed, until when its stale value is served without calling the
    /// loader again, and that value.
    pub(crate) throttles: Throttles,
    /// Keys this process is reloading in the background (eager refresh).
    pub(crate) refreshing: Mutex<HashSet<String>>,
    /// Tag tokens known while the feed is up.
    pub(crate) tokens: Arc<TokenCache>,
}

/// How long a writer waits for the feed to report its own write before it leaves L1 to the
/// next read (the echo takes well under a millisecond on a live feed).
const ECHO_WAIT: Duration = Duration::from_millis(250);

impl Inner {
    /// Whether every tag still has the token an entry recorded: from the tokens this process
    /// knows while the feed is up (no round trip), else from L2. Without a feed (the memory
    /// backend, or L1 off) no token is kept: nothing would report its change.
    async fn tags_current(&self, tags: &[(String, String)]) -> Result<bool, RedisError> {
        let fed = self._feed.is_some() && self.l1.is_live();
        let generation = self.tokens.generation();
        let mut missing = Vec::new();
        for (tag, token) in tags {
            match fed.then(|| self.tokens.get(tag)).flatten() {
                Some(known) if known == *token => {}
                Some(_) => return Ok(false),
                None => missing.push(tag.as_str()),
            }
        }
        if missing.is_empty() {
            return Ok(true);
        }
        let read = self.store.current_tags(&missing).await?;
        let current = tags.iter().all(|(tag, token)| {
            missing
                .iter()
                .zip(&read)
                .find(|(t, _)| **t == tag)
                .is_none_or(|(_, now)| now.as_deref() == Some(token.as_str()))
        });
        if fed {
            self.tokens.keep(
                generation,
                missing
                    .iter()
                    .zip(read)
                    .filter_map(|(tag, token)| Some(((*tag).to_owned(), token?))),
            );
        }
        Ok(current)
    }

    /// Whether `key`'s loader failed less than the throttle period ago.
    pub(crate) fn throttled(&self, key: &str) -> bool {
        self.throttles.throttled(key)
    }

    /// Records a failure of `key`'s loader.
    pub(crate) fn throttle(&self, key: &str) {
        self.throttles.throttle(key, self.config.fail_safe_throttle);
    }

    /// Forgets a failure of `key`'s loader (it answered).
    pub(crate) fn unthrottle(&self, key: &str) {
        self.throttles.forget(key);
    }

    /// Marks `key` as being refreshed; false when it already is.
    pub(crate) fn begin_refresh(&self, key: &str) -> bool {
        let mut refreshing = self
            .refreshing
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if refreshing.contains(key) {
            return false;
        }
        refreshing.insert(key.to_owned())
    }

    /// Ends a refresh begun with [`begin_refresh`](Self::begin_refresh).
    pub(crate) fn end_refresh(&self, key: &str) {
        let mut refreshing = self
            .refreshing
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        refreshing.remove(key);
    }

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
        if let Err(err) = self.read_l2_and_fill(key).await {
            tracing::debug!(error = %err, "cache: refilling L1 after a write failed");
        }
    }

    /// Reads `key` from L2 and fills L1 with it when fresh, under a ticket taken before the
    /// read (a change reported after it keeps the value out of L1); a value `remember` wrote
    /// is kept as the key's last good one, fresh or stale (see `l1/lastgood.rs`).
    pub(crate) async fn read_l2_and_fill(&self, key: &str) -> Result<L2Read, RedisError> {
        let ticket = self.l1.ticket(key);
        let Some((raw, left)) = self.store.get(key, self.l1.enabled()).await? else {
            return Ok(L2Read::Miss);
        };
        let decoded = envelope::decode(raw.clone());
        if !decoded.tags.is_empty() && !self.tags_current(&decoded.tags).await? {
            // A tag was dropped after this entry was written.
            return Ok(L2Read::Dropped { raw });
        }
        let tags: Option<Arc<[String]>> = (!decoded.tags.is_empty())
            .then(|| decoded.tags.iter().map(|(tag, _)| tag.clone()).collect());
        let now = envelope::now_ms();
        // How long ago the value was loaded, and how long it may still be served: the rest of
        // its TTL and fail-safe window, and never past L2's own expiry.
        let window = decoded.meta.map(|meta| {
            let (loaded_ago, left_to_serve) = meta.window(now, self.config.fail_safe_max);
            Window {
                loaded_ago,
                left: left.map_or(left_to_serve, |left| left.min(left_to_serve)),
            }
        });
        if let (Some(window), Some(value)) = (window, &decoded.value) {
            // The fail-safe's fallback for when L2 cannot answer.
            self.l1
                .keep_good(key, value, (window, tags.clone()), ticket);
        }
        let (fresh_left, refresh_in) = match decoded
            .meta
            .map(|meta| meta.freshness(now, self.config.eager_refresh))
        {
            Some(Freshness::Stale { .. }) => {
                return Ok(match (decoded.value, window) {
                    (Some(value), Some(window)) => L2Read::Stale { value, window, raw },
                    _ => L2Read::Miss,
                });
            }
            Some(Freshness::Fresh { left, refresh_in }) => (left, refresh_in),
            None => (None, None),
        };
        let ttl = [left, fresh_left]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(self.config.l1_ttl);
        self.l1
            .fill_refreshing(key, decoded.value.clone(), ttl, (refresh_in, tags), ticket);
        Ok(L2Read::Fresh {
            value: decoded.value,
            refresh: refresh_in.is_some_and(|d| d.is_zero()),
        })
    }
}

/// What an L2 read found.
#[derive(Debug, Clone)]
pub(crate) enum L2Read {
    /// Nothing.
    Miss,
    /// A fresh value (`None`: a negative entry), due for an eager refresh or not.
    Fresh { value: Option<Bytes>, refresh: bool },
    /// An entry written under a tag dropped since: as good as absent; `raw` as stored (a load
    /// may replace it).
    Dropped { raw: Bytes },
    /// A value past its TTL, kept for fail-safe: when it was loaded and how long it may still
    /// be served (`window`); `raw` as stored.
    Stale {
        value: Bytes,
        window: Window,
        raw: Bytes,
    },
}

/// Starts the feed that applies every change under the cache namespace to `l1`.
pub(crate) fn start_feed(
    redis: &RedisHandle,
    config: &CacheConfig,
    l1: &L1,
    stats: &Arc<Stats>,
    tokens: &Arc<TokenCache>,
) -> Option<InvalidationFeed> {
    use std::sync::atomic::Ordering;

    // Bypassed (`L1::fed`) until the feed is armed.
    stats.feed.store(L1Feed::Down.as_u8(), Ordering::Relaxed);
    let namespace = config.namespace();
    let tag_namespace = super::store::tag_namespace(&config.key_prefix);
    let (l1, stats, tokens) = (l1.clone(), Arc::clone(stats), Arc::clone(tokens));
    let listener = {
        let (namespace, tag_namespace) = (namespace.clone(), tag_namespace.clone());
        move |event: FeedEvent| match event {
            FeedEvent::Invalidated(keys) => {
                for key in keys {
                    // Keys outside the namespaces or not UTF-8 were never cached here.
                    if let Some(key) = key.strip_prefix(namespace.as_bytes())
                        && let Ok(key) = std::str::from_utf8(key)
                    {
                        l1.invalidate_reported(key);
                        Stats::bump(&stats.l1_invalidations);
                    } else if let Some(tag) = key.strip_prefix(tag_namespace.as_bytes())
                        && let Ok(tag) = std::str::from_utf8(tag)
                    {
                        // A tag dropped (or its token's life extended): its entries go.
                        tokens.forget(Some(tag));
                        l1.drop_tag(tag);
                        Stats::bump(&stats.l1_invalidations);
                    }
                }
            }
            FeedEvent::FlushedAll => {
                tokens.forget(None);
                l1.invalidate_all_reported();
                Stats::bump(&stats.l1_invalidations);
            }
            FeedEvent::Down => {
                tokens.forget(None);
                l1.set_live(false);
                let was = stats.feed.swap(L1Feed::Down.as_u8(), Ordering::Relaxed);
                if was == L1Feed::Up.as_u8() {
                    Stats::bump(&stats.l1_feed_flushes);
                }
            }
            FeedEvent::Up => {
                tokens.forget(None);
                l1.set_live(true);
                stats.feed.store(L1Feed::Up.as_u8(), Ordering::Relaxed);
            }
        }
    };
    match redis.invalidation_feed(vec![namespace, tag_namespace], listener) {
        Ok(feed) => Some(feed),
        Err(err) => {
            // L1 stays bypassed: correct, only slower.
            tracing::error!(error = %err, "cache: the invalidation feed cannot start; L1 stays bypassed");
            None
        }
    }
}
