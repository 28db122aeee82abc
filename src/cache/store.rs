//! The L2 tier: Redis, or an in-process stand-in with the same semantics for the memory backend.
//!
//! # Fill guard (Redis)
//! A slow load must not write an old value back to L2 over another instance's change. Every
//! write and delete made through redkit also sets the key's *fill-guard marker* to a fresh
//! random token for [`FILL_GUARD_TTL`]; a loader reads the marker before it loads
//! ([`Store::fill_guard`]), and its fill ([`Store::fill`]) is one script that writes the value
//! only if the marker is unchanged and the key still absent (`SET NX`). A load that took longer
//! than half the marker's life does not fill (the marker set after it began could have
//! expired). Markers live outside the cache namespace (so the invalidation feed ignores them),
//! as `<prefix>fillguard:{<tag>}:<key>`, under the same hash tag as the key they guard; a key
//! whose slot no marker can share (a `}` without a hash tag) is never filled into L2 by a load.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use bytes::Bytes;
use moka::sync::Cache;

use super::{
    glob::{Glob, escape},
    l1::{AtDeadline, Deadline},
};
use crate::connection::{RedisError, RedisHandle};

/// How many keys one `SCAN` step asks for while flushing.
const SCAN_COUNT: usize = 1000;

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

/// Sets a key and its fill-guard marker.
const SET_SCRIPT: &str = r"
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[4])
return 1
";

/// Deletes a key and sets its fill-guard marker; answers how many keys were deleted.
const DELETE_SCRIPT: &str = r"
local n = redis.call('UNLINK', KEYS[1])
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
return n
";

/// A load's fill: only while the marker is what the loader saw and the key holds what the
/// loader found before it began (its SHA-1 in `ARGV[4]`; empty: nothing) or nothing at all.
const FILL_SCRIPT: &str = r"
if (redis.call('GET', KEYS[2]) or '') ~= ARGV[3] then return 0 end
local now = redis.call('GET', KEYS[1])
if now and (ARGV[4] == '' or redis.sha1hex(now) ~= ARGV[4]) then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
";

/// A tagged write's token of one tag: the current one (a fresh `ARGV[1]` when there is none),
/// the key's life extended to twice `ARGV[2]` ms when it has less than `ARGV[2]` left.
const TAG_SCRIPT: &str = r"
local t = redis.call('GET', KEYS[1])
if not t then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
  return ARGV[1]
end
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
end
return t
";

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

/// The part of `key` Redis Cluster hashes: its hash tag, or the whole key.
fn slot_part(key: &str) -> &str {
    if let Some(open) = key.find('{')
        && let Some(len) = key[open + 1..].find('}')
        && len > 0
    {
        return &key[open + 1..open + 1 + len];
    }
    key
}

