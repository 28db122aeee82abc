//! Decisions: a request's policies decided on Redis (batched) or in process, local blocks for
//! identities inside their retry-after, and the recording of every outcome.

use std::borrow::Cow;

use super::{
    Decision, MAX_LIMIT, MAX_WINDOW_SECS, Policy, RateLimitError, RateLimitHandle,
    algo::{Ask, MemoryCounters, Mode},
    counters::bump,
    lease::leasable,
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
        let ask = self.ask(policy, identity, cost, Mode::Consume);
        let now = self.inner.config.clock.now_us();
        if let Some(decision) = self.blocked(policy, &ask.key, now, true) {
            return Ok((decision, None));
        }
        let (now, mut asks, decided, source) = self.decide(&[policy], vec![ask]).await?;
        let decision = self.record(policy, &asks[0].key, first(policy, &decided)?, now);
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
        let ask = self.ask(policy, identity, cost, Mode::Peek);
        let now = self.inner.config.clock.now_us();
        if let Some(decision) = self.blocked(policy, &ask.key, now, false) {
            return Ok(decision);
        }
        let (now, asks, decided, source) = self.decide(&[policy], vec![ask]).await?;
        let mut decision = first(policy, &decided)?;
        if source == Source::Redis {
            // Units this instance holds are still the identity's to spend here.
            decision.remaining += self.inner.leases.held(&asks[0].key, now);
        }
        Ok(decision.shown(policy.limit))
    }

    /// Decides every policy of a request in order (route first, then global), all-or-nothing:
    /// when one denies, nothing the earlier ones would have spent stays spent. On Redis that is
    /// one script call, shared with the requests arriving at the same time (see `batch`), for
    /// the policies this instance holds no leased unit of (see `lease`): a request whose every
    /// policy has one costs no Redis command. Answers each policy's decision in order; the list
    /// stops at an enforcing denial, which is then its last entry.
    pub(crate) async fn check_request<'p>(
        &self,
        policies: &[&'p Policy],
        identity: &str,
    ) -> Result<Vec<(&'p Policy, Decision)>, RateLimitError> {
        let leasing = self.inner.coalescer.is_some();
        let asks: Vec<Ask> = policies
            .iter()
            .map(|p| self.ask(p, identity, 1, Mode::Consume))
            .collect();
        let leases = &self.inner.leases;
        // Units taken from this instance's leases go back when the request is not admitted.
        let give_back = |local: &[Option<Decision>], asks: &[Ask]| {
            for (ask, _) in asks.iter().zip(local).filter(|(_, d)| d.is_some()) {
                leases.give_back(&ask.key);
            }
        };
        let mut tries = 0;
        loop {
            tries += 1;
            let now = self.inner.config.clock.now_us();
            // Units leased to this instance first: they are the identity's, reserved on Redis.
            let local: Vec<Option<Decision>> = policies
                .iter()
                .zip(&asks)
                .map(|(p, ask)| {
                    let leased = leasing && leasable(p.algorithm, p.limit, p.shadow);
                    leased
                        .then(|| leases.take(&ask.key, now, p.limit))
                        .flatten()
                })
                .collect();
            // A block on any other answers before any store is asked: nothing to spend or refund.
            for (i, policy) in policies.iter().enumerate() {
                if local[i].is_none()
                    && let Some(decision) = self.blocked(policy, &asks[i].key, now, true)
                {
                    give_back(&local, &asks);
                    return Ok(vec![(*policy, decision)]);
                }
            }
            let remote: Vec<usize> = (0..asks.len()).filter(|&i| local[i].is_none()).collect();
            let (now, sent, decided, source) = if remote.is_empty() {
                (now, Vec::new(), Vec::new(), Source::Memory)
            } else {
                let sent = remote
                    .iter()
                    .map(|&i| {
                        let mut ask = asks[i].clone();
                        let p = policies[i];
                        if leasing && leasable(p.algorithm, p.limit, p.shadow) {
                            ask.lease = leases.want(&ask.key, ask.limit);
                        }
                        ask
                    })
                    .collect();
                let subset: Vec<&Policy> = remote.iter().map(|&i| policies[i]).collect();
                match self.decide(&subset, sent).await {
                    Ok(decided) => decided,
                    Err(err) => {
                        give_back(&local, &asks);
                        return Err(err);
                    }
                }
            };
            // Denied on Redis while this instance holds units of the denying key (a reservation
            // granted to a request ahead of this one, settled after this one asked): try again
            // on them, as the next request would.
            let denying = decided
                .iter()
                .zip(&sent)
                .zip(&remote)
                .find(|(((d, _), _), i)| !d.allowed && !policies[**i].shadow);
            if let Some(((_, ask), _)) = denying
                && source == Source::Redis
                && tries < 3
                && leases.held(&ask.key, now) > 0
            {
                give_back(&local, &asks);
                continue;
            }
            let mut decided = decided.into_iter().zip(&sent);
            let mut out = Vec::with_capacity(policies.len());
            for (i, policy) in policies.iter().enumerate() {
                let decision = match local[i] {
                    Some(leased) => {
                        // An admission from a leased unit, counted like one decided by the store.
                        bump(&self.inner.counters.allowed);
                        bump(&self.inner.counters.leased);
                        self.inner.counters.count(&policy.name, 0);
                        leased
                    }
                    None => {
                        let Some(((mut decision, granted), ask)) = decided.next() else {
                            break;
                        };
                        if decision.allowed && ask.lease > 1 {
                            // The units held here are the identity's too.
                            decision.remaining += granted.saturating_sub(1);
                        }
                        self.record(policy, &ask.key, decision, now)
                    }
                };
                out.push((*policy, decision));
                if !decision.allowed && !policy.shadow {
                    give_back(&local, &asks);
                    return Ok(out);
                }
            }
            return Ok(out);
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
    ) -> Result<(u64, Vec<Ask>, Vec<(Decision, u64)>, Source), RateLimitError> {
        let (Some(redis), Some(coalescer)) = (&self.inner.redis, &self.inner.coalescer) else {
            let now = self.inner.config.clock.now_us();
            let raws = self.decide_locally(&self.inner.memory, policies, &asks, now, false)?;
            return Ok((now, asks, raws, Source::Memory));
        };
        let asks = if redis.is_up() {
            match coalescer.decide(asks).await {
                Ok((now, asks, decided)) => return Ok((now, asks, decided, Source::Redis)),
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
    ) -> Result<Vec<(Decision, u64)>, RateLimitError> {
        let mut decided = Vec::with_capacity(asks.len());
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
            let decision = store.decide(ask, now, ask.mode);
            decided.push((decision, ask.cost));
            if decision.allowed && ask.mode == Mode::Consume {
                spent.push(ask);
            } else if !decision.allowed && !policy.shadow {
                refund(store, &spent, now);
                break;
            }
        }
        Ok(decided)
    }

    /// The decision `policy` asks of a store for `identity`: its storage key and its numbers.
    fn ask(&self, policy: &Policy, identity: &str, cost: u64, mode: Mode) -> Ask {
        // The identity is the hash tag: every key of one request (one per policy) lands on one
        // cluster slot, so one script call can decide them all. The algorithm is part of the
        // key: switching it never meets the other one's data type.
        let key = [
            self.inner.config.key_prefix.as_str(),
            "rl:{",
            &hash_tag(identity),
            "}:",
            policy.algorithm.name(),
            ":",
            &policy.name,
        ]
        .concat();
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

    /// The local denial of an identity still inside a retry-after it was given (no store
    /// asked); `count`ed as a denial when it answers a decision rather than a peek.
    fn blocked(&self, policy: &Policy, key: &str, now: u64, count: bool) -> Option<Decision> {
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
        if count {
            bump(&self.inner.counters.blocked_locally);
            self.inner.counters.count(&policy.name, 1);
        }
        let wait = until - now;
        Some(Decision::new(false, policy.limit, 0, wait, wait))
    }

    /// The decision of a spending check, counted and shown for `policy`; an enforcing denial
    /// blocks `key` locally until its retry-after.
    fn record(&self, policy: &Policy, key: &str, decision: Decision, now: u64) -> Decision {
        let decision = decision.shown(policy.limit);
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
        store.decide(ask, now, Mode::Refund);
    }
}

/// The first decision of a request: there is always one (only later policies can be skipped).
fn first(policy: &Policy, decided: &[(Decision, u64)]) -> Result<Decision, RateLimitError> {
    decided
        .first()
        .map(|(decision, _)| *decision)
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
