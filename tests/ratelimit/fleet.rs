//! Rate limits at the edges, across instances: every algorithm keeps its single-instance bound
//! with two and three instances sharing one Redis or a cluster (a window's edge, a burst after a
//! refill, random schedules), one request writes one entry, and Redis's own expiry, in real
//! time, ends a window no earlier and no later than the algorithm says.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use actix_web::test::TestRequest;
use futures_util::future::join_all;
use redkit::{
    Config,
    clock::{Clock, ManualClock, SystemClock},
    http::Services,
    ratelimit::RateLimitConfig,
};

use crate::common::{Backend, Reply, app, call, services};

/// A whole minute (so a whole 20 s window): fixed windows start exactly at the clock's start.
const START_US: u64 = 1_700_000_040_000_000;
const ALGORITHMS: [&str; 3] = ["log", "counter", "gcra"];
const MS: u64 = 1_000;
const SECOND: u64 = 1_000_000;

fn setup(backend: &Backend, spec: &str, clock: Arc<dyn Clock>) -> Config {
    let mut config = backend.config();
    if let Some(redis) = &mut config.redis {
        // Exactness is about Redis, not about timeouts (a timeout falls back, fail-open).
        redis.response_timeout = Duration::from_secs(5);
    }
    let specs = ["default=off".to_owned(), spec.to_owned()];
    let mut rate_limit = RateLimitConfig::parse(&specs, &[] as &[&str]).expect("valid spec");
    rate_limit.clock = clock;
    config.rate_limit = rate_limit;
    config
}

fn post(ip: &str) -> TestRequest {
    TestRequest::post()
        .uri("/expensive-operation")
        .peer_addr(format!("{ip}:40000").parse().unwrap())
}

/// Admitted of `replies`, after checking that every reply is a 200 or a 429.
fn admitted(replies: &[Reply]) -> u64 {
    for reply in replies {
        assert!(matches!(reply.status, 200 | 429), "status {}", reply.status);
    }
    replies.iter().filter(|r| r.status == 200).count() as u64
}

/// `n` requests of the client `ip` sent together to `app`; answers how many were admitted.
async fn burst<S, B>(app: &S, ip: &str, n: usize) -> u64
where
    S: actix_web::dev::Service<
            actix_http::Request,
            Response = actix_web::dev::ServiceResponse<B>,
            Error = actix_web::Error,
        >,
    B: actix_web::body::MessageBody,
{
    admitted(&join_all((0..n).map(|_| call(app, post(ip)))).await)
}

/// `n` requests of the client `ip` sent one after the other to `app`; answers how many were
/// admitted.
async fn one_by_one<S, B>(app: &S, ip: &str, n: usize) -> u64
where
    S: actix_web::dev::Service<
            actix_http::Request,
            Response = actix_web::dev::ServiceResponse<B>,
            Error = actix_web::Error,
        >,
    B: actix_web::body::MessageBody,
{
    let mut ok = 0;
    for _ in 0..n {
        ok += admitted(&[call(app, post(ip)).await]);
    }
    ok
}

/// Checks the single-instance promise of `algorithm` (limit `limit` per `window` µs) on the
/// admission times `times` (µs, any order), exactly, in integers:
/// - `log`: at most `limit` in any window `(t - window, t]`;
/// - `gcra`: at most `limit + span · limit / window` between any two admissions (a burst:
///   `limit`);
/// - `counter`: at every admission at `t`, `previous · (window - elapsed) + current · window`
///   at most `limit · window`, with `previous` and `current` the admissions of the previous
///   fixed window and of the current one up to `t`.
fn check_bound(algorithm: &str, limit: u64, window: u64, times: &[u64]) {
    let mut t = times.to_vec();
    t.sort_unstable();
    let n = t.len();
    // The first and the last index of each distinct time.
    let firsts: Vec<usize> = (0..n).filter(|&i| i == 0 || t[i] != t[i - 1]).collect();
    let lasts: Vec<usize> = (0..n).filter(|&j| j + 1 == n || t[j] != t[j + 1]).collect();
    match algorithm {
        "log" => {
            for &j in &lasts {
                let from = t.partition_point(|&x| x + window <= t[j]);
                let count = (j + 1 - from) as u64;
                assert!(
                    count <= limit,
                    "log: {count} admitted in the window ending at {}",
                    t[j]
                );
            }
        }
        "gcra" => {
            for &i in &firsts {
                for &j in lasts.iter().filter(|&&j| j >= i) {
                    let count = (j + 1 - i) as u128;
                    let span = u128::from(t[j] - t[i]);
                    let bound = u128::from(limit) + span * u128::from(limit) / u128::from(window);
                    assert!(
                        count <= bound,
                        "gcra: {count} admitted in [{}, {}], bound {bound}",
                        t[i],
                        t[j]
                    );
                }
            }
        }
        "counter" => {
            for &j in &lasts {
                let idx = t[j] / window;
                let elapsed = u128::from(t[j] % window);
                let in_window = |k: u64| t[..=j].iter().filter(|&&x| x / window == k).count();
                let previous = if idx == 0 { 0 } else { in_window(idx - 1) } as u128;
                let current = in_window(idx) as u128;
                let window = u128::from(window);
                assert!(
                    previous * (window - elapsed) + current * window <= u128::from(limit) * window,
                    "counter: previous {previous}, current {current} at {} (elapsed {elapsed})",
                    t[j]
                );
            }
        }
        other => unreachable!("{other}"),
    }
}

