use std::sync::{Arc, RwLock};

use actix::{Actor, Addr};
use bytes::Bytes;
use serde::Serialize;

use super::{
    EventsActor, EventsConfig, EventsError, Join, Left, Shutdown,
    auth::{Caller, DenyAll, EventsAuth, Tickets},
    history::{History, Replay},
    hub::{EventStream, Hub, OnLeave},
    wire::{
        DEFAULT_EVENT_TYPE, EventId, encode_control, encode_retry, private_owner, valid_channel,
        valid_event_type,
    },
};
use crate::connection::RedisHandle;

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

/// `GET /events/{channel}/info`.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq, utoipa::ToSchema)]
#[non_exhaustive]
pub struct ChannelInfo {
    /// Clients of this process subscribed to the channel.
    pub subscribers: usize,
    /// Events in the channel's history.
    pub history: u64,
}

/// A cloneable handle to live events: publish, subscribe, inspect. See the [module docs](super).
#[derive(Clone)]
pub struct EventsHandle {
    inner: Arc<Inner>,
}

struct Inner {
    hub: Arc<Hub>,
    history: History,
    tickets: Tickets,
    auth: Arc<RwLock<Arc<dyn EventsAuth>>>,
    addr: Addr<EventsActor>,
    redis: Option<RedisHandle>,
    on_leave: Arc<OnLeave>,
    retry_ms: u64,
    max_event_bytes: usize,
    max_replay: usize,
    slots: Arc<super::slots::Slots>,
}

impl std::fmt::Debug for EventsHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventsHandle")
            .field("redis", &self.inner.redis.is_some())
            .finish_non_exhaustive()
    }
}

impl EventsHandle {
    /// Starts the events actor on the current actix system, with the dedicated subscriber
    /// connection when `redis` is given (lazy: never waits for Redis). Publishing and private
    /// channels accept no token until [`set_auth`](Self::set_auth) is called.
    ///
    /// # Errors
    /// [`EventsError::Config`] when [`EventsConfig::validate`] refuses `config`,
    /// [`EventsError::Unavailable`] when the Redis settings are unusable (not when Redis is down).
    pub fn start(config: &EventsConfig, redis: Option<RedisHandle>) -> Result<Self, EventsError> {
        config.validate()?;
        let hub = Arc::new(Hub::new(config.queue_size, config.clock.clone()));
        let auth: Arc<RwLock<Arc<dyn EventsAuth>>> = Arc::new(RwLock::new(Arc::new(DenyAll)));
        let actor = EventsActor::new(config, redis.as_ref(), hub.clone(), auth.clone())?;
        let addr = actor.start();
        let (history, tickets, redis) = match redis {
            Some(handle) => (
                History::redis(
                    handle.clone(),
                    &config.key_prefix,
                    config.history_len,
                    config.stream_ttl,
                ),
                Tickets::Redis {
                    redis: handle.clone(),
                    prefix: config.key_prefix.clone(),
                },
                Some(handle),
            ),
            None => (
                History::memory(config.history_len, config.stream_ttl),
                Tickets::Memory(std::sync::Mutex::default()),
                None,
            ),
        };
        let on_leave: Arc<OnLeave> = {
            let addr = addr.clone();
            Arc::new(Box::new(move |channel: &str, last: bool| {
                if last {
                    addr.do_send(Left {
                        channel: channel.to_owned(),
                    });
                }
            }))
        };
        Ok(Self {
            inner: Arc::new(Inner {
                hub,
                history,
                tickets,
                auth,
                addr,
                redis,
                on_leave,
                retry_ms: u64::try_from(config.retry.as_millis()).unwrap_or(u64::MAX),
                max_event_bytes: config.max_event_bytes,
                max_replay: config.max_replay,
                slots: super::slots::Slots::new(
                    config.max_connections,
                    config.max_connections_per_ip,
                ),
            }),
        })
    }

    /// Replaces the token verifier (the auth feature plugs its JWT verifier in here).
    pub fn set_auth(&self, auth: Arc<dyn EventsAuth>) {
        *self
            .inner
            .auth
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = auth;
    }

