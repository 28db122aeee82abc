//! Revocation records are bounded by the access-token lifetime, however often one account logs
//! in beyond its session cap.

use std::{sync::Arc, time::Duration};

use super::{AuthHandle, Clock, Session};
use crate::clock::ManualClock;

/// A session opened as `login` opens one once the password checked out (the argon2 check is
/// what this leaves out: 10,000 of them would take minutes).
async fn open_session(auth: &AuthHandle, user: super::UserId) {
    let t = auth.times();
    let now = t.now_ms.div_euclid(1000);
    let session = Session {
        sid: super::tokens::random_id(),
        user_id: user,
        username: "alice".into(),
        email: "alice@example.com".into(),
        created_at: now,
        last_used_at: now,
        ip: String::new(),
        user_agent: String::new(),
        refresh_jti: super::tokens::random_id(),
        seq: 0,
        last_used_ms: t.now_ms,
        refresh_iat: now,
        refresh_exp: now + 3600,
    };
    auth.inner.store.create(&session, None, t).await.unwrap();
    auth.trim_sessions(user, t).await.unwrap();
}

/// 10,000 logins beyond a cap of one session, one a second on the auth clock, with 60-second
/// access tokens: each revokes the session before it, yet the instance never holds more than
/// the revocations of the last access TTL + leeway (65 s) plus one prune interval (5 s), 71
/// entries; one per login (10,000) before records lived as long as a refresh token.
#[actix_web::test]
async fn revocation_records_are_bounded_by_the_access_ttl() {
    let clock = Arc::new(ManualClock::starting_now());
    let config = super::AuthConfig {
        clock: clock.clone(),
        access_ttl: Duration::from_secs(60),
        max_sessions_per_user: 1,
        ..super::AuthConfig::default()
    };
    let auth = AuthHandle::start(&config, &crate::db::DatabaseLocation::Memory, None).unwrap();
    let user = 7;
    open_session(&auth, user).await;
    let mut most = 0;
    for _ in 0..10_000 {
        clock.advance(Duration::from_secs(1));
        open_session(&auth, user).await;
        most = most.max(auth.revocation_entries());
    }
    eprintln!(
        "revocation entries after 10,000 logins beyond the cap: at most {most}, now {} (clock {} s)",
        auth.revocation_entries(),
        clock.now_secs()
    );
    assert!(most <= 71, "{most} revocation entries");
    assert!(
        most >= 65,
        "{most}: the records of the last access TTL are kept"
    );
    assert_eq!(auth.sessions(user).await.unwrap().len(), 1);
}
