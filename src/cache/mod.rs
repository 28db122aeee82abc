//! The two-tier cache: moka in this process (L1) in front of Redis (L2).
//!
//! - **L1** is bounded by bytes (a weigher over key and value sizes) and gives each entry its own
//!   TTL, never longer than what the entry has left in L2, nor than the configured L1 TTL.
//! - **Coherence** (Redis): an invalidation feed (see [`crate::connection::feed`]) reports every
//!   change to a key under `<prefix>cache:`, by any instance or any other Redis client; L1 drops
//!   the key. While the feed is down or cannot be shown alive, L1 is flushed and bypassed. Fills
//!   carry an epoch ticket so an overtaken load never stays in L1, and loads' L2 fills are
//!   guarded by a per-key marker (see the README's "Consistency" section for what is and is not
//!   guaranteed).
//! - **L2** is Redis: values as JSON, every key written with a TTL, all under `<prefix>cache:`.
//!   Without Redis, an in-process store with the same semantics stands in (single instance).
//! - A cached JSON `null`, `[]`, `0` or `""` is a hit. `remember` caches "absent" as a negative
//!   entry with its own short TTL, and runs the loader once per process for concurrent cold calls.
//!
//! # Where the work happens
//! Reads run in the caller's task, on the worker's own thread. An L1 hit is, most of the time, a
//! lookup in that thread's *front* (a thread-local map of recently read entries, served only while
//! the key's stripe generation, an atomic load, is unchanged); a front miss, and one hit in 64,
//! is a moka `get` instead (hashing, an epoch pin, the read recorded for its eviction policy): see
//! `l1.rs`. Neither takes a lock. An L2 read is one pipelined round trip over the shared
//! multiplexed connection.
//! A message to the actor on every read would cost about a third of an L1 hit's throughput
//! (`benches/http.rs` measures the path as it is). Writes, loads and invalidations go through the
//! [`CacheActor`], which orders them (see its docs) and is the single place invalidation happens.
//!
//! # Behavior when Redis fails
//! The feed is lost with Redis, so L1 is flushed and bypassed: reads degrade to the loader
//! (logged, counted in [`CacheStats::l2_errors`]); a plain [`get`](CacheHandle::get) fails with
//! [`CacheError::Unavailable`] rather than guess. Writes fail fast with
//! [`CacheError::Unavailable`] (HTTP 503) and drop the key from L1. Without Redis (the memory
//! backend) there is no feed and L1 always serves.

mod actor;
mod cached;
mod config;
mod envelope;
mod error;
mod failsafe;
mod glob;
mod handle;
mod inner;
mod l1;
mod messages;
mod metrics;
mod remember;
mod response;
mod stats;
mod store;
mod tags;
mod tier;

pub use actor::CacheActor;
pub use cached::{cached, cached_with_key, key_for};
pub use config::{
    CacheConfig, DEFAULT_CACHE_MAX_TTL_SECS, DEFAULT_CACHE_MAX_VALUE_BYTES, DEFAULT_CACHE_TTL_SECS,
    DEFAULT_EAGER_REFRESH, DEFAULT_FAIL_SAFE_MAX_SECS, DEFAULT_FAIL_SAFE_THROTTLE_SECS,
    DEFAULT_L1_MAX_BYTES, DEFAULT_L1_TTL_SECS, DEFAULT_LOADER_HARD_TIMEOUT_MS,
    DEFAULT_LOADER_SOFT_TIMEOUT_MS, DEFAULT_MEMORY_L2_MAX_BYTES, DEFAULT_NEGATIVE_TTL_SECS,
    MAX_TTL,
};
pub use error::{CacheError, MAX_KEY_BYTES, validate_key};
pub use glob::{Glob, MAX_PATTERN_CHARS, escape as escape_glob, glob_match, validate_pattern};
pub use handle::CacheHandle;
pub use messages::{
    Acquire, Delete, FlushPattern, InvalidateTag, Lease, LoadGuard, Refresh, Release, Set,
};
pub use metrics::CacheCollector;
pub use response::X_CACHE;
#[cfg(feature = "server")]
pub(crate) use response::{cached_json, with_tier};
pub use stats::{CacheStats, L1Feed};
pub use store::{FILL_GUARD_TTL, FillGuard};
pub use tags::{MAX_TAG_CHARS, MAX_TAGS, validate_tag, validate_tags};
pub use tier::{Hit, Remembered, Tier};
