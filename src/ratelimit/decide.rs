//! Decisions: a request's policies decided on Redis (batched) or in process, local blocks for
//! identities inside their retry-after, and the recording of every outcome.

use std::{borrow::Cow, time::Duration};

use super::{
    Decision, MAX_LIMIT, MAX_WINDOW_SECS, Policy, RateLimitError, RateLimitHandle,
    algo::{MemoryCounters, Mode, Raw},
    counters::bump,
    handle::{PolicyId, Verdict},
    lease::{LeasedUnit, leasable},
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
    ) -> Result<(Decision, Option<Charge>), RateLimitError> {
        let key = self.key(policy, identity);
        let now = self.inner.config.clock.now_us();
        if let Some(decision) = self.blocked_now(policy, &key, now) {
            return Ok((decision, None));
        }
        let ask = self.ask(policy, key, cost, Mode::Consume);
        let (now, mut asks, raws, source) = self.decide(&[policy], vec![ask]).await?;
        let raw = first(policy, &raws)?.0;
        let decision = self.record(policy, &asks[0].key, raw, now);
        let spent = decision.allowed.then(|| Charge {
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
        let ask = self.ask(policy, key.clone(), cost, Mode::Peek);
        let (now, _, raws, source) = self.decide(&[policy], vec![ask]).await?;
        let mut raw = first(policy, &raws)?.0;
        if source == Source::Redis {
            // Units this instance holds are still the identity's to spend here.
            raw.remaining += self.inner.leases.held(&key, now);
        }
        Ok(Decision::from_raw(raw, policy.limit))
    }

    /// Decides every policy of a request in order (route first, then global), all-or-nothing:
    /// when one denies, nothing the earlier ones would have spent stays spent. On Redis that is
    /// one script call, shared with the requests arriving at the same time (see `batch`), for
    /// the policies this instance holds no leased unit of (see `lease`): a request whose every
    /// policy has one costs no Redis command.
    pub(crate) async fn check_request(
        &self,
        ids: &[PolicyId],
        identity: &str,
    ) -> Result<Verdict, RateLimitError> {
        let keyed: Vec<(PolicyId, String)> = ids
            .iter()
            .map(|&id| (id, self.key(self.policy(id), identity)))
            .collect();
        let policies: Vec<&Policy> = ids.iter().map(|&id| self.policy(id)).collect();
        let leasing = self.inner.coalescer.is_some();
        let leased: Vec<bool> = policies
            .iter()
            .map(|p| leasing && leasable(p.algorithm, p.limit, p.shadow))
            .collect();
        let mut tries = 0;
        loop {
            tries += 1;
            let now = self.inner.config.clock.now_us();
            // Units leased to this instance first: they are the identity's, reserved on Redis.
            let local: Vec<Option<LeasedUnit>> = keyed
                .iter()
                .zip(&leased)
                .map(|((_, key), leased)| {
                    leased.then(|| self.inner.leases.take(key, now)).flatten()
                })
                .collect();
            // A block on any other answers before any store is asked: nothing to spend or refund.
            for (i, (id, key)) in keyed.iter().enumerate() {
                if local[i].is_some() {
                    continue;
                }
                if let Some(decision) = self.blocked_now(policies[i], key, now) {
                    self.give_back(&keyed, &local);
                    return Ok(Verdict {
                        decisions: vec![(*id, decision)],
                        denied: Some(0),
                    });
                }
            }
            let remote: Vec<usize> = (0..keyed.len()).filter(|&i| local[i].is_none()).collect();
            let (now, asks, raws, source) = if remote.is_empty() {
                (now, Vec::new(), Vec::new(), Source::Memory)
            } else {
                let asks = remote
                    .iter()
                    .map(|&i| {
                        let policy = policies[i];
                        let mut ask = self.ask(policy, keyed[i].1.clone(), 1, Mode::Consume);
                        if leased[i] {
                            ask.lease = self.inner.leases.want(&ask.key, ask.limit);
                        }
                        ask
                    })
                    .collect();
                let subset: Vec<&Policy> = remote.iter().map(|&i| policies[i]).collect();
                match self.decide(&subset, asks).await {
                    Ok(decided) => decided,
                    Err(err) => {
                        self.give_back(&keyed, &local);
                        return Err(err);
                    }
                }
            };
            // Denied on Redis while this instance holds units of the denying key (a reservation
            // granted to a request ahead of this one, settled after this one asked): try again
            // on them, as the next request would.
            let denying = raws
                .iter()
                .zip(&asks)
                .zip(&remote)
                .find(|(((raw, _), _), i)| !raw.allowed && !policies[**i].shadow);
            if let Some((((_, _), ask), _)) = denying
                && source == Source::Redis
                && tries < 3
                && self.inner.leases.held(&ask.key, now) > 0
            {
                self.give_back(&keyed, &local);
                continue;
            }
            let mut raws = raws.into_iter().zip(&asks);
            let mut decisions = Vec::with_capacity(keyed.len());
            let mut denied = None;
            for (i, policy) in policies.iter().enumerate() {
                let decision = match local[i] {
                    Some(spent) => self.record_leased(policy, spent),
                    None => {
                        let Some(((mut raw, granted), ask)) = raws.next() else {
                            break;
                        };
                        if raw.allowed && ask.lease > 1 {
                            // The units held here are the identity's too.
                            raw.remaining += granted.saturating_sub(1);
                        }
                        self.record(policy, &ask.key, raw, now)
                    }
                };
                decisions.push((ids[i], decision));
                if !decision.allowed && !policy.shadow {
                    denied = Some(i);
                    break;
                }
            }
            if denied.is_some() {
                self.give_back(&keyed, &local);
            }
            return Ok(Verdict { decisions, denied });
        }
    }

    /// Returns the leased units a request took before it was denied (or failed).
    fn give_back(&self, keyed: &[(PolicyId, String)], local: &[Option<LeasedUnit>]) {
        for ((_, key), spent) in keyed.iter().zip(local) {
            if spent.is_some() {
                self.inner.leases.give_back(key);
            }
        }
    }

    /// An admission from a leased unit, counted like one decided by the store.
    fn record_leased(&self, policy: &Policy, spent: LeasedUnit) -> Decision {
        bump(&self.inner.counters.allowed);
        bump(&self.inner.counters.leased);
        self.inner.counters.count(&policy.name, 0);
        let reset = Duration::from_micros(spent.reset_us);
        Decision {
            allowed: true,
            limit: policy.limit,
            remaining: spent.remaining.min(policy.limit),
            reset,
            retry_after: Duration::ZERO,
        }
    }

    /// Decides one request's `asks` (one per policy, in order, all-or-nothing) on Redis when it
    /// is up, else (or when it fails) in process: on the memory backend, or with the fail-open
    /// fallback. Answers the time decided at, the asks, the decisions made (stopping at the
    /// first enforcing denial) and the store that made them.
    async fn decide(
        &self,
        policies: &[&Policy],
        asks: Vec<Ask>,
    ) -> Result<(u64, Vec<Ask>, Vec<(Raw, u64)>, Source), RateLimitError> {
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
            for ask in &asks {
                // A reservation marked pending will not be made.
                self.inner.leases.settle(ask, 0, 0, 0, 0);
            }
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
    ) -> Result<Vec<(Raw, u64)>, RateLimitError> {
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
            raws.push((raw, ask.cost));
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
            lease: 1,
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
fn first(policy: &Policy, raws: &[(Raw, u64)]) -> Result<(Raw, u64), RateLimitError> {
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

/// What an allowed decision charged, kept to refund it: its ask, the time it was decided at (a
/// log refund removes the entries stamped with it) and the store that charged it.
#[derive(Debug)]
pub(super) struct Charge {
    pub(super) ask: Ask,
    pub(super) now: u64,
    pub(super) source: Source,
}
