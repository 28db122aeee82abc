//! How a loaded value is stored in L2 when it must outlive its TTL (fail-safe): an *envelope*
//! that holds the time it was written and its logical TTL in front of the JSON, so that every
//! instance can tell a fresh value from a stale one (served only when its loader fails).
//!
//! `!rk1\t<written, Unix ms>\t<TTL, ms>[\t<tag>\t<tag token>]...\n<JSON>`
//!
//! A tagged entry (see `tags.rs`) carries the token each of its tags had when it was written:
//! it reads as absent once a tag's token changed (the tag was dropped). Tags hold no control
//! character, so tabs and the newline delimit them.
//!
//! No JSON value starts with `!`, so an envelope is never mistaken for a value, and a value
//! written by another program (plain JSON) reads as it always did: fresh until its Redis TTL.
//! Values written with [`set`](super::CacheHandle::set) stay plain JSON; only `remember`'s loads
//! with fail-safe on are wrapped (their Redis TTL is the TTL plus the fail-safe window).
//! Freshness compares wall clocks across instances: an instance whose clock runs ahead sees
//! entries go stale (and refreshes them) early by as much.

use std::time::{Duration, SystemTime};

use bytes::{BufMut, Bytes, BytesMut};

use super::store::NEGATIVE_MARKER;

/// The first bytes of an envelope.
const MAGIC: &[u8] = b"!rk1\t";

/// Bytes enough for the longest header and the first byte of the JSON after it.
pub(crate) const HEAD_BYTES: usize = 64;

/// Whether a value whose first bytes are `head` is a positive value, fresh now; `None` when
/// the head cannot tell (a tagged envelope, whose tags must be checked, or a header longer than
/// the head).
pub(crate) fn holds_fresh_value(head: &[u8]) -> Option<bool> {
    if head.starts_with(NEGATIVE_MARKER) {
        return Some(false);
    }
    if !head.starts_with(MAGIC) {
        return Some(!head.is_empty());
    }
    let (meta, body) = header(head)?;
    if !tags(head).is_empty() {
        return None;
    }
    Some(
        matches!(meta.freshness(now_ms(), 0.0), Freshness::Fresh { .. })
            && head.get(body).is_some_and(|&b| b != NEGATIVE_MARKER[0]),
    )
}

/// When a value was written and how long it is fresh, in Unix milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Meta {
    written_ms: u64,
    ttl_ms: u64,
}

/// What an L2 value says about its freshness now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Freshness {
    /// Fresh for `left`; due for an eager refresh in `refresh_in` (zero: now; `None`: never).
    Fresh {
        left: Option<Duration>,
        refresh_in: Option<Duration>,
    },
    /// Past its TTL; written `age` ago.
    Stale { age: Duration },
}

/// An L2 value taken apart: the JSON (`None`: a negative entry) and, for an envelope, its
/// freshness and its tags with their tokens.
#[derive(Debug, Clone)]
pub(crate) struct Decoded {
    pub(crate) value: Option<Bytes>,
    pub(crate) meta: Option<Meta>,
    pub(crate) tags: Vec<(String, String)>,
}

/// Milliseconds since the Unix epoch on this machine's clock.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Wraps `json` (fresh for `ttl` from now, written under these tags and tokens) in an
/// envelope.
pub(crate) fn encode(json: &[u8], ttl: Duration, tags: &[(String, String)]) -> Bytes {
    let mut head = format!("{}\t{}", now_ms(), millis(ttl));
    for (tag, token) in tags {
        head.push('\t');
        head.push_str(tag);
        head.push('\t');
        head.push_str(token);
    }
    head.push('\n');
    let mut out = BytesMut::with_capacity(MAGIC.len() + head.len() + json.len());
    out.put_slice(MAGIC);
    out.put_slice(head.as_bytes());
    out.put_slice(json);
    out.freeze()
}

/// Takes an L2 value apart; anything that is not a well-formed envelope is a plain value.
pub(crate) fn decode(raw: Bytes) -> Decoded {
    if raw.as_ref() == NEGATIVE_MARKER {
        return Decoded {
            value: None,
            meta: None,
            tags: Vec::new(),
        };
    }
    if let Some((meta, body)) = header(&raw) {
        let tags = tags(&raw[..body]);
        let value = raw.slice(body..);
        return Decoded {
            value: (value.as_ref() != NEGATIVE_MARKER).then_some(value),
            meta: Some(meta),
            tags,
        };
    }
    Decoded {
        value: Some(raw),
        meta: None,
        tags: Vec::new(),
    }
}

