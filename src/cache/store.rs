//! The L2 tier: Redis, or an in-process stand-in with the same semantics for the memory backend.

use std::time::{Duration, Instant};

use bytes::Bytes;
use moka::{Expiry, sync::Cache};

use super::glob::{Glob, escape};
use crate::redis::{RedisError, RedisHandle};

/// How many keys one `SCAN` step asks for while flushing.
const SCAN_COUNT: usize = 1000;

/// The bytes stored for a negative ("absent") entry. Never valid JSON, so it cannot collide
/// with a real value; Redis readers outside redkit see it as the literal string `!absent`.
pub(crate) const NEGATIVE_MARKER: &[u8] = b"!absent";

/// An L2 read: the stored bytes and how long they have left (`None`: no expiry known).
pub(crate) type L2Value = (Bytes, Option<Duration>);

/// The second tier, shared by every instance when it is Redis.
#[derive(Clone)]
pub(crate) enum Store {
    Memory(MemoryStore),
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

    /// Whether a positive (non-negative) entry exists.
    pub(crate) async fn exists(&self, key: &str) -> Result<bool, RedisError> {
        match self {
            Self::Memory(m) => Ok(m.get(key).is_some_and(|(v, _)| v != NEGATIVE_MARKER)),
            Self::Redis(r) => r.exists(key).await,
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
}

impl RedisStore {
    pub(crate) fn new(redis: RedisHandle, namespace: String) -> Self {
        Self { redis, namespace }
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
        let millis = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.key(key))
            .arg(value.as_ref())
            .arg("PX")
            .arg(millis);
        self.redis.query::<()>(&cmd).await
    }

    async fn delete(&self, key: &str) -> Result<bool, RedisError> {
        let n: u64 = self
            .redis
            .query(redis::cmd("UNLINK").arg(self.key(key)))
            .await?;
        Ok(n > 0)
    }

    async fn exists(&self, key: &str) -> Result<bool, RedisError> {
        // The first byte tells a value from the negative marker without fetching the value;
        // a missing key reads as "" (no JSON value is empty).
        let first: Vec<u8> = self
            .redis
            .query(redis::cmd("GETRANGE").arg(self.key(key)).arg(0).arg(0))
            .await?;
        Ok(matches!(first.first(), Some(&b) if b != NEGATIVE_MARKER[0]))
    }

    async fn flush(&self, glob: &str) -> Result<u64, RedisError> {
        // The namespace is escaped, so the caller's text can only ever extend it: SCAN MATCH
        // anchors at the start of the key, and no key outside the namespace starts with it.
        let pattern = format!("{}{glob}", escape(&self.namespace));
        let mut cursor: u64 = 0;
        let mut deleted = 0;
        loop {
            let mut scan = redis::cmd("SCAN");
            scan.arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(SCAN_COUNT);
            let (next, keys): (u64, Vec<Vec<u8>>) = self.redis.query(&scan).await?;
            // Belt and braces: never delete a key outside the namespace, whatever SCAN says.
            let keys: Vec<_> = keys
                .into_iter()
                .filter(|k| k.starts_with(self.namespace.as_bytes()))
                .collect();
            if !keys.is_empty() {
                let n: u64 = self.redis.query(redis::cmd("UNLINK").arg(&keys)).await?;
                deleted += n;
            }
            if next == 0 {
                return Ok(deleted);
            }
            cursor = next;
        }
    }
}

#[derive(Clone)]
struct MemEntry {
    value: Bytes,
    expires_at: Instant,
}

struct MemExpiry;

impl Expiry<String, MemEntry> for MemExpiry {
    fn expire_after_create(
        &self,
        _key: &String,
        value: &MemEntry,
        now: Instant,
    ) -> Option<Duration> {
        Some(value.expires_at.saturating_duration_since(now))
    }

    fn expire_after_update(
        &self,
        _key: &String,
        value: &MemEntry,
        now: Instant,
        _left: Option<Duration>,
    ) -> Option<Duration> {
        Some(value.expires_at.saturating_duration_since(now))
    }
}

/// L2 of the memory backend: a bounded, expiring map with Redis' semantics, single-instance.
#[derive(Clone)]
pub(crate) struct MemoryStore {
    entries: Cache<String, MemEntry>,
}

impl MemoryStore {
    pub(crate) fn new(max_bytes: u64) -> Self {
        let entries = Cache::builder()
            .max_capacity(max_bytes.max(1))
            .weigher(|k: &String, v: &MemEntry| weight(k.len(), v.value.len()))
            .expire_after(MemExpiry)
            .build();
        Self { entries }
    }

    fn get(&self, key: &str) -> Option<L2Value> {
        let entry = self.entries.get(key)?;
        let left = entry.expires_at.checked_duration_since(Instant::now())?;
        Some((entry.value, Some(left)))
    }

    fn set(&self, key: &str, value: Bytes, ttl: Duration) {
        self.entries.insert(
            key.to_owned(),
            MemEntry {
                value,
                expires_at: Instant::now() + ttl,
            },
        );
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

/// Weight of an entry for moka's byte budget: key, value and a fixed bookkeeping overhead.
pub(crate) fn weight(key_len: usize, value_len: usize) -> u32 {
    u32::try_from(key_len + value_len + 96).unwrap_or(u32::MAX)
}