/// The window-edge pattern, with `holders` instances holding units and one more bursting, on
/// 64 / 20 s: at t0 each holder's first request (a GCRA or counter holder reserves 64 / 16 = 4
/// units and holds 3; the log never reserves), then the burster takes what is left; just before
/// the window's edge (t0 + 20 s - 1 ms) each holder sends 3 requests, one by one; just after it
/// (t0 + 20 s + 1 ms) the burster sends 100 together, then each holder one more. Exact counts
/// per algorithm, and its bound over every admission: on the old code the log's holders spent 3
/// units each reserved at t0 (stamped t0) just before the edge and the burst after it admitted 64
/// more (67 and 70 in 2 ms), and GCRA's holders spent 3 units each that the store had long
/// regained (67 and 70 in 2 ms where at most 64 hold).
async fn window_edge(backend: Backend, holders: usize) {
    let window = 20 * SECOND;
    for algorithm in ALGORITHMS {
        let ip = format!("10.7.{holders}.{}", algorithm.len());
        let clock = ManualClock::new(START_US);
        let spec = format!("POST /expensive-operation=64/20s,algorithm={algorithm}");
        let config = setup(&backend, &spec, Arc::new(clock.clone()));
        let instances: Vec<Services> = (0..=holders).map(|_| services(&config)).collect();
        let mut apps = Vec::new();
        for services in &instances {
            apps.push(app(services).await);
        }
        let (burster, held) = apps.split_first().unwrap();
        let h = holders as u64;
        let mut times = Vec::new();
        let mut record = |at: u64, n: u64| times.extend(std::iter::repeat_n(at, n as usize));

        let t0 = START_US;
        for app in held {
            assert_eq!(one_by_one(app, &ip, 1).await, 1, "{algorithm}");
        }
        record(t0, h);
        let first = burst(burster, &ip, 100).await;
        // What the holders' reservations took: 4 units each with leases, 1 with the log.
        let reserved = if algorithm == "log" { 1 } else { 4 };
        assert_eq!(first, 64 - reserved * h, "{algorithm}: the first burst");
        record(t0, first);

        clock.advance(Duration::from_micros(window - MS));
        let pre = t0 + window - MS;
        let mut before_edge = 0;
        for app in held {
            before_edge += one_by_one(app, &ip, 3).await;
        }
        // Log: the window still holds 64, nothing is admitted. GCRA: 63 units regained, the
        // holders' units reserved at t0 long lapsed: each holder's first request reserves 4 on
        // Redis (slots from t0 + 20 s on) and its next two spend them. Counter: the holders
        // spend the 3 units each holds, counted in this fixed window already.
        let expected = if algorithm == "log" { 0 } else { 3 * h };
        assert_eq!(before_edge, expected, "{algorithm}: just before the edge");
        record(pre, before_edge);

        clock.advance(Duration::from_micros(2 * MS));
        let post_edge = t0 + window + MS;
        let after = burst(burster, &ip, 100).await;
        // Log: the t0 entries left the window. GCRA: a full bucket less the 4 units each holder
        // took just before. Counter: the previous window (64) still weighs 64 · (1 - 1/20000).
        let expected = match algorithm {
            "log" => 64,
            "gcra" => 64 - 4 * h,
            _ => 0,
        };
        assert_eq!(after, expected, "{algorithm}: the burst after the edge");
        record(post_edge, after);
        let mut last = 0;
        for app in held {
            last += one_by_one(app, &ip, 1).await;
        }
        // GCRA: each holder still holds one unit, whose slot has not started.
        let expected = if algorithm == "gcra" { h } else { 0 };
        assert_eq!(last, expected, "{algorithm}: the holders after the edge");
        record(post_edge, last);
        check_bound(algorithm, 64, window, &times);
        for services in &instances {
            let stats = services.ratelimit.stats();
            assert_eq!((stats.fallback_decisions, stats.store_errors), (0, 0));
        }
    }
}

