//! Decisions: a request's policies decided on Redis (batched) or in process, local blocks for
//! identities inside their retry-after, and the recording of every outcome.

use std::{borrow::Cow, time::Duration};

use super::{
    Decision, MAX_LIMIT, MAX_WINDOW_SECS, Policy, RateLimitError, RateLimitHandle,
    algo::{MemoryCounters, Mode, Raw},
    counters::bump,
    handle::{PolicyId, Verdict},
    lua::Ask,
    policy::FailMode,
};

impl RateLimitHandle {
    /// Decides whether `identity` may spend `cost` units of `policy` now, and spends them if so.
    /// A denial spends nothing and blocks the identity locally until its retry-after.
    ///
    /// # Errors
    /// [`RateLimitError::Unavailable`] when Redis cannot be asked and the policy is fail-closed.
    pub async fn check(
        &self,
        policy: &Policy,
        identity: &str,
        cost: u64,
    ) -> Result<Decision, RateLimitError> {
        let (decision, _) = self.spend(policy, identity, cost).await?;
        Ok(decision)
    }

    /// [`check`](Self::check), answering also what was spent (when allowed), for a refund.
    pub(super) async fn spend(
        &self,
        policy: &Policy,
        identity: &str,
        cost: u64,
    ) -> Result<(Decision, Option<Spent>), RateLimitError> {
        let key = self.key(policy, identity);
        let now = self.inner.config.clock.now_us();
        if let Some(decision) = self.blocked_now(policy, &key, now) {
            return Ok((decision, None));
        }
        let ask = self.ask(policy, key, cost, Mode::Consume);
        let (now, mut asks, raws, source) = self.decide(&[policy], vec![ask]).await?;
        let raw = first(policy, &raws)?;
        let decision = self.record(policy, &asks[0].key, raw, now);
        let spent = decision.allowed.then(|| Spent {
            ask: asks.swap_remove(0),
            now,
            source,
        });
        Ok((decision, spent))
    }

    /// Reads whether `identity` could spend `cost` units of `policy` now, spending nothing.
    ///
    /// # Errors
    /// As [`check`](Self::check).
    pub async fn peek(
        &self,
        policy: &Policy,
        identity: &str,
        cost: u64,
    ) -> Result<Decision, RateLimitError> {
        let key = self.key(policy, identity);
        let now = self.inner.config.clock.now_us();
        if let Some(decision) = self.locally_blocked(policy, &key, now) {
            return Ok(decision);
        }
        let ask = self.ask(policy, key, cost, Mode::Peek);
        let (_, _, raws, _) = self.decide(&[policy], vec![ask]).await?;
        Ok(Decision::from_raw(first(policy, &raws)?, policy.limit))
    }

    /// Decides every policy of a request in order (route first, then global), all-or-nothing:
    /// when one denies, nothing the earlier ones would have spent stays spent. On Redis that is
    /// one script call, shared with the requests arriving at the same time (see `batch`).
    pub(crate) async fn check_request(
        &self,
        ids: &[PolicyId],
        identity: &str,
    ) -> Result<Verdict, RateLimitError> {
        let keyed: Vec<(PolicyId, String)> = ids
            .iter()
            .map(|&id| (id, self.key(self.policy(id), identity)))
            .collect();
        // A block on any of them answers before any store is asked: nothing to spend or refund.
        let now = self.inner.config.clock.now_us();
        for (id, key) in &keyed {
            if let Some(decision) = self.blocked_now(self.policy(*id), key, now) {
                return Ok(Verdict {
                    decisions: vec![(*id, decision)],
                    denied: Some(0),
                });
            }
        }
        let policies: Vec<&Policy> = ids.iter().map(|&id| self.policy(id)).collect();
        let asks = keyed
            .into_iter()
            .zip(&policies)
            .map(|((_, key), policy)| self.ask(policy, key, 1, Mode::Consume))
            .collect();
        let (now, asks, raws, _) = self.decide(&policies, asks).await?;
        let mut decisions = Vec::with_capacity(raws.len());
        let mut denied = None;
        for (i, (raw, ask)) in raws.into_iter().zip(&asks).enumerate() {
            let policy = policies[i];
            let decision = self.record(policy, &ask.key, raw, now);
            decisions.push((ids[i], decision));
            if !decision.allowed && !policy.shadow {
                denied = Some(i);
                break;
            }
        }
        Ok(Verdict { decisions, denied })
    }