/// The fields of an envelope's header line (without `MAGIC` and the newline).
fn fields(raw: &[u8]) -> Option<(std::str::Split<'_, char>, usize)> {
    let rest = raw.strip_prefix(MAGIC)?;
    let end = rest.iter().position(|&b| b == b'\n')?;
    let line = std::str::from_utf8(&rest[..end]).ok()?;
    Some((line.split('\t'), MAGIC.len() + end + 1))
}

/// The envelope's header and where its JSON begins, if `raw` is an envelope.
pub(crate) fn header(raw: &[u8]) -> Option<(Meta, usize)> {
    let (mut fields, body) = fields(raw)?;
    let meta = Meta {
        written_ms: fields.next()?.parse().ok()?,
        ttl_ms: fields.next()?.parse().ok()?,
    };
    // Tags come in pairs.
    if fields.count() % 2 != 0 {
        return None;
    }
    Some((meta, body))
}

/// The tags and tokens of a well-formed envelope header.
fn tags(raw: &[u8]) -> Vec<(String, String)> {
    let Some((fields, _)) = fields(raw) else {
        return Vec::new();
    };
    let rest: Vec<&str> = fields.skip(2).collect();
    rest.chunks_exact(2)
        .map(|pair| (pair[0].to_owned(), pair[1].to_owned()))
        .collect()
}

impl Meta {
    /// At `now` (Unix ms): how long ago the value was written, and how long it is left to be
    /// served, fresh or stale (the rest of its TTL, then `fail_safe_max`).
    pub(crate) fn window(self, now: u64, fail_safe_max: Duration) -> (Duration, Duration) {
        let until = self
            .written_ms
            .saturating_add(self.ttl_ms)
            .saturating_add(millis(fail_safe_max));
        (
            Duration::from_millis(now.saturating_sub(self.written_ms)),
            Duration::from_millis(until.saturating_sub(now)),
        )
    }

    /// Its freshness at `now` (Unix ms), with eager refresh at `eager` of the TTL (0: off).
    pub(crate) fn freshness(self, now: u64, eager: f64) -> Freshness {
        let fresh_until = self.written_ms.saturating_add(self.ttl_ms);
        if now >= fresh_until {
            return Freshness::Stale {
                age: Duration::from_millis(now.saturating_sub(self.written_ms)),
            };
        }
        let refresh_in = (eager > 0.0).then(|| {
            // A fraction in [0, 1) of a TTL in milliseconds: the cast rounds, it cannot wrap.
            let at = self
                .written_ms
                .saturating_add((self.ttl_ms as f64 * eager) as u64);
            Duration::from_millis(at.saturating_sub(now))
        });
        Freshness::Fresh {
            left: Some(Duration::from_millis(fresh_until - now)),
            refresh_in,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_round_trip_and_plain_values_stay_plain() {
        let raw = encode(br#"{"a":1}"#, Duration::from_secs(10), &[]);
        let decoded = decode(raw);
        assert_eq!(decoded.value.as_deref(), Some(&br#"{"a":1}"#[..]));
        let meta = decoded.meta.unwrap();
        assert_eq!(meta.ttl_ms, 10_000);
        let now = meta.written_ms;
        assert_eq!(
            meta.freshness(now + 1_000, 0.8),
            Freshness::Fresh {
                left: Some(Duration::from_secs(9)),
                refresh_in: Some(Duration::from_secs(7)),
            }
        );
        assert_eq!(
            meta.freshness(now + 10_000, 0.8),
            Freshness::Stale {
                age: Duration::from_secs(10)
            }
        );
        for plain in [&b"null"[..], b"\"!rk1\"", b"!rk1\tx\t1\n1", b"!rk1\t1"] {
            let decoded = decode(Bytes::copy_from_slice(plain));
            assert_eq!(decoded.value.as_deref(), Some(plain));
            assert_eq!(decoded.meta, None);
        }
        assert_eq!(decode(Bytes::from_static(NEGATIVE_MARKER)).value, None);
        let tagged = [
            ("a b".to_owned(), "t1".to_owned()),
            ("c".to_owned(), "t2".to_owned()),
        ];
        let decoded = decode(encode(b"[1]", Duration::from_secs(1), &tagged));
        assert_eq!(decoded.value.as_deref(), Some(&b"[1]"[..]));
        assert_eq!(decoded.tags, tagged);
        assert_eq!(
            holds_fresh_value(&encode(b"1", Duration::from_secs(9), &[])),
            Some(true)
        );
        assert_eq!(
            holds_fresh_value(&encode(b"1", Duration::from_secs(9), &tagged)),
            None
        );
    }
}
