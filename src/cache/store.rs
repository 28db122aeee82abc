//! The L2 tier: one trait, [`L2Store`], with its two implementations, chosen once when the
//! cache starts: Redis (`store/redis.rs`, one server or a cluster), or the in-process stand-in
//! below with the same semantics for the memory backend. The cache reaches L2 only on an L1
//! miss and for writes, through `Arc<dyn L2Store>`: each call boxes its future, one allocation
//! beside the round trip it stands for; an L1 hit never reaches this module.
//!
//! # Fill guard (Redis)
//! A slow load must not write an old value back to L2 over another instance's change. Every
//! write and delete made through redkit also sets the key's *fill-guard marker* to a fresh
//! random token for [`FILL_GUARD_TTL`]; a loader reads the marker before it loads
//! ([`L2Store::fill_guard`]), and its fill ([`L2Store::fill`]) is one script that writes the
//! value only if the marker is unchanged and the key still absent (`SET NX`). A load that took
//! longer than half the marker's life does not fill (the marker set after it began could have
//! expired). Markers live outside the cache namespace (so the invalidation feed ignores them),
//! as `<prefix>fillguard:{<tag>}:<key>`, under the same hash tag as the key they guard; a key
//! whose slot no marker can share (a `}` without a hash tag) is never filled into L2 by a load.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use bytes::Bytes;
use futures_util::future::{BoxFuture, LocalBoxFuture, ready};
use moka::sync::Cache;

use super::{
    glob::Glob,
    l1::{AtDeadline, Deadline},
};
use crate::connection::RedisError;

mod redis;

pub(crate) use self::redis::RedisStore;

/// The bytes stored for a negative ("absent") entry. Never valid JSON, so it cannot collide
/// with a real value; Redis readers outside redkit see it as the literal string `!absent`.
pub(crate) const NEGATIVE_MARKER: &[u8] = b"!absent";

/// An L2 read: the stored bytes and how long they have left (`None`: no expiry known).
pub(crate) type L2Value = (Bytes, Option<Duration>);

/// Lifetime of a fill-guard marker: loads slower than half of it do not fill L2.
pub const FILL_GUARD_TTL: Duration = Duration::from_secs(30);

/// What a load's L2 fill is checked against: the key's fill-guard marker as it was before the
/// load began. Opaque; taken by [`CacheHandle::remember`](super::CacheHandle::remember).
#[derive(Debug, Clone)]
pub struct FillGuard {
    /// The marker's token then (empty: none); `None` on the memory backend (no guard needed).
    marker: Option<Vec<u8>>,
    taken: Instant,
    /// The SHA-1 (hex) of the L2 value the loader found before it began (a stale value it may
    /// replace, or a fresh one an eager refresh replaces); `None`: the key was absent.
    expect: Option<String>,
}

impl FillGuard {
    /// Expects L2 to hold `raw` (as read before the load) when the fill lands, or nothing.
    pub(crate) fn expecting(mut self, raw: Option<&[u8]>) -> Self {
        self.expect = raw.map(|raw| sha1_smol::Sha1::from(raw).digest().to_string());
        self
    }
}

