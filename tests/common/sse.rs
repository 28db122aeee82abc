//! The tests' one SSE reader: `GET` through reqwest, and the body cut into frames exactly as the
//! event-stream format defines them (a blank line ends a frame; `id`, `event`, `data`, `retry`
//! fields; lines opening with `:` are comments). A line redkit never sends panics, so that a
//! malformed frame fails the test that reads it.
#![allow(dead_code, unreachable_pub)]

use std::{net::SocketAddr, time::Duration};

use actix_web::http::header::HeaderMap;

/// How long [`Sse::open`] waits for the response head, and [`Sse::next_event`] for an event.
pub const WAIT: Duration = Duration::from_secs(5);

/// One frame of an event stream, as sent.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Frame {
    /// `id:`, if the frame has one.
    pub id: Option<String>,
    /// `event:`, if the frame has one.
    pub event: Option<String>,
    /// Every `data:` line, in order.
    pub data: Vec<String>,
    /// `retry:`, if the frame has one.
    pub retry: Option<u64>,
    /// Every comment line, without its `:` (a heartbeat is one comment).
    pub comments: Vec<String>,
}

impl Frame {
    /// Whether the frame is comments only (a heartbeat).
    pub fn is_comment(&self) -> bool {
        !self.comments.is_empty()
            && self.id.is_none()
            && self.event.is_none()
            && self.data.is_empty()
            && self.retry.is_none()
    }

    /// The data lines joined by `\n`, as a browser's `EventSource` hands them over.
    pub fn data(&self) -> String {
        self.data.join("\n")
    }

    /// Parses one frame's lines (without the blank line that ended it).
    fn parse(block: &str) -> Self {
        let mut frame = Self::default();
        for line in block.split('\n') {
            let line = line.strip_suffix('\r').unwrap_or(line);
            if let Some(comment) = line.strip_prefix(':') {
                frame.comments.push(comment.trim_start().to_owned());
                continue;
            }
            let (field, value) = line
                .split_once(':')
                .unwrap_or_else(|| panic!("an SSE line without a field: {line:?}"));
            // One space after the colon is part of the syntax, not of the value.
            let value = value.strip_prefix(' ').unwrap_or(value).to_owned();
            match field {
                "id" => frame.id = Some(value),
                "event" => frame.event = Some(value),
                "data" => frame.data.push(value),
                "retry" => frame.retry = Some(value.parse().expect("retry: milliseconds")),
                _ => panic!("an unexpected SSE field: {line:?}"),
            }
        }
        frame
    }
}

/// One event stream (or the refusal of one).
pub struct Sse {
    /// The response status.
    pub status: u16,
    /// The response headers.
    pub headers: HeaderMap,
    /// The response head's header lines as text, lower-cased (`name: value\r\n` each), for
    /// messages.
    pub head: String,
    /// The body of a refusal (any status but 200), read whole.
    pub body: String,
    /// Whether the server ended the stream.
    pub ended: bool,
    /// Bytes of event-stream body received so far.
    pub received: usize,
    stream: Option<reqwest::Response>,
    pending: Vec<u8>,
}

