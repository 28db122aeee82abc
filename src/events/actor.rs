use std::{
    collections::HashSet,
    sync::{Arc, RwLock},
    time::Duration,
};

use actix::{
    Actor, ActorFutureExt, AsyncContext, AtomicResponse, Context, Handler, ResponseActFuture,
    SpawnHandle, StreamHandler, WrapFuture,
};

use super::{
    EventsConfig, EventsError, Join, Left, Shutdown,
    auth::EventsAuth,
    hub::Hub,
    presence,
    store::stream_key,
    sync::sync_channels,
    wire::{encode_event, split_payload},
};
use crate::connection::{PushEvent, PushEvents, RedisHandle, Subscriber};

/// Pause between attempts to resubscribe while Redis is unreachable.
const RESYNC_RETRY: Duration = Duration::from_millis(250);
/// How often private streams are checked for expired tokens and revoked sessions.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// The process's pub/sub subscriber: see the [module docs](super).
pub struct EventsActor {
    hub: Arc<Hub>,
    auth: Arc<RwLock<Arc<dyn EventsAuth>>>,
    heartbeat: Duration,
    redis: Option<Subscription>,
    ticker: Option<tokio::task::JoinHandle<()>>,
}

/// The dedicated subscriber connection and what is subscribed on it.
struct Subscription {
    /// The subscriber connection (sharded channels), from the connection layer.
    push: Subscriber,
    /// The command connection, for history reads.
    redis: RedisHandle,
    prefix: String,
    timeout: Duration,
    /// Most events one channel's catch-up replays (what a client's queue holds); beyond,
    /// `event: reset`.
    catch_up: usize,
    pushes: Option<PushEvents>,
    subscribed: HashSet<String>,
    /// Channels to resubscribe and catch up from history: their subscription was lost (the
    /// connection dropped, or their slot moved) or could not be made. Their pushes are not
    /// fanned out meanwhile (the catch-up delivers them); other channels' are.
    dirty: HashSet<String>,
    /// The whole connection was lost and its resync has not yet succeeded: channels joining
    /// meanwhile are left to it.
    lost: bool,
    resync: Option<SpawnHandle>,
}

impl EventsActor {
    pub(crate) fn new(
        config: &EventsConfig,
        redis: Option<&RedisHandle>,
        hub: Arc<Hub>,
        auth: Arc<RwLock<Arc<dyn EventsAuth>>>,
    ) -> Result<Self, EventsError> {
        let redis = match redis {
            None => None,
            Some(handle) => Some(Subscription::new(
                handle,
                &config.key_prefix,
                config.queue_size,
            )?),
        };
        Ok(Self {
            hub,
            auth,
            heartbeat: config.heartbeat,
            redis,
            ticker: None,
        })
    }

    /// Marks `channels` for a resubscription and catch-up (`None`: every channel with clients,
    /// as the connection was lost), and schedules one unless it is pending.
    fn schedule_resync(
        &mut self,
        ctx: &mut Context<Self>,
        delay: Duration,
        channels: Option<Vec<String>>,
    ) {
        let all = channels.is_none();
        let channels =
            channels.unwrap_or_else(|| self.hub.channels().into_iter().map(|(c, _)| c).collect());
        let Some(sub) = self.redis.as_mut() else {
            return;
        };
        sub.lost |= all;
        sub.dirty.extend(channels);
        if sub.resync.is_none() {
            sub.resync = Some(ctx.run_later(delay, Self::resync));
        }
    }