/// A fresh marker token: random per process, then a counter (never empty).
pub(crate) fn marker_token() -> String {
    static NONCE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nonce = NONCE.get_or_init(|| {
        let mut bytes = [0u8; 8];
        // Should the OS source ever fail, the process id and the clock still tell processes
        // apart.
        let _ = getrandom::fill(&mut bytes);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .subsec_nanos();
        u64::from_le_bytes(bytes) ^ (u64::from(std::process::id()) << 32) ^ u64::from(nanos)
    });
    format!("{nonce:016x}.{:x}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// What an L2 call answers: its result, or why Redis could not give it.
pub(crate) type L2Future<'a, T> = BoxFuture<'a, Result<T, RedisError>>;

/// The second tier, shared by every instance when it is Redis. Every method but
/// [`readable`](Self::readable) is one round trip (or one script) on Redis.
pub(crate) trait L2Store: Send + Sync + 'static {
    /// Whether reads should try this tier now (false while Redis is known to be down).
    fn readable(&self) -> bool;

    /// The value and, when `with_ttl` (an L1 will keep it), its remaining life.
    fn get<'a>(&'a self, key: &'a str, with_ttl: bool) -> L2Future<'a, Option<L2Value>>;

    /// The first bytes of the value (enough for an envelope's header and the first byte of
    /// its JSON), without fetching the whole value on Redis; `None`: absent.
    fn head<'a>(&'a self, key: &'a str) -> L2Future<'a, Option<Bytes>>;

    /// Writes `value` for `ttl` (and, on Redis, renews the key's fill-guard marker).
    fn set<'a>(&'a self, key: &'a str, value: Bytes, ttl: Duration) -> L2Future<'a, ()>;

    /// Deletes `key` (renewing its marker); answers whether it was there.
    fn delete<'a>(&'a self, key: &'a str) -> L2Future<'a, bool>;

    /// The guard a load of `key` takes before it begins; `None`: its result must not be written
    /// to L2 (the marker cannot be read now, or the key cannot have one).
    fn fill_guard<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Option<FillGuard>>;

    /// Writes a loaded value unless a change since `guard` was taken forbids it; answers
    /// whether it was written.
    fn fill<'a>(
        &'a self,
        key: &'a str,
        value: Bytes,
        ttl: Duration,
        guard: &'a FillGuard,
    ) -> L2Future<'a, bool>;

    /// The current token of each of `tags` (created when missing), each token key made to live
    /// at least `ttl` (an entry written under them lives that long).
    fn tag_tokens<'a>(
        &'a self,
        tags: &'a [String],
        ttl: Duration,
    ) -> L2Future<'a, Vec<(String, String)>>;

    /// The current token of each tag, in order (`None`: none).
    fn current_tags<'a>(&'a self, tags: &'a [&'a str]) -> L2Future<'a, Vec<Option<String>>>;

    /// Gives `tag` a new token (when it has one): every entry written under the old one reads
    /// as absent from now on. One command.
    fn drop_tag<'a>(&'a self, tag: &'a str) -> L2Future<'a, ()>;

    /// Deletes every entry whose key matches `glob`; answers how many were deleted. Not `Send`:
    /// it runs on the cache actor, and the connection layer's `SCAN` callback (an async
    /// closure) cannot be proven `Send`.
    fn flush<'a>(&'a self, glob: &'a str) -> LocalBoxFuture<'a, Result<u64, RedisError>>;
}

/// How long a tag's token key lives when it is renewed for entries living `ttl`.
fn token_life(ttl: Duration) -> Duration {
    ttl.saturating_mul(2).min(super::MAX_TTL)
}

#[derive(Clone)]
struct MemEntry {
    value: Bytes,
    expires_at: Instant,
}

impl Deadline for MemEntry {
    fn expires_at(&self) -> Instant {
        self.expires_at
    }
}

/// The Redis key prefix of tag tokens: `<prefix>cachetag:`.
pub(crate) fn tag_namespace(prefix: &str) -> String {
    format!("{prefix}cachetag:")
}

/// L2 of the memory backend: a bounded, expiring map with Redis' semantics, single-instance;
/// tag tokens in a second one.
#[derive(Clone)]
pub(crate) struct MemoryStore {
    entries: Cache<String, MemEntry>,
    tags: Cache<String, MemEntry>,
}

/// Budget of the memory backend's tag tokens (bounded by the entries that name them).
const MEMORY_TAGS_MAX_BYTES: u64 = 16 * 1024 * 1024;

impl MemoryStore {
    pub(crate) fn new(max_bytes: u64) -> Self {
        let entries = Cache::builder()
            .max_capacity(max_bytes.max(1))
            .weigher(|k: &String, v: &MemEntry| weight(k.len(), v.value.len()))
            .expire_after(AtDeadline)
            .build();
        let tags = Cache::builder()
            .max_capacity(MEMORY_TAGS_MAX_BYTES)
            .weigher(|k: &String, v: &MemEntry| weight(k.len(), v.value.len()))
            .expire_after(AtDeadline)
            .build();
        Self { entries, tags }
    }

    fn tag_token(&self, tag: &str, ttl: Duration, life: Duration) -> String {
        let now = Instant::now();
        let entry = self.tags.get(tag).filter(|e| e.expires_at > now);
        let (token, expires_at) = match entry {
            Some(e) if e.expires_at.saturating_duration_since(now) >= ttl => return text(&e.value),
            Some(e) => (e.value, now.checked_add(life)),
            None => (Bytes::from(marker_token()), now.checked_add(life)),
        };
        // Lives at least as long as any entry (TTLs are bounded by `MAX_TTL`).
        if let Some(expires_at) = expires_at {
            self.tags.insert(
                tag.to_owned(),
                MemEntry {
                    value: token.clone(),
                    expires_at,
                },
            );
        }
        text(&token)
    }

