//! A minimal SSE client over TCP (HTTP/1.1, chunked bodies), with request headers and any status.
#![allow(dead_code, unreachable_pub)]

use std::{net::SocketAddr, time::Duration};

use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::TcpStream,
};

/// One event stream (or the refusal of one).
pub struct Sse {
    /// The response status.
    pub status: u16,
    /// The response head, lower-cased.
    pub head: String,
    reader: BufReader<TcpStream>,
    pending: String,
    /// Whether the server ended the stream.
    pub ended: bool,
}

impl Sse {
    /// `GET path` with `headers`; reads the response head (at most `limit`).
    pub async fn open(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Self {
        let limit = Duration::from_secs(10);
        let stream = TcpStream::connect(addr).await.unwrap();
        let mut reader = BufReader::new(stream);
        let mut req = format!("GET {path} HTTP/1.1\r\nhost: test\r\naccept: text/event-stream\r\n");
        for (name, value) in headers {
            req.push_str(&format!("{name}: {value}\r\n"));
        }
        req.push_str("\r\n");
        reader.get_mut().write_all(req.as_bytes()).await.unwrap();
        let mut head = String::new();
        loop {
            let mut line = String::new();
            let n = tokio::time::timeout(limit, reader.read_line(&mut line))
                .await
                .expect("response head in time")
                .unwrap();
            assert!(n > 0, "connection closed before the response head");
            if line == "\r\n" {
                break;
            }
            head.push_str(&line);
        }
        let status = head[9..12].parse().unwrap();
        Self {
            status,
            head: head.to_ascii_lowercase(),
            reader,
            pending: String::new(),
            ended: false,
        }
    }

    /// The value of response header `name` (lower case), if sent.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|line| {
            line.strip_prefix(name)
                .and_then(|rest| rest.strip_prefix(':'))
                .map(str::trim)
        })
    }

    /// The next raw SSE block (heartbeats included); `None` once the stream ended or when
    /// nothing came within `limit`.
    pub async fn next_block(&mut self, limit: Duration) -> Option<String> {
        tokio::time::timeout(limit, async {
            loop {
                if let Some(end) = self.pending.find("\n\n") {
                    return Some(self.pending.drain(..end + 2).collect());
                }
                if self.ended || !self.read_chunk().await {
                    self.ended = true;
                    return None;
                }
            }
        })
        .await
        .ok()
        .flatten()
    }

    async fn read_chunk(&mut self) -> bool {
        let mut size = String::new();
        if self.reader.read_line(&mut size).await.unwrap_or(0) == 0 {
            return false;
        }
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        let mut data = vec![0; size + 2];
        if size == 0 || self.reader.read_exact(&mut data).await.is_err() {
            return false;
        }
        data.truncate(size);
        self.pending.push_str(&String::from_utf8(data).unwrap());
        true
    }

    /// The `data:` of every event until the stream ends or `limit` passes (heartbeats skipped).
    pub async fn data_within(&mut self, limit: Duration) -> Vec<String> {
        let deadline = tokio::time::Instant::now() + limit;
        let mut out = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return out;
            }
            let Some(block) = self.next_block(left).await else {
                return out;
            };
            let data: Vec<&str> = block
                .lines()
                .filter_map(|l| l.strip_prefix("data: "))
                .collect();
            if !data.is_empty() {
                out.push(data.join("\n"));
            }
        }
    }

    /// The `data:` of the next event, if one comes within `limit`.
    pub async fn next_data(&mut self, limit: Duration) -> Option<String> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let block = self.next_block(left).await?;
            let data: Vec<&str> = block
                .lines()
                .filter_map(|l| l.strip_prefix("data: "))
                .collect();
            if !data.is_empty() {
                return Some(data.join("\n"));
            }
        }
    }
}