/// Two instances at the window's edge (one holding units, one bursting): see [`window_edge`].
async fn window_edge_two_instances(backend: Backend) {
    window_edge(backend, 1).await;
}

/// Three instances at the window's edge (two holding units, one bursting).
async fn window_edge_three_instances(backend: Backend) {
    window_edge(backend, 2).await;
}

/// GCRA 64 / 20 s, a burst after a refill: at t0, on a full bucket, each holder's first request
/// reserves 4 units (holds 3); once the store has regained them (4 intervals of 0.3125 s per
/// holder) the burster takes a full bucket, 64, and the holders' units have lapsed: their next
/// requests are denied. On the old code each holder still spent its 3 units: 67 (two
/// instances) and 70 (three) admitted at one instant.
async fn burst_after_refill(backend: Backend) {
    let window = 20 * SECOND;
    let interval = window / 64;
    for holders in [1_u64, 2] {
        let ip = format!("10.8.0.{holders}");
        let clock = ManualClock::new(START_US);
        let config = setup(
            &backend,
            "POST /expensive-operation=64/20s,algorithm=gcra",
            Arc::new(clock.clone()),
        );
        let instances: Vec<Services> = (0..=holders).map(|_| services(&config)).collect();
        let mut apps = Vec::new();
        for services in &instances {
            apps.push(app(services).await);
        }
        let (burster, held) = apps.split_first().unwrap();
        let mut times = vec![START_US; holders as usize];
        for app in held {
            assert_eq!(one_by_one(app, &ip, 1).await, 1);
        }
        clock.advance(Duration::from_micros(4 * holders * interval));
        let refilled = START_US + 4 * holders * interval;
        assert_eq!(burst(burster, &ip, 100).await, 64, "{holders} holders");
        times.extend(std::iter::repeat_n(refilled, 64));
        let mut late = 0;
        for app in held {
            late += one_by_one(app, &ip, 3).await;
        }
        assert_eq!(late, 0, "{holders} holders: units spent after the refill");
        check_bound("gcra", 64, window, &times);
    }
}

