//! What idle resumes cost the server's memory: its own test binary, since it measures the
//! process's resident size, which tests running beside it would disturb.

#![cfg(feature = "server")]

mod common;

use std::{net::SocketAddr, time::Duration};

use common::Backend;
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::TcpStream,
};

/// Idle resumes opened at once.
const RESUMES: usize = 96;
/// The most the process may grow for them: a quarter of a MiB each.
const MAX_GROWTH: u64 = 24 * 1024 * 1024;

/// The process's resident set size, in bytes (`VmRSS`).
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    kib * 1024
}

/// Opens `GET /events/{channel}` with `Last-Event-ID: last` and reads the response head only:
/// an idle client, which leaves the replay to the server's buffers.
async fn idle_resume(addr: SocketAddr, channel: &str, last: &str) -> BufReader<TcpStream> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let mut reader = BufReader::new(stream);
    let req = format!(
        "GET /events/{channel} HTTP/1.1\r\nhost: test\r\naccept: text/event-stream\r\nlast-event-id: {last}\r\n\r\n"
    );
    reader.get_mut().write_all(req.as_bytes()).await.unwrap();
    let mut status = String::new();
    reader.read_line(&mut status).await.unwrap();
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    reader
}

/// Reads a resumed stream until `events` events (`id:` lines) arrived.
async fn read_events(reader: &mut BufReader<TcpStream>, events: usize) {
    let mut seen = 0;
    // The unread tail of the last read: an `id:` line may straddle two reads.
    let mut carry: Vec<u8> = Vec::new();
    let mut chunk = vec![0; 64 * 1024];
    while seen < events {
        let n = tokio::time::timeout(Duration::from_secs(10), reader.read(&mut chunk))
            .await
            .expect("the replay in time")
            .unwrap();
        assert!(n > 0, "the stream ended");
        carry.extend_from_slice(&chunk[..n]);
        seen += carry.windows(5).filter(|w| *w == b"\nid: ").count();
        carry = carry.split_off(carry.len().saturating_sub(4));
    }
}

/// Idle resumes of one position share one copy of the replay: 96 clients resuming 95 events of
/// 10 kB (a 1 MB replay) at once and not reading grow the process by at most 24 MiB, on every
/// backend.
#[actix_web::test]
async fn idle_resumes_of_one_position_share_one_copy() {
    for backend in [Backend::memory(), Backend::redis(), Backend::cluster()] {
        let name = match &backend {
            Backend::Memory => "memory",
            Backend::Redis(_) => "redis",
            Backend::Cluster(_) => "cluster",
        };
        let mut config = backend.config();
        config.events.max_connections_per_ip = RESUMES + 8;
        // Frequent heartbeats: the warm-up client's leaving is noticed at once.
        config.events.heartbeat = Duration::from_millis(200);
        let services = common::services(&config);
        let server = common::TestServer::start(services.clone(), 1);
        let events = services.events.clone();
        let blob = "x".repeat(10_000);
        let mut ids = Vec::new();
        for n in 0..96 {
            let data = serde_json::json!({ "n": n, "blob": blob });
            ids.push(events.publish("replayed", &data).await.unwrap().to_string());
        }
        // One resume read whole first: every path of a replay has run once.
        let mut warm = idle_resume(server.addr, "replayed", &ids[0]).await;
        read_events(&mut warm, 95).await;
        drop(warm);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let before = rss();
        // All at once, as a flood of reconnecting clients (or an attacker) would.
        let idle = futures_util::future::join_all(
            (0..RESUMES).map(|_| idle_resume(server.addr, "replayed", &ids[0])),
        )
        .await;
        // Every resume is open, and the server has written what its sockets take.
        assert!(
            common::eventually(Duration::from_secs(10), || async {
                events.info("replayed").await.unwrap().subscribers == RESUMES
            })
            .await
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        let grown = rss().saturating_sub(before);
        eprintln!(
            "{name}: {RESUMES} idle resumes of a 1 MB replay grew RSS by {:.1} MiB",
            grown as f64 / (1024.0 * 1024.0)
        );
        assert!(
            grown <= MAX_GROWTH,
            "{name}: {RESUMES} idle resumes grew RSS by {grown} bytes"
        );
        drop(idle);
        server.stop().await;
    }
}