fn millis(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// The second tier, shared by every instance when it is Redis.
#[derive(Clone)]
pub(crate) enum Store {
    Memory(MemoryL2),
    Redis(RedisStore),
}

impl Store {
    /// Whether reads should try this tier now (false while Redis is known to be down).
    pub(crate) fn readable(&self) -> bool {
        match self {
            Self::Memory(_) => true,
            Self::Redis(r) => r.redis.is_up(),
        }
    }

    /// The value and, when `with_ttl` (an L1 will keep it), its remaining life.
    pub(crate) async fn get(
        &self,
        key: &str,
        with_ttl: bool,
    ) -> Result<Option<L2Value>, RedisError> {
        match self {
            Self::Memory(m) => Ok(m.get(key)),
            Self::Redis(r) => r.get(key, with_ttl).await,
        }
    }

    pub(crate) async fn set(
        &self,
        key: &str,
        value: Bytes,
        ttl: Duration,
    ) -> Result<(), RedisError> {
        match self {
            Self::Memory(m) => {
                m.set(key, value, ttl);
                Ok(())
            }
            Self::Redis(r) => r.set(key, value, ttl).await,
        }
    }

    pub(crate) async fn delete(&self, key: &str) -> Result<bool, RedisError> {
        match self {
            Self::Memory(m) => Ok(m.delete(key)),
            Self::Redis(r) => r.delete(key).await,
        }
    }

    /// The guard a load of `key` takes before it begins; `None`: its result must not be written
    /// to L2 (the marker cannot be read now, or the key cannot have one).
    pub(crate) async fn fill_guard(&self, key: &str) -> Option<FillGuard> {
        match self {
            Self::Memory(_) => Some(FillGuard {
                marker: None,
                taken: Instant::now(),
                expect: None,
            }),
            Self::Redis(r) => r.fill_guard(key).await,
        }
    }

    /// Writes a loaded value unless a change since `guard` was taken forbids it; answers
    /// whether it was written.
    pub(crate) async fn fill(
        &self,
        key: &str,
        value: Bytes,
        ttl: Duration,
        guard: &FillGuard,
    ) -> Result<bool, RedisError> {
        match self {
            // One instance: the actor's barrier orders its loads and writes.
            Self::Memory(m) => {
                m.set(key, value, ttl);
                Ok(true)
            }
            Self::Redis(r) => r.fill(key, value, ttl, guard).await,
        }
    }

    /// Whether a positive (non-negative), fresh entry exists; `None` when its first bytes
    /// cannot tell (a tagged entry: read it whole).
    pub(crate) async fn exists(&self, key: &str) -> Result<Option<bool>, RedisError> {
        let head = match self {
            Self::Memory(m) => m.get(key).map(|(v, _)| v),
            Self::Redis(r) => r.head(key).await?,
        };
        Ok(match head {
            Some(head) => super::envelope::holds_fresh_value(&head),
            None => Some(false),
        })
    }

    /// The current token of each of `tags` (created when missing), each token key made to live
    /// at least `ttl` (an entry written under them lives that long).
    pub(crate) async fn tag_tokens(
        &self,
        tags: &[String],
        ttl: Duration,
    ) -> Result<Vec<(String, String)>, RedisError> {
        let life = ttl.saturating_mul(2).min(super::MAX_TTL);
        match self {
            Self::Memory(m) => Ok(tags
                .iter()
                .map(|tag| (tag.clone(), m.tag_token(tag, ttl, life)))
                .collect()),
            Self::Redis(r) => {
                let tokens = futures_util::future::try_join_all(
                    tags.iter().map(|tag| r.tag_token(tag, ttl, life)),
                )
                .await?;
                Ok(tags.iter().cloned().zip(tokens).collect())
            }
        }
    }

    /// Whether every tag still has the token an entry recorded.
    pub(crate) async fn tags_current(&self, tags: &[(String, String)]) -> Result<bool, RedisError> {
        match self {
            Self::Memory(m) => Ok(tags
                .iter()
                .all(|(tag, token)| m.current_tag(tag).as_deref() == Some(token.as_str()))),
            Self::Redis(r) => {
                let now = futures_util::future::try_join_all(
                    tags.iter().map(|(tag, _)| r.current_tag(tag)),
                )
                .await?;
                Ok(tags
                    .iter()
                    .zip(now)
                    .all(|((_, token), now)| now.as_deref() == Some(token.as_str())))
            }
        }
    }

    /// The current token of each tag (Redis only; `None`: none).
    pub(crate) async fn current_tags(
        &self,
        tags: &[String],
    ) -> Result<Vec<(String, Option<String>)>, RedisError> {
        let now = match self {
            Self::Memory(m) => tags.iter().map(|tag| m.current_tag(tag)).collect(),
            Self::Redis(r) => {
                futures_util::future::try_join_all(tags.iter().map(|tag| r.current_tag(tag)))
                    .await?
            }
        };
        Ok(tags.iter().cloned().zip(now).collect())
    }

    /// Gives `tag` a new token (when it has one): every entry written under the old one reads
    /// as absent from now on. One command.
    pub(crate) async fn drop_tag(&self, tag: &str) -> Result<(), RedisError> {
        match self {
            Self::Memory(m) => {
                m.drop_tag(tag);
                Ok(())
            }
            Self::Redis(r) => r.drop_tag(tag).await,
        }
    }

    /// Deletes every entry whose key matches `glob`; answers how many were deleted.
    pub(crate) async fn flush(&self, glob: &str) -> Result<u64, RedisError> {
        match self {
            Self::Memory(m) => Ok(m.flush(glob)),
            Self::Redis(r) => r.flush(glob).await,
        }
    }
}

/// L2 on Redis: every key under `<prefix>cache:`, every write with a TTL.
#[derive(Clone)]
pub(crate) struct RedisStore {
    pub(crate) redis: RedisHandle,
    namespace: String,
    /// `<prefix>fillguard:`.
    guards: String,
    /// `<prefix>cachetag:`.
    tags: String,
    scripts: std::sync::Arc<[redis::Script; 4]>,
}

impl RedisStore {
    pub(crate) fn new(redis: RedisHandle, prefix: &str, namespace: String) -> Self {
        Self {
            redis,
            namespace,
            guards: format!("{prefix}fillguard:"),
            tags: tag_namespace(prefix),
            scripts: std::sync::Arc::new([
                redis::Script::new(SET_SCRIPT),
                redis::Script::new(DELETE_SCRIPT),
                redis::Script::new(FILL_SCRIPT),
                redis::Script::new(TAG_SCRIPT),
            ]),
        }
    }

    /// The fill-guard marker of the whole key `full`, in its hash slot; `None` when no key can
    /// share its slot under the guard prefix.
    fn marker(&self, full: &str) -> Option<String> {
        let part = slot_part(full);
        let marker = format!("{}{{{part}}}:{full}", self.guards);
        (slot_part(&marker) == part).then_some(marker)
    }

    async fn fill_guard(&self, key: &str) -> Option<FillGuard> {
        let marker = self.marker(&self.key(key))?;
        let taken = Instant::now();
        match self
            .redis
            .query::<Option<Vec<u8>>>(redis::cmd("GET").arg(&marker))
            .await
        {
            Ok(token) => Some(FillGuard {
                marker: Some(token.unwrap_or_default()),
                taken,
                expect: None,
            }),
            Err(err) => {
                tracing::debug!(error = %err, "cache: fill guard unreadable; the load will not fill L2");
                None
            }
        }
    }

    async fn fill(
        &self,
        key: &str,
        value: Bytes,
        ttl: Duration,
        guard: &FillGuard,
    ) -> Result<bool, RedisError> {
        let full = self.key(key);
        let (Some(marker), Some(seen)) = (self.marker(&full), guard.marker.as_ref()) else {
            return Ok(false);
        };
        // The marker set by a change after the guard was taken lives FILL_GUARD_TTL: past half
        // of it (a margin for clock rates), its absence proves nothing.
        if guard.taken.elapsed() >= FILL_GUARD_TTL / 2 {
            return Ok(false);
        }
        let mut invocation = self.scripts[2].prepare_invoke();
        invocation
            .key(&full)
            .key(&marker)
            .arg(value.as_ref())
            .arg(millis(ttl))
            .arg(seen.as_slice())
            .arg(guard.expect.as_deref().unwrap_or(""));
        let filled: i64 = self.redis.invoke(&invocation).await?;
        Ok(filled == 1)
    }

    fn key(&self, key: &str) -> String {
        let mut full = String::with_capacity(self.namespace.len() + key.len());
        full.push_str(&self.namespace);
        full.push_str(key);
        full
    }

    async fn get(&self, key: &str, with_ttl: bool) -> Result<Option<L2Value>, RedisError> {
        let full = self.key(key);
        if !with_ttl {
            // No L1 to bound: the value alone, one command.
            let value: Option<Vec<u8>> = self.redis.query(redis::cmd("GET").arg(&full)).await?;
            return Ok(value.map(|v| (Bytes::from(v), None)));
        }
        // One round trip: the value and its remaining life (L1 must not outlive it).
        let mut pipe = redis::pipe();
        pipe.cmd("GET").arg(&full).cmd("PTTL").arg(&full);
        let (value, pttl): (Option<Vec<u8>>, i64) = self.redis.query_pipe(&pipe).await?;
        Ok(match (value, pttl) {
            (None, _) | (_, -2) => None,
            (Some(v), -1) => Some((Bytes::from(v), None)),
            (Some(v), ms) => Some((
                Bytes::from(v),
                Some(Duration::from_millis(ms.max(0).unsigned_abs())),
            )),
        })
    }

    async fn set(&self, key: &str, value: Bytes, ttl: Duration) -> Result<(), RedisError> {
        let full = self.key(key);
        let Some(marker) = self.marker(&full) else {
            // No load ever fills such a key into L2: nothing to guard.
            let mut cmd = redis::cmd("SET");
            cmd.arg(&full)
                .arg(value.as_ref())
                .arg("PX")
                .arg(millis(ttl));
            return self.redis.query::<()>(&cmd).await;
        };
        let mut invocation = self.scripts[0].prepare_invoke();
        invocation
            .key(&full)
            .key(&marker)
            .arg(value.as_ref())
            .arg(millis(ttl))
            .arg(marker_token())
            .arg(millis(FILL_GUARD_TTL));
        self.redis.invoke::<()>(&invocation).await
    }

    async fn delete(&self, key: &str) -> Result<bool, RedisError> {
        let full = self.key(key);
        let n: u64 = match self.marker(&full) {
            Some(marker) => {
                let mut invocation = self.scripts[1].prepare_invoke();
                invocation
                    .key(&full)
                    .key(&marker)
                    .arg(marker_token())
                    .arg(millis(FILL_GUARD_TTL));
                self.redis.invoke(&invocation).await?
            }
            None => self.redis.query(redis::cmd("UNLINK").arg(&full)).await?,
        };
        Ok(n > 0)
    }

    async fn tag_token(
        &self,
        tag: &str,
        ttl: Duration,
        life: Duration,
    ) -> Result<String, RedisError> {
        let mut invocation = self.scripts[3].prepare_invoke();
        invocation
            .key(format!("{}{tag}", self.tags))
            .arg(marker_token())
            .arg(millis(ttl))
            .arg(millis(life));
        self.redis.invoke(&invocation).await
    }

    async fn current_tag(&self, tag: &str) -> Result<Option<String>, RedisError> {
        self.redis
            .query(redis::cmd("GET").arg(format!("{}{tag}", self.tags)))
            .await
    }

    async fn drop_tag(&self, tag: &str) -> Result<(), RedisError> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(format!("{}{tag}", self.tags))
            .arg(marker_token())
            .arg("XX")
            .arg("KEEPTTL");
        self.redis.query::<Option<String>>(&cmd).await.map(drop)
    }

    /// The first bytes of the value (enough for an envelope's header and the first byte of
    /// its JSON), without fetching the whole value; `None`: absent (no JSON value is empty).
    async fn head(&self, key: &str) -> Result<Option<Bytes>, RedisError> {
        let head: Vec<u8> = self
            .redis
            .query(
                redis::cmd("GETRANGE")
                    .arg(self.key(key))
                    .arg(0)
                    .arg(super::envelope::HEAD_BYTES - 1),
            )
            .await?;
        Ok((!head.is_empty()).then(|| Bytes::from(head)))
    }

    async fn flush(&self, glob: &str) -> Result<u64, RedisError> {
        // The namespace is escaped, so the caller's text can only ever extend it: SCAN MATCH
        // anchors at the start of the key, and no key outside the namespace starts with it.
        let pattern = format!("{}{glob}", escape(&self.namespace));
        let mut deleted = 0;
        // On a cluster the layer scans every primary; UNLINK of keys in several slots is split
        // by slot by redis-rs.
        self.redis
            .scan(&pattern, SCAN_COUNT, async |keys| {
                // Belt and braces: never delete a key outside the namespace, whatever SCAN says.
                let keys: Vec<_> = keys
                    .into_iter()
                    .filter(|k| k.starts_with(self.namespace.as_bytes()))
                    .collect();
                if !keys.is_empty() {
                    let n: u64 = self.redis.query(redis::cmd("UNLINK").arg(&keys)).await?;
                    deleted += n;
                }
                Ok(())
            })
            .await?;
        Ok(deleted)
    }
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
pub(crate) struct MemoryL2 {
    entries: Cache<String, MemEntry>,
    tags: Cache<String, MemEntry>,
}

/// Budget of the memory backend's tag tokens (bounded by the entries that name them).
const MEMORY_TAGS_MAX_BYTES: u64 = 16 * 1024 * 1024;

impl MemoryL2 {
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

    fn drop_tag(&self, tag: &str) {
        if let Some(entry) = self.tags.get(tag) {
            self.tags.insert(
                tag.to_owned(),
                MemEntry {
                    value: Bytes::from(marker_token()),
                    expires_at: entry.expires_at,
                },
            );
        }
    }

    fn get(&self, key: &str) -> Option<L2Value> {
        let entry = self.entries.get(key)?;
        let left = entry.expires_at.checked_duration_since(Instant::now())?;
        Some((entry.value, Some(left)))
    }

    fn set(&self, key: &str, value: Bytes, ttl: Duration) {
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

    fn delete(&self, key: &str) -> bool {
        self.entries
            .remove(key)
            .is_some_and(|e| e.expires_at > Instant::now())
    }

    fn flush(&self, glob: &str) -> u64 {
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
        doomed.len() as u64
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Weight of an entry for moka's byte budget: key, value and a fixed bookkeeping overhead.
pub(crate) fn weight(key_len: usize, value_len: usize) -> u32 {
    u32::try_from(key_len + value_len + 96).unwrap_or(u32::MAX)
}
