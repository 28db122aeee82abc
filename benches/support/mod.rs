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

/// Whether this is the smoke run (`REDKIT_BENCH_SMOKE=1`, what CI runs with `cargo test
/// --benches`): each bench shrinks its counts and durations to a second or two and checks only
/// what it asserts (exact admissions, every delivery by index, the same bytes, no errors); its
/// rates and ratios then mean nothing (a debug build, no warm-up to speak of).
pub fn smoke() -> bool {
    std::env::var("REDKIT_BENCH_SMOKE").as_deref() == Ok("1")
}

/// `full`, or `small` in the [`smoke`] run.
pub fn sized<T>(full: T, small: T) -> T {
    if smoke() { small } else { full }
}

/// Serves the app `$factory` builds with one worker on a free loopback port, spawned on the
/// current actix system; answers its address.
#[allow(unused_macros)]
macro_rules! serve_one_worker {
    ($factory:expr) => {{
        let server = actix_web::HttpServer::new($factory)
            .workers(1)
            .bind("127.0.0.1:0")
            .unwrap();
        let addr = server.addrs()[0];
        actix_web::rt::spawn(server.run());
        addr
    }};
}
#[allow(unused_imports)]
pub(crate) use serve_one_worker;

/// Serves the minimal handler redkit's L1 hit is measured against: `GET /products/{id}`
/// answering `body` with the same headers as redkit's answer, request id included (same length;
/// its value differs per request there). One worker on a free loopback port; call inside an
/// actix system.
pub fn serve_product_baseline(body: bytes::Bytes) -> SocketAddr {
    use actix_web::{App, HttpResponse, web};
    serve_one_worker!(move || {
        let body = body.clone();
        App::new().route(
            "/products/{id}",
            web::get().to(move || {
                let body = body.clone();
                async move {
                    HttpResponse::Ok()
                        .content_type("application/json")
                        .insert_header(("X-Cache", "HIT-L1"))
                        .insert_header(("X-Request-Id", "bc7297220000000000000001"))
                        .body(body)
                }
            }),
        )
    })
}

/// What a load run measured.
#[derive(Debug, Clone, Copy)]
pub struct Load {
    pub requests: u64,
    pub non_200: u64,
    pub errors: u64,
    pub per_sec: f64,
}

/// The calling thread's id (`/proc/thread-self`).
fn current_tid() -> Option<u32> {
    std::fs::read_link("/proc/thread-self")
        .ok()
        .and_then(|p| p.file_name()?.to_str()?.parse().ok())
}

/// `taskset ARGS`, quietly; whether it succeeded.
fn taskset(args: &[&str]) -> bool {
    std::process::Command::new("taskset")
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The ids of this process's threads other than the calling one (`/proc/self/task`).
fn other_threads() -> Vec<u32> {
    let own = current_tid();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|task| task.file_name().to_str()?.parse().ok())
        .filter(|tid| Some(*tid) != own)
        .collect()
}

/// Pins this thread (the load generator) and the `beside` processes (the private redis-server)
/// to CPU 1, and every other thread of this process (the servers, their actors and Redis clients)
/// to CPU 0, with `taskset` (util-linux). The servers compared then share one core and nothing
/// else. Answers whether it could.
pub fn pin_load_generator_apart(beside: &[u32]) -> bool {
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    if cpus < 2 {
        return false;
    }
    let Some(own) = current_tid() else {
        return false;
    };
    let mut ok = taskset(&["-p", "-c", "1", &own.to_string()]);
    for pid in beside {
        // `-a`: every thread of the process.
        ok &= taskset(&["-a", "-p", "-c", "1", &pid.to_string()]);
    }
    for tid in other_threads() {
        ok &= taskset(&["-p", "-c", "0", &tid.to_string()]);
    }
    ok
}

/// Writes the next request to send into the (cleared) buffer: lets a load vary its requests.
pub type MakeRequest = Arc<dyn Fn(&mut Vec<u8>) + Send + Sync>;

/// A [`MakeRequest`] sending `request` every time.
pub fn fixed(request: &[u8]) -> MakeRequest {
    let request: Arc<[u8]> = Arc::from(request);
    Arc::new(move |buf: &mut Vec<u8>| buf.extend_from_slice(&request))
}

/// Drives `connections` keep-alive connections sending `request` back to back for `duration`.
pub async fn load(
    addr: SocketAddr,
    request: &[u8],
    connections: usize,
    duration: Duration,
) -> Load {
    load_with(addr, fixed(request), connections, duration).await
}

