//! The frames queued for SSE clients: encoded once, shared by every queue they are put in.

use std::sync::{Arc, OnceLock};

use bytes::Bytes;

use super::wire::{EventId, encode_multi_event, encode_multi_reset, encode_presence};

/// What a [`Frame`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A published event, with its id (for de-duplication at the history/live handover).
    Event(EventId),
    /// `event: reset`: the channel's events up to this id are lost to the client.
    Reset(EventId),
    /// `event: join` / `event: leave` (only to clients that asked for presence).
    Presence,
    /// A heartbeat comment.
    Heartbeat,
}

/// One outgoing SSE frame, shared by every client it is queued for: a queue slot is one pointer.
#[derive(Debug)]
pub(crate) struct Frame {
    pub(crate) kind: Kind,
    /// The channel it belongs to (`None` for heartbeats).
    pub(crate) channel: Option<Arc<str>>,
    /// The frame as a single-channel stream sends it.
    pub(crate) bytes: Bytes,
    /// The body a multi-channel stream sends (without its `id:` line), made once, by the first
    /// multi-channel stream that sends it.
    pub(crate) multi: OnceLock<Bytes>,
}

impl Frame {
    pub(crate) fn new(kind: Kind, channel: Option<Arc<str>>, bytes: Bytes) -> Self {
        Self {
            kind,
            channel,
            bytes,
            multi: OnceLock::new(),
        }
    }

    /// The body of this frame on a multi-channel stream (the `id:` line is the stream's).
    pub(crate) fn multi_body(&self) -> &Bytes {
        self.multi.get_or_init(|| {
            let channel = self.channel.as_deref().unwrap_or_default();
            match self.kind {
                Kind::Event(id) => encode_multi_event(channel, id, &self.bytes),
                Kind::Reset(_) => encode_multi_reset(channel),
                // Presence frames are made with both encodings.
                Kind::Presence | Kind::Heartbeat => self.bytes.clone(),
            }
        })
    }
}

/// What a queue holds: a shared frame.
pub(crate) type Outgoing = Arc<Frame>;

/// A presence frame for `user` on `channel`, carrying both encodings.
pub(crate) fn presence_frame(channel: &Arc<str>, kind: &str, user: &str) -> Outgoing {
    let frame = Frame::new(
        Kind::Presence,
        Some(channel.clone()),
        encode_presence(kind, None, user),
    );
    let _ = frame.multi.set(encode_presence(kind, Some(channel), user));
    Arc::new(frame)
}
