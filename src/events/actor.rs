use std::{
    collections::HashSet,
    sync::{Arc, RwLock},
    time::Duration,
};

use actix::{
    Actor, ActorFutureExt, AsyncContext, AtomicResponse, Context, Handler, ResponseActFuture,
    SpawnHandle, StreamHandler, WrapFuture,
};
use redis::streams::StreamRangeReply;

use super::{
    EventsConfig, EventsError, Join, Left, Shutdown,
    auth::EventsAuth,
    history::{parse_range, stream_key},
    hub::Hub,
    wire::{EventId, encode_event, split_payload},
};
use crate::connection::{PushEvent, PushEvents, RedisError, RedisHandle, Subscriber};

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
    pushes: Option<PushEvents>,
    subscribed: HashSet<String>,
    /// The connection was lost (or never made): every channel must be resubscribed and caught up.
    dirty: bool,
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
            Some(handle) => Some(Subscription::new(handle, &config.key_prefix)?),
        };
        Ok(Self {
            hub,
            auth,
            heartbeat: config.heartbeat,
            redis,
            ticker: None,
        })
    }

    /// Schedules a resubscription (and catch-up) unless one is pending.
    fn schedule_resync(&mut self, ctx: &mut Context<Self>, delay: Duration) {
        let Some(sub) = self.redis.as_mut() else {
            return;
        };
        sub.dirty = true;
        if sub.resync.is_none() {
            sub.resync = Some(ctx.run_later(delay, Self::resync));
        }
    }

    /// Resubscribes every channel with local clients and replays what they may have missed.
    /// Runs with the mailbox and the push stream paused (`ctx.wait`), so that a replay is always
    /// fanned out before any live event that follows it.
    fn resync(&mut self, ctx: &mut Context<Self>) {
        let Some(sub) = self.redis.as_mut() else {
            return;
        };
        sub.resync = None;
        if !sub.dirty {
            return;
        }
        self.hub
            .counters
            .resyncs
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let channels: Vec<String> = self.hub.channels().into_iter().map(|(c, _)| c).collect();
        let task = sync_channels(
            sub.redis.clone(),
            sub.push.clone(),
            self.hub.clone(),
            sub.prefix.clone(),
            sub.timeout,
            channels.clone(),
            true,
        );
        ctx.wait(task.into_actor(self).map(move |result, actor, ctx| {
            match result {
                Ok(replayed) => {
                    if let Some(sub) = actor.redis.as_mut() {
                        sub.dirty = false;
                        sub.subscribed = channels.iter().cloned().collect();
                    }
                    tracing::info!(
                        channels = channels.len(),
                        replayed,
                        "events subscriber (re)connected; channels resubscribed and caught up"
                    );
                    // Channels whose last client left during the resync.
                    for channel in channels {
                        actor.reconcile(&channel, ctx);
                    }
                }
                Err(err) => {
                    tracing::debug!(error = %err, "events resubscription failed; retrying");
                    actor.schedule_resync(ctx, RESYNC_RETRY);
                }
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
        if sub.dirty {
            // The pending resync covers every channel with clients.
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
                sub.prefix.clone(),
                sub.timeout,
                vec![channel.to_owned()],
                false,
            );
            let channel = channel.to_owned();
            return Some(Box::pin(task.into_actor(self).map(
                move |result, actor, ctx| match result {
                    Ok(_) => {
                        if let Some(sub) = actor.redis.as_mut() {
                            sub.subscribed.insert(channel);
                        }
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, %channel, "cannot subscribe; retrying");
                        actor.schedule_resync(ctx, RESYNC_RETRY);
                    }
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
        if sub.dirty {
            // The connection layer resubscribes on its own after a reconnect, before the resync
            // has caught up from history; fanning such a push out would move the channel's last
            // id past events the catch-up has yet to replay. The resync's `XRANGE` delivers it.
            return;
        }
        let Some(channel) = std::str::from_utf8(name)
            .ok()
            .and_then(|n| n.strip_prefix(sub.prefix.as_str()))
            .and_then(|n| n.strip_prefix("events:"))
        else {
            return;
        };
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
    fn new(redis: &RedisHandle, prefix: &str) -> Result<Self, EventsError> {
        let (push, pushes) = redis
            .subscriber("events")
            .map_err(EventsError::Unavailable)?;
        Ok(Self {
            push,
            redis: redis.clone(),
            prefix: prefix.to_owned(),
            timeout: redis.timeout(),
            pushes: Some(pushes),
            subscribed: HashSet::new(),
            dirty: false,
            resync: None,
        })
    }
}

/// Subscribes `channels` and fans out what was published since each channel's last delivered id
/// (for a channel new to this process: since just before the subscription). Answers how many
/// events were replayed.
///
/// `after_outage` (a resync after the connection was lost, or after a failed subscription):
/// checks the connection first, and a channel that has never been baselined starts from when
/// its first client joined rather than from the stream's newest event, since its clients have
/// been waiting through the outage and anything published since Redis returned is theirs.
async fn sync_channels(
    redis: RedisHandle,
    push: Subscriber,
    hub: Arc<Hub>,
    prefix: String,
    timeout: Duration,
    channels: Vec<String>,
    after_outage: bool,
) -> Result<usize, RedisError> {
    let bounded = async move {
        // After an outage the connection is checked first, with `TIME`: stream ids come from
        // Redis's clock, and join times from ours, so a late baseline needs the difference.
        let skew_ms = if after_outage {
            let (secs, micros): (i64, i64) = redis.query(&redis::cmd("TIME")).await?;
            let local = hub.clock().now_ms();
            Some(secs.saturating_mul(1000).saturating_add(micros / 1000) - local)
        } else {
            None
        };
        // 1. Baseline: where live delivery starts for channels that never had it.
        for channel in &channels {
            if hub.last_id(channel).is_none() {
                let mut cmd = redis::cmd("XREVRANGE");
                cmd.arg(stream_key(&prefix, channel))
                    .arg("+")
                    .arg("-")
                    .arg("COUNT")
                    .arg(1);
                let reply: StreamRangeReply = redis.query(&cmd).await?;
                let last = reply
                    .ids
                    .first()
                    .and_then(|e| e.id.parse().ok())
                    .unwrap_or(EventId::ZERO);
                hub.baseline(channel, last, skew_ms);
            }
        }
        // 2. Subscribe: from here on, pushes carry every new event. Sharded channels, one
        // command each: on a cluster each goes to its slot's node, and channels of different
        // slots are never subscribed together (CROSSSLOT).
        for channel in &channels {
            push.subscribe_sharded(stream_key(&prefix, channel).as_bytes())
                .await?;
        }
        // 3. Catch up on what was published between the baseline and the subscription.
        let mut replayed = 0;
        for channel in &channels {
            let Some(last) = hub.last_id(channel) else {
                continue;
            };
            let mut cmd = redis::cmd("XRANGE");
            cmd.arg(stream_key(&prefix, channel))
                .arg(last.to_string())
                .arg("+");
            let reply: StreamRangeReply = redis.query(&cmd).await?;
            for (id, bytes) in parse_range(reply) {
                replayed += hub.fan_out(channel, id, &bytes, true).delivered.min(1);
            }
        }
        Ok::<_, RedisError>(replayed)
    };
    // Three round trips per channel at most, each bounded by the response timeout; this outer
    // bound keeps a stalled server from pausing the actor for long.
    match tokio::time::timeout(timeout * 4, bounded).await {
        Ok(result) => result,
        Err(_) => Err(RedisError::Timeout(timeout * 4)),
    }
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
                self.schedule_resync(ctx, Duration::ZERO);
            }
            PushEvent::ShardMoved(_) => {
                // The channel's slot moved (resharding, failover): subscribe again where it
                // lives now, and catch up on what was published meanwhile.
                tracing::info!("events: a channel's slot moved; resubscribing and catching up");
                self.schedule_resync(ctx, Duration::ZERO);
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
