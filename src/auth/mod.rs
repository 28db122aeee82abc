//! Accounts, JWT access/refresh tokens, sessions and revocation.
//!
//! - Users live in the catalog's SQLite database, owned by [`UsersActor`] on a `SyncArbiter`
//!   thread: argon2id hashing (tens of milliseconds of CPU) never runs on an async worker. An
//!   unknown username is verified against a dummy hash, so it costs what a wrong password costs.
//! - Tokens are HS256 JWTs (the algorithm is pinned, never read from the header) with `sub`,
//!   `iat`, `nbf`, `exp`, `jti`, `sid`, `typ`, `iss`, `aud`; times are checked against the
//!   configured [`Clock`] with a leeway of at most 5 s, and `typ` keeps refresh and access tokens
//!   apart. A refresh token is spent when used (compare-and-swap in one Lua script, or under a
//!   mutex in memory). Presented again within the reuse grace window, it answers its successor
//!   again: the successor's jti is a keyed hash of the spent one and its times are stored, so
//!   every instance signs the same bytes and nothing in Redis is a usable token. After the
//!   window, or two generations back, presenting it revokes its whole session. A session not
//!   refreshed within the idle limit is revoked at its next refresh; every refresh token of a
//!   session expires at login + the refresh lifetime (the absolute limit).
//! - Sessions are Redis hashes `<prefix>session:{user:<uid>}:<sid>` (TTL = refresh lifetime)
//!   indexed per user in `<prefix>user_sessions:{user:<uid>}` and numbered in login order by
//!   `<prefix>session_seq:{user:<uid>}`: one hash tag per user, so login, refresh rotation and
//!   logout touch one slot on a Redis Cluster. The per-user cap (`evict-oldest` or
//!   `reject-new`) goes by that number, never by time. The memory backend keeps the same in
//!   process.
//!
//! # Why revocation is checked without Redis
//! A Redis round trip per request would cost more than the request itself. Each instance keeps
//! a local, exact [view](ViewState) of revocations — denylisted jtis
//! (`<prefix>auth:{revocations}:denylist:<jti>`, expiring at `exp` + leeway, plus the index zset
//! `<prefix>auth:{revocations}:jti`), revoked sessions (`<prefix>auth:{revocations}:sid`) and
//! per-user "revoked before" times (`<prefix>auth:{revocations}:user`) — read under an
//! uncontended `RwLock` from the request's own thread: no actor hop, no I/O. This global record
//! shares one hash tag, and every revocation writes it in one `MULTI` that also `PUBLISH`es it
//! on `<prefix>auth:{revocations}`, before it deletes the sessions in the user's slot: a
//! failure between the two leaves a revoked session in place (refused, expiring), never a
//! deleted session whose tokens still verify. No script builds a key name.
//!
//! # Behavior
//! - A dedicated pub/sub connection (`Client::get_async_pubsub`, its own reconnect loop with
//!   25–500 ms backoff; independent of the command connection and of any other feature's
//!   subscriber) subscribes first, then rebuilds the view from the zsets, then applies events.
//!   When its stream ends or misses its liveness deadline, the view becomes
//!   [`ViewState::Detached`]: it was exact when the feed dropped, and stays trusted for the
//!   liveness deadline (the Redis response timeout) while the subscriber reconnects. Past that
//!   it is [`ViewState::Stale`]: only this instance may be cut off, and the others revoke
//!   through a Redis it cannot hear, so verification asks Redis. After reconnecting it is
//!   [`ViewState::Rebuilding`] until rebuilt.
//! - While the view is not trusted (`Syncing` at start, `Stale`, `Rebuilding`), verification
//!   asks Redis directly; if Redis cannot answer, it fails closed with 503 and `Retry-After`
//!   ([`AuthError::RevocationUnknown`]), never open and never 401. What the view holds is
//!   revoked in every state (revocations only ever add).
//! - Each revocation record lives as long as the longest token it can deny: an access token
//!   (a revoked session is also deleted, so its refresh token rotates nothing).
//! - Login, refresh, logout and session routes need Redis: 503 with `Retry-After` while it is
//!   down.
//! - Limits: a revocation made elsewhere can be honoured here from the feed's loss until the
//!   deadline passes (README "When Redis fails").

mod actor;
#[cfg(test)]
mod bound_tests;
mod client;
mod config;
mod error;
mod extractor;
mod handle;
mod lifecycle;
mod messages;
mod metrics;
mod revocation;
mod sessions;
mod tokens;
pub mod users;
mod verify;

pub use actor::UsersActor;
pub use client::ClientInfo;
pub use config::{
    ACCESS_COOKIE, AuthConfig, DEFAULT_ACCESS_TTL_SECS, DEFAULT_DURABLE_WRITES, DEFAULT_HASH_QUEUE,
    DEFAULT_ISSUER, DEFAULT_LEEWAY_SECS, DEFAULT_MAX_SESSIONS_PER_USER,
    DEFAULT_REFRESH_REUSE_GRACE_SECS, DEFAULT_REFRESH_TTL_SECS, MAX_LEEWAY_SECS,
    MAX_LOGIN_USERNAME_BYTES, MIN_SECRET_LEN, SecretKey, SessionLimitPolicy,
};
pub use error::{AuthError, RejectReason};
pub use extractor::{AuthUser, OptionalAuthUser};
pub use handle::{AuthHandle, PrincipalStatus, SessionStats, TokenPair};
pub use messages::{CreateUser, GetUser, VerifyCredentials};
pub use metrics::AuthCollector;
pub use revocation::ViewState;
pub use sessions::Session;
pub use tokens::{MAX_TOKEN_LEN, Principal, TokenType, UserId};
pub use users::User;

use crate::clock::Clock;
