//! Open streams lose no acknowledged event through failovers.

use super::*;

/// How long an open stream may take to get an event acknowledged once the cluster serves its
/// slot again: the subscriber's liveness check (500 ms), its deadline, the resync and the catch-up,
/// with slack for a loaded machine.
const CATCH_UP: Duration = Duration::from_secs(10);

/// What one SSE client of the failover soak received: each event's id and `n`, in order, and
/// the `event: reset`s among them (by position).
#[derive(Debug, Default)]
struct Received {
    events: Vec<((u64, u64), u64)>,
    resets: Vec<usize>,
    /// The stream was cut as a slow consumer (`event: overflow`).
    overflow: bool,
    ended: bool,
}

/// A stream id (`ms-seq`) as an ordered pair.
fn stream_id(id: &str) -> (u64, u64) {
    let (ms, seq) = id.split_once('-').expect("a stream id");
    (ms.parse().unwrap(), seq.parse().unwrap())
}

/// Reads `stream` into `got` until the event whose data holds `"end":true` (or the stream's
/// end): every event's id and `n`, every reset's position.
async fn read_until_end(mut stream: Sse, got: Arc<std::sync::Mutex<Received>>) {
    while let Some(frame) = stream.next().await {
        let mut got = got.lock().unwrap();
        match frame.event.as_deref() {
            Some("reset") => {
                let at = got.events.len();
                got.resets.push(at);
                continue;
            }
            Some("overflow") => {
                got.overflow = true;
                continue;
            }
            _ => {}
        }
        let Some(id) = &frame.id else {
            continue;
        };
        let data: serde_json::Value =
            serde_json::from_str(frame.data.first().expect("an event's data")).unwrap();
        if data["end"] == json!(true) {
            got.ended = true;
            return;
        }
        got.events
            .push((stream_id(id), data["n"].as_u64().expect("n")));
    }
}

/// One `POST /events/{channel}` with [`PUBLISHER`]'s token, bounded by [`REQUEST_BOUND`]:
/// the acknowledged id (202), or the status (0: no answer in time).
async fn publish_once(addr: SocketAddr, channel: &str, body: &str) -> Result<(u64, u64), u16> {
    let bearer = format!("Bearer {PUBLISHER}");
    let headers = [
        ("authorization", bearer.as_str()),
        ("content-type", "application/json"),
    ];
    let path = format!("/events/{channel}");
    let sent = common::http(addr, "POST", &path, &headers, body.as_bytes());
    match tokio::time::timeout(REQUEST_BOUND, sent).await {
        Ok(reply) if reply.status == 202 => Ok(stream_id(reply.json()["id"].as_str().unwrap())),
        Ok(reply) => Err(reply.status),
        Err(_) => Err(0),
    }
}

/// How long the failover soak runs, and how often it kills a primary: `REDKIT_EVENTS_SOAK_SECS`
/// set (e.g. 240 or 600) runs the long soak (a primary killed every 60 s, restarted as a replica
/// 30 s later); unset, the suite's run (one kill at 2 s, the node back at 14 s, 22 s in all).
fn soak_plan() -> (Duration, Duration, Duration) {
    match std::env::var("REDKIT_EVENTS_SOAK_SECS") {
        Ok(secs) => (
            Duration::from_secs(secs.parse().expect("REDKIT_EVENTS_SOAK_SECS: seconds")),
            Duration::from_secs(60),
            Duration::from_secs(30),
        ),
        Err(_) => (
            Duration::from_secs(22),
            Duration::from_secs(60),
            Duration::from_secs(12),
        ),
    }
}

