//! The Redis side of the view: the names of the global revocation record, its rebuild, the
//! check asked of it while the view is not trusted, and the subscriber that keeps the view in
//! step with it.

use std::{sync::Weak, time::Duration};

use super::{Revocation, RevocationView, ViewState};
use crate::{
    auth::{Principal, RejectReason, UserId},
    connection::{PushEvent, PushEvents, RedisHandle, Subscriber},
};

/// Redis names used by sessions and revocation.
///
/// Two groups, each in one hash slot so that every call stays single-slot on a Redis Cluster:
/// - per user, tagged `{user:<uid>}`: the sessions and the user's session index (login,
///   refresh rotation, logout and logout-all change them in one `MULTI` or script);
/// - the global revocation record, tagged `{revocations}`: the zsets every instance's view is
///   rebuilt from, the denylisted jtis and the channel that announces revocations (one
///   revocation is one `MULTI` there; the rebuild is one pipeline there).
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    pub prefix: String,
    pub channel: String,
    pub jtis: String,
    pub sids: String,
    pub users: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
            channel: format!("{prefix}auth:{{revocations}}"),
            jtis: format!("{prefix}auth:{{revocations}}:jti"),
            sids: format!("{prefix}auth:{{revocations}}:sid"),
            users: format!("{prefix}auth:{{revocations}}:user"),
        }
    }

    pub fn denylist(&self, jti: &str) -> String {
        format!("{}auth:{{revocations}}:denylist:{jti}", self.prefix)
    }

    pub fn session(&self, uid: UserId, sid: &str) -> String {
        format!("{}session:{{user:{uid}}}:{sid}", self.prefix)
    }

    pub fn user_sessions(&self, uid: UserId) -> String {
        format!("{}user_sessions:{{user:{uid}}}", self.prefix)
    }
}

/// Reads every live revocation from Redis.
async fn load(
    redis: &RedisHandle,
    keys: &Keys,
    now_ms: i64,
) -> Result<Vec<Revocation>, crate::connection::RedisError> {
    let mut pipe = redis::pipe();
    pipe.cmd("ZRANGE")
        .arg(&keys.jtis)
        .arg(now_ms)
        .arg("+inf")
        .arg("BYSCORE")
        .arg("WITHSCORES")
        .cmd("ZRANGE")
        .arg(&keys.sids)
        .arg(now_ms)
        .arg("+inf")
        .arg("BYSCORE")
        .arg("WITHSCORES")
        .cmd("ZRANGE")
        .arg(&keys.users)
        .arg(0)
        .arg(-1)
        .arg("WITHSCORES");
    type Scored = Vec<(String, i64)>;
    let (jtis, sids, users): (Scored, Scored, Vec<(UserId, i64)>) = redis.query_pipe(&pipe).await?;
    Ok(jtis
        .into_iter()
        .map(|(j, e)| Revocation::Token(j, e))
        .chain(sids.into_iter().map(|(s, e)| Revocation::Session(s, e)))
        .chain(users.into_iter().map(|(u, b)| Revocation::User(u, b)))
        .collect())
}

/// Asks Redis directly whether `p` is revoked (used while the view is not trusted).
pub(crate) async fn check_remote(
    redis: &RedisHandle,
    keys: &Keys,
    p: &Principal,
) -> Result<Result<(), RejectReason>, crate::connection::RedisError> {
    let mut pipe = redis::pipe();
    pipe.cmd("EXISTS")
        .arg(keys.denylist(&p.jti))
        .cmd("ZSCORE")
        .arg(&keys.sids)
        .arg(&p.sid)
        .cmd("ZSCORE")
        .arg(&keys.users)
        .arg(p.user_id);
    let (denied, sid, user): (bool, Option<f64>, Option<f64>) = redis.query_pipe(&pipe).await?;
    if denied {
        return Ok(Err(RejectReason::RevokedToken));
    }
    if sid.is_some() {
        return Ok(Err(RejectReason::RevokedSession));
    }
    #[allow(clippy::cast_precision_loss)]
    if user.is_some_and(|before| (p.iat as f64) < before) {
        return Ok(Err(RejectReason::RevokedUser));
    }
    Ok(Ok(()))
}

/// Keeps `view` in step with Redis on its own subscriber connection from the connection layer
/// (never the command connection, never the events feature's): subscribe, then rebuild, then
/// apply events. When the layer reports the subscription lost (a dropped connection, or one that
/// missed its liveness deadline: a half-open subscriber cannot leave the view "in sync"), the
/// view leaves `InSync` at once, then subscribes and rebuilds again. Reconnection is redis-rs's
/// (see [`crate::connection::push`]). Ends when the view is dropped.
pub(crate) async fn subscribe_loop(
    view: Weak<RevocationView>,
    subscriber: Subscriber,
    mut events: PushEvents,
    redis: RedisHandle,
    keys: Keys,
) {
    let mut backoff = Duration::from_millis(25);
    let retry = |backoff: &mut Duration| {
        let wait = *backoff;
        *backoff = (*backoff * 2).min(Duration::from_millis(500));
        tokio::time::sleep(wait)
    };
    loop {
        let Some(strong) = view.upgrade() else { return };
        let clock = strong.clock.clone();
        drop(strong);
        if let Err(err) = subscriber.subscribe(&[keys.channel.as_bytes()]).await {
            tracing::debug!(error = %err, "auth: revocation subscription failed; retrying");
            retry(&mut backoff).await;
            continue;
        }
        // Subscribed first, then read the state: nothing revoked in between is missed.
        {
            let Some(v) = view.upgrade() else { return };
            if v.state() != ViewState::Syncing {
                v.set_state(ViewState::Rebuilding);
            }
        }
        match load(&redis, &keys, clock.now_ms()).await {
            Ok(all) => {
                let Some(v) = view.upgrade() else { return };
                v.apply(all);
                // What arrived meanwhile: messages merge; a loss means rebuilding again.
                let mut lost = false;
                while let Ok(event) = events.try_recv() {
                    lost |= !apply_event(&v, event);
                }
                if lost {
                    continue;
                }
                v.set_state(ViewState::InSync);
                tracing::info!("auth: revocation view in sync");
                backoff = Duration::from_millis(25);
            }
            Err(err) => {
                tracing::warn!(error = %err, "auth: revocation rebuild failed; retrying");
                retry(&mut backoff).await;
                continue;
            }
        }
        loop {
            let Some(event) = events.recv().await else {
                return;
            };
            let Some(v) = view.upgrade() else { return };
            if !apply_event(&v, event) {
                break;
            }
        }
        let Some(v) = view.upgrade() else { return };
        if v.state() == ViewState::InSync {
            v.set_state(ViewState::Detached);
        }
        tracing::warn!("auth: revocation subscription lost; resubscribing and rebuilding");
    }
}

/// Applies one event of the subscriber; answers false when the subscription was lost.
fn apply_event(view: &RevocationView, event: PushEvent) -> bool {
    match event {
        PushEvent::Message { payload, .. } => {
            let payload = String::from_utf8_lossy(&payload);
            match Revocation::decode(&payload) {
                Some(r) => view.apply([r]),
                None => tracing::warn!(%payload, "auth: ignoring a malformed revocation event"),
            }
            true
        }
        PushEvent::Lost => false,
        _ => true,
    }
}