    /// Decides one request's `asks` (one per policy, in order, all-or-nothing) on Redis when it
    /// is up, else (or when it fails) in process: on the memory backend, or with the fail-open
    /// fallback. Answers the time decided at, the asks, the decisions made (stopping at the
    /// first enforcing denial) and the store that made them.
    async fn decide(
        &self,
        policies: &[&Policy],
        asks: Vec<Ask>,
    ) -> Result<(u64, Vec<Ask>, Vec<Raw>, Source), RateLimitError> {
        let (Some(redis), Some(coalescer)) = (&self.inner.redis, &self.inner.coalescer) else {
            let now = self.inner.config.clock.now_us();
            let raws = self.decide_locally(&self.inner.memory, policies, &asks, now, false)?;
            return Ok((now, asks, raws, Source::Memory));
        };
        let asks = if redis.is_up() {
            match coalescer.decide(asks).await {
                Ok(answer) => return Ok((answer.now, answer.asks, answer.raws, Source::Redis)),
                // The flush was dropped with its runtime: nothing left to decide with.
                Err(asks) if asks.is_empty() => {
                    return Err(RateLimitError::Unavailable {
                        policy: policies.first().map(|p| p.name.clone()).unwrap_or_default(),
                    });
                }
                Err(asks) => asks,
            }
        } else {
            asks
        };
        let now = self.inner.config.clock.now_us();
        let raws = self.decide_locally(&self.inner.fallback, policies, &asks, now, true)?;
        Ok((now, asks, raws, Source::Fallback))
    }

    /// Decides `asks` in order on an in-process store; when an enforcing policy denies, the
    /// units the earlier ones spent are given back. As the fallback for Redis (`fallback`), a
    /// fail-closed policy refuses instead.
    fn decide_locally(
        &self,
        store: &MemoryCounters,
        policies: &[&Policy],
        asks: &[Ask],
        now: u64,
        fallback: bool,
    ) -> Result<Vec<Raw>, RateLimitError> {
        let mut raws = Vec::with_capacity(asks.len());
        let mut spent = Vec::new();
        for (policy, ask) in policies.iter().zip(asks) {
            if fallback && policy.fail_mode == FailMode::Closed {
                refund(store, &spent, now);
                bump(&self.inner.counters.fail_closed);
                return Err(RateLimitError::Unavailable {
                    policy: policy.name.clone(),
                });
            }
            if fallback {
                bump(&self.inner.counters.fallback);
            }
            let raw = store.decide(&ask.key, &ask.args(now, ask.mode));
            raws.push(raw);
            if raw.allowed && ask.mode == Mode::Consume {
                spent.push(ask);
            } else if !raw.allowed && !policy.shadow {
                refund(store, &spent, now);
                break;
            }
        }
        Ok(raws)
    }

    fn key(&self, policy: &Policy, identity: &str) -> String {
        // The identity is the hash tag: every key of one request (one per policy) lands on one
        // cluster slot, so one script call can decide them all. The algorithm is part of the
        // key: switching it never meets the other one's data type.
        [
            self.inner.config.key_prefix.as_str(),
            "rl:{",
            &hash_tag(identity),
            "}:",
            policy.algorithm.name(),
            ":",
            &policy.name,
        ]
        .concat()
    }

