use std::time::Duration;

use actix::{Addr, Message};
use bytes::Bytes;
use tokio::sync::oneshot;

use super::{CacheActor, CacheError, FillGuard};

/// Stores JSON `value` under `key` for `ttl` in L2, then L1; answers once L2 holds it.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), CacheError>")]
pub struct Set {
    /// The cache key (without the namespace).
    pub key: String,
    /// The JSON bytes.
    pub value: Bytes,
    /// Time to live in L2 (L1 keeps it at most this long).
    pub ttl: Duration,
    /// Tags to write it with (checked: see [`validate_tags`](super::validate_tags)).
    pub tags: Vec<String>,
}

/// Drops every entry written with `tag` before this message, from both tiers (and, through the
/// invalidation feed, from every instance's L1).
#[derive(Debug, Message)]
#[rtype(result = "Result<(), CacheError>")]
pub struct InvalidateTag {
    /// The tag.
    pub tag: String,
}

/// Removes `key` from both tiers; answers whether L2 held it.
#[derive(Debug, Message)]
#[rtype(result = "Result<bool, CacheError>")]
pub struct Delete {
    /// The cache key (without the namespace).
    pub key: String,
}

/// Removes every key matching the glob `pattern` inside the cache namespace, from both tiers;
/// answers how many L2 held. `"*"` empties the namespace.
#[derive(Debug, Message)]
#[rtype(result = "Result<u64, CacheError>")]
pub struct FlushPattern {
    /// A Redis glob applied to keys without the namespace.
    pub pattern: String,
}

/// Asks to load a cold `key`: answers whether the caller loads it, waits for a load already
/// under way, or can use a value that landed meanwhile (single-flight).
#[derive(Debug, Message)]
#[rtype(result = "Lease")]
pub struct Acquire {
    /// The cache key (without the namespace).
    pub key: String,
}

/// Asks to reload `key` in the background (eager refresh): answers a guard when no load of the
/// key is under way in this process, `None` otherwise.
#[derive(Debug, Message)]
#[rtype(result = "Option<LoadGuard>")]
pub struct Refresh {
    /// The cache key (without the namespace).
    pub key: String,
}

/// Ends a load begun with [`Acquire`]: stores the result (unless a write made it stale) and
/// wakes every waiter. `outcome: None` means the load failed or was abandoned.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Release {
    /// The cache key (without the namespace).
    pub key: String,
    /// The loaded JSON (`Some(None)`: the source has no value) and its TTL.
    pub outcome: Option<(Option<Bytes>, Duration)>,
    /// Dropped once the actor has handled the release (L1 filled): a sender waits on its
    /// receiver. The message itself is queued at once (`do_send`), never held in a future
    /// that a cancelled caller could drop with it.
    pub handled: Option<oneshot::Sender<()>>,
    /// The L2 guard taken before the load began; `None`: the result is not written to L2.
    pub fill: Option<FillGuard>,
    /// The value was found in the cache (a load that ended just before this one began stored
    /// it), not loaded, or must not be cached (its tags could not be read): the waiters get
    /// it, nothing is stored.
    pub cached: bool,
    /// The tags of the value and their tokens, read before the load began.
    pub tags: Vec<(String, String)>,
}

/// The answer to [`Acquire`].
#[derive(Debug)]
#[non_exhaustive]
pub enum Lease {
    /// Run the loader, then report through the guard (dropping it unreported wakes waiters to retry).
    Leader(LoadGuard),
    /// Another caller is loading: wait for its result (`None`: it failed, acquire again).
    Follower(oneshot::Receiver<Option<Option<Bytes>>>),
    /// A value (or a negative entry) landed in this process meanwhile (L1, or a load just done).
    Ready(Option<Bytes>),
}

/// Held by the caller that loads a key; tells the actor how the load ended, even on cancellation.
#[derive(Debug)]
pub struct LoadGuard {
    pub(super) key: String,
    pub(super) addr: Addr<CacheActor>,
    pub(super) armed: bool,
    /// Taken by the leader before it runs its loader.
    pub(super) fill: Option<FillGuard>,
    /// The tags (and their tokens) the leader read before it runs its loader.
    pub(super) tags: Vec<(String, String)>,
    /// False: the load answers its callers and caches nothing.
    pub(super) store: bool,
}

impl LoadGuard {
    /// Reports the loaded value (`None`: the source has none) and its TTL, and waits until the
    /// actor has put it in L1, so the caller's next read in this process is a hit.
    pub async fn complete(mut self, value: Option<Bytes>, ttl: Duration) {
        let (handled, done) = oneshot::channel();
        let store = self.store;
        self.release(Some((value, ttl)), Some(handled), !store);
        // Resolves when the actor drops the message (handled, or the actor is gone).
        let _ = done.await;
    }

    /// Hands `value`, found in the cache rather than loaded, to every caller waiting on this
    /// load (they would otherwise each take the lease in turn and read the cache again).
    pub fn share(mut self, value: Option<Bytes>) {
        self.release(Some((value, Duration::ZERO)), None, true);
    }

    /// Ends the load once. Queued at once (`do_send`): `send` would hold the message in its
    /// future while the mailbox is full, and a cancelled caller would lose it, leaving every
    /// follower of the key waiting.
    fn release(
        &mut self,
        outcome: Option<(Option<Bytes>, Duration)>,
        handled: Option<oneshot::Sender<()>>,
        cached: bool,
    ) {
        self.armed = false;
        self.addr.do_send(Release {
            key: std::mem::take(&mut self.key),
            outcome,
            handled,
            fill: self.fill.take(),
            cached,
            tags: std::mem::take(&mut self.tags),
        });
    }
}

impl Drop for LoadGuard {
    fn drop(&mut self) {
        if self.armed {
            self.release(None, None, false);
        }
    }
}
