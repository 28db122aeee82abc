//! Who may read and publish: the credentials of a request, and the checks
//! [`EventsHandle`] makes with the [`EventsAuth`](super::EventsAuth) plugged into it.

use super::{
    EventsError, EventsHandle,
    auth::Caller,
    store::EventStore,
    subscribe,
    wire::{private_owner, valid_channel},
};

/// Where the credentials of a request came from; at most one is used, in this order:
/// ticket, bearer token, cookie.
#[derive(Debug, Default, Clone)]
#[non_exhaustive]
pub struct Credentials {
    /// `Authorization: Bearer <token>`.
    pub bearer: Option<String>,
    /// The login cookie's value.
    pub cookie: Option<String>,
    /// `?ticket=` from `POST /events/ticket`.
    pub ticket: Option<String>,
}

impl EventsHandle {
    /// Who may publish to `channel` over HTTP: any authenticated user for a public channel, only
    /// its owner for `user:{id}` (server code publishes anywhere through
    /// [`publish_event`](Self::publish_event)).
    ///
    /// # Errors
    /// [`EventsError::InvalidChannel`], [`EventsError::Unauthorized`], [`EventsError::Forbidden`].
    pub async fn authorize_publish(
        &self,
        channel: &str,
        credentials: &Credentials,
    ) -> Result<Caller, EventsError> {
        if !valid_channel(channel) {
            return Err(EventsError::InvalidChannel);
        }
        let principal = self.authenticate(credentials).await?;
        match private_owner(channel) {
            Some(owner) if owner != principal.user_id => Err(EventsError::Forbidden),
            _ => Ok(principal),
        }
    }

    /// Who may read `channel`: anyone for a public channel (`None`), its owner for `user:{id}`.
    ///
    /// # Errors
    /// [`EventsError::InvalidChannel`], [`EventsError::Unauthorized`], [`EventsError::Forbidden`].
    pub async fn authorize_read(
        &self,
        channel: &str,
        credentials: &Credentials,
    ) -> Result<Option<Caller>, EventsError> {
        if !valid_channel(channel) {
            return Err(EventsError::InvalidChannel);
        }
        let Some(owner) = private_owner(channel) else {
            return Ok(None);
        };
        let principal = self.authenticate(credentials).await?;
        if principal.user_id != owner {
            return Err(EventsError::Forbidden);
        }
        Ok(Some(principal))
    }

    /// Who may read every channel of `channels`: `None` when all are public, the caller when
    /// some are private (all of them its own; another user's refuses the whole list).
    ///
    /// # Errors
    /// [`EventsError::InvalidChannel`] and [`EventsError::ChannelCount`] first (the list as
    /// [`subscribe_many`](Self::subscribe_many) takes it), then as
    /// [`authorize_read`](Self::authorize_read).
    pub async fn authorize_read_all<S: AsRef<str>>(
        &self,
        channels: &[S],
        credentials: &Credentials,
    ) -> Result<Option<Caller>, EventsError> {
        subscribe::channel_list(channels)?;
        let mut owners = channels.iter().filter_map(|c| private_owner(c.as_ref()));
        let Some(first) = owners.next() else {
            return Ok(None);
        };
        let principal = self.authenticate(credentials).await?;
        if first != principal.user_id || owners.any(|owner| owner != principal.user_id) {
            return Err(EventsError::Forbidden);
        }
        Ok(Some(principal))
    }

    /// The user behind `credentials` if they hold a valid token, else `None` (anonymous): for
    /// public streams, which need no token, to be announced to presence subscribers.
    pub async fn identify(&self, credentials: &Credentials) -> Option<Caller> {
        if credentials.bearer.is_none()
            && credentials.cookie.is_none()
            && credentials.ticket.is_none()
        {
            return None;
        }
        self.authenticate(credentials).await.ok()
    }

    /// The principal behind `credentials` (a ticket is consumed).
    ///
    /// # Errors
    /// [`EventsError::Unauthorized`]; [`EventsError::Unavailable`] if a ticket cannot be checked.
    pub async fn authenticate(&self, credentials: &Credentials) -> Result<Caller, EventsError> {
        let token = match &credentials.ticket {
            Some(ticket) => redeem_ticket(&*self.inner.store, ticket).await?,
            None => credentials
                .bearer
                .clone()
                .or_else(|| credentials.cookie.clone()),
        };
        let token = token.ok_or(EventsError::Unauthorized)?;
        let auth = self.auth();
        Ok(auth.verify(&token).await?)
    }

    /// Issues a single-use ticket (valid for [`TICKET_TTL`](super::TICKET_TTL)) standing for the
    /// bearer or cookie token in `credentials`.
    ///
    /// # Errors
    /// [`EventsError::Unauthorized`] without a valid token; [`EventsError::Unavailable`].
    pub async fn issue_ticket(&self, credentials: &Credentials) -> Result<String, EventsError> {
        let token = credentials
            .bearer
            .as_deref()
            .or(credentials.cookie.as_deref())
            .ok_or(EventsError::Unauthorized)?;
        let auth = self.auth();
        auth.verify(token).await?;
        issue_ticket(&*self.inner.store, token).await
    }
}

/// Stores `token` under a fresh random ticket; answers the ticket.
async fn issue_ticket(store: &dyn EventStore, token: &str) -> Result<String, EventsError> {
    let mut raw = [0u8; 24];
    getrandom::fill(&mut raw).map_err(|_| EventsError::Internal("no randomness"))?;
    let ticket: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    if !store.put_ticket(&ticket, token).await? {
        return Err(EventsError::Internal("ticket collision"));
    }
    Ok(ticket)
}

/// Takes the token a ticket was issued for; `None` if unknown, used, expired or not a ticket.
async fn redeem_ticket(
    store: &dyn EventStore,
    ticket: &str,
) -> Result<Option<String>, EventsError> {
    if ticket.is_empty() || ticket.len() > 64 || !ticket.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(None);
    }
    store.take_ticket(ticket).await
}
