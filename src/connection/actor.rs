use std::time::Duration;

use actix::{Actor, ActorFutureExt, AsyncContext, Context, Handler, ResponseFuture, WrapFuture};

use super::{GetStatus, Ping, RedisError, RedisHandle, RedisSettings, target::Target};

/// How often the watchdog pings Redis.
const WATCHDOG_INTERVAL: Duration = Duration::from_secs(1);

/// Owns the Redis command connection and watches its health. See the [module docs](super).
pub struct RedisActor {
    handle: RedisHandle,
    pinging: bool,
}

impl RedisActor {
    /// Creates the (lazy) connection manager and the actor that owns it. Does not wait for Redis.
    ///
    /// # Errors
    /// [`RedisError::Command`] when the URL is invalid; never for an unreachable server.
    pub fn new(settings: &RedisSettings) -> Result<Self, RedisError> {
        let target = Target::new(settings)?;
        let commands = target.commands()?;
        Ok(Self {
            handle: RedisHandle::new(commands, target),
            pinging: false,
        })
    }

    /// The handle to give to other actors and handlers.
    pub fn handle(&self) -> RedisHandle {
        self.handle.clone()
    }

    fn watchdog(&mut self, ctx: &mut Context<Self>) {
        if self.pinging {
            return;
        }
        self.pinging = true;
        let handle = self.handle.clone();
        ctx.spawn(
            async move { handle.ping().await }
                .into_actor(self)
                .map(|result, actor, _| {
                    actor.pinging = false;
                    let up = result.is_ok();
                    if actor.handle.set_up(up) {
                        if up {
                            tracing::info!("redis connection is up");
                        } else {
                            tracing::warn!(
                                "redis is not answering; serving degraded until it does"
                            );
                        }
                    }
                    if let Err(err) = result {
                        tracing::debug!(error = %err, "redis watchdog ping failed");
                    }
                }),
        );
    }
}

impl Actor for RedisActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.watchdog(ctx);
        ctx.run_interval(WATCHDOG_INTERVAL, Self::watchdog);
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        tracing::info!("redis actor stopped; connection closes with its last handle");
    }
}

impl Handler<Ping> for RedisActor {
    type Result = ResponseFuture<Result<Duration, RedisError>>;

    fn handle(&mut self, _msg: Ping, _ctx: &mut Self::Context) -> Self::Result {
        let handle = self.handle.clone();
        Box::pin(async move { handle.ping().await })
    }
}

impl Handler<GetStatus> for RedisActor {
    type Result = actix::MessageResult<GetStatus>;

    fn handle(&mut self, _msg: GetStatus, _ctx: &mut Self::Context) -> Self::Result {
        actix::MessageResult(self.handle.status())
    }
}
