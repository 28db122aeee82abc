//! Event ids, name rules and the SSE wire format. Every event is encoded once, here.

use std::{fmt, str::FromStr};

use bytes::{BufMut, Bytes, BytesMut};

/// Longest channel name, in bytes.
pub const MAX_CHANNEL_LEN: usize = 128;
/// Longest event type, in bytes.
pub const MAX_EVENT_TYPE_LEN: usize = 64;
/// The event type of an event published without `?event=`.
pub const DEFAULT_EVENT_TYPE: &str = "message";

/// A Redis Stream id (`<ms>-<seq>`): totally ordered per channel, the SSE `id:` of an event.
/// The memory backend mints ids of the same shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct EventId {
    /// Milliseconds since the Unix epoch when the event was appended.
    pub ms: u64,
    /// Sequence number within that millisecond.
    pub seq: u64,
}

impl EventId {
    /// The id before every real id (`0-0`).
    pub const ZERO: Self = Self { ms: 0, seq: 0 };

    /// The next id after `self` at wall-clock `now_ms` (never goes backwards).
    pub fn next(self, now_ms: u64) -> Self {
        if now_ms > self.ms {
            Self { ms: now_ms, seq: 0 }
        } else {
            Self {
                ms: self.ms,
                seq: self.seq + 1,
            }
        }
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

impl FromStr for EventId {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        let (ms, seq) = s.split_once('-').ok_or(())?;
        let digits = |part: &str| {
            if part.is_empty() || part.len() > 20 || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(());
            }
            part.parse::<u64>().map_err(|_| ())
        };
        Ok(Self {
            ms: digits(ms)?,
            seq: digits(seq)?,
        })
    }
}

/// Whether `name` is a valid channel name: 1 to 128 bytes of `[A-Za-z0-9:_.-]`.
pub fn valid_channel(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_CHANNEL_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b':' | b'_' | b'.' | b'-'))
}

