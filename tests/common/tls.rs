//! TLS for the harness: a throwaway CA and a certificate for `127.0.0.1`/`localhost` signed by
//! it (rcgen, PEM files in a temp dir), and a private `redis-server` that serves TLS with them.
#![allow(dead_code, unreachable_pub)]

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// A CA made for one test, and a server certificate it signed for `127.0.0.1` and `localhost`.
pub struct TestCa {
    dir: tempfile::TempDir,
}

impl TestCa {
    /// Makes the CA and the server certificate (`ca.pem`, `server.pem`, `server.key`).
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "redkit test CA");
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().expect("CA key"))
            .expect("CA certificate");
        let mut server =
            CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
                .expect("server params");
        server
            .distinguished_name
            .push(DnType::CommonName, "redkit test redis");
        let key = KeyPair::generate().expect("server key");
        let cert = server.signed_by(&key, &ca).expect("server certificate");
        let write = |name: &str, text: String| {
            std::fs::write(dir.path().join(name), text).expect("write PEM");
        };
        write("ca.pem", ca.pem());
        write("server.pem", cert.pem());
        write("server.key", key.serialize_pem());
        // A client certificate, for servers that authenticate clients (mutual TLS).
        let mut client = CertificateParams::new(Vec::<String>::new()).expect("client params");
        client
            .distinguished_name
            .push(DnType::CommonName, "redkit test client");
        client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate().expect("client key");
        let cert = client.signed_by(&key, &ca).expect("client certificate");
        write("client.pem", cert.pem());
        write("client.key", key.serialize_pem());
        Self { dir }
    }

    /// The client certificate's PEM file (signed by this CA).
    pub fn client_cert_file(&self) -> PathBuf {
        self.dir.path().join("client.pem")
    }

    /// The client certificate's private key, PEM.
    pub fn client_key_file(&self) -> PathBuf {
        self.dir.path().join("client.key")
    }

    /// The CA certificate's PEM file.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// The CA certificate (PEM).
    pub fn ca_pem(&self) -> Vec<u8> {
        std::fs::read(self.ca_file()).expect("CA PEM")
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// A free loopback port now (the kernel's pick; taken by the caller right after).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// The `redis-server` arguments that make it serve TLS on `tls_port` with `ca`'s server
/// certificate; with `auth_clients`, clients must show a certificate signed by `ca` (Redis's
/// own default, `tls-auth-clients yes`), else they need none.
pub fn tls_args(ca: &TestCa, tls_port: u16, auth_clients: bool) -> Vec<String> {
    let path = |name: &str| ca.file(name).display().to_string();
    vec![
        "--tls-port".into(),
        tls_port.to_string(),
        "--tls-cert-file".into(),
        path("server.pem"),
        "--tls-key-file".into(),
        path("server.key"),
        "--tls-ca-cert-file".into(),
        path("ca.pem"),
        "--tls-auth-clients".into(),
        if auth_clients { "yes" } else { "no" }.into(),
    ]
}

/// A private `redis-server` serving TLS on a loopback port (and, for the test's own inspection,
/// plain text on a unix socket in its temp dir); no persistence, killed on drop, its log printed
/// when the test failed.
pub struct TlsRedisServer {
    dir: tempfile::TempDir,
    child: Option<Child>,
    port: u16,
}

impl TlsRedisServer {
    /// Starts a server with `ca`'s certificate and waits until it answers `PING` on its socket.
    pub fn start(ca: &TestCa) -> Self {
        Self::start_with(ca, false)
    }

    /// [`start`](Self::start); with `auth_clients`, TLS clients must show a certificate signed
    /// by `ca`.
    pub fn start_with(ca: &TestCa, auth_clients: bool) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let child = Command::new("redis-server")
            .args(["--port", "0", "--bind", "127.0.0.1", "--unixsocket"])
            .arg(dir.path().join("redis.sock"))
            .args(["--unixsocketperm", "700"])
            .args(tls_args(ca, port, auth_clients))
            .args(["--save", "", "--appendonly", "no", "--dir"])
            .arg(dir.path())
            .arg("--logfile")
            .arg(dir.path().join("redis.log"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (the CI script installs it)");
        let server = Self {
            dir,
            child: Some(child),
            port,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while server
            .conn()
            .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
            .is_err()
        {
            assert!(
                Instant::now() < deadline,
                "TLS redis-server did not start: {}",
                server.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    /// `rediss://127.0.0.1:<tls port>`: what redkit connects with.
    pub fn url(&self) -> String {
        format!("rediss://127.0.0.1:{}", self.port)
    }

    /// A plain connection on the unix socket, for the test's own inspection.
    pub fn conn(&self) -> redis::RedisResult<redis::Connection> {
        let socket = self.dir.path().join("redis.sock");
        redis::Client::open(format!("unix://{}", socket.display()))?.get_connection()
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
    }

    /// The temp dir (socket, log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for TlsRedisServer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- TLS redis-server log ---\n{}", self.log());
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
