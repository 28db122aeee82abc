//! Request ids: honour a sane incoming `X-Request-Id`, otherwise mint one; echo it on the response
//! and attach it to every log line of the request through a `tracing` span.

use std::{
    hash::{BuildHasher, Hasher},
    sync::{
        OnceLock,
        atomic::{AtomicU64, Ordering},
    },
};

use actix_web::{FromRequest, HttpRequest, dev::Payload};

tokio::task_local! {
    /// The id of the request whose future is being polled (set by `Observe`).
    static CURRENT: RequestId;
}

/// The id of the request being served on this task, if any (for log formatting).
pub fn current_request_id() -> Option<RequestId> {
    CURRENT.try_with(Clone::clone).ok()
}

/// Runs `fut` with `id` as the current request id.
pub(crate) async fn scope<F: std::future::Future>(id: RequestId, fut: F) -> F::Output {
    CURRENT.scope(id, fut).await
}

/// The header carrying the request id, both ways.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The id of the current request; extract it in a handler or read it from the request extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(std::sync::Arc<str>);

impl RequestId {
    /// An incoming id if it is 1–128 characters of `[A-Za-z0-9._:-]`, else a fresh one.
    pub fn from_header(value: Option<&[u8]>) -> Self {
        match value {
            Some(v)
                if !v.is_empty()
                    && v.len() <= 128
                    && v.iter()
                        .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(b)) =>
            {
                // unwrap: checked to be ASCII just above.
                Self(String::from_utf8(v.to_vec()).unwrap().into())
            }
            _ => Self::generate(),
        }
    }

    /// A fresh id: a random per-process prefix and a counter, 24 hex digits, unique per process
    /// and (with overwhelming likelihood) across processes.
    pub fn generate() -> Self {
        static PREFIX: OnceLock<u64> = OnceLock::new();
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let prefix = *PREFIX.get_or_init(|| {
            // std's RandomState is seeded from the OS RNG: no extra dependency for 64 random bits.
            let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
            hasher.write_u64(u64::from(std::process::id()));
            hasher.finish()
        });
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        Self(format!("{:08x}{n:016x}", prefix >> 32).into())
    }
}

impl RequestId {
    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
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
