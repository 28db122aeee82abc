//! Shared bench plumbing: a keep-alive HTTP/1.1 load generator. The private redis-server is the
//! test harness's (`tests/common`).
#![allow(dead_code)]

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// What a load run measured.
#[derive(Debug, Clone, Copy)]
pub struct Load {
    pub requests: u64,
    pub non_200: u64,
    pub errors: u64,
    pub per_sec: f64,
}

/// Drives `connections` keep-alive connections sending `request` back to back for `duration`.
pub async fn load(
    addr: SocketAddr,
    request: &[u8],
    connections: usize,
    duration: Duration,
) -> Load {
    let request: Arc<[u8]> = Arc::from(request);
    let done = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let non_200 = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (done, ok, non_200, errors) =
            (done.clone(), ok.clone(), non_200.clone(), errors.clone());
        let request = Arc::clone(&request);
        tasks.push(tokio::spawn(async move {
            let Ok(mut stream) = TcpStream::connect(addr).await else {
                errors.fetch_add(1, Ordering::Relaxed);
                return;
            };
            stream.set_nodelay(true).expect("nodelay");
            let mut buf = vec![0u8; 64 * 1024];
            let mut filled = 0;
            while !done.load(Ordering::Relaxed) {
                if stream.write_all(&request).await.is_err() {
                    errors.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                // Read one response: head, then Content-Length bytes.
                let (status, total) = loop {
                    if let Some((status, total)) = parse(&buf[..filled]) {
                        break (status, total);
                    }
                    match stream.read(&mut buf[filled..]).await {
                        Ok(0) | Err(_) => {
                            errors.fetch_add(1, Ordering::Relaxed);
                            return;
                        }
                        Ok(n) => filled += n,
                    }
                };
                buf.copy_within(total..filled, 0);
                filled -= total;
                if status == 200 {
                    ok.fetch_add(1, Ordering::Relaxed);
                } else {
                    non_200.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    let started = Instant::now();
    tokio::time::sleep(duration).await;
    done.store(true, Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    for task in tasks {
        task.await.expect("load connection task");
    }
    let requests = ok.load(Ordering::Relaxed) + non_200.load(Ordering::Relaxed);
    Load {
        requests,
        non_200: non_200.load(Ordering::Relaxed),
        errors: errors.load(Ordering::Relaxed),
        per_sec: requests as f64 / elapsed,
    }
}

/// Parses a complete response at the start of `buf`: (status, total length). httparse (what
/// actix itself parses with) keeps the load generator's share of the two cores small, so the
/// server's cost decides the ratios.
pub fn parse(buf: &[u8]) -> Option<(u16, usize)> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    let httparse::Status::Complete(head) = response.parse(buf).ok()? else {
        return None;
    };
    let length: usize = response
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse().ok())
        .unwrap_or(0);
    let total = head + length;
    (buf.len() >= total).then_some((response.code?, total))
}

/// Runs `a` and `b` alternately `rounds` times; answers the median rate of each.
pub async fn compare(
    a: (SocketAddr, &'static [u8]),
    b: (SocketAddr, &'static [u8]),
    connections: usize,
    rounds: usize,
    each: Duration,
) -> (Load, Load) {
    let mut ra = Vec::new();
    let mut rb = Vec::new();
    // Warm-up, not counted.
    load(a.0, a.1, connections, Duration::from_millis(300)).await;
    load(b.0, b.1, connections, Duration::from_millis(300)).await;
    for _ in 0..rounds {
        ra.push(load(a.0, a.1, connections, each).await);
        rb.push(load(b.0, b.1, connections, each).await);
    }
    (median(ra), median(rb))
}

fn median(mut runs: Vec<Load>) -> Load {
    runs.sort_by(|x, y| x.per_sec.total_cmp(&y.per_sec));
    let mut mid = runs[runs.len() / 2];
    mid.non_200 = runs.iter().map(|r| r.non_200).sum();
    mid.errors = runs.iter().map(|r| r.errors).sum();
    mid
}
