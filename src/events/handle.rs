use std::sync::{Arc, RwLock};

use actix::{Actor, Addr};
use bytes::Bytes;
use serde::Serialize;

use super::{
    Credentials, EventsActor, EventsConfig, EventsError, EventsStats, Join, Left, Shutdown,
    auth::{Caller, DenyAll, EventsAuth},
    cursor,
    hub::{Hub, Member},
    presence::Presence,
    read::Read,
    store::{EventStore, MAX_REPLAY_BYTES, MemoryStore, RedisStore, Replay},
    stream::{EventStream, Leaving, OnLeave},
    subscribe,
    wire::{
        DEFAULT_EVENT_TYPE, EventId, encode_control, encode_retry, valid_channel, valid_event_type,
    },
};
use crate::connection::RedisHandle;

/// How a stream is opened, beyond its channels and resume point.
#[derive(Debug, Default, Clone)]
#[non_exhaustive]
pub struct StreamOptions {
    /// The caller a private stream answers to: the stream closes when its token expires or its
    /// session is revoked.
    pub principal: Option<Caller>,
    /// The authenticated user the stream is announced as to presence subscribers (`join` and
    /// `leave` frames); `None`: anonymous, not announced.
    pub user: Option<String>,
    /// Whether the stream gets `join` and `leave` frames of its channels' users.
    pub presence: bool,
}

/// `GET /events/{channel}/info`.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq, utoipa::ToSchema)]
#[non_exhaustive]
pub struct ChannelInfo {
    /// Clients subscribed to the channel: on every instance in `GET /events/{channel}/info`
    /// ([`EventsHandle::fleet_info`]: exact within a second of a join or leave; an instance that
    /// stopped is no longer counted 15 s later), on this one from [`EventsHandle::info`].
    pub subscribers: usize,
    /// Events in the channel's history.
    pub history: u64,
}

/// A cloneable handle to live events: publish, subscribe, inspect. See the [module docs](super).
#[derive(Clone)]
pub struct EventsHandle {
    pub(super) inner: Arc<Inner>,
}