/// Whether `kind` is a valid event type: 1 to 64 bytes of `[A-Za-z0-9_.-]` (so never CR or LF).
pub fn valid_event_type(kind: &str) -> bool {
    !kind.is_empty()
        && kind.len() <= MAX_EVENT_TYPE_LEN
        && kind
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// The user a private channel (`user:{id}`) belongs to, `None` for a public channel.
pub fn private_owner(channel: &str) -> Option<&str> {
    channel.strip_prefix("user:")
}

/// Encodes one event as an SSE frame. `data` is split on every line break so that nothing in it
/// can start a new field or a new event (compact JSON has none, but history written by others
/// might).
pub fn encode_event(id: EventId, kind: &str, data: &str) -> Bytes {
    let mut buf = BytesMut::with_capacity(data.len() + kind.len() + 48);
    buf.put_slice(b"id: ");
    buf.put_slice(id.to_string().as_bytes());
    buf.put_slice(b"\nevent: ");
    buf.put_slice(kind.as_bytes());
    buf.put_u8(b'\n');
    put_data(&mut buf, data);
    buf.freeze()
}

/// Writes `data` as `data:` lines (one per line of it) and the blank line that ends the block.
fn put_data(buf: &mut BytesMut, data: &str) {
    let mut rest = data;
    loop {
        let end = rest.find(['\r', '\n']).unwrap_or(rest.len());
        buf.put_slice(b"data: ");
        buf.put_slice(&rest.as_bytes()[..end]);
        buf.put_u8(b'\n');
        if end == rest.len() {
            break;
        }
        let skip = if rest[end..].starts_with("\r\n") {
            2
        } else {
            1
        };
        rest = &rest[end + skip..];
    }
    buf.put_u8(b'\n');
}

/// The event type and data of a frame made by [`encode_event`] (data lines joined by `\n`).
fn parse_event(frame: &[u8]) -> Option<(&str, String)> {
    let text = std::str::from_utf8(frame).ok()?;
    let mut kind = None;
    let mut data: Vec<&str> = Vec::new();
    for line in text.lines() {
        if let Some(k) = line.strip_prefix("event: ") {
            kind = Some(k);
        } else if let Some(d) = line.strip_prefix("data: ") {
            data.push(d);
        }
    }
    Some((kind?, data.join("\n")))
}

/// The body of an event on a multi-channel stream, without its `id:` line (the stream writes
/// its own, the composite position): the event type as published, and as data the JSON object
/// `{"channel":..,"id":..,"data":<the published JSON>}`. Made from the single-channel frame.
pub(crate) fn encode_multi_event(channel: &str, id: EventId, single: &[u8]) -> Bytes {
    let (kind, data) = parse_event(single).unwrap_or((DEFAULT_EVENT_TYPE, String::from("null")));
    let mut buf = BytesMut::with_capacity(single.len() + channel.len() + 48);
    buf.put_slice(b"event: ");
    buf.put_slice(kind.as_bytes());
    buf.put_u8(b'\n');
    let wrapped = format!(r#"{{"channel":"{channel}","id":"{id}","data":{data}}}"#);
    put_data(&mut buf, &wrapped);
    buf.freeze()
}

/// A presence frame (`event: join` or `event: leave`) for `user`; `channel` is named in the data
/// on multi-channel streams.
pub(crate) fn encode_presence(kind: &str, channel: Option<&str>, user: &str) -> Bytes {
    let user = serde_json::Value::from(user);
    let data = match channel {
        Some(channel) => format!(r#"{{"channel":"{channel}","user":{user}}}"#),
        None => format!(r#"{{"user":{user}}}"#),
    };
    Bytes::from(format!("event: {kind}\ndata: {data}\n\n"))
}

/// `event: reset` for one channel of a multi-channel stream (without its `id:` line).
pub(crate) fn encode_multi_reset(channel: &str) -> Bytes {
    Bytes::from(format!(
        "event: reset\ndata: {{\"channel\":\"{channel}\"}}\n\n"
    ))
}

/// The `retry:` hint that opens every stream.
pub fn encode_retry(retry_ms: u64) -> Bytes {
    Bytes::from(format!("retry: {retry_ms}\n\n"))
}

/// A control event without id (`reset`, `overflow`).
pub fn encode_control(kind: &'static str) -> Bytes {
    Bytes::from(format!("event: {kind}\ndata: {{}}\n\n"))
}

/// The heartbeat comment.
pub const HEARTBEAT: &[u8] = b": keep-alive\n\n";

/// Splits a published payload (`<id>\n<event>\n<data>`) as written by the publish script.
pub fn split_payload(payload: &[u8]) -> Option<(EventId, &str, &str)> {
    let text = std::str::from_utf8(payload).ok()?;
    let (id, rest) = text.split_once('\n')?;
    let (kind, data) = rest.split_once('\n')?;
    Some((id.parse().ok()?, kind, data))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ids parse, print and order like Redis stream ids.
    #[test]
    fn ids_round_trip_and_order() {
        let id: EventId = "1700000000000-3".parse().unwrap();
        assert_eq!(id.to_string(), "1700000000000-3");
        assert!(id < "1700000000000-10".parse().unwrap());
        assert!("x".parse::<EventId>().is_err());
        assert!("1-".parse::<EventId>().is_err());
        assert!("-1".parse::<EventId>().is_err());
        assert_eq!(id.next(5), EventId { ms: id.ms, seq: 4 });
        assert_eq!(
            id.next(id.ms + 1),
            EventId {
                ms: id.ms + 1,
                seq: 0
            }
        );
    }

    /// Line breaks in data become separate `data:` lines, never new fields.
    #[test]
    fn data_lines_are_split() {
        let frame = encode_event(EventId { ms: 1, seq: 0 }, "x", "a\nevent: evil\r\nb\rc");
        assert_eq!(
            &frame[..],
            b"id: 1-0\nevent: x\ndata: a\ndata: event: evil\ndata: b\ndata: c\n\n"
        );
    }

    /// A multi-channel body names the channel and the event's own id, and keeps the data.
    #[test]
    fn multi_body_wraps_the_data() {
        let id = EventId { ms: 7, seq: 2 };
        let single = encode_event(id, "note", r#"{"a":1}"#);
        assert_eq!(
            &encode_multi_event("news", id, &single)[..],
            b"event: note\ndata: {\"channel\":\"news\",\"id\":\"7-2\",\"data\":{\"a\":1}}\n\n"
        );
        assert_eq!(
            &encode_presence("join", Some("a"), "4\"2")[..],
            b"event: join\ndata: {\"channel\":\"a\",\"user\":\"4\\\"2\"}\n\n"
        );
    }

    /// Names follow the documented alphabets and lengths.
    #[test]
    fn name_rules() {
        assert!(valid_channel("user:42.a-b_c"));
        assert!(!valid_channel(""));
        assert!(!valid_channel(&"a".repeat(129)));
        assert!(!valid_channel("a b"));
        assert!(valid_event_type("update.v2"));
        assert!(!valid_event_type("a\nb"));
        assert!(!valid_event_type("a:b"));
    }
}
