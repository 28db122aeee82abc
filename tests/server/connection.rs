//! The connection layer's push connections survive a half-open socket: a proxy between redkit and
//! the harness's redis-server stops forwarding on its open connections without closing them
//! (what a vanished peer or a dead NAT entry looks like), while new connections pass.

use std::{
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use redkit::{cache::L1Feed, config::RedisSettings};
use tokio::net::{UnixListener, UnixStream};

use crate::common::Backend;

/// A Unix-socket proxy to `upstream`; [`freeze`](Self::freeze) silences every connection open
/// at that moment (kept open, nothing forwarded either way), later ones pass.
struct Proxy {
    _dir: tempfile::TempDir,
    path: PathBuf,
    epoch: Arc<AtomicU64>,
}

impl Proxy {
    fn start(upstream: PathBuf) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("proxy.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let epoch = Arc::new(AtomicU64::new(0));
        let shared = epoch.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let born = shared.load(Ordering::SeqCst);
                let Ok(server) = UnixStream::connect(&upstream).await else {
                    continue;
                };
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                tokio::spawn(pipe(cr, sw, born, shared.clone()));
                tokio::spawn(pipe(sr, cw, born, shared.clone()));
            }
        });
        Self {
            _dir: dir,
            path,
            epoch,
        }
    }

    fn url(&self) -> String {
        format!("unix://{}", self.path.display())
    }

    fn freeze(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
    }
}

/// Copies `from` to `to` until the epoch moves past `born`; then holds both ends open for ever.
async fn pipe(
    mut from: tokio::net::unix::OwnedReadHalf,
    mut to: tokio::net::unix::OwnedWriteHalf,
    born: u64,
    epoch: Arc<AtomicU64>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let read = tokio::select! {
            read = from.read(&mut buf) => read,
            () = frozen(born, &epoch) => break,
        };
        let Ok(n) = read else { return };
        if n == 0 || epoch.load(Ordering::SeqCst) != born {
            if n == 0 {
                return;
            }
            break;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
    // Half-open: the sockets stay open, nothing passes.
    std::future::pending::<()>().await;
    drop((from, to));
}

async fn frozen(born: u64, epoch: &AtomicU64) {
    while epoch.load(Ordering::SeqCst) == born {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn socket_of(server_dir: &Path) -> PathBuf {
    server_dir.join("redis.sock")
}

/// The invalidation feed on a half-open connection goes down within its deadline and comes back
/// up on a new connection (the old code re-armed on the silent socket for ever: down for good).
#[actix_web::test]
async fn feed_recovers_from_a_half_open_connection() {
    let mut backend = Backend::redis();
    let proxy = Proxy::start(socket_of(backend.server().unwrap().dir()));
    let mut config = backend.config();
    let mut settings = RedisSettings::new(proxy.url());
    settings.response_timeout = Duration::from_millis(300);
    settings.connect_timeout = Duration::from_millis(300);
    config.redis = Some(settings);
    let services = crate::common::services(&config);
    let up = |services: &redkit::http::Services| services.cache.feed() == L1Feed::Up;
    assert!(
        crate::common::eventually(Duration::from_secs(3), || async { up(&services) }).await,
        "feed never armed"
    );
    let flushes = services.cache.stats().l1_feed_flushes;
    proxy.freeze();
    let frozen = Instant::now();
    // Noticed within the deadline: L1 flushed once for the loss (500 ms between checks, 300 ms
    // to answer, slack for a loaded machine).
    assert!(
        crate::common::eventually(Duration::from_millis(500 + 300 + 700), || async {
            services.cache.stats().l1_feed_flushes > flushes
        })
        .await,
        "a silent feed stayed up"
    );
    assert!(
        crate::common::eventually(Duration::from_secs(3), || async { up(&services) }).await,
        "the feed never came back on a new connection ({:?} after the freeze)",
        frozen.elapsed()
    );
    assert_eq!(services.cache.stats().l1_feed_flushes, flushes + 1);
}
