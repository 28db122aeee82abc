//! L2 on Redis, one server or a cluster: every key under `<prefix>cache:`, every write with a
//! TTL, and the fill-guard scripts (see the [store docs](super)). A cluster differs only in
//! what the connection layer does for it: `SCAN` walks every primary, and keys of several
//! slots are split by redis-rs.

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::future::{BoxFuture, LocalBoxFuture, try_join_all};

use super::{FILL_GUARD_TTL, FillGuard, L2Future, L2Store, L2Value, marker_token, tag_namespace};
use crate::{
    cache::{envelope, glob::escape},
    connection::{RedisError, RedisHandle},
};

/// How many keys one `SCAN` step asks for while flushing.
const SCAN_COUNT: usize = 1000;

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

/// L2 on Redis: every key under `<prefix>cache:`, every write with a TTL.
pub(crate) struct RedisStore {
    redis: RedisHandle,
    namespace: String,
    /// `<prefix>fillguard:`.
    guards: String,
    /// `<prefix>cachetag:`.
    tags: String,
    scripts: [redis::Script; 4],
}

impl RedisStore {
    pub(crate) fn new(redis: RedisHandle, prefix: &str, namespace: String) -> Self {
        Self {
            redis,
            namespace,
            guards: format!("{prefix}fillguard:"),
            tags: tag_namespace(prefix),
            scripts: [
                redis::Script::new(SET_SCRIPT),
                redis::Script::new(DELETE_SCRIPT),
                redis::Script::new(FILL_SCRIPT),
                redis::Script::new(TAG_SCRIPT),
            ],
        }
    }

    /// The fill-guard marker of the whole key `full`, in its hash slot; `None` when no key can
    /// share its slot under the guard prefix.
    fn marker(&self, full: &str) -> Option<String> {
        let part = slot_part(full);
        let marker = format!("{}{{{part}}}:{full}", self.guards);
        (slot_part(&marker) == part).then_some(marker)
    }

    fn key(&self, key: &str) -> String {
        let mut full = String::with_capacity(self.namespace.len() + key.len());
        full.push_str(&self.namespace);
        full.push_str(key);
        full
    }

    fn tag_key(&self, tag: &str) -> String {
        format!("{}{tag}", self.tags)
    }

    async fn tag_token(
        &self,
        tag: &str,
        ttl: Duration,
        life: Duration,
    ) -> Result<String, RedisError> {
        let mut invocation = self.scripts[3].prepare_invoke();
        invocation
            .key(self.tag_key(tag))
            .arg(marker_token())
            .arg(millis(ttl))
            .arg(millis(life));
        self.redis.invoke(&invocation).await
    }

    async fn current_tag(&self, tag: &str) -> Result<Option<String>, RedisError> {
        self.redis
            .query(redis::cmd("GET").arg(self.tag_key(tag)))
            .await
    }
}

impl L2Store for RedisStore {
    fn readable(&self) -> bool {
        self.redis.is_up()
    }

    fn get<'a>(&'a self, key: &'a str, with_ttl: bool) -> L2Future<'a, Option<L2Value>> {
        Box::pin(async move {
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
        })
    }

    fn head<'a>(&'a self, key: &'a str) -> L2Future<'a, Option<Bytes>> {
        Box::pin(async move {
            let head: Vec<u8> = self
                .redis
                .query(
                    redis::cmd("GETRANGE")
                        .arg(self.key(key))
                        .arg(0)
                        .arg(envelope::HEAD_BYTES - 1),
                )
                .await?;
            // No JSON value is empty: an empty range is an absent key.
            Ok((!head.is_empty()).then(|| Bytes::from(head)))
        })
    }

    fn set<'a>(&'a self, key: &'a str, value: Bytes, ttl: Duration) -> L2Future<'a, ()> {
        Box::pin(async move {
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
        })
    }

    fn delete<'a>(&'a self, key: &'a str) -> L2Future<'a, bool> {
        Box::pin(async move {
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
        })
    }

    fn fill_guard<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Option<FillGuard>> {
        Box::pin(async move {
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
        })
    }

    fn fill<'a>(
        &'a self,
        key: &'a str,
        value: Bytes,
        ttl: Duration,
        guard: &'a FillGuard,
    ) -> L2Future<'a, bool> {
        Box::pin(async move {
            let full = self.key(key);
            let (Some(marker), Some(seen)) = (self.marker(&full), guard.marker.as_ref()) else {
                return Ok(false);
            };
            // The marker set by a change after the guard was taken lives FILL_GUARD_TTL: past
            // half of it (a margin for clock rates), its absence proves nothing.
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
        })
    }

    fn tag_tokens<'a>(
        &'a self,
        tags: &'a [String],
        ttl: Duration,
    ) -> L2Future<'a, Vec<(String, String)>> {
        Box::pin(async move {
            let life = super::token_life(ttl);
            let tokens =
                try_join_all(tags.iter().map(|tag| self.tag_token(tag, ttl, life))).await?;
            Ok(tags.iter().cloned().zip(tokens).collect())
        })
    }

    fn current_tags<'a>(&'a self, tags: &'a [&'a str]) -> L2Future<'a, Vec<Option<String>>> {
        Box::pin(try_join_all(tags.iter().map(|tag| self.current_tag(tag))))
    }

    fn drop_tag<'a>(&'a self, tag: &'a str) -> L2Future<'a, ()> {
        Box::pin(async move {
            let mut cmd = redis::cmd("SET");
            cmd.arg(self.tag_key(tag))
                .arg(marker_token())
                .arg("XX")
                .arg("KEEPTTL");
            self.redis.query::<Option<String>>(&cmd).await.map(drop)
        })
    }

    fn flush<'a>(&'a self, glob: &'a str) -> LocalBoxFuture<'a, Result<u64, RedisError>> {
        Box::pin(async move {
            // The namespace is escaped, so the caller's text can only ever extend it: SCAN
            // MATCH anchors at the start of the key, and no key outside the namespace starts
            // with it.
            let pattern = format!("{}{glob}", escape(&self.namespace));
            let mut deleted = 0;
            // On a cluster the layer scans every primary; UNLINK of keys in several slots is
            // split by slot by redis-rs.
            self.redis
                .scan(&pattern, SCAN_COUNT, async |keys| {
                    // Belt and braces: never delete a key outside the namespace, whatever SCAN
                    // says.
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
        })
    }
}
