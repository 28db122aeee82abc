//! Durations up to `Duration::MAX` in the settings of auth, live events and the limiter,
//! through the library: each is refused with a one-line error naming its option, or the
//! capability starts and works; never a panic, an overflow or a broken Redis command.
//! (The cache's TTLs are covered in `failsafe.rs`.)

use std::time::Duration;

use crate::common::{Backend, durations::durations};
use actix_web::{App, HttpResponse, test, web};
use futures_util::StreamExt;
use redkit::{
    auth::{AuthConfig, AuthError, AuthHandle, ClientInfo, SecretKey},
    config::DatabaseLocation,
    connection::RedisHandle,
    events::{EventsConfig, EventsError, EventsHandle},
    ratelimit::{Policy, RateLimitConfig, RateLimitHandle},
    settings::MAX_DURATION,
};

fn redis(backend: &Backend) -> Option<(RedisHandle, redkit::connection::RedisSettings)> {
    let settings = backend.config().redis?;
    Some((RedisHandle::connect(&settings).unwrap(), settings))
}

/// Which auth duration a case sets.
#[derive(Debug, Clone, Copy)]
enum AuthField {
    AccessTtl,
    RefreshTtl,
    Leeway,
    ReuseGrace,
    IdleTimeout,
}

/// `config` with `field` set to `d` (the access lifetime raised or lowered with the refresh
/// lifetime so that only the bound under test decides), and whether that must be accepted.
fn auth_case(field: AuthField, d: Duration) -> (AuthConfig, bool) {
    let mut config = AuthConfig::default();
    config.secret = SecretKey::given(&[7; 32]).unwrap();
    let in_bounds = d >= Duration::from_secs(1) && d <= MAX_DURATION;
    let valid = match field {
        AuthField::AccessTtl => {
            config.access_ttl = d;
            config.refresh_ttl = config.refresh_ttl.max(d);
            in_bounds
        }
        AuthField::RefreshTtl => {
            config.refresh_ttl = d;
            config.access_ttl = config.access_ttl.min(d);
            config.refresh_reuse_grace = config.refresh_reuse_grace.min(d);
            in_bounds
        }
        AuthField::Leeway => {
            config.leeway = d;
            d <= Duration::from_secs(redkit::auth::MAX_LEEWAY_SECS)
        }
        AuthField::ReuseGrace => {
            config.refresh_reuse_grace = d;
            config.refresh_ttl = config.refresh_ttl.max(d.min(MAX_DURATION));
            config.access_ttl = config.access_ttl.min(config.refresh_ttl);
            d <= MAX_DURATION
        }
        AuthField::IdleTimeout => {
            config.session_idle_timeout = Some(d);
            in_bounds
        }
    };
    (config, valid)
}

/// Every auth duration at every edge: refused at start naming its option, or a user registers,
/// logs in, is authenticated, refreshes and logs out.
async fn auth_durations(backend: Backend) {
    let redis = redis(&backend);
    let fields = [
        AuthField::AccessTtl,
        AuthField::RefreshTtl,
        AuthField::Leeway,
        AuthField::ReuseGrace,
        AuthField::IdleTimeout,
    ];
    let mut accepted = 0;
    for (i, d) in durations(8).into_iter().enumerate() {
        for field in fields {
            let (config, valid) = auth_case(field, d);
            assert_eq!(config.validate().is_ok(), valid, "{field:?} = {d:?}");
            let started = AuthHandle::start(
                &config,
                &DatabaseLocation::Memory,
                redis.as_ref().map(|(h, s)| (h, s)),
            );
            let auth = match started {
                Err(AuthError::Config(e)) => {
                    assert!(!valid, "{field:?} = {d:?}: {e}");
                    assert!(e.starts_with("--"), "{field:?} = {d:?}: {e}");
                    assert!(!e.contains('\n'), "{e}");
                    continue;
                }
                Err(e) => panic!("{field:?} = {d:?}: {e}"),
                Ok(auth) => auth,
            };
            assert!(valid, "{field:?} = {d:?} started");
            accepted += 1;
            let name = format!("user{i}x{}", field as u8);
            auth.register(
                name.clone(),
                format!("{name}@example.com"),
                "pw-12345678".into(),
            )
            .await
            .unwrap();
            let pair = auth
                .login(name.clone(), "pw-12345678".into(), ClientInfo::default())
                .await
                .unwrap_or_else(|e| panic!("{field:?} = {d:?}: {e}"));
            assert!(pair.expires_in >= 1, "{field:?} = {d:?}: {pair:?}");
            let principal = auth.authenticate(&pair.access_token).await.unwrap();
            let next = auth
                .refresh(&pair.refresh_token)
                .await
                .unwrap_or_else(|e| panic!("{field:?} = {d:?}: {e}"));
            auth.logout(&principal).await.unwrap();
            assert!(
                auth.authenticate(&next.access_token).await.is_err(),
                "{field:?} = {d:?}: the session is logged out"
            );
        }
    }
    // The edges accepted: 1 s and 100 years for each of the five, zero for the leeway and grace.
    assert!(accepted >= 12, "{accepted}");
}