    /// Resubscribes every channel marked for it and replays what its clients may have missed,
    /// channel by channel: one whose slot is not served yet (a failover under way) is retried
    /// every [`RESYNC_RETRY`] without holding the others back.
    /// Runs with the mailbox and the push stream paused (`ctx.wait`), so that a replay is always
    /// fanned out before any live event that follows it.
    fn resync(&mut self, ctx: &mut Context<Self>) {
        let live: HashSet<String> = self.hub.channels().into_iter().map(|(c, _)| c).collect();
        let Some(sub) = self.redis.as_mut() else {
            return;
        };
        sub.resync = None;
        // Channels whose clients all left need nothing.
        sub.dirty.retain(|c| live.contains(c));
        if sub.dirty.is_empty() {
            sub.lost = false;
            return;
        }
        self.hub
            .counters
            .resyncs
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let channels: Vec<String> = sub.dirty.iter().cloned().collect();
        let task = sync_channels(
            sub.redis.clone(),
            sub.push.clone(),
            self.hub.clone(),
            (sub.prefix.clone(), sub.timeout, sub.catch_up),
            channels.clone(),
            true,
        );
        ctx.wait(task.into_actor(self).map(move |results, actor, ctx| {
            let Some(sub) = actor.redis.as_mut() else {
                return;
            };
            let results = match results {
                Ok(results) => results,
                Err(err) => {
                    tracing::debug!(error = %err, "events resync: Redis does not answer; retrying");
                    actor.schedule_resync(ctx, RESYNC_RETRY, Some(Vec::new()));
                    return;
                }
            };
            let (mut replayed, mut failed) = (0, 0);
            for (channel, result) in channels.iter().zip(results) {
                match result {
                    Ok(n) => {
                        replayed += n;
                        sub.dirty.remove(channel);
                        sub.subscribed.insert(channel.clone());
                    }
                    Err(err) => {
                        failed += 1;
                        tracing::debug!(error = %err, %channel, "events resubscription failed; retrying");
                    }
                }
            }
            if sub.dirty.is_empty() {
                sub.lost = false;
            }
            tracing::info!(
                channels = channels.len() - failed,
                failed,
                replayed,
                "events channels resubscribed and caught up"
            );
            if failed > 0 {
                actor.schedule_resync(ctx, RESYNC_RETRY, Some(Vec::new()));
            }
            // Channels whose last client left during the resync.
            for channel in channels {
                actor.reconcile(&channel, ctx);
            }
        }));
    }

    /// Subscribes or unsubscribes `channel` so that Redis matches the local client count.
    fn reconcile(&mut self, channel: &str, ctx: &mut Context<Self>) {
        if let Some(task) = self.reconcile_task(channel) {
            ctx.wait(task);
        }
    }

    /// The work [`reconcile`](Self::reconcile) waits on, if any: a subscription (with its
    /// baseline and catch-up) or an unsubscription.
    fn reconcile_task(&mut self, channel: &str) -> Option<ResponseActFuture<Self, ()>> {
        let wanted = self.hub.count(channel) > 0;
        let sub = self.redis.as_mut()?;
        if sub.dirty.contains(channel) {
            // The pending resync covers it.
            return None;
        }
        if sub.lost {
            // The connection is being resynced: the channel joins that resync.
            if wanted {
                sub.dirty.insert(channel.to_owned());
            }
            return None;
        }
        let subscribed = sub.subscribed.contains(channel);
        // A channel whose clients all left and came back before the unsubscribe ran is still
        // subscribed but lost its baseline: sync it again.
        if wanted && (!subscribed || self.hub.last_id(channel).is_none()) {
            let task = sync_channels(
                sub.redis.clone(),
                sub.push.clone(),
                self.hub.clone(),
                (sub.prefix.clone(), sub.timeout, sub.catch_up),
                vec![channel.to_owned()],
                false,
            );
            let channel = channel.to_owned();
            return Some(Box::pin(task.into_actor(self).map(
                move |results, actor, ctx| match results.map(|mut r| r.pop()) {
                    Ok(Some(Ok(_))) => {
                        if let Some(sub) = actor.redis.as_mut() {
                            sub.subscribed.insert(channel);
                        }
                    }
                    Ok(Some(Err(err))) | Err(err) => {
                        tracing::warn!(error = %err, %channel, "cannot subscribe; retrying");
                        actor.schedule_resync(ctx, RESYNC_RETRY, Some(vec![channel]));
                    }
                    Ok(None) => {}
                },
            )));
        }
        if !wanted && subscribed {
            sub.subscribed.remove(channel);
            let push = sub.push.clone();
            let key = stream_key(&sub.prefix, channel);
            return Some(Box::pin(
                async move {
                    // Bounded by the response timeout.
                    if let Err(err) = push.unsubscribe_sharded(key.as_bytes()).await {
                        tracing::debug!(error = %err, "unsubscribe failed");
                    }
                }
                .into_actor(self),
            ));
        }
        None
    }

    fn on_message(&self, name: &[u8], payload: &[u8]) {
        let Some(sub) = self.redis.as_ref() else {
            return;
        };
        let Some(channel) = channel_of(&sub.prefix, name) else {
            return;
        };
        if let Some((joined, left)) = presence::parse_message(payload) {
            // Presence is live only: never in history, so not held back by a resync.
            for user in &joined {
                self.hub.presence(channel, "join", user);
            }
            for user in &left {
                self.hub.presence(channel, "leave", user);
            }
            return;
        }
        if sub.dirty.contains(channel) {
            // The connection layer resubscribes on its own after a reconnect, before the resync
            // has caught up from history; fanning such a push out would move the channel's last
            // id past events the catch-up has yet to replay. The catch-up delivers it.
            return;
        }
        let Some((id, kind, data)) = split_payload(payload) else {
            tracing::warn!(channel, "ignoring a malformed event payload");
            return;
        };
        let fan = self
            .hub
            .fan_out(channel, id, &encode_event(id, kind, data), true);
        if fan.cut > 0 {
            tracing::info!(
                channel,
                cut = fan.cut,
                "slow consumers disconnected (queue full)"
            );
        }
    }
}

