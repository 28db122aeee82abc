//! The state the cache handle and actor share, and the invalidation feed that keeps its L1
//! coherent with Redis.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;

use super::{
    CacheConfig, L1Feed,
    l1::L1,
    stats::Stats,
    store::{NEGATIVE_MARKER, Store},
};
use crate::connection::{FeedEvent, InvalidationFeed, RedisError, RedisHandle};

pub(crate) struct Inner {
    pub(crate) l1: L1,
    pub(crate) store: Store,
    pub(crate) stats: Arc<Stats>,
    pub(crate) config: CacheConfig,
    /// Keeps L1 coherent with Redis; stops when the cache is dropped.
    pub(crate) _feed: Option<InvalidationFeed>,
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
        if let Err(err) = self.read_l2_and_fill(key).await {
            tracing::debug!(error = %err, "cache: refilling L1 after a write failed");
        }
    }

    /// Reads `key` from L2 and fills L1 with it, under a ticket taken before the read (a change
    /// reported after it keeps the value out of L1). `Ok(None)`: a miss; `Ok(Some(None))`: a
    /// negative entry.
    pub(crate) async fn read_l2_and_fill(
        &self,
        key: &str,
    ) -> Result<Option<Option<Bytes>>, RedisError> {
        let ticket = self.l1.ticket(key);
        let Some((bytes, left)) = self.store.get(key, self.l1.enabled()).await? else {
            return Ok(None);
        };
        let value = (bytes.as_ref() != NEGATIVE_MARKER).then_some(bytes);
        let ttl = left.unwrap_or(self.config.l1_ttl());
        self.l1.fill(key, value.clone(), ttl, ticket);
        Ok(Some(value))
    }
}

/// Starts the feed that applies every change under the cache namespace to `l1`.
pub(crate) fn start_feed(
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