/// Two servers of one worker each, and 300 requests of one client (behind a trusted proxy)
/// written at once over 300 connections, half to each: exactly the limit is admitted, for both
/// leased algorithms, over trials from a cold start (fresh instances, half of them with the
/// script flushed from Redis, so calls are reordered by its reload). On the old code GCRA
/// admitted 99 in 4 of 48 trials on the cluster: see [`a_late_clock_takes_the_last_unit`].
async fn concurrent_bursts_over_tcp(backend: Backend) {
    let mut counts = Vec::new();
    for trial in 0..16 {
        if trial % 2 == 0 {
            let _: () = query(&backend, ::redis::cmd("SCRIPT").arg("FLUSH"));
        }
        let algorithm = if trial < 12 { "gcra" } else { "counter" };
        let mut config = backend.config();
        config.rate_limit = RateLimitConfig::parse(
            &[
                "default=off".to_owned(),
                format!("POST /expensive-operation=100/3600s,algorithm={algorithm}"),
            ],
            &["127.0.0.1/32"],
        )
        .unwrap();
        let servers = [
            crate::common::TestServer::start(services(&config), 1),
            crate::common::TestServer::start(services(&config), 1),
        ];
        let addrs = [servers[0].addr, servers[1].addr];
        let ip = format!("10.5.0.{trial}");
        let barrier = Arc::new(tokio::sync::Barrier::new(300));
        let request = Arc::new(format!(
            "POST /expensive-operation HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: {ip}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        ));
        let tasks: Vec<_> = (0..300)
            .map(|n| {
                let (barrier, request) = (barrier.clone(), request.clone());
                let addr = addrs[n % 2];
                tokio::spawn(async move {
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
                    barrier.wait().await;
                    stream.write_all(request.as_bytes()).await.unwrap();
                    let mut reply = Vec::new();
                    stream.read_to_end(&mut reply).await.unwrap();
                    String::from_utf8_lossy(reply.get(..12).unwrap_or(&reply)).into_owned()
                })
            })
            .collect();
        let mut ok = 0;
        for task in tasks {
            let head = task.await.unwrap();
            assert!(head == "HTTP/1.1 200" || head == "HTTP/1.1 429", "{head}");
            ok += usize::from(head == "HTTP/1.1 200");
        }
        counts.push(ok);
        for server in servers {
            let stats = server.services.ratelimit.stats();
            assert_eq!((stats.fallback_decisions, stats.store_errors), (0, 0));
            server.stop().await;
        }
    }
    assert_eq!(counts, [100; 16]);
}

/// GCRA 20 / 1 h (no leases) on two instances whose clocks read 1 ms apart: the one ahead takes
/// 19 units, then the one behind asks, as when its call reaches Redis after a call it read its
/// clock before. It gets the 20th, then both are denied. On the old code the one behind was
/// denied the 20th: its earlier time saw the bucket 1 ms less refilled than the last decision
/// left it, and a burst across instances admitted 99 of 100.
async fn a_late_clock_takes_the_last_unit(backend: Backend) {
    let spec = "POST /expensive-operation=20/3600s,algorithm=gcra";
    let steps = [(AHEAD, 19), (BEHIND, 1), (BEHIND, 1), (AHEAD, 1)];
    let counts = late_clock(
        &backend,
        spec,
        [START_US, START_US + MS],
        "10.4.0.1",
        &steps,
    )
    .await;
    assert_eq!(counts, [19, 1, 0, 0]);
}

const AHEAD: bool = true;
const BEHIND: bool = false;

/// Two instances of `spec` whose clocks read `clocks` (behind, then ahead); sends each step's
/// requests one by one to the instance it names; answers the admissions of each step.
async fn late_clock(
    backend: &Backend,
    spec: &str,
    clocks: [u64; 2],
    ip: &str,
    steps: &[(bool, usize)],
) -> Vec<u64> {
    let [behind, ahead] =
        clocks.map(|at| services(&setup(backend, spec, Arc::new(ManualClock::new(at)))));
    let (behind, ahead) = (app(&behind).await, app(&ahead).await);
    let mut counts = Vec::new();
    for &(to_ahead, n) in steps {
        let to = if to_ahead { &ahead } else { &behind };
        counts.push(one_by_one(to, ip, n).await);
    }
    counts
}

/// The sliding counter, 20 / 20 s (no leases), on two instances whose clocks read 1 ms before
/// and 1 ms after a fixed window's end: the one behind takes 10, the one ahead 10 more (the
/// previous window's 10 weigh 9.9995 at its time), then the one behind asks again, as when its
/// call reaches Redis after the other's. Decided at the time the key was last written at, the
/// estimate is 20: denied. On the old code it was decided with its own time against the next
/// window's counts (the 10 it had spent weighed nothing) and 9 more were admitted, 29 in 2 ms,
/// where the counter's promise is an estimate of at most 20 at every admission.
async fn a_late_clock_cannot_reopen_a_counter_window(backend: Backend) {
    let spec = "POST /expensive-operation=20/20s,algorithm=counter";
    let edge = START_US + 20 * SECOND;
    let steps = [(BEHIND, 10), (AHEAD, 12), (BEHIND, 10), (AHEAD, 1)];
    let counts = late_clock(&backend, spec, [edge - MS, edge + MS], "10.4.0.2", &steps).await;
    assert_eq!(counts, [10, 10, 0, 0]);
}

/// A small xorshift generator: the schedules are random but reproducible from their seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

/// Random arrival schedules, 250 steps each: the clock moves by nothing, part of a GCRA
/// interval, part of a window or up to a window, then 1 to 24 requests of one client are sent
/// together, each to one of three instances (one on memory) at random. Every admission is
/// checked against its algorithm's bound (log 64 / 20 s; counter 64 / 20 s; GCRA 48 / 20 s,
/// whose interval 416,666.67 µs is rounded up), and the schedule reaches the limit.
async fn random_schedules(backend: Backend) {
    let window = 20 * SECOND;
    let count = if backend.is_redis() { 3 } else { 1 };
    for (algorithm, limit) in [("log", 64), ("counter", 64), ("gcra", 48)] {
        for seed in [0x9e37_79b9_7f4a_7c15_u64, 0x2545_f491_4f6c_dd1d] {
            let ip = format!("10.9.{}.{}", algorithm.len(), seed % 200);
            let clock = ManualClock::new(START_US);
            let spec = format!("POST /expensive-operation={limit}/20s,algorithm={algorithm}");
            let config = setup(&backend, &spec, Arc::new(clock.clone()));
            let instances: Vec<Services> = (0..count).map(|_| services(&config)).collect();
            let mut apps = Vec::new();
            for services in &instances {
                apps.push(app(services).await);
            }
            let mut rng = Rng(seed);
            let mut now = START_US;
            let (mut times, mut denied) = (Vec::new(), 0);
            for _ in 0..250 {
                let step = match rng.below(4) {
                    0 => 0,
                    1 => rng.below(window / limit),
                    2 => rng.below(window / 4),
                    _ => rng.below(window),
                };
                clock.advance(Duration::from_micros(step));
                now += step;
                let n = 1 + rng.below(24) as usize;
                let targets: Vec<usize> = (0..n).map(|_| rng.below(count) as usize).collect();
                let replies = join_all(targets.iter().map(|&i| call(&apps[i], post(&ip)))).await;
                let ok = admitted(&replies);
                denied += n as u64 - ok;
                times.extend(std::iter::repeat_n(now, ok as usize));
            }
            check_bound(algorithm, limit, window, &times);
            assert!(
                times.len() as u64 > 2 * limit && denied > 0,
                "{algorithm} {seed:x}: {} admitted, {denied} denied",
                times.len()
            );
        }
    }
}

/// A request writes a constant number of entries, whatever the limit: the first request of a
/// client under a sliding log of 16,000 / 60 s writes one log entry (on the old code, a lease of
/// 16,000 / 16 = 1,000), and GCRA and the counter one key each.
async fn one_request_one_entry(backend: Backend) {
    for algorithm in ALGORITHMS {
        let clock = ManualClock::new(START_US);
        let spec = format!("POST /expensive-operation=16000/60s,algorithm={algorithm}");
        let config = setup(&backend, &spec, Arc::new(clock));
        let services = services(&config);
        let app = app(&services).await;
        assert_eq!(one_by_one(&app, "10.6.0.1", 1).await, 1);
        let keys = backend.keys_with_ttl().unwrap();
        let key = format!("rl:{{ip:10.6.0.1}}:{algorithm}:POST /expensive-operation");
        let ours: Vec<&(String, i64)> = keys.iter().filter(|(k, _)| k.ends_with(&key)).collect();
        assert_eq!(ours.len(), 1, "{algorithm}: {keys:?}");
        if algorithm == "log" {
            let entries: u64 = query(&backend, ::redis::cmd("ZCARD").arg(&ours[0].0));
            assert_eq!(entries, 1, "log entries written by one request");
        }
    }
}

/// Runs `cmd` on the Redis (or the cluster) of `backend`.
fn query<T: ::redis::FromRedisValue>(backend: &Backend, cmd: &::redis::Cmd) -> T {
    match backend {
        Backend::Redis(server) => cmd.query(&mut server.conn()).unwrap(),
        Backend::Cluster(cluster) => cmd
            .query(&mut cluster.client().get_connection().unwrap())
            .unwrap(),
        Backend::Memory => unreachable!("no Redis on memory"),
    }
}

/// The key's PTTL in milliseconds.
fn pttl(backend: &Backend, key_end: &str) -> i64 {
    let keys = backend.keys_with_ttl().unwrap();
    let found: Vec<&(String, i64)> = keys.iter().filter(|(k, _)| k.ends_with(key_end)).collect();
    assert_eq!(found.len(), 1, "{key_end}: {keys:?}");
    found[0].1
}

/// Sleeps until the system clock reads `at_us`.
async fn sleep_until(at_us: u64) {
    let now = SystemClock.now_us();
    if at_us > now {
        tokio::time::sleep(Duration::from_micros(at_us - now)).await;
    }
}

/// Redis's own expiry ends each algorithm's window in real time (the system clock, limit 3 per
/// 2 s), neither earlier nor later than the algorithm says: after 3 admissions the key's PTTL is
/// within its bounds (log and GCRA: the window from the first or last admission; counter: the
/// end of the next fixed window), a fresh instance (no local block) is still denied while the
/// window runs, so a key expiring early would show, and admitted again once the key has expired.
async fn redis_expiry_ends_windows(backend: Backend) {
    let window = 2 * SECOND;
    for algorithm in ALGORITHMS {
        let ip = format!("10.5.0.{}", algorithm.len());
        let spec = format!("POST /expensive-operation=3/2s,algorithm={algorithm}");
        let config = setup(&backend, &spec, Arc::new(SystemClock));
        let (one, two) = (services(&config), services(&config));
        let (app1, app2) = (app(&one).await, app(&two).await);
        // Counter: far enough from a fixed window's end that the 3 requests share one.
        if SystemClock.now_us() % window > window - 300 * MS {
            sleep_until(SystemClock.now_us() / window * window + window + MS).await;
        }
        let started = Instant::now();
        let first_us = SystemClock.now_us();
        assert_eq!(one_by_one(&app1, &ip, 3).await, 3, "{algorithm}");
        assert_eq!(one_by_one(&app1, &ip, 1).await, 0, "{algorithm}");
        let key = format!("rl:{{ip:{ip}}}:{algorithm}:POST /expensive-operation");
        let ttl = pttl(&backend, &key);
        let read_us = SystemClock.now_us();
        let taken_ms = i64::try_from((read_us - first_us).div_ceil(MS)).unwrap();
        assert!(taken_ms < 300, "{algorithm}: 4 requests took {taken_ms} ms");
        // When the key expires, per algorithm, as an epoch microsecond (bounds).
        let (expires_from, expires_to) = match algorithm {
            // Log: the last entry's time plus the window; GCRA: the first admission plus 3
            // intervals of 2/3 s (each request came within an interval of the first).
            "log" | "gcra" => (first_us + window, read_us + window + 2 * MS),
            // Counter: the end of the fixed window after the one the requests were counted in.
            _ => {
                let end = (first_us / window + 2) * window;
                (end, end)
            }
        };
        let low = i64::try_from(expires_from.saturating_sub(read_us) / MS).unwrap() - 1;
        let high = i64::try_from((expires_to - first_us).div_ceil(MS)).unwrap() + 1;
        assert!(
            (low..=high).contains(&ttl),
            "{algorithm}: PTTL {ttl} ms, expected {low}..={high}"
        );
        assert!(
            ttl <= if algorithm == "counter" { 4000 } else { 2000 },
            "{algorithm}: {ttl}"
        );

        // While the window runs, a fresh instance asks Redis and is denied: the state is there.
        sleep_until(first_us + 300 * MS).await;
        assert_eq!(one_by_one(&app2, &ip, 1).await, 0, "{algorithm} at 0.3 s");
        if algorithm == "log" {
            sleep_until(first_us + 1_700 * MS).await;
            assert_eq!(one_by_one(&app2, &ip, 1).await, 0, "{algorithm} at 1.7 s");
        }
        // Once Redis has expired the key on its own clock, the window has ended.
        sleep_until(expires_to + 50 * MS).await;
        assert!(
            backend
                .keys_with_ttl()
                .unwrap()
                .iter()
                .all(|(k, _)| !k.ends_with(&key)),
            "{algorithm}: the key outlived its PTTL"
        );
        let mut fresh = 0;
        for _ in 0..4 {
            fresh += one_by_one(&app2, &ip, 1).await;
        }
        assert_eq!(fresh, 3, "{algorithm} after {:?}", started.elapsed());
    }
}

/// One test per case on one Redis and on the cluster (several instances share nothing on the
/// memory backend).
macro_rules! redis_suite {
    ($($case:ident),* $(,)?) => {
        mod redis {
            $(
                #[actix_web::test]
                async fn $case() {
                    super::$case(super::Backend::redis()).await;
                }
            )*
        }
        mod cluster {
            $(
                #[actix_web::test]
                async fn $case() {
                    super::$case(super::Backend::cluster()).await;
                }
            )*
        }
    };
}

redis_suite!(
    concurrent_bursts_over_tcp,
    a_late_clock_takes_the_last_unit,
    a_late_clock_cannot_reopen_a_counter_window,
    window_edge_two_instances,
    window_edge_three_instances,
    burst_after_refill,
    random_schedules,
    one_request_one_entry,
    redis_expiry_ends_windows,
);

/// [`random_schedules`] on the memory backend (one instance).
#[actix_web::test]
async fn random_schedules_on_memory() {
    random_schedules(Backend::memory()).await;
}