    fn ask(&self, policy: &Policy, key: String, cost: u64, mode: Mode) -> Ask {
        let limit = policy.limit.clamp(1, MAX_LIMIT);
        Ask {
            key,
            algorithm: policy.algorithm,
            // Bounded like parsed specs, whatever a caller put in the public fields, so the
            // arithmetic on epoch microseconds cannot overflow (nor divide by zero).
            window: policy
                .window_us()
                .clamp(1_000_000, MAX_WINDOW_SECS * 1_000_000),
            limit,
            // More than the limit is denied either way; bounding it bounds the script's loops.
            cost: cost.clamp(1, limit + 1),
            shadow: policy.shadow,
            mode,
        }
    }

    /// [`locally_blocked`](Self::locally_blocked), counted as a denial (a decision, not a peek).
    fn blocked_now(&self, policy: &Policy, key: &str, now: u64) -> Option<Decision> {
        let decision = self.locally_blocked(policy, key, now)?;
        bump(&self.inner.counters.blocked_locally);
        self.inner.counters.count(&policy.name, 1);
        Some(decision)
    }

    /// The local denial of an identity still inside a retry-after it was given (no store asked).
    fn locally_blocked(&self, policy: &Policy, key: &str, now: u64) -> Option<Decision> {
        if policy.shadow {
            return None;
        }
        let until = self.inner.blocked.with(key, |map| match map.get(key) {
            Some(until) if *until > now => Some(*until),
            Some(_) => {
                map.remove(key);
                None
            }
            None => None,
        })?;
        let wait = Duration::from_micros(until - now);
        Some(Decision {
            allowed: false,
            limit: policy.limit,
            remaining: 0,
            reset: wait,
            retry_after: wait,
        })
    }

    /// The decision `raw` of a spending check, counted; an enforcing denial blocks `key` locally
    /// until its retry-after.
    fn record(&self, policy: &Policy, key: &str, raw: Raw, now: u64) -> Decision {
        let decision = Decision::from_raw(raw, policy.limit);
        let counters = &self.inner.counters;
        if decision.allowed {
            bump(&counters.allowed);
            counters.count(&policy.name, 0);
        } else if policy.shadow {
            bump(&counters.shadow_denied);
            counters.count(&policy.name, 2);
        } else {
            bump(&counters.denied);
            counters.count(&policy.name, 1);
            let until = now + u64::try_from(decision.retry_after.as_micros()).unwrap_or(0);
            self.inner.blocked.with(key, |map| {
                map.insert(key.to_owned(), until);
            });
        }
        decision
    }
}

/// Gives back what `spent` took from `store` (a later policy of the request denied it).
fn refund(store: &MemoryCounters, spent: &[&Ask], now: u64) {
    for ask in spent {
        store.decide(&ask.key, &ask.args(now, Mode::Refund));
    }
}

/// The first decision of a request: there is always one (only later policies can be skipped).
fn first(policy: &Policy, raws: &[Raw]) -> Result<Raw, RateLimitError> {
    raws.first()
        .copied()
        .ok_or_else(|| RateLimitError::Unavailable {
            policy: policy.name.clone(),
        })
}

/// The identity as a Redis hash tag: `{`, `}` and `%` percent-escaped (so the tag is the whole
/// identity, and distinct identities stay distinct), and never empty (`%`), since an empty tag
/// would make Redis hash the whole key and scatter one request's keys over several slots.
fn hash_tag(identity: &str) -> Cow<'_, str> {
    if identity.is_empty() {
        return Cow::Borrowed("%");
    }
    if !identity.contains(['{', '}', '%']) {
        return Cow::Borrowed(identity);
    }
    let mut tag = String::with_capacity(identity.len() + 8);
    for c in identity.chars() {
        match c {
            '{' => tag.push_str("%7B"),
            '}' => tag.push_str("%7D"),
            '%' => tag.push_str("%25"),
            c => tag.push(c),
        }
    }
    Cow::Owned(tag)
}

/// Which store made a decision, so that a refund goes back to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Source {
    Memory,
    Redis,
    Fallback,
}

/// What an allowed decision spent: its ask, the time it was decided at (a log refund removes
/// the entries stamped with it) and where.
#[derive(Debug)]
pub(super) struct Spent {
    pub(super) ask: Ask,
    pub(super) now: u64,
    pub(super) source: Source,
}
