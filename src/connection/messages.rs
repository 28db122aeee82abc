use std::time::Duration;

use actix::Message;

use super::{RedisError, RedisStatus};

/// Asks for a live `PING`; answers its round-trip time.
#[derive(Debug, Message)]
#[rtype(result = "Result<Duration, RedisError>")]
pub struct Ping;

/// Asks for the last observed connection state, without touching Redis.
#[derive(Debug, Message)]
#[rtype(result = "RedisStatus")]
pub struct GetStatus;