    /// The token verifier in use.
    pub fn auth(&self) -> Arc<dyn EventsAuth> {
        self.inner
            .auth
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The actor's address, for those who want raw messages.
    pub fn addr(&self) -> &Addr<EventsActor> {
        &self.inner.addr
    }

    /// Publishes `data` as a `message` event on `channel`; answers its id.
    ///
    /// # Errors
    /// [`EventsError::InvalidChannel`], or [`EventsError::Unavailable`] when Redis is down.
    pub async fn publish(
        &self,
        channel: &str,
        data: &serde_json::Value,
    ) -> Result<EventId, EventsError> {
        self.publish_event(channel, DEFAULT_EVENT_TYPE, data).await
    }

    /// Publishes `data` as an event of type `kind` on `channel`: appended to history, delivered
    /// to every subscriber of every instance. The JSON is written compactly, on one line.
    ///
    /// # Errors
    /// [`EventsError::InvalidChannel`], [`EventsError::InvalidEventType`], or
    /// [`EventsError::Unavailable`] when Redis is down.
    pub async fn publish_event(
        &self,
        channel: &str,
        kind: &str,
        data: &serde_json::Value,
    ) -> Result<EventId, EventsError> {
        if !valid_channel(channel) {
            return Err(EventsError::InvalidChannel);
        }
        if !valid_event_type(kind) {
            return Err(EventsError::InvalidEventType);
        }
        // Compact JSON escapes every line break inside strings: the data is one line.
        let data = data.to_string();
        if data.len() > self.inner.max_event_bytes {
            return Err(EventsError::TooLarge(self.inner.max_event_bytes));
        }
        let id = self
            .inner
            .history
            .publish(&self.inner.hub, channel, kind, &data)
            .await?;
        self.inner
            .hub
            .counters
            .published
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(id)
    }

    /// Counters since start: connected clients, events published and delivered, slow consumers
    /// cut, and resyncs after a lost subscriber connection.
    pub fn stats(&self) -> EventsStats {
        let c = &self.inner.hub.counters;
        let get = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
        EventsStats {
            clients: get(&c.clients),
            published: get(&c.published),
            deliveries: get(&c.deliveries),
            slow_consumers: get(&c.slow_consumers),
            resyncs: get(&c.resyncs),
        }
    }

    /// Subscribes to `channel` without access checks (for embedding apps, which check their own).
    /// With `last_event_id`, replays what came after it first (or `event: reset` if history no
    /// longer holds it).
    ///
    /// # Errors
    /// [`EventsError::InvalidChannel`], [`EventsError::ShuttingDown`].
    pub async fn subscribe(
        &self,
        channel: &str,
        last_event_id: Option<&str>,
    ) -> Result<EventStream, EventsError> {
        self.subscribe_as(channel, last_event_id, None).await
    }

    /// [`subscribe`](Self::subscribe) on behalf of `principal`: the stream closes when the
    /// principal's token expires or its session is revoked.
    ///
    /// # Errors
    /// As [`subscribe`](Self::subscribe).
    pub async fn subscribe_as(
        &self,
        channel: &str,
        last_event_id: Option<&str>,
        principal: Option<Caller>,
    ) -> Result<EventStream, EventsError> {
        if !valid_channel(channel) {
            return Err(EventsError::InvalidChannel);
        }
        let inner = &self.inner;
        let joined = inner
            .hub
            .join(channel, principal)
            .ok_or(EventsError::ShuttingDown)?;
        let mut stream = EventStream::new(
            inner.hub.clone(),
            channel,
            joined,
            Some(inner.on_leave.clone()),
        );
        if let Some(redis) = &inner.redis {
            let join = Join {
                channel: channel.to_owned(),
            };
            if redis.is_up() {
                // Live first: the subscription is in place before history is read, so nothing
                // falls between the replay and the live events.
                let _ = inner.addr.send(join).await;
            } else {
                // Do not hold the response back: the resync subscribes once Redis returns.
                inner.addr.do_send(join);
            }
        }
        let mut prelude = vec![encode_retry(inner.retry_ms)];
        let mut skip_through = None;
        let mut replayed = None;
        if let Some(last) = last_event_id.map(str::trim).filter(|s| !s.is_empty()) {
            let replay = match last.parse::<EventId>() {
                Ok(last) => match inner.history.replay(channel, last, inner.max_replay).await {
                    Ok(replay) => {
                        if matches!(replay, Replay::Events(..)) {
                            skip_through = Some(last);
                        }
                        replay
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, channel, "history unavailable for a resume; sending reset");
                        Replay::Reset
                    }
                },
                Err(()) => Replay::Reset,
            };
            match replay {
                Replay::Reset => prelude.push(encode_control("reset")),
                Replay::Events(events, slot) => {
                    if let Some((id, _)) = events.events.last() {
                        skip_through = Some(*id);
                    }
                    prelude.extend(events.events.iter().map(|(_, bytes)| bytes.clone()));
                    replayed = slot;
                }
            }
        }
        stream.set_prelude(prelude, skip_through, replayed);
        Ok(stream)
    }

