//! Request ids: honour a sane incoming `X-Request-Id`, otherwise mint one; echo it on the response
//! and attach it to every log line of the request through a task-local.

use std::{
    hash::{BuildHasher, Hasher},
    sync::{
        OnceLock,
        atomic::{AtomicU64, Ordering},
    },
};

use actix_web::{FromRequest, HttpRequest, dev::Payload, http::header::HeaderValue};

tokio::task_local! {
    /// The id of the request whose future is being polled (set by `observe`).
    pub(crate) static CURRENT: RequestId;
}

/// The id of the request being served on this task, if any (for log formatting).
pub fn current_request_id() -> Option<RequestId> {
    CURRENT.try_with(Clone::clone).ok()
}

/// The header carrying the request id, both ways.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The id of the current request; extract it in a handler.
///
/// It is held as the header value it is echoed in: cloning and echoing it cost no allocation of
/// their own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(HeaderValue);

/// Whether `v` is an id worth keeping: 1–128 characters of `[A-Za-z0-9._:-]`.
fn acceptable(v: &[u8]) -> bool {
    !v.is_empty()
        && v.len() <= 128
        && v.iter()
            .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(b))
}

/// Length of a minted id: 8 hex digits of process prefix, 16 of counter.
const MINTED_LEN: usize = 24;

/// 32 random bits per process, as 8 hex digits.
fn process_prefix() -> [u8; 8] {
    static PREFIX: OnceLock<u64> = OnceLock::new();
    let prefix = *PREFIX.get_or_init(|| {
        // std's RandomState is seeded from the OS RNG: no extra dependency for 64 random bits.
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u64(u64::from(std::process::id()));
        hasher.finish()
    });
    let mut hex = [0u8; 8];
    put_hex(&mut hex, prefix >> 32);
    hex
}

impl RequestId {
    /// An incoming id if it is 1–128 characters of `[A-Za-z0-9._:-]`, else a fresh one.
    pub fn from_header(value: Option<&[u8]>) -> Self {
        match value {
            // unwrap: checked to be ASCII letters, digits and punctuation.
            Some(v) if acceptable(v) => Self(HeaderValue::from_bytes(v).unwrap()),
            _ => Self::generate(),
        }
    }

    /// The incoming header's id (shared, not copied) if it is acceptable, else a fresh one.
    pub(crate) fn from_header_value(value: Option<&HeaderValue>) -> Self {
        match value {
            Some(v) if acceptable(v.as_bytes()) => Self(v.clone()),
            _ => Self::generate(),
        }
    }

    /// The id as the `X-Request-Id` value that echoes it.
    pub(crate) fn into_header_value(self) -> HeaderValue {
        self.0
    }

    /// A fresh id: a random per-process prefix and a counter, 24 hex digits, unique per process
    /// and (with overwhelming likelihood) across processes; ids increase in the order they are
    /// minted.
    //
    // Plain on purpose: one shared counter and one small copy per id. It was a per-thread mint
    // (counter blocks, ids rendered 256 at a time), for which no figure was recorded; minting
    // is part of the request id's work, and skipping the id altogether moved the `http` bench's
    // L1-hit ratio by about 1 % at most (README, "Why the misses"), inside the bench's
    // run-to-run spread (about 2 %).
    pub fn generate() -> Self {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let mut id = [0u8; MINTED_LEN];
        id[..8].copy_from_slice(&process_prefix());
        put_hex(&mut id[8..], COUNTER.fetch_add(1, Ordering::Relaxed));
        // unwrap: hex digits are valid header bytes.
        Self(HeaderValue::from_bytes(&id).unwrap())
    }
}

impl RequestId {
    /// The id as text.
    pub fn as_str(&self) -> &str {
        // Every id is checked (or made) to be ASCII: `to_str` cannot fail.
        self.0.to_str().unwrap_or_default()
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromRequest for RequestId {
    type Error = std::convert::Infallible;
    type Future = std::future::Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _payload: &mut Payload) -> Self::Future {
        // `observe` runs every request inside its id's task-local scope; outside it (an app
        // without the middleware) each extraction mints a fresh id.
        let _ = req;
        let id = current_request_id().unwrap_or_else(Self::generate);
        std::future::ready(Ok(id))
    }
}

/// Writes the low `4 * out.len()` bits of `value` into `out` as lower-case hex, zero-padded.
fn put_hex(out: &mut [u8], mut value: u64) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for byte in out.iter_mut().rev() {
        *byte = DIGITS[(value & 0xf) as usize];
        value >>= 4;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_ids_are_24_hex_digits_with_one_prefix_and_a_counter() {
        let a = RequestId::generate();
        let b = RequestId::generate();
        for id in [&a, &b] {
            assert_eq!(id.as_str().len(), 24);
            assert!(
                id.as_str()
                    .bytes()
                    .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
            );
        }
        assert_eq!(a.as_str()[..8], b.as_str()[..8]);
        let n = |id: &RequestId| u64::from_str_radix(&id.as_str()[8..], 16).unwrap();
        assert!(n(&b) > n(&a));
    }

    #[test]
    fn ids_minted_on_many_threads_are_distinct() {
        let per_thread = 5000;
        let threads: Vec<_> = (0..4)
            .map(|_| {
                std::thread::spawn(move || {
                    (0..per_thread)
                        .map(|_| RequestId::generate().as_str().to_owned())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut all = std::collections::HashSet::new();
        for thread in threads {
            for id in thread.join().unwrap() {
                assert_eq!(id.len(), MINTED_LEN);
                assert!(all.insert(id), "minted twice");
            }
        }
        assert_eq!(all.len(), 4 * per_thread);
    }

    #[test]
    fn hex_is_zero_padded() {
        let mut out = [0u8; 8];
        put_hex(&mut out, 0xab);
        assert_eq!(&out, b"000000ab");
        put_hex(&mut out, 0x1234_5678_9abc_def0);
        assert_eq!(&out, b"9abcdef0");
    }
}