impl Sse {
    /// `GET path` with `Accept: text/event-stream` and `headers`; waits for the response head
    /// (at most [`WAIT`]), and reads the body of a refusal whole.
    pub async fn open(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Self {
        let url = format!("http://{addr}{path}");
        let mut req = super::client(Duration::MAX)
            .get(&url)
            .header("accept", "text/event-stream");
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let res = tokio::time::timeout(WAIT, req.send())
            .await
            .unwrap_or_else(|_| panic!("no response head from {url} within {WAIT:?}"))
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        let status = res.status().as_u16();
        let headers = super::actix_headers(res.headers());
        let head = headers
            .iter()
            .map(|(name, value)| {
                format!("{name}: {}\r\n", String::from_utf8_lossy(value.as_bytes()))
            })
            .collect::<String>()
            .to_ascii_lowercase();
        let mut sse = Self {
            status,
            headers,
            head,
            body: String::new(),
            ended: false,
            received: 0,
            stream: None,
            pending: Vec::new(),
        };
        if status == 200 {
            sse.stream = Some(res);
        } else {
            let body = tokio::time::timeout(WAIT, res.bytes())
                .await
                .unwrap_or_else(|_| panic!("the {status} body of {url} within {WAIT:?}"))
                .unwrap_or_else(|e| panic!("the {status} body of {url}: {e}"));
            sse.body = String::from_utf8_lossy(&body).into_owned();
            sse.ended = true;
        }
        sse
    }

    /// The value of response header `name`, if sent (and text).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts a 200 event stream (`text/event-stream`, `X-Accel-Buffering: no`) whose first
    /// frame is the `retry: 3000` hint, and consumes that frame.
    pub async fn opened(mut self) -> Self {
        assert_eq!(self.status, 200, "{}", self.body);
        assert_eq!(self.header("content-type"), Some("text/event-stream"));
        assert_eq!(self.header("x-accel-buffering"), Some("no"));
        let first = self.next_within(WAIT).await.expect("the retry hint");
        assert_eq!(first.retry, Some(3000), "{first:?}");
        self
    }

    /// The next frame (heartbeats included); `None` once the stream ended.
    pub async fn next(&mut self) -> Option<Frame> {
        loop {
            if let Some(frame) = self.take_frame() {
                return Some(frame);
            }
            if !self.read_more().await {
                return None;
            }
        }
    }

    /// Reads the next chunk of the body; false once the stream ended.
    async fn read_more(&mut self) -> bool {
        let chunk = match self.stream.as_mut() {
            Some(stream) => stream.chunk().await,
            None => Ok(None),
        };
        match chunk {
            Ok(Some(bytes)) => {
                self.received += bytes.len();
                self.pending.extend_from_slice(&bytes);
                true
            }
            // A reset connection ends the stream as a close does.
            Err(_) | Ok(None) => {
                self.stream = None;
                self.ended = true;
                false
            }
        }
    }

    /// Cuts the first whole frame off the bytes received.
    fn take_frame(&mut self) -> Option<Frame> {
        let block = self.take_block()?;
        Some(Frame::parse(&block[..block.len() - 2]))
    }

    /// Cuts the first whole frame off the bytes received, as sent (its blank line included).
    fn take_block(&mut self) -> Option<String> {
        let end = self.pending.windows(2).position(|w| w == b"\n\n")?;
        let block: Vec<u8> = self.pending.drain(..end + 2).collect();
        Some(String::from_utf8(block).expect("an SSE frame in UTF-8"))
    }

    /// The next frame as sent, blank line included, for byte-exact assertions; `None` once the
    /// stream ended or when nothing came within `limit`. The frame is checked as
    /// [`next`](Self::next) checks it.
    pub async fn next_block(&mut self, limit: Duration) -> Option<String> {
        tokio::time::timeout(limit, async {
            loop {
                if let Some(block) = self.take_block() {
                    Frame::parse(&block[..block.len() - 2]);
                    return Some(block);
                }
                if !self.read_more().await {
                    return None;
                }
            }
        })
        .await
        .ok()
        .flatten()
    }

    /// The next frame, or `None` when the stream ended; panics when nothing comes within
    /// `limit`.
    pub async fn next_within(&mut self, limit: Duration) -> Option<Frame> {
        tokio::time::timeout(limit, self.next())
            .await
            .unwrap_or_else(|_| panic!("no SSE frame within {limit:?}"))
    }

    /// The next frame, or `None` when the stream ended or nothing came within `limit`.
    pub async fn try_next(&mut self, limit: Duration) -> Option<Frame> {
        tokio::time::timeout(limit, self.next())
            .await
            .ok()
            .flatten()
    }

    /// Asserts that the next frame, within a second, is a heartbeat comment.
    pub async fn expect_heartbeat(&mut self) {
        let frame = self.next_within(Duration::from_secs(1)).await;
        assert!(frame.as_ref().is_some_and(Frame::is_comment), "{frame:?}");
    }

    /// The next frame that is not a heartbeat; `None` when the stream ended; panics when none
    /// comes within [`WAIT`].
    pub async fn next_event(&mut self) -> Option<Frame> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let frame = self.next_within(left).await?;
            if !frame.is_comment() {
                return Some(frame);
            }
        }
    }

    /// Every event up to and including the one with id `last` (heartbeats skipped), then
    /// [`assert_quiet`](Self::assert_quiet) for `quiet`: what a client received of a burst,
    /// whole.
    pub async fn events_through(&mut self, last: &str, quiet: Duration) -> Vec<Frame> {
        let mut events = Vec::new();
        loop {
            let event = self.next_event().await.expect("the stream stays open");
            let done = event.id.as_deref() == Some(last);
            events.push(event);
            if done {
                break;
            }
        }
        self.assert_quiet(quiet).await;
        events
    }

    /// Asserts that for `quiet` only heartbeat comments arrive, and the stream stays open: no
    /// duplicate, late replay or extra event after what was expected.
    pub async fn assert_quiet(&mut self, quiet: Duration) {
        let deadline = tokio::time::Instant::now() + quiet;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(left, self.next()).await {
                Err(_) => return,
                Ok(Some(frame)) => {
                    assert!(frame.is_comment(), "an event after the last: {frame:?}")
                }
                Ok(None) => panic!("the stream ended"),
            }
        }
    }

    /// The data of every event until the stream ends or `limit` passes (heartbeats skipped).
    pub async fn data_within(&mut self, limit: Duration) -> Vec<String> {
        let deadline = tokio::time::Instant::now() + limit;
        let mut out = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return out;
            }
            let Some(frame) = self.try_next(left).await else {
                return out;
            };
            if !frame.data.is_empty() {
                out.push(frame.data());
            }
        }
    }

    /// The data of the next event, if one comes within `limit` (heartbeats skipped).
    pub async fn next_data(&mut self, limit: Duration) -> Option<String> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let frame = self.try_next(left).await?;
            if !frame.data.is_empty() {
                return Some(frame.data());
            }
        }
    }
}
