use std::time::Duration;

use actix::{Actor, ActorFutureExt, AsyncContext, Context, Handler, ResponseFuture, WrapFuture};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::RedisSettings;
use super::{GetStatus, Ping, RedisError, RedisHandle, feed::FeedTarget};

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
        let client = redis::Client::open(settings.url.as_str()).map_err(RedisError::Command)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(settings.connect_timeout))
            .set_response_timeout(Some(settings.response_timeout))
            // Few, quick retries: a request waits at most a fraction of a second on a dead
            // server; the watchdog keeps trying every second after that.
            .set_number_of_retries(2)
            .set_min_delay(Duration::from_millis(20))
            .set_max_delay(Duration::from_millis(200))
            // Hundreds of concurrent requests share this connection.
            .set_pipeline_buffer_size(4096);
        // The feed's own connection: the same target and timeouts, on RESP3 (pushes).
        let info = client.get_connection_info().clone();
        let resp3 = info
            .redis_settings()
            .clone()
            .set_protocol(redis::ProtocolVersion::RESP3);
        let feed = FeedTarget {
            client: redis::Client::open(info.set_redis_settings(resp3))
                .map_err(RedisError::Command)?,
            settings: ConnectionManagerConfig::new()
                .set_connection_timeout(Some(settings.connect_timeout))
                .set_response_timeout(Some(settings.response_timeout))
                .set_number_of_retries(2)
                .set_min_delay(Duration::from_millis(20))
                .set_max_delay(Duration::from_millis(200)),
            deadline: settings.response_timeout,
        };
        let manager =
            ConnectionManager::new_lazy_with_config(client, config).map_err(RedisError::Command)?;
        Ok(Self {
            handle: RedisHandle::new(manager, settings.response_timeout, feed),
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
