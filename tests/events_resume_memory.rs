//! What idle resumes cost the server's memory: its own test binary, since it measures the
//! process's resident size, which tests running beside it would disturb.

#![cfg(feature = "server")]

mod common;

use std::{net::SocketAddr, time::Duration};

use common::{Backend, sse::Sse};

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
async fn idle_resume(addr: SocketAddr, channel: &str, last: &str) -> Sse {
    let path = format!("/events/{channel}");
    let sse = Sse::open(addr, &path, &[("last-event-id", last)]).await;
    assert_eq!(sse.status, 200, "{}", sse.body);
    sse
}

/// Reads a resumed stream until `events` events (frames with an `id:`) arrived.
async fn read_events(sse: &mut Sse, events: usize) {
    let mut seen = 0;
    while seen < events {
        let frame = sse
            .next_within(Duration::from_secs(10))
            .await
            .expect("the stream ended");
        seen += usize::from(frame.id.is_some());
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
