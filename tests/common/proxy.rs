//! A TCP proxy the test controls, in front of one redis-server: cutting it cuts off only the
//! instances connected through it (a partition of one instance), while others reach the same
//! Redis directly.
#![allow(dead_code, unreachable_pub)]

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
};

use tokio::{
    net::{TcpListener, UnixStream},
    sync::{oneshot, watch},
};

/// Forwards TCP connections on 127.0.0.1 to a Redis unix socket, on its own thread and runtime
/// (so a test that blocks its own thread does not stall it). Stops when dropped.
pub struct Proxy {
    pub addr: SocketAddr,
    cut: Arc<AtomicBool>,
    kill: watch::Sender<u64>,
    accepted: Arc<AtomicU64>,
    _stop: oneshot::Sender<()>,
}

impl Proxy {
    /// A proxy to the redis-server listening on `socket`.
    pub fn to_unix(socket: PathBuf) -> Self {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        std_listener.set_nonblocking(true).unwrap();
        let addr = std_listener.local_addr().unwrap();
        let cut = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicU64::new(0));
        let (kill, kill_rx) = watch::channel(0u64);
        let (stop, mut stop_rx) = oneshot::channel::<()>();
        {
            let cut = cut.clone();
            let accepted = accepted.clone();
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                runtime.block_on(async move {
                    let listener = TcpListener::from_std(std_listener).unwrap();
                    loop {
                        let (mut client, _) = tokio::select! {
                            accepted = listener.accept() => match accepted {
                                Ok(pair) => pair,
                                Err(_) => continue,
                            },
                            _ = &mut stop_rx => return,
                        };
                        accepted.fetch_add(1, Ordering::Relaxed);
                        if cut.load(Ordering::Acquire) {
                            // Cut off: the connection is closed at once, as by a firewall's
                            // reset.
                            drop(client);
                            continue;
                        }
                        let socket = socket.clone();
                        let mut killed = kill_rx.clone();
                        killed.mark_unchanged();
                        tokio::spawn(async move {
                            let Ok(mut upstream) = UnixStream::connect(&socket).await else {
                                return;
                            };
                            tokio::select! {
                                _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {}
                                _ = killed.changed() => {}
                            }
                        });
                    }
                });
            });
        }
        Self {
            addr,
            cut,
            kill,
            accepted,
            _stop: stop,
        }
    }

    /// `redis://` URL of the proxy.
    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    /// Cuts every connection through the proxy, and closes new ones at once until `heal`.
    pub fn cut(&self) {
        self.cut.store(true, Ordering::Release);
        self.kill.send_modify(|generation| *generation += 1);
    }

    /// Forwards new connections again.
    pub fn heal(&self) {
        self.cut.store(false, Ordering::Release);
    }

    /// Connections accepted so far (forwarded or refused).
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }
}
