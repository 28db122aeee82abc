//! Who may publish and who may read private channels: the [`EventsAuth`] seam, and how long the
//! single-use tickets live that stand for a token where a client (a browser's `EventSource`)
//! cannot send an `Authorization` header (issued and redeemed in `access.rs`).

use std::{convert::Infallible, sync::Arc, time::Duration};

use bytes::Bytes;
use futures_util::StreamExt;

/// How long a ticket from `POST /events/ticket` stays redeemable.
pub const TICKET_TTL: Duration = Duration::from_secs(60);

/// An authenticated caller of the events routes, as vouched for by an [`EventsAuth`].
///
/// Not auth's `Principal`: that one is auth's typed view of its own
/// JWT claims; this is what any verifier (auth's bridge, an embedder's own)
/// hands to live events, with the user id as opaque text.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Caller {
    /// The user; owns the private channel `user:{user_id}`.
    pub user_id: String,
    /// The login session the token belongs to (revocation is checked per session).
    pub session_id: String,
    /// When the token expires, in seconds since the Unix epoch.
    pub expires_at: u64,
    /// The token's own id (`jti`), when the verifier has one: lets it re-check revocation.
    pub token_id: String,
    /// When the token was issued, in seconds since the Unix epoch (0 when unknown).
    pub issued_at: i64,
}

impl Caller {
    /// A principal for `user_id` in `session_id`, valid until `expires_at` (Unix seconds).
    pub fn new(user_id: impl Into<String>, session_id: impl Into<String>, expires_at: u64) -> Self {
        Self {
            user_id: user_id.into(),
            session_id: session_id.into(),
            expires_at,
            token_id: String::new(),
            issued_at: 0,
        }
    }

    /// Adds the token's id and issue time.
    #[must_use]
    pub fn with_token(mut self, token_id: impl Into<String>, issued_at: i64) -> Self {
        self.token_id = token_id.into();
        self.issued_at = issued_at;
        self
    }
}

/// Why a verifier refused a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Rejection {
    /// Not a valid, unexpired, unrevoked access token (401).
    Invalid,
    /// Whether the token was revoked cannot be known right now (auth's revocation record is out
    /// of reach): 503 with `Retry-After`, never 401, so that a client keeps its tokens.
    Unknown,
}

/// A future of an [`EventsAuth`] answer.
pub type AuthFuture<'a, T> = futures_util::future::BoxFuture<'a, T>;

/// Verifies access tokens for the events routes. The auth feature plugs its JWT verifier in here
/// (`auth::EventsBridge`); [`DenyAll`] is the default.
pub trait EventsAuth: Send + Sync + 'static {
    /// The principal of a valid, unexpired, unrevoked access token.
    ///
    /// # Errors
    /// [`Rejection::Invalid`] for anything else; [`Rejection::Unknown`] when revocation cannot
    /// be checked right now.
    fn verify<'a>(&'a self, token: &'a str) -> AuthFuture<'a, Result<Caller, Rejection>>;
    /// Whether a principal verified earlier may still be acceptable: false only when it is
    /// known not to be (its session revoked). Checked about once a second for every open
    /// private stream, which closes on false.
    fn still_valid(&self, principal: &Caller) -> bool {
        let _ = principal;
        true
    }
    /// Whether a principal verified earlier is certainly still valid, asking the verifier's
    /// store when the local view cannot tell: checked before each event a private stream
    /// sends, which ends (the client resumes with `Last-Event-ID`) on false.
    fn confirm<'a>(&'a self, principal: &'a Caller) -> AuthFuture<'a, bool> {
        Box::pin(std::future::ready(self.still_valid(principal)))
    }
    /// The name of the login cookie holding an access token.
    fn cookie_name(&self) -> &str {
        "access_token"
    }
}

/// Accepts no token: publishing and private channels are closed until a real verifier is set.
#[derive(Debug, Default, Clone, Copy)]
pub struct DenyAll;

impl EventsAuth for DenyAll {
    fn verify<'a>(&'a self, _token: &'a str) -> AuthFuture<'a, Result<Caller, Rejection>> {
        Box::pin(std::future::ready(Err(Rejection::Invalid)))
    }
}

/// A private stream whose every event is [confirmed](EventsAuth::confirm) for its caller before
/// it is sent: the sweep closes a revoked session's stream within a second, but an event that
/// arrives while the verifier's view cannot tell (its feed down, or rebuilding) would otherwise
/// reach a token revoked meanwhile. Heartbeat comments pass unchecked. Ends at the first event
/// not confirmed (the client resumes with `Last-Event-ID` once it can be checked).
pub(crate) fn confirmed(
    stream: super::EventStream,
    auth: Arc<dyn EventsAuth>,
    caller: Caller,
) -> actix_web::HttpResponse {
    let confirmed = futures_util::stream::unfold(
        (stream, auth, caller),
        |(mut stream, auth, caller)| async move {
            let item: Result<Bytes, Infallible> = stream.next().await?;
            if let Ok(bytes) = &item
                && !bytes.starts_with(b":")
                && !auth.confirm(&caller).await
            {
                tracing::info!("private stream ended: its token could not be confirmed");
                return None;
            }
            Some((item, (stream, auth, caller)))
        },
    );
    super::stream::sse_response(confirmed)
}