    /// Checks `credentials` for `channel` (private channels: only their owner) and subscribes.
    /// The stream's events are not confirmed one by one: `GET /events/{channel}` does that for
    /// private channels (an event arriving while the verifier cannot tell whether the token was
    /// revoked is held until it can, or ends the stream), the periodic sweep alone closes a
    /// revoked stream within about a second.
    ///
    /// # Errors
    /// [`EventsError::Unauthorized`], [`EventsError::Forbidden`], and those of
    /// [`subscribe`](Self::subscribe).
    pub async fn open(
        &self,
        channel: &str,
        credentials: &Credentials,
        last_event_id: Option<&str>,
    ) -> Result<EventStream, EventsError> {
        let principal = self.authorize_read(channel, credentials).await?;
        self.subscribe_as(channel, last_event_id, principal).await
    }

    /// A place for one more SSE connection from `ip` (grouped as the caller wishes; `None` counts
    /// in the total only). Give it to the stream with [`EventStream::with_slot`].
    ///
    /// # Errors
    /// [`EventsError::TooManyConnections`] when `ip` holds the most streams allowed,
    /// [`EventsError::ServerFull`] when the process does.
    pub fn take_slot(
        &self,
        ip: Option<std::net::IpAddr>,
    ) -> Result<super::ConnectionSlot, EventsError> {
        self.inner.slots.take(ip)
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

    /// The principal behind `credentials` (a ticket is consumed).
    ///
    /// # Errors
    /// [`EventsError::Unauthorized`]; [`EventsError::Unavailable`] if a ticket cannot be checked.
    pub async fn authenticate(&self, credentials: &Credentials) -> Result<Caller, EventsError> {
        let token = match &credentials.ticket {
            Some(ticket) => self.inner.tickets.redeem(ticket).await?,
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
        self.inner.tickets.issue(token).await
    }

    /// Local subscriber count and history length of `channel`.
    ///
    /// # Errors
    /// [`EventsError::InvalidChannel`], [`EventsError::Unavailable`] when Redis is down.
    pub async fn info(&self, channel: &str) -> Result<ChannelInfo, EventsError> {
        if !valid_channel(channel) {
            return Err(EventsError::InvalidChannel);
        }
        Ok(ChannelInfo {
            subscribers: self.inner.hub.count(channel),
            history: self.inner.history.len(channel).await?,
        })
    }

    /// Ends every stream cleanly (after what is already queued) and refuses new subscribers.
    /// Called on graceful shutdown, before the HTTP server waits for open responses.
    pub fn shutdown(&self) {
        self.inner.hub.close();
        self.inner.addr.do_send(Shutdown);
    }

    /// Whether [`shutdown`](Self::shutdown) was called.
    pub fn is_shut_down(&self) -> bool {
        self.inner.hub.is_closed()
    }

    /// A heartbeat frame, for embedding apps that write their own SSE bodies.
    pub fn heartbeat_frame() -> Bytes {
        Bytes::from_static(super::wire::HEARTBEAT)
    }
}

/// A snapshot of the live-events counters.
#[derive(Debug, Clone, Copy, Default, serde::Serialize, PartialEq, Eq, utoipa::ToSchema)]
#[non_exhaustive]
pub struct EventsStats {
    /// SSE clients connected to this instance now.
    pub clients: u64,
    /// Events published through this instance.
    pub published: u64,
    /// Events handed to local clients' queues.
    pub deliveries: u64,
    /// Clients cut for not keeping up (sent `event: overflow`).
    pub slow_consumers: u64,
    /// Resubscribe-and-replay runs after the subscriber connection was lost.
    pub resyncs: u64,
}
