//! Who may read and publish: the credentials of a request, the checks [`EventsHandle`] makes
//! with the [`EventsAuth`](super::EventsAuth) plugged into it, and the checked SSE response
//! both stream routes answer ([`EventsHandle::open_sse`]).

use std::{net::IpAddr, sync::Arc};

use super::{
    EventsError, EventsHandle, StreamOptions,
    auth::{Caller, confirmed},
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

/// What an SSE request follows: one channel (single-channel frames, as `GET /events/{channel}`
/// sends them) or a list (each frame naming its channel, as `GET /events`).
#[derive(Debug, Clone, Copy)]
pub enum Follow<'a> {
    /// One channel.
    One(&'a str),
    /// 1 to [`MAX_STREAM_CHANNELS`](super::MAX_STREAM_CHANNELS) names (repeats collapse).
    Many(&'a [String]),
}

/// What an SSE request asks besides its channels, as the events routes read it.
#[derive(Debug, Default, Clone)]
#[non_exhaustive]
pub struct StreamRequest {
    /// The address whose streams are capped together (`None`: counted in the total only).
    pub client: Option<IpAddr>,
    /// The request's token sources.
    pub credentials: Credentials,
    /// Resume after this id (a single channel's event id, or a multi-channel stream's position).
    pub last_event_id: Option<String>,
    /// Whether to send `join` and `leave` frames of the channels' users.
    pub presence: bool,
}

impl EventsHandle {
    /// The SSE response for `follow` (the events routes' one path): a place under the
    /// connection caps first, then the channels are checked and, when any is private, the
    /// caller (another user's refuses the whole request); the caller's client is joined, and
    /// the stream resumes after `last_event_id`. A private stream follows its caller's token
    /// (it closes when the token expires or its session is revoked) and confirms each event
    /// for its caller before it is sent ([`EventsAuth::confirm`](super::EventsAuth::confirm)).
    ///
    /// # Errors
    /// [`EventsError::TooManyConnections`], [`EventsError::ServerFull`],
    /// [`EventsError::InvalidChannel`], [`EventsError::ChannelCount`],
    /// [`EventsError::Unauthorized`], [`EventsError::Forbidden`], [`EventsError::Unavailable`],
    /// [`EventsError::ShuttingDown`].
    pub async fn open_sse(
        &self,
        follow: Follow<'_>,
        request: StreamRequest,
    ) -> Result<actix_web::HttpResponse, EventsError> {
        let slot = self.inner.slots.take(request.client)?;
        let channels = match follow {
            Follow::One(channel) => subscribe::channel_list(&[channel])?,
            Follow::Many(names) => subscribe::channel_list(names)?,
        };
        let caller = self.authorize_list(&channels, &request.credentials).await?;
        // A public stream is announced as whoever a valid token names (anonymous otherwise,
        // never a refusal).
        let user = match &caller {
            Some(caller) => Some(caller.user_id.clone()),
            None => self.identify(&request.credentials).await.map(|c| c.user_id),
        };
        let options = StreamOptions {
            principal: caller.clone(),
            user,
            presence: request.presence,
        };
        let mut stream = self.join(&channels, options, Some(slot)).await?;
        let last_event_id = subscribe::resume_point(request.last_event_id.as_deref());
        match (follow, last_event_id) {
            (Follow::One(channel), Some(last)) => self.resume(&mut stream, channel, last).await,
            (Follow::One(_), None) => {}
            (Follow::Many(_), last) => self.start_many(&mut stream, &channels, last).await,
        }
        Ok(match caller {
            Some(caller) => confirmed(stream, self.auth(), caller),
            None => stream.into_response(),
        })
    }

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
        self.authorize_list(&subscribe::channel_list(channels)?, credentials)
            .await
    }

    /// [`authorize_read_all`](Self::authorize_read_all) of a list already checked.
    async fn authorize_list(
        &self,
        channels: &[Arc<str>],
        credentials: &Credentials,
    ) -> Result<Option<Caller>, EventsError> {
        let mut owners = channels.iter().filter_map(|c| private_owner(c));
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
