//! What a lookup answers: the value and the [`Tier`] that held it.

use bytes::Bytes;

/// Which tier answered a lookup; sent to HTTP clients as `X-Cache`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Tier {
    /// The in-process tier.
    L1,
    /// The shared tier (Redis, or the memory backend's store).
    L2,
    /// Neither: the value was loaded (or is absent).
    Miss,
    /// L2 held it past its TTL, and its loader failed or was too slow (fail-safe).
    Stale,
}

impl Tier {
    /// The `X-Cache` header value: `HIT-L1`, `HIT-L2`, `MISS` or `STALE`.
    pub fn header_value(self) -> &'static str {
        match self {
            Self::L1 => "HIT-L1",
            Self::L2 => "HIT-L2",
            Self::Miss => "MISS",
            Self::Stale => "STALE",
        }
    }
}

/// A raw cache hit: the stored JSON bytes and the tier that held them.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Hit {
    /// The JSON bytes, exactly as stored.
    pub json: Bytes,
    /// Where they came from.
    pub tier: Tier,
}

/// The result of [`CacheHandle::remember`](super::CacheHandle::remember): the value (`None`: the source has none, possibly
/// remembered as a negative entry) and where it came from.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Remembered<T> {
    /// The value, or `None` when the loader found nothing.
    pub value: Option<T>,
    /// Which tier answered, or [`Tier::Miss`] when it was loaded.
    pub tier: Tier,
    /// For a [`Tier::Stale`] answer, how long ago the value was loaded (HTTP `Age`).
    pub age: Option<std::time::Duration>,
}
