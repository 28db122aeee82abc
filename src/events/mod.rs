//! Live events: one Redis subscription per process, fanned out to thousands of Server-Sent-Events
//! clients, with per-channel history so that a reconnecting client misses nothing.
//!
//! - **Publish** appends to a per-channel Redis Stream (`XADD MAXLEN ~`, TTL refreshed) and
//!   `SPUBLISH`es the event with its stream id, in one round trip (a Lua script).
//! - **Subscribe**: [`EventsActor`] owns the process's one subscriber connection. It subscribes a
//!   channel when its first local client arrives and unsubscribes when the last leaves, and
//!   hands each event, encoded once, to every local client's bounded queue.
//! - **Resume**: a client sending `Last-Event-ID` is subscribed live first, then gets the events
//!   after its id from history; live events already replayed are dropped, so the handover has
//!   neither gap nor duplicate. An id history no longer holds gets `event: reset`, and so does
//!   one more than `max_replay` events or 1 MiB behind. History is read by a script that pages
//!   through the stream inside Redis and sends back only what is replayed (a reset costs Redis
//!   an id), and resumes of one position share one copy of the replay while any of them is
//!   sending it (reading from Redis only what was published since).
//! - Without Redis, the same semantics in-process: fan-out and a history ring per channel.
//! - **Many channels, one stream** ([`EventsHandle::subscribe_many`]): one client, one queue,
//!   registered on up to [`MAX_STREAM_CHANNELS`] channels. Each event's data names its channel,
//!   and its `id:` is the stream's position on every channel (a [`MAX_CURSOR_LEN`]-bounded
//!   composite, `cursor.rs`), so a browser's own `Last-Event-ID` resumes each channel from
//!   history exactly once, in order, within the single-channel bounds.
//! - **Presence**: every instance writes its subscriber counts, batched, to Redis (a hash of its
//!   own with a TTL), so a channel's count is fleet-wide; streams that ask for it get `join` and
//!   `leave` frames of authenticated users, carried on the channel's own sharded channel.
//!
//! # The subscriber connection
//! A [`Subscriber`](crate::connection::Subscriber) from the connection layer: RESP3 pushes,
//! redis-rs's reconnection and resubscription, and a liveness check with a deadline (a `PING`
//! answered within the response timeout, on every node of a cluster; a connection that misses
//! it is replaced). Channels are sharded (`SSUBSCRIBE`, one per channel, so never across slots;
//! history's script `SPUBLISH`es on the stream's key, so a channel's messages stay on its
//! stream's shard). Whenever messages may have been missed (the layer's `Lost`: a dropped or a
//! silent connection) or a channel's slot moved, the actor runs a *resync*: `TIME` on the command
//! connection, then for each channel concerned (every channel with local clients after a `Lost`,
//! the one named after a slot moved) `SSUBSCRIBE` and a replay from its stream of everything after
//! the last id it fanned out. Channels are resynced each on its own: one whose slot has no
//! primary yet (a failover under way) is retried every 250 ms while the others are back at once,
//! and only a channel being resynced has its pushes held back (the replay delivers them). A
//! catch-up reads history in pages (100 events or 1 MiB each; Redis ships no more per round
//! trip) up to what a client's queue holds (`queue_size`); a channel further behind, or whose
//! history no longer reaches back to its last id, gets `event: reset` and goes on live. The resync runs with the actor's mailbox and push
//! stream paused, so a replay always precedes the live events that follow it; per-channel
//! de-duplication by id drops what arrives twice. Clients stay connected throughout.
//!
//! The bound: a lost subscription is noticed at once (a dropped connection, a slot moved) or
//! within the liveness check (500 ms plus the response timeout); from the moment the channel's
//! slot has a primary again, the channel is resubscribed and caught up within one retry (250 ms)
//! plus at most 4 response timeouts (`tests/cluster/soak.rs`,
//! `open_streams_lose_no_acknowledged_event_through_failovers`).
//!
//! # Where the work happens
//! Per-event work is one pass over the channel's clients under a short mutex (a pointer pushed on
//! each client's queue), done by the actor for Redis events and by the publisher's own task for
//! the memory backend; the clients' wakers are handed to the actix worker that runs each, once
//! per worker, and each worker wakes its own. Per-client work has no actor hop at all: a client
//! is a bounded queue read by its response body. A channel's first local client costs one
//! message to the actor (to subscribe before history is read); heartbeats and token sweeps are one
//! shared timer, not one per client.
//!
//! # Why not actix-web-lab's `Sse`
//! Measured side by side at 10,000 clients (the figures are at [`EventStream`] and in
//! ARCHITECTURE.md): built on `Sse` (heartbeats from the shared timer as comments, no per-client
//! interval), the stream takes the same memory but `Sse` encodes each event once per client,
//! which costs more than 10 % on publish-to-delivery latency and deliveries per second; so the
//! body is a small custom stream over the client's queue of frames encoded once
//! ([`EventStream`]).
//!
//! # Behavior when Redis fails
//! Subscribers always get `200`: the stream opens, heartbeats flow, and events are delivered once
//! Redis is back (a resume that cannot read history gets `event: reset`). Publishing answers 503.
//!
//! # Time
//! Wall-clock time (the memory backend's event ids, a channel's join baseline, token expiry of
//! open private streams) is read from [`EventsConfig::clock`], so a test with a
//! [`ManualClock`](crate::clock::ManualClock) moves it; heartbeats and sweeps are tokio timers.
//!
//! # Access
//! Publishing needs a valid access token; channels `user:{id}` are readable only by that user.
//! Tokens come from `Authorization: Bearer`, the login cookie, or a single-use ticket
//! (`POST /events/ticket`, redeemable once within 60 s). Verification is pluggable
//! ([`EventsAuth`]); a private stream closes within a second of its token expiring or its session
//! being revoked.