/// No acknowledged event is lost by an open stream through primary failovers: two instances on
/// 3 primaries + 3 replicas, two SSE clients per channel on B, publishes through A on three
/// channels of three primaries without pause; a primary is killed (and restarted as a replica
/// later) while they run. Every event A acknowledged (202) reaches every client exactly once, in
/// id order, and the streams stay open without `event: reset` (history holds everything here).
#[actix_web::test]
async fn open_streams_lose_no_acknowledged_event_through_failovers() {
    let (length, period, restart_after) = soak_plan();
    let backend = Backend::cluster_with_replicas();
    let dir = tempfile::tempdir().unwrap();
    let mut config = fleet_config(&backend);
    config.database = DatabaseLocation::File(dir.path().join("users.sqlite"));
    config.events.history_len = 1_000_000;
    let a = serve_instance(&config, 1).await;
    let b = serve_instance(&config, 1).await;
    publish(
        a.addr,
        PUBLISHER,
        "soak-anchor",
        r#"{"n":0}"#,
        Duration::ZERO,
    )
    .await;
    let mut backend = backend;
    let cluster = backend.cluster_mut().unwrap();
    let anchor = key_containing(cluster, "soak-anchor");
    let mut channels = Vec::new();
    for node in cluster.primaries() {
        channels.extend(names_on(
            cluster,
            &anchor,
            "soak-anchor",
            node,
            &format!("soak{node}-"),
            1,
        ));
    }
    assert_eq!(channels.len(), 3);
    let keys: Vec<String> = channels
        .iter()
        .map(|c| anchor.replacen("soak-anchor", c, 1))
        .collect();
    let mut readers = Vec::new();
    for channel in &channels {
        for _ in 0..2 {
            let stream = open_stream(b.addr, &format!("/events/{channel}")).await;
            let got = Arc::new(std::sync::Mutex::new(Received::default()));
            actix_web::rt::spawn(read_until_end(stream, got.clone()));
            readers.push(got);
        }
    }
    for channel in &channels {
        wait_subscribed(backend.cluster_mut().unwrap(), channel).await;
    }
    backend.cluster_mut().unwrap().wait_replicated();

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut publishers = Vec::new();
    for channel in channels.clone() {
        let (stop, addr) = (stop.clone(), a.addr);
        publishers.push(actix_web::rt::spawn(async move {
            let (mut acked, mut refused) = (Vec::new(), Vec::new());
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match publish_once(addr, &channel, &format!(r#"{{"n":{n}}}"#)).await {
                    Ok(id) => acked.push((id, n)),
                    Err(status) => {
                        refused.push(status);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
                n += 1;
            }
            (acked, refused)
        }));
    }
    // The chaos: kill the primary of one channel after another, restart each as a replica.
    let started = Instant::now();
    let chaos = tokio::task::spawn_blocking(move || {
        let mut round = 0;
        let mut kills = Vec::new();
        while started.elapsed() + Duration::from_secs(2) < length {
            let round_start = started + period * round;
            let wait_until = |at: Instant| {
                while Instant::now() < at {
                    std::thread::sleep(Duration::from_millis(50));
                }
            };
            wait_until(round_start + Duration::from_secs(2));
            let cluster = backend.cluster_mut().unwrap();
            let victim = cluster.primary_for(&keys[round as usize % keys.len()]);
            cluster.kill(victim);
            kills.push((started.elapsed(), victim));
            wait_until((round_start + restart_after).min(started + length));
            cluster.wait_ready(Duration::from_secs(30));
            cluster.restart(victim);
            cluster.wait_ready(Duration::from_secs(30));
            round += 1;
            wait_until((started + period * round).min(started + length));
        }
        (backend, kills)
    });
    let (backend, kills) = chaos.await.unwrap();
    tokio::time::sleep(length.saturating_sub(started.elapsed())).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut acked = Vec::new();
    for publisher in publishers {
        acked.push(publisher.await.unwrap());
    }
    // The end marker of each channel, once it is acknowledged.
    let stopped_at = Instant::now();
    for channel in &channels {
        publish(
            a.addr,
            PUBLISHER,
            channel,
            r#"{"end":true}"#,
            Duration::from_secs(10),
        )
        .await;
    }
    // Every client has its end marker within `CATCH_UP` of its publication.
    let ended = common::eventually(CATCH_UP, || async {
        readers.iter().all(|got| got.lock().unwrap().ended)
    })
    .await;
    let mut lost_total = 0;
    for (index, got) in readers.iter().enumerate() {
        let got = got.lock().unwrap();
        let (acks, refused) = &acked[index / 2];
        let ids: Vec<(u64, u64)> = got.events.iter().map(|(id, _)| *id).collect();
        let in_order = ids.windows(2).all(|w| w[0] < w[1]);
        let lost: Vec<&((u64, u64), u64)> = acks
            .iter()
            .filter(|(id, _)| ids.binary_search(id).is_err())
            .collect();
        let other: Vec<u16> = refused
            .iter()
            .copied()
            .filter(|s| *s != 503 && *s != 0)
            .collect();
        eprintln!(
            "{} client {}: acknowledged {}, refused {} ({} not 503/timeout), received {}, lost {}, resets {:?}, overflow {}, ended {}, in order {in_order}",
            channels[index / 2],
            index % 2,
            acks.len(),
            refused.len(),
            other.len(),
            got.events.len(),
            lost.len(),
            got.resets,
            got.overflow,
            got.ended
        );
        if let (Some(first), Some(last)) = (lost.first(), lost.last()) {
            eprintln!("  lost n {} ..= {}", first.1, last.1);
        }
        lost_total += lost.len();
        assert!(
            in_order,
            "duplicate or out-of-order ids on {}",
            channels[index / 2]
        );
        assert!(got.resets.is_empty(), "reset on {}", channels[index / 2]);
        assert!(other.is_empty(), "publishes answered {other:?}");
    }
    assert!(
        ended,
        "an end marker missing {CATCH_UP:?} after its publication"
    );
    eprintln!(
        "kills {kills:?}; ran {:?}; end markers reached every client {:?} after the publishers stopped",
        started.elapsed(),
        stopped_at.elapsed()
    );
    assert_eq!(lost_total, 0, "acknowledged events never streamed");
    drop(backend);
}
