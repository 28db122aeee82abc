//! `rediss://`: redkit on a Redis that serves TLS only, trusting a CA given with
//! `--redis-ca-cert` (the harness makes the CA and starts the server), and a clear failure,
//! never a panic, when the server's certificate is not trusted.

use std::time::{Duration, Instant};

use actix_web::test::TestRequest;
use redkit::config::{Config, ServeArgs};
use serde_json::json;

use crate::common::{
    Backend, call,
    cluster::{ClusterOptions, RedisCluster},
    tls::{TestCa, TlsRedisServer},
};

/// The test config on the Redis that `args` name (`--redis-url`, `--redis-ca-cert`), parsed as
/// the command line is, with short timeouts.
fn config_from(args: ServeArgs) -> Config {
    let mut redis = Config::from_args(&args)
        .expect("valid TLS configuration")
        .redis
        .expect("a Redis backend");
    redis.response_timeout = Duration::from_millis(500);
    redis.connect_timeout = Duration::from_millis(500);
    let mut config = crate::common::with_test_secret(Backend::memory().config());
    config.redis = Some(redis);
    config
}

/// `/health` once it is 200 (start-up never waits for Redis; TLS handshakes take a moment):
/// at most 5 s, answers its body.
async fn healthy<S, B>(app: &S) -> serde_json::Value
where
    S: actix_web::dev::Service<
            actix_http::Request,
            Response = actix_web::dev::ServiceResponse<B>,
            Error = actix_web::Error,
        >,
    B: actix_web::body::MessageBody,
{
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let health = call(app, TestRequest::get().uri("/health")).await;
        if health.status == 200 && health.json()["l1_feed"] == "up" {
            return health.json();
        }
        assert!(
            Instant::now() < deadline,
            "/health not up with its feed within 5 s: {:?}",
            health.body
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// redkit on `rediss://` with the test CA given as `--redis-ca-cert`: `/health` is up with the
/// L1 feed up, a login and `PUT`/`GET /cache` work, the value is in the TLS server, and another
/// client's change reaches L1 (the feed's connection is TLS too).
#[actix_web::test]
async fn cache_and_health_work_over_tls_with_the_given_ca() {
    let ca = TestCa::new();
    let server = TlsRedisServer::start(&ca);
    let config = config_from(ServeArgs {
        redis_url: Some(server.url()),
        redis_ca_cert: Some(ca.ca_file()),
        ..ServeArgs::default()
    });
    assert_eq!(
        config.redis.as_ref().unwrap().tls_root_certs,
        Some(ca.ca_pem())
    );
    let services = crate::common::services(&config);
    let app = crate::common::app(&services).await;
    let body = healthy(&app).await;
    assert_eq!(
        (
            &body["status"],
            &body["backend"],
            &body["redis"]["status"],
            &body["l1_feed"]
        ),
        (
            &json!("healthy"),
            &json!("redis"),
            &json!("up"),
            &json!("up")
        ),
        "{body}"
    );
    let (access, _) = crate::common::register_and_login(&app, "tls-user").await;
    let bearer = format!("Bearer {access}");
    let put = call(
        &app,
        TestRequest::put()
            .uri("/cache/tls-key")
            .insert_header(("authorization", bearer.as_str()))
            .set_json(json!({"v": 1})),
    )
    .await;
    assert_eq!(put.status, 200, "{:?}", put.body);
    for tier in ["HIT-L1", "HIT-L1"] {
        let get = call(&app, TestRequest::get().uri("/cache/tls-key")).await;
        assert_eq!(
            (get.status, get.json(), get.header("x-cache")),
            (
                200,
                json!({"key": "tls-key", "value": {"v": 1}}),
                Some(tier)
            )
        );
    }
    let mut conn = server.conn().unwrap();
    let stored: String = redis::cmd("GET")
        .arg("redkit:cache:api:tls-key")
        .query(&mut conn)
        .unwrap();
    assert_eq!(stored, r#"{"v":1}"#);
    let _: () = redis::cmd("SET")
        .arg("redkit:cache:api:tls-key")
        .arg(r#"{"v":2}"#)
        .query(&mut conn)
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        let get = call(&app, TestRequest::get().uri("/cache/tls-key")).await;
        assert_eq!(get.status, 200);
        if get.json()["value"] == json!({"v": 2}) {
            break;
        }
        assert_eq!(get.json()["value"], json!({"v": 1}));
        assert!(Instant::now() < deadline, "L1 kept {{\"v\":1}} for 1 s");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A `rediss://` server whose certificate does not chain to the trusted roots (the system's, or
/// another CA given): `/health` is a 503 `degraded` with Redis down and the L1 feed down, and a
/// cache read is a 503 problem; nothing panics.
#[actix_web::test]
async fn an_untrusted_certificate_is_a_503_not_a_panic() {
    let ca = TestCa::new();
    let server = TlsRedisServer::start(&ca);
    let other = TestCa::new();
    for ca_file in [None, Some(other.ca_file())] {
        let config = config_from(ServeArgs {
            redis_url: Some(server.url()),
            redis_ca_cert: ca_file.clone(),
            ..ServeArgs::default()
        });
        let services = crate::common::services(&config);
        let app = crate::common::app(&services).await;
        let health = call(&app, TestRequest::get().uri("/health")).await;
        assert_eq!(health.status, 503, "{ca_file:?}: {:?}", health.body);
        let body = health.json();
        assert_eq!(
            (&body["status"], &body["redis"]["status"], &body["l1_feed"]),
            (&json!("degraded"), &json!("down"), &json!("down")),
            "{ca_file:?}: {body}"
        );
        let get = call(&app, TestRequest::get().uri("/cache/anything")).await;
        get.problem(503);
    }
}

/// Mutual TLS: a server that authenticates clients (`tls-auth-clients yes`, Redis's default
/// once TLS is on) serves redkit given `--redis-client-cert` and `--redis-client-key` (`/health`
/// up with the L1 feed up, a cache write and read); without them the handshake fails and Redis
/// counts as down (`/health` 503 `degraded`, a cache read a 503 problem), never a panic.
#[actix_web::test]
async fn a_server_that_authenticates_clients_takes_the_client_certificate() {
    let ca = TestCa::new();
    let server = TlsRedisServer::start_with(&ca, true);
    let config = config_from(ServeArgs {
        redis_url: Some(server.url()),
        redis_ca_cert: Some(ca.ca_file()),
        redis_client_cert: Some(ca.client_cert_file()),
        redis_client_key: Some(ca.client_key_file()),
        ..ServeArgs::default()
    });
    let services = crate::common::services(&config);
    let app = crate::common::app(&services).await;
    let body = healthy(&app).await;
    assert_eq!(body["redis"]["status"], "up", "{body}");
    let (access, _) = crate::common::register_and_login(&app, "mtls-user").await;
    let put = call(
        &app,
        TestRequest::put()
            .uri("/cache/mtls-key")
            .insert_header(("authorization", format!("Bearer {access}")))
            .set_json(json!({"v": 1})),
    )
    .await;
    assert_eq!(put.status, 200, "{:?}", put.body);
    let get = call(&app, TestRequest::get().uri("/cache/mtls-key")).await;
    assert_eq!(
        (get.status, get.json()),
        (200, json!({"key": "mtls-key", "value": {"v": 1}}))
    );
    let stored: String = redis::cmd("GET")
        .arg("redkit:cache:api:mtls-key")
        .query(&mut server.conn().unwrap())
        .unwrap();
    assert_eq!(stored, r#"{"v":1}"#);
    // A key file that holds no key is a one-line configuration error.
    let err = Config::from_args(&ServeArgs {
        redis_url: Some(server.url()),
        redis_client_cert: Some(ca.client_cert_file()),
        redis_client_key: Some(ca.client_cert_file()),
        ..ServeArgs::default()
    })
    .unwrap_err();
    assert!(
        err.to_string().contains("no PEM private key in it"),
        "{err}"
    );
    // The same server without a client certificate.
    let config = config_from(ServeArgs {
        redis_url: Some(server.url()),
        redis_ca_cert: Some(ca.ca_file()),
        ..ServeArgs::default()
    });
    let services = crate::common::services(&config);
    let app = crate::common::app(&services).await;
    let health = call(&app, TestRequest::get().uri("/health")).await;
    assert_eq!(health.status, 503, "{:?}", health.body);
    assert_eq!(health.json()["redis"]["status"], "down");
    call(&app, TestRequest::get().uri("/cache/mtls-key"))
        .await
        .problem(503);
}

/// A TLS cluster (3 primaries; clients, the cluster bus and replication on TLS, the nodes
/// announcing their TLS ports) through `rediss://` seeds and `--redis-ca-cert`: `/health` sees
/// every node up and the L1 feed up, a login and `PUT`/`GET /cache` work for keys on every
/// primary, and another client's change reaches L1.
#[actix_web::test]
async fn a_tls_cluster_serves_the_cache() {
    tls_cluster_serves_the_cache(false).await;
}

/// The same on a cluster whose nodes authenticate clients, given `--redis-client-cert` and
/// `--redis-client-key`: every node's connections show the certificate.
#[actix_web::test]
async fn a_tls_cluster_that_authenticates_clients_takes_the_client_certificate() {
    tls_cluster_serves_the_cache(true).await;
}

async fn tls_cluster_serves_the_cache(auth_clients: bool) {
    let mut options = ClusterOptions::new(3, 0);
    options.tls = true;
    options.auth_clients = auth_clients;
    let cluster = RedisCluster::start_with(options);
    let ca = cluster.ca().unwrap();
    let mut config = config_from(ServeArgs {
        redis_cluster_nodes: Some(cluster.urls().join(",")),
        redis_ca_cert: Some(ca.ca_file()),
        redis_client_cert: auth_clients.then(|| ca.client_cert_file()),
        redis_client_key: auth_clients.then(|| ca.client_key_file()),
        ..ServeArgs::default()
    });
    // Every node's state in `/health`: each one reached over TLS.
    config.health_nodes = true;
    let services = crate::common::services(&config);
    let app = crate::common::app(&services).await;
    let body = healthy(&app).await;
    assert_eq!(
        (&body["backend"], &body["redis"]["status"], &body["l1_feed"]),
        (&json!("redis-cluster"), &json!("up"), &json!("up")),
        "{body}"
    );
    let mut nodes: Vec<String> = body["redis"]["nodes"]
        .as_array()
        .unwrap_or_else(|| panic!("no nodes: {body}"))
        .iter()
        .map(|n| format!("{} {}", n["address"].as_str().unwrap(), n["status"]))
        .collect();
    nodes.sort();
    let mut want: Vec<String> = cluster
        .nodes()
        .iter()
        .map(|n| format!("127.0.0.1:{} \"up\"", n.client_port()))
        .collect();
    want.sort();
    assert_eq!(nodes, want);
    let (access, _) = crate::common::register_and_login(&app, "tls-cluster-user").await;
    let bearer = format!("Bearer {access}");
    // Keys until every primary holds one.
    let mut owners = Vec::new();
    let mut keys = Vec::new();
    for n in 0..100 {
        let key = format!("tls-key-{n}");
        let owner = cluster.primary_for(&format!("redkit:cache:api:{key}"));
        if !owners.contains(&owner) {
            owners.push(owner);
            keys.push(key);
        }
        if owners.len() == 3 {
            break;
        }
    }
    assert_eq!(keys.len(), 3);
    for (n, key) in keys.iter().enumerate() {
        let put = call(
            &app,
            TestRequest::put()
                .uri(&format!("/cache/{key}"))
                .insert_header(("authorization", bearer.as_str()))
                .set_json(json!({"v": n})),
        )
        .await;
        assert_eq!(put.status, 200, "{:?}", put.body);
        let get = call(&app, TestRequest::get().uri(&format!("/cache/{key}"))).await;
        assert_eq!(
            (get.status, get.json()["value"].clone()),
            (200, json!({"v": n}))
        );
    }
    let mut conn = cluster.conn();
    for (n, key) in keys.iter().enumerate() {
        let redis_key = format!("redkit:cache:api:{key}");
        let stored: String = redis::cmd("GET").arg(&redis_key).query(&mut conn).unwrap();
        assert_eq!(stored, format!(r#"{{"v":{n}}}"#));
        let _: () = redis::cmd("SET")
            .arg(&redis_key)
            .arg(r#"{"v":"changed"}"#)
            .query(&mut conn)
            .unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(1);
    for (n, key) in keys.iter().enumerate() {
        loop {
            let get = call(&app, TestRequest::get().uri(&format!("/cache/{key}"))).await;
            assert_eq!(get.status, 200);
            if get.json()["value"] == json!({"v": "changed"}) {
                break;
            }
            assert_eq!(get.json()["value"], json!({"v": n}));
            assert!(
                Instant::now() < deadline,
                "{key}: L1 kept the old value for 1 s"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}