mod access;
mod actor;
mod auth;
mod config;
mod cursor;
mod error;
mod frame;
mod handle;
mod hub;
mod messages;
mod metrics;
mod presence;
mod queue;
mod read;
mod slots;
mod store;
mod stream;
mod subscribe;
mod sync;
mod wire;

pub use access::{Credentials, Follow, StreamRequest};
pub use actor::EventsActor;
pub use auth::{AuthFuture, Caller, DenyAll, EventsAuth, Rejection, TICKET_TTL};
pub use config::{
    DEFAULT_EVENTS_HEARTBEAT_MS, DEFAULT_EVENTS_HISTORY_LEN, DEFAULT_EVENTS_MAX_REPLAY,
    DEFAULT_EVENTS_QUEUE, DEFAULT_EVENTS_RETRY_MS, DEFAULT_EVENTS_TTL_SECS,
    DEFAULT_MAX_EVENT_BYTES, DEFAULT_SSE_MAX_CONNECTIONS, DEFAULT_SSE_MAX_PER_IP, EventsConfig,
};
pub use cursor::{MAX_CURSOR_LEN, MAX_STREAM_CHANNELS};
pub use error::EventsError;
pub use handle::{ChannelInfo, EventsHandle, StreamOptions};
pub use messages::{Join, Left, Shutdown};
pub use metrics::{EventsCollector, EventsStats};
pub use presence::{
    FLUSH as PRESENCE_FLUSH, HEARTBEAT as PRESENCE_HEARTBEAT, INSTANCE_TTL as PRESENCE_INSTANCE_TTL,
};
pub use slots::ConnectionSlot;
pub use store::MAX_REPLAY_BYTES;
pub use stream::EventStream;
pub use wire::{
    DEFAULT_EVENT_TYPE, EventId, MAX_CHANNEL_LEN, MAX_EVENT_TYPE_LEN, encode_event, valid_channel,
    valid_event_type,
};