/// Every events duration at every edge: refused at start naming its option, or an event
/// published reaches a subscriber.
async fn events_durations(backend: Backend) {
    let redis = redis(&backend);
    for d in durations(8) {
        for field in 0..3 {
            let mut config = EventsConfig::default();
            let valid = match field {
                0 => {
                    config.stream_ttl = d;
                    d >= Duration::from_secs(1) && d <= MAX_DURATION
                }
                1 => {
                    config.heartbeat = d;
                    d >= Duration::from_millis(1) && d <= MAX_DURATION
                }
                _ => {
                    config.retry = d;
                    d <= MAX_DURATION
                }
            };
            assert_eq!(config.validate().is_ok(), valid, "field {field} = {d:?}");
            let events = match EventsHandle::start(&config, redis.as_ref().map(|(h, _)| h.clone()))
            {
                Err(EventsError::Config(e)) => {
                    assert!(!valid, "field {field} = {d:?}: {e}");
                    assert!(e.contains(" must be between "), "{e}");
                    continue;
                }
                Err(e) => panic!("field {field} = {d:?}: {e}"),
                Ok(events) => events,
            };
            assert!(valid, "field {field} = {d:?} started");
            let mut stream = events.subscribe("durations", None).await.unwrap();
            // The subscription is live once its first frame (the `retry:` hint) is out.
            let first = stream.next().await.unwrap().unwrap();
            assert!(String::from_utf8_lossy(&first).contains("retry:"));
            let mut delivered = false;
            for _ in 0..20 {
                events
                    .publish("durations", &serde_json::json!({"d": field}))
                    .await
                    .unwrap_or_else(|e| panic!("field {field} = {d:?}: {e}"));
                let frame = tokio::time::timeout(Duration::from_millis(250), stream.next()).await;
                if let Ok(Some(Ok(bytes))) = frame
                    && String::from_utf8_lossy(&bytes).contains("data: {\"d\":")
                {
                    delivered = true;
                    break;
                }
            }
            assert!(delivered, "field {field} = {d:?}: no event delivered");
            if let Some(ttl) = backend.keys_with_ttl().and_then(|keys| {
                keys.into_iter()
                    .find(|(k, _)| k.contains("events:{durations}"))
                    .map(|(_, ttl)| ttl)
            }) {
                let expected = config.stream_ttl.as_millis() as i64;
                assert!(
                    ttl > expected - 60_000 && ttl <= expected,
                    "stream TTL {ttl} ms for {:?}",
                    config.stream_ttl
                );
            }
            events.shutdown();
        }
    }
}

/// A policy whose window or limit was set past its bounds after `Policy::new`: the config is
/// refused naming it, and the limiter clamps it as `Policy::new` does (a week, a billion),
/// never overflowing.
async fn ratelimit_durations(backend: Backend) {
    let redis = redis(&backend);
    for (i, d) in durations(8).into_iter().enumerate() {
        let mut policy = Policy::new(format!("p{i}"), 2, Duration::from_secs(60));
        policy.window = d;
        policy.limit = if i % 2 == 0 { u64::MAX } else { 2 };
        let mut config = RateLimitConfig::parse(&["default=off"], &[] as &[&str]).unwrap();
        config.global = Some(policy.clone());
        let in_bounds = d >= Duration::from_secs(1)
            && d <= Duration::from_secs(redkit::ratelimit::MAX_WINDOW_SECS)
            && policy.limit <= redkit::ratelimit::MAX_LIMIT;
        match config.validate() {
            Ok(()) => assert!(in_bounds, "{d:?}"),
            Err(e) => {
                assert!(!in_bounds, "{d:?}: {e}");
                assert!(e.contains("p"), "{e}");
            }
        }
        let limiter = RateLimitHandle::start(config, redis.as_ref().map(|(h, _)| h.clone()));
        let app = test::init_service(
            App::new()
                .wrap(limiter.middleware_for(policy.clone()))
                .route("/", web::get().to(HttpResponse::Ok)),
        )
        .await;
        let mut statuses = Vec::new();
        for _ in 0..3 {
            let req = test::TestRequest::get()
                .uri("/")
                .peer_addr("203.0.113.9:1000".parse().unwrap())
                .to_request();
            let res = test::call_service(&app, req).await;
            statuses.push(res.status().as_u16());
        }
        let limit = policy.limit.min(redkit::ratelimit::MAX_LIMIT);
        let expected: Vec<u16> = (0..3u64)
            .map(|n| if n < limit { 200 } else { 429 })
            .collect();
        assert_eq!(statuses, expected, "window {d:?}, limit {}", policy.limit);
    }
}

backend_suite!(auth_durations, events_durations, ratelimit_durations);
