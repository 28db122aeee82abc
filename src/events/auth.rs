//! Who may publish and who may read private channels: the [`EventsAuth`] seam, and single-use
//! tickets for clients (browsers' `EventSource`) that cannot send an `Authorization` header.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex, RwLock},
    time::Duration,
};

use super::EventsError;
use crate::{
    clock::{Clock, SystemClock},
    connection::RedisHandle,
};

/// How long a ticket from `POST /events/ticket` stays redeemable.
pub const TICKET_TTL: Duration = Duration::from_secs(60);

/// An authenticated caller of the events routes, as vouched for by an [`EventsAuth`].
///
/// Not auth's `Principal`: that one is auth's typed view of its own
/// JWT claims; this is what any verifier (auth's bridge, [`StaticTokens`], an embedder's own)
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

/// Verifies access tokens for the events routes. The auth feature plugs its JWT verifier in here;
/// [`DenyAll`] is the default and [`StaticTokens`] serves tests and benchmarks.
pub trait EventsAuth: Send + Sync + 'static {
    /// The principal of a valid, unexpired access token; `None` for anything else.
    fn verify(&self, token: &str) -> Option<Caller>;
    /// Whether a principal verified earlier is still acceptable (its session not revoked).
    /// Checked about once a second for every open private stream.
    fn still_valid(&self, principal: &Caller) -> bool {
        let _ = principal;
        true
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
    fn verify(&self, _token: &str) -> Option<Caller> {
        None
    }
}

/// A fixed table of tokens, with session revocation: for tests, benchmarks and development.
#[derive(Debug)]
pub struct StaticTokens {
    tokens: RwLock<HashMap<String, Caller>>,
    revoked: RwLock<HashSet<String>>,
    /// What expiries are checked against.
    clock: Arc<dyn Clock>,
}

impl Default for StaticTokens {
    fn default() -> Self {
        Self {
            tokens: RwLock::default(),
            revoked: RwLock::default(),
            clock: Arc::new(SystemClock),
        }
    }
}

impl StaticTokens {
    /// An empty table, checking expiries against the system clock.
    pub fn new() -> Self {
        Self::default()
    }

    /// Checks expiries against `clock` (the events config's, in a test driving time).
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Accepts `token` as `principal` from now on.
    pub fn insert(&self, token: impl Into<String>, principal: Caller) {
        self.tokens
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(token.into(), principal);
    }

    /// Revokes a session: its tokens stop verifying and its open private streams close.
    pub fn revoke_session(&self, session_id: &str) {
        self.revoked
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(session_id.to_owned());
    }
}

impl EventsAuth for StaticTokens {
    fn verify(&self, token: &str) -> Option<Caller> {
        let principal = self
            .tokens
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(token)
            .cloned()?;
        let now = u64::try_from(self.clock.now_secs()).unwrap_or(0);
        (principal.expires_at > now && self.still_valid(&principal)).then_some(principal)
    }

    fn still_valid(&self, principal: &Caller) -> bool {
        !self
            .revoked
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains(&principal.session_id)
    }
}

/// Where tickets live: Redis (`SET NX PX` / `GETDEL`, so any instance redeems them, once) or
/// this process.
pub(crate) enum Tickets {
    Redis { redis: RedisHandle, prefix: String },
    Memory(Mutex<HashMap<String, (String, tokio::time::Instant)>>),
}

/// A ticket's key: outside `<prefix>events:`, where every channel name (`ticket:…` included) has
/// its stream, so no channel can ever meet a ticket's string.
fn ticket_key(prefix: &str, ticket: &str) -> String {
    format!("{prefix}events-ticket:{ticket}")
}

impl Tickets {
    /// Stores `token` under a fresh random ticket; answers the ticket.
    pub(crate) async fn issue(&self, token: &str) -> Result<String, EventsError> {
        let mut raw = [0u8; 24];
        getrandom::fill(&mut raw).map_err(|_| EventsError::Internal("no randomness"))?;
        let ticket: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        match self {
            Self::Redis { redis, prefix } => {
                let mut cmd = redis::cmd("SET");
                cmd.arg(ticket_key(prefix, &ticket))
                    .arg(token)
                    .arg("NX")
                    .arg("PX")
                    .arg(u64::try_from(TICKET_TTL.as_millis()).unwrap_or(u64::MAX));
                let stored: Option<String> = redis.query(&cmd).await?;
                if stored.is_none() {
                    return Err(EventsError::Internal("ticket collision"));
                }
            }
            Self::Memory(map) => {
                let now = tokio::time::Instant::now();
                let mut map = map
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                map.retain(|_, (_, expires)| *expires > now);
                map.insert(ticket.clone(), (token.to_owned(), now + TICKET_TTL));
            }
        }
        Ok(ticket)
    }

    /// Takes the token a ticket was issued for; `None` if unknown, used or expired.
    pub(crate) async fn redeem(&self, ticket: &str) -> Result<Option<String>, EventsError> {
        if ticket.is_empty() || ticket.len() > 64 || !ticket.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return Ok(None);
        }
        match self {
            Self::Redis { redis, prefix } => {
                let mut cmd = redis::cmd("GETDEL");
                cmd.arg(ticket_key(prefix, ticket));
                Ok(redis.query(&cmd).await?)
            }
            Self::Memory(map) => {
                let now = tokio::time::Instant::now();
                let mut map = map
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                Ok(map
                    .remove(ticket)
                    .filter(|(_, expires)| *expires > now)
                    .map(|(token, _)| token))
            }
        }
    }
}
