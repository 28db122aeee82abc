//! The login limit, all of its rules in one place: see [`RateLimitHandle::limit_login`].

use std::{future::Future, net::IpAddr, time::Duration};

use actix_web::{HttpRequest, HttpResponse};

use crate::client::client_addr;

use super::{
    Decision, Policy, RateLimitHandle,
    algo::Mode,
    client_group,
    decide::{Charge, Source},
    lua,
    response::too_many_requests,
};

/// A login attempt spent by [`RateLimitHandle::login_attempt`].
#[derive(Debug)]
pub struct LoginAttempt {
    /// Whether the attempt may go on to verify the password.
    pub decision: Decision,
    spent: Option<Charge>,
}

impl RateLimitHandle {
    /// Runs one login under the login limit: spends an attempt for (`username`, the client
    /// address of `req`) before `verify` runs, answers the 429 instead of running it when the
    /// attempt is refused, and gives the attempt back unless `wrong_password` says the outcome
    /// was a wrong password (or an unknown user). See the module docs for the rules.
    ///
    /// # Errors
    /// The 429 `quota-exceeded` response when the attempt is refused.
    pub async fn limit_login<T, E>(
        &self,
        req: &HttpRequest,
        username: &str,
        verify: impl Future<Output = Result<T, E>>,
        wrong_password: impl FnOnce(&E) -> bool,
    ) -> Result<Result<T, E>, HttpResponse> {
        let config = self.config();
        let Some(ip) = client_addr(req, &config.trusted_proxies)
            .map(|ip| client_group(ip, config.ipv6_prefix))
        else {
            return Ok(verify.await);
        };
        let attempt = self.login_attempt(username, ip).await;
        if !attempt.decision.allowed {
            return Err(self.login_denied(&attempt.decision));
        }
        let result = verify.await;
        if !matches!(&result, Err(err) if wrong_password(err)) {
            self.login_refund(attempt).await;
        }
        Ok(result)
    }

    /// Whether a login for `username` from `ip` is currently refused because of earlier failures
    /// (5 per 15 minutes by default). Spends nothing. Call before verifying the password; on a
    /// denial answer 429 with `Retry-After: decision.retry_after_secs()`.
    pub async fn login_blocked(&self, username: &str, ip: IpAddr) -> Decision {
        let policy = &self.config().login;
        let identity = login_identity(username, ip);
        match self.peek(policy, &identity, 1).await {
            Ok(decision) => decision,
            Err(_) => fail_closed_decision(policy),
        }
    }

    /// The 429 `quota-exceeded` response (with `Retry-After`) for a login refused by
    /// [`login_blocked`](Self::login_blocked) or [`login_attempt`](Self::login_attempt).
    pub fn login_denied(&self, decision: &Decision) -> HttpResponse {
        too_many_requests(&self.config().login, decision)
    }

    /// Records one failed login for `username` from `ip`; answers the state after it.
    pub async fn record_login_failure(&self, username: &str, ip: IpAddr) -> Decision {
        let policy = &self.config().login;
        let identity = login_identity(username, ip);
        match self.check(policy, &identity, 1).await {
            Ok(decision) => decision,
            Err(_) => fail_closed_decision(policy),
        }
    }

    /// Spends one login attempt for `username` from `ip` before the password is verified, so
    /// that concurrent guesses cannot all pass a peek (5 per 15 minutes by default). On a
    /// denial answer [`login_denied`](Self::login_denied); when the password was right, give the
    /// unit back with [`login_refund`](Self::login_refund).
    pub async fn login_attempt(&self, username: &str, ip: IpAddr) -> LoginAttempt {
        let policy = &self.config().login;
        let identity = login_identity(username, ip);
        match self.spend(policy, &identity, 1).await {
            Ok((decision, spent)) => LoginAttempt { decision, spent },
            Err(_) => LoginAttempt {
                decision: fail_closed_decision(policy),
                spent: None,
            },
        }
    }

    /// Gives back the unit a successful (or not-attempted) login spent, in the store that spent
    /// it: the in-process backend, the fail-open fallback, or Redis (a small script of its own,
    /// see `lua`). A refund Redis cannot take is logged and dropped: the attempt stays spent.
    pub async fn login_refund(&self, attempt: LoginAttempt) {
        let Some(Charge { ask, now, source }) = attempt.spent else {
            return;
        };
        let inner = &self.inner;
        let store = match (source, &inner.redis) {
            (Source::Redis, Some(redis)) => {
                if let Err(err) = lua::refund(redis, &ask, now).await {
                    tracing::warn!(error = %err, "rate-limit: login refund failed");
                }
                return;
            }
            (Source::Fallback, _) => &inner.fallback,
            _ => &inner.memory,
        };
        store.decide(&ask, now, Mode::Refund);
    }
}

/// Longest username kept as it is in a login key; longer ones are replaced by their SHA-1, so
/// no input makes a longer key.
const MAX_LOGIN_NAME_IN_KEY: usize = 64;

/// One login bucket per (username, client IP); usernames compare case-insensitively.
fn login_identity(username: &str, ip: IpAddr) -> String {
    let name = username.trim().to_lowercase();
    if name.len() > MAX_LOGIN_NAME_IN_KEY {
        let digest = sha1_smol::Sha1::from(name.as_bytes()).digest();
        return format!("sha1:{digest}|{ip}");
    }
    format!("{name}|{ip}")
}

/// The refusal when no store could decide (a fail-closed policy while Redis is down).
fn fail_closed_decision(policy: &Policy) -> Decision {
    Decision {
        allowed: false,
        limit: policy.limit,
        remaining: 0,
        reset: Duration::from_secs(1),
        retry_after: Duration::from_secs(1),
    }
}