pub(super) struct Inner {
    hub: Arc<Hub>,
    pub(super) store: Box<dyn EventStore>,
    auth: Arc<RwLock<Arc<dyn EventsAuth>>>,
    addr: Addr<EventsActor>,
    redis: Option<RedisHandle>,
    presence: Arc<Presence>,
    on_leave: Arc<OnLeave>,
    retry_ms: u64,
    max_event_bytes: usize,
    max_replay: usize,
    pub(super) slots: Arc<super::slots::Slots>,
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
        let store: Box<dyn EventStore> = match &redis {
            Some(handle) => Box::new(RedisStore::new(
                handle.clone(),
                &config.key_prefix,
                config.history_len,
                config.stream_ttl,
            )),
            None => Box::new(MemoryStore::new(config.history_len, config.stream_ttl)),
        };
        let presence = Presence::start(
            hub.clone(),
            redis.clone().map(|r| (r, config.key_prefix.clone())),
        );
        let on_leave: Arc<OnLeave> = {
            let addr = addr.clone();
            let presence = presence.clone();
            Arc::new(Box::new(move |leaving: Leaving<'_>| {
                for channel in leaving.emptied {
                    addr.do_send(Left {
                        channel: channel.to_string(),
                    });
                }
                presence.left(leaving.channels, leaving.user);
            }))
        };
        Ok(Self {
            inner: Arc::new(Inner {
                hub,
                store,
                auth,
                addr,
                redis,
                presence,
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
            .store
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
        let options = StreamOptions {
            user: principal.as_ref().map(|p| p.user_id.clone()),
            principal,
            presence: false,
        };
        self.subscribe_with(channel, last_event_id, options).await
    }

    /// [`subscribe`](Self::subscribe) with `options`: a principal whose token the stream
    /// follows, the user it is announced as, presence frames.
    ///
    /// # Errors
    /// As [`subscribe`](Self::subscribe).
    pub async fn subscribe_with(
        &self,
        channel: &str,
        last_event_id: Option<&str>,
        options: StreamOptions,
    ) -> Result<EventStream, EventsError> {
        if !valid_channel(channel) {
            return Err(EventsError::InvalidChannel);
        }
        let channels: Arc<[Arc<str>]> = Arc::from([Arc::from(channel)]);
        let mut stream = self.join(&channels, options, None).await?;
        if let Some(last) = subscribe::resume_point(last_event_id) {
            self.resume(&mut stream, channel, last).await;
        }
        Ok(stream)
    }

    /// Queues what a single-channel stream resuming after `last` is sent first: the events
    /// history holds after it (live ones up to the last replayed are then skipped), or
    /// `event: reset` for an id it does not hold (or cannot read now).
    pub(super) async fn resume(&self, stream: &mut EventStream, channel: &str, last: &str) {
        let inner = &self.inner;
        let reset = || vec![encode_control("reset")];
        let Ok(last) = last.parse::<EventId>() else {
            return stream.set_prelude(reset(), None, None);
        };
        let bounds = (inner.max_replay, MAX_REPLAY_BYTES);
        match inner
            .store
            .replay(channel, last, bounds, Read::Resume)
            .await
        {
            Ok(Replay::Events(events, slot)) => {
                let through = events.events.last().map_or(last, |(id, _)| *id);
                let frames = events.events.iter().map(|(_, bytes)| bytes.clone());
                stream.set_prelude(frames.collect(), Some(through), slot);
            }
            Ok(Replay::Reset) => stream.set_prelude(reset(), None, None),
            Err(err) => {
                tracing::warn!(error = %err, channel, "history unavailable for a resume; sending reset");
                stream.set_prelude(reset(), None, None);
            }
        }
    }

    /// Subscribes to every channel of `channels` on one stream (1 to
    /// [`MAX_STREAM_CHANNELS`](super::MAX_STREAM_CHANNELS) distinct names; repeats collapse),
    /// without access checks. Each frame names its channel, and its `id:` holds the stream's
    /// position on every channel (the format is in the README): resuming with it as
    /// `last_event_id` replays what each channel missed, once, in order (or `event: reset` for
    /// a channel too far behind); an id this server did not write resets every channel.
    ///
    /// # Errors
    /// [`EventsError::InvalidChannel`], [`EventsError::ChannelCount`],
    /// [`EventsError::ShuttingDown`].
    pub async fn subscribe_many<S: AsRef<str>>(
        &self,
        channels: &[S],
        last_event_id: Option<&str>,
        options: StreamOptions,
    ) -> Result<EventStream, EventsError> {
        let channels = subscribe::channel_list(channels)?;
        let mut stream = self.join(&channels, options, None).await?;
        self.start_many(
            &mut stream,
            &channels,
            subscribe::resume_point(last_event_id),
        )
        .await;
        Ok(stream)
    }

    /// Queues what a multi-channel stream on `channels` (joined) is sent first: each channel's
    /// replay after the position `last_event_id` holds for it, or its reset, then the positions.
    pub(super) async fn start_many(
        &self,
        stream: &mut EventStream,
        channels: &[Arc<str>],
        last_event_id: Option<&str>,
    ) {
        // An id this server did not write (malformed, too long) is a position nowhere: every
        // channel is reset, as a single-channel stream does with an unknown id.
        let resume = last_event_id
            .map(|text| cursor::parse(text, channels).unwrap_or(cursor::Resume::OtherList));
        let inner = &self.inner;
        let starts = subscribe::starts(
            &inner.hub,
            &*inner.store,
            channels,
            resume.as_ref(),
            inner.max_replay,
        )
        .await;
        stream.start_multi(starts);
    }

    /// Registers a stream's client on `channels` in the hub and with presence, its place under
    /// the connection caps given to the stream; then, with Redis, makes sure this process
    /// subscribes to those of `channels` it has no live position for: awaited while Redis is up
    /// (live first: the subscription is in place before history is read, so nothing falls
    /// between the replay and the live events), left to the resync otherwise. The stream (which
    /// leaves the hub when dropped) exists before the first await.
    pub(super) async fn join(
        &self,
        channels: &Arc<[Arc<str>]>,
        options: StreamOptions,
        slot: Option<super::ConnectionSlot>,
    ) -> Result<EventStream, EventsError> {
        let inner = &self.inner;
        let member = Member {
            principal: options.principal,
            presence: options.presence,
        };
        let joined = inner
            .hub
            .join_all(channels, member)
            .ok_or(EventsError::ShuttingDown)?;
        let user: Option<Arc<str>> = options.user.map(Arc::from);
        inner.presence.joined(channels, user.as_ref());
        let stream = EventStream::new(
            inner.hub.clone(),
            channels.clone(),
            joined,
            user,
            Some(inner.on_leave.clone()),
            encode_retry(inner.retry_ms),
            slot,
        );
        if let Some(redis) = &inner.redis {
            // A channel with a live position already has its subscription made or being made
            // (the position is set just before the subscribe, and dropped with the channel's
            // last client): the actor would answer its `Join` at once, or after a sync whose
            // catch-up reaches this client anyway. Only a channel new to this process waits.
            let joins = channels
                .iter()
                .filter(|channel| inner.hub.last_id(channel).is_none())
                .map(|channel| Join {
                    channel: channel.to_string(),
                });
            if redis.is_up() {
                let sends = joins.map(|join| inner.addr.send(join));
                let _ = futures_util::future::join_all(sends).await;
            } else {
                // Do not hold the response back: the resync subscribes once Redis returns.
                for join in joins {
                    inner.addr.do_send(join);
                }
            }
        }
        Ok(stream)
    }

    /// Checks `credentials` for `channel` (private channels: only their owner) and subscribes.
    /// The stream's events are not confirmed one by one: [`open_sse`](Self::open_sse) does that
    /// for private channels (an event arriving while the verifier cannot tell whether the token was
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

    /// This instance's subscriber count and the history length of `channel`.
    ///
    /// # Errors
    /// [`EventsError::InvalidChannel`], [`EventsError::Unavailable`] when Redis is down.
    pub async fn info(&self, channel: &str) -> Result<ChannelInfo, EventsError> {
        if !valid_channel(channel) {
            return Err(EventsError::InvalidChannel);
        }
        Ok(ChannelInfo {
            subscribers: self.inner.hub.count(channel),
            history: self.inner.store.len(channel).await?,
        })
    }

    /// The subscriber count of every instance and the history length of `channel`
    /// (`GET /events/{channel}/info`): this instance's clients now, plus what each other live
    /// instance last wrote (every [`PRESENCE_FLUSH`](super::PRESENCE_FLUSH)); an instance that
    /// stopped writing is no longer counted after
    /// [`PRESENCE_INSTANCE_TTL`](super::PRESENCE_INSTANCE_TTL).
    ///
    /// # Errors
    /// [`EventsError::InvalidChannel`], [`EventsError::Unavailable`] when Redis is down.
    pub async fn fleet_info(&self, channel: &str) -> Result<ChannelInfo, EventsError> {
        if !valid_channel(channel) {
            return Err(EventsError::InvalidChannel);
        }
        Ok(ChannelInfo {
            subscribers: self.inner.presence.count(channel).await?,
            history: self.inner.store.len(channel).await?,
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