/// [`load`] with each request made by `make`.
pub async fn load_with(
    addr: SocketAddr,
    make: MakeRequest,
    connections: usize,
    duration: Duration,
) -> Load {
    let done = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let non_200 = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (done, ok, non_200, errors) =
            (done.clone(), ok.clone(), non_200.clone(), errors.clone());
        let make = Arc::clone(&make);
        tasks.push(tokio::spawn(async move {
            let Ok(mut stream) = TcpStream::connect(addr).await else {
                errors.fetch_add(1, Ordering::Relaxed);
                return;
            };
            stream.set_nodelay(true).expect("nodelay");
            let mut buf = vec![0u8; 64 * 1024];
            let mut filled = 0;
            let mut request = Vec::with_capacity(256);
            while !done.load(Ordering::Relaxed) {
                request.clear();
                make(&mut request);
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

/// `a` measured against `b`: each round loads both at once.
#[derive(Debug, Clone)]
pub struct Comparison {
    /// Median rates of each side (error counts summed over every round).
    pub a: Load,
    pub b: Load,
    /// Per round: `a`'s throughput over `b`'s, measured over the same interval.
    pub ratios: Vec<f64>,
}

impl Comparison {
    /// The median per-round throughput ratio: the headline figure.
    pub fn ratio(&self) -> f64 {
        let mut sorted = self.ratios.clone();
        sorted.sort_by(f64::total_cmp);
        match sorted.len() {
            0 => f64::NAN,
            n if n % 2 == 1 => sorted[n / 2],
            n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
        }
    }

    /// `min–max` of the per-round ratios.
    pub fn spread(&self) -> String {
        let min = self.ratios.iter().copied().fold(f64::INFINITY, f64::min);
        let max = self.ratios.iter().copied().fold(0.0, f64::max);
        format!("{min:.3}–{max:.3}")
    }
}

/// Loads `a` and `b` at the same time, `connections` each, `rounds` times.
///
/// Measured side by side rather than one after the other: on these machines the speed of the
/// CPU drifts by tens of percent within seconds, which swamps a sequential comparison (measured:
/// per-round ratios from 0.6 to 1.0 for two unchanged servers). Loaded together, on one core (see
/// [`pin_load_generator_apart`]), both servers see the same machine, the scheduler gives each
/// half of it, and their throughput ratio is the inverse ratio of their cost per request.
pub async fn compare(
    a: (SocketAddr, &'static [u8]),
    b: (SocketAddr, &'static [u8]),
    connections: usize,
    rounds: usize,
    each: Duration,
) -> Comparison {
    let (a, b) = ((a.0, fixed(a.1)), (b.0, fixed(b.1)));
    compare_with(a, b, connections, rounds, each).await
}

/// [`compare`] with each side's requests made by its [`MakeRequest`].
pub async fn compare_with(
    a: (SocketAddr, MakeRequest),
    b: (SocketAddr, MakeRequest),
    connections: usize,
    rounds: usize,
    each: Duration,
) -> Comparison {
    // Warm-up, not counted.
    let warm = sized(Duration::from_millis(300), Duration::from_millis(100));
    tokio::join!(
        load_with(a.0, a.1.clone(), connections, warm),
        load_with(b.0, b.1.clone(), connections, warm)
    );
    let mut ra = Vec::new();
    let mut rb = Vec::new();
    for _ in 0..rounds {
        let (x, y) = tokio::join!(
            load_with(a.0, a.1.clone(), connections, each),
            load_with(b.0, b.1.clone(), connections, each)
        );
        ra.push(x);
        rb.push(y);
    }
    if std::env::var_os("REDKIT_BENCH_VERBOSE").is_some() {
        for (x, y) in ra.iter().zip(&rb) {
            println!(
                "   round: a {:>9.0} req/s   b {:>9.0} req/s",
                x.per_sec, y.per_sec
            );
        }
    }
    let ratios = ra
        .iter()
        .zip(&rb)
        .map(|(x, y)| x.per_sec / y.per_sec)
        .collect();
    Comparison {
        a: median(ra),
        b: median(rb),
        ratios,
    }
}

fn median(mut runs: Vec<Load>) -> Load {
    runs.sort_by(|x, y| x.per_sec.total_cmp(&y.per_sec));
    let mut mid = runs[runs.len() / 2];
    mid.non_200 = runs.iter().map(|r| r.non_200).sum();
    mid.errors = runs.iter().map(|r| r.errors).sum();
    mid
}