impl Subscription {
    fn new(redis: &RedisHandle, prefix: &str, catch_up: usize) -> Result<Self, EventsError> {
        let (push, pushes) = redis
            .subscriber("events")
            .map_err(EventsError::Unavailable)?;
        Ok(Self {
            push,
            redis: redis.clone(),
            prefix: prefix.to_owned(),
            timeout: redis.timeout(),
            catch_up,
            pushes: Some(pushes),
            subscribed: HashSet::new(),
            dirty: HashSet::new(),
            lost: false,
            resync: None,
        })
    }
}

/// The channel whose stream key (and sharded channel) is `name`.
fn channel_of<'a>(prefix: &str, name: &'a [u8]) -> Option<&'a str> {
    std::str::from_utf8(name)
        .ok()?
        .strip_prefix(prefix)?
        .strip_prefix("events:")
}

impl Actor for EventsActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if let Some(pushes) = self.redis.as_mut().and_then(|s| s.pushes.take()) {
            let mut pushes = pushes;
            ctx.add_stream(futures_util::stream::poll_fn(move |cx| {
                pushes.poll_recv(cx)
            }));
        }
        // Heartbeats and token sweeps run beside the actor, not in it: a resync pauses the
        // actor while Redis is unreachable, and clients must keep getting heartbeats meanwhile.
        let hub = self.hub.clone();
        let auth = self.auth.clone();
        let every = self.heartbeat;
        self.ticker = Some(tokio::spawn(async move {
            let start = tokio::time::Instant::now();
            let mut beat = tokio::time::interval_at(start + every, every);
            let mut sweep = tokio::time::interval_at(start + SWEEP_INTERVAL, SWEEP_INTERVAL);
            beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = beat.tick() => hub.heartbeat(),
                    _ = sweep.tick() => {
                        let auth = auth
                            .read()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .clone();
                        let closed = hub.sweep(&*auth, hub.now_secs());
                        if closed > 0 {
                            tracing::info!(closed, "private streams closed: token expired or session revoked");
                        }
                    }
                }
            }
        }));
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        if let Some(ticker) = self.ticker.take() {
            ticker.abort();
        }
        self.hub.close();
    }
}

impl StreamHandler<PushEvent> for EventsActor {
    fn handle(&mut self, event: PushEvent, ctx: &mut Self::Context) {
        match event {
            PushEvent::Message { channel, payload } => self.on_message(&channel, &payload),
            PushEvent::Lost => {
                tracing::warn!(
                    "events subscriber connection lost; resubscribing and catching up from history"
                );
                self.schedule_resync(ctx, Duration::ZERO, None);
            }
            PushEvent::ShardMoved(name) => {
                // The channel's slot moved (resharding, failover): subscribe again where it
                // lives now, and catch up on what was published meanwhile.
                tracing::info!("events: a channel's slot moved; resubscribing and catching up");
                let channel = self
                    .redis
                    .as_ref()
                    .and_then(|sub| channel_of(&sub.prefix, &name))
                    .map(|c| vec![c.to_owned()]);
                self.schedule_resync(ctx, Duration::ZERO, channel);
            }
        }
    }

    fn finished(&mut self, _ctx: &mut Self::Context) {
        // The connection manager is gone: nothing more will be pushed. Keep serving heartbeats.
    }
}

impl Handler<Join> for EventsActor {
    type Result = AtomicResponse<Self, ()>;

    fn handle(&mut self, msg: Join, _ctx: &mut Self::Context) -> Self::Result {
        // The answer is the subscription itself (baseline and catch-up included), run
        // atomically: a resuming client reads history only once live delivery has its start.
        // (A separate `ctx.wait` would run after this answer: actix polls waits last-first.)
        AtomicResponse::new(
            self.reconcile_task(&msg.channel)
                .unwrap_or_else(|| Box::pin(async {}.into_actor(self))),
        )
    }
}

impl Handler<Left> for EventsActor {
    type Result = ();

    fn handle(&mut self, msg: Left, ctx: &mut Self::Context) {
        self.reconcile(&msg.channel, ctx);
    }
}

impl Handler<Shutdown> for EventsActor {
    type Result = ();

    fn handle(&mut self, _msg: Shutdown, _ctx: &mut Self::Context) {
        self.hub.close();
    }
}
