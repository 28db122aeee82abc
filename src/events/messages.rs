use actix::Message;

/// Asks the actor to make sure this process is subscribed to `channel` in Redis because a local
/// client joined it; answers once the subscription is in place (or known to be pending because
/// Redis is unreachable: it is then made on reconnect).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Join {
    /// The channel a client joined.
    pub channel: String,
}

/// Tells the actor that the last local client of `channel` left; it unsubscribes unless a client
/// joined again meanwhile. Answers nothing.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Left {
    /// The channel that lost its last local client.
    pub channel: String,
}

/// Asks the actor to end every stream cleanly (server shutdown) and refuse new subscribers;
/// answers when all streams were told to end.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Shutdown;