    fn current_tag(&self, tag: &str) -> Option<String> {
        let entry = self.tags.get(tag)?;
        (entry.expires_at > Instant::now()).then(|| text(&entry.value))
    }

    fn read(&self, key: &str) -> Option<L2Value> {
        let entry = self.entries.get(key)?;
        let left = entry.expires_at.checked_duration_since(Instant::now())?;
        Some((entry.value, Some(left)))
    }

    fn write(&self, key: &str, value: Bytes, ttl: Duration) {
        let now = Instant::now();
        // Callers bound TTLs by `MAX_TTL`; should one still not fit this clock, the entry
        // expires at once rather than bring the cache down.
        let Some(expires_at) = now.checked_add(ttl) else {
            self.entries.invalidate(key);
            return;
        };
        self.entries
            .insert(key.to_owned(), MemEntry { value, expires_at });
    }
}

impl L2Store for MemoryStore {
    fn readable(&self) -> bool {
        true
    }

    fn get<'a>(&'a self, key: &'a str, _with_ttl: bool) -> L2Future<'a, Option<L2Value>> {
        Box::pin(ready(Ok(self.read(key))))
    }

    fn head<'a>(&'a self, key: &'a str) -> L2Future<'a, Option<Bytes>> {
        Box::pin(ready(Ok(self.read(key).map(|(value, _)| value))))
    }

    fn set<'a>(&'a self, key: &'a str, value: Bytes, ttl: Duration) -> L2Future<'a, ()> {
        self.write(key, value, ttl);
        Box::pin(ready(Ok(())))
    }

    fn delete<'a>(&'a self, key: &'a str) -> L2Future<'a, bool> {
        let existed = self
            .entries
            .remove(key)
            .is_some_and(|e| e.expires_at > Instant::now());
        Box::pin(ready(Ok(existed)))
    }

    fn fill_guard<'a>(&'a self, _key: &'a str) -> BoxFuture<'a, Option<FillGuard>> {
        Box::pin(ready(Some(FillGuard {
            marker: None,
            taken: Instant::now(),
            expect: None,
        })))
    }

    fn fill<'a>(
        &'a self,
        key: &'a str,
        value: Bytes,
        ttl: Duration,
        _guard: &'a FillGuard,
    ) -> L2Future<'a, bool> {
        // One instance: the actor's barrier orders its loads and writes.
        self.write(key, value, ttl);
        Box::pin(ready(Ok(true)))
    }

    fn tag_tokens<'a>(
        &'a self,
        tags: &'a [String],
        ttl: Duration,
    ) -> L2Future<'a, Vec<(String, String)>> {
        let life = token_life(ttl);
        let tokens = tags
            .iter()
            .map(|tag| (tag.clone(), self.tag_token(tag, ttl, life)))
            .collect();
        Box::pin(ready(Ok(tokens)))
    }

    fn current_tags<'a>(&'a self, tags: &'a [&'a str]) -> L2Future<'a, Vec<Option<String>>> {
        let now = tags.iter().map(|tag| self.current_tag(tag)).collect();
        Box::pin(ready(Ok(now)))
    }

    fn drop_tag<'a>(&'a self, tag: &'a str) -> L2Future<'a, ()> {
        if let Some(entry) = self.tags.get(tag) {
            self.tags.insert(
                tag.to_owned(),
                MemEntry {
                    value: Bytes::from(marker_token()),
                    expires_at: entry.expires_at,
                },
            );
        }
        Box::pin(ready(Ok(())))
    }

    fn flush<'a>(&'a self, glob: &'a str) -> LocalBoxFuture<'a, Result<u64, RedisError>> {
        let now = Instant::now();
        let glob = Glob::new(glob.as_bytes());
        let doomed: Vec<_> = self
            .entries
            .iter()
            .filter(|(k, e)| e.expires_at > now && glob.matches(k.as_bytes()))
            .map(|(k, _)| k)
            .collect();
        for key in &doomed {
            self.entries.invalidate(key.as_str());
        }
        Box::pin(ready(Ok(doomed.len() as u64)))
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Weight of an entry for moka's byte budget: key, value and a fixed bookkeeping overhead.
pub(crate) fn weight(key_len: usize, value_len: usize) -> u32 {
    u32::try_from(key_len + value_len + 96).unwrap_or(u32::MAX)
}
