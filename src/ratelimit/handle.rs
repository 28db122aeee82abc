use std::{
    borrow::Cow,
    hash::{BuildHasher, RandomState},
    net::IpAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use actix::{Actor, Addr};
use actix_web::HttpRequest;

use super::{
    Decision, GetStats, MAX_LIMIT, MAX_WINDOW_SECS, Policy, RateLimitActor, RateLimitConfig,
    RateLimitError, RateLimitStats, Sweep, UserResolver,
    algo::{MemoryStore, Mode, Raw, Sharded},
    batch::Coalescer,
    identity::client_ip,
    lua::{self, Ask},
    policy::FailMode,
};
use crate::connection::RedisHandle;

/// Counters behind [`RateLimitStats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) allowed: AtomicU64,
    pub(crate) denied: AtomicU64,
    pub(crate) shadow_denied: AtomicU64,
    pub(crate) blocked_locally: AtomicU64,
    pub(crate) fallback: AtomicU64,
    pub(crate) fail_closed: AtomicU64,
    /// Decisions per policy name: `[allowed, denied, shadow_denied]`.
    pub(crate) by_policy: std::sync::Mutex<std::collections::HashMap<String, [u64; 3]>>,
}

impl Inner {
    /// A snapshot of the counters and store sizes.
    pub(crate) fn stats(&self) -> RateLimitStats {
        let c = &self.counters;
        let get = |n: &AtomicU64| n.load(Ordering::Relaxed);
        RateLimitStats {
            allowed: get(&c.allowed),
            denied: get(&c.denied),
            shadow_denied: get(&c.shadow_denied),
            blocked_locally: get(&c.blocked_locally),
            fallback_decisions: get(&c.fallback),
            fail_closed: get(&c.fail_closed),
            store_errors: self.coalescer.as_ref().map_or(0, Coalescer::failed_calls),
            memory_keys: (self.memory.len() + self.fallback.len()) as u64,
            blocked_identities: self.blocked.len() as u64,
        }
    }
}

impl Counters {
    fn count(&self, policy: &str, outcome: usize) {
        let mut map = self
            .by_policy
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match map.get_mut(policy) {
            Some(counts) => counts[outcome] += 1,
            None => {
                let mut counts = [0; 3];
                counts[outcome] = 1;
                map.insert(policy.to_owned(), counts);
            }
        }
    }

    /// Decisions per policy: `(name, allowed, denied, shadow_denied)`.
    pub(crate) fn per_policy(&self) -> Vec<(String, [u64; 3])> {
        let map = self
            .by_policy
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut all: Vec<_> = map.iter().map(|(k, v)| (k.clone(), *v)).collect();
        all.sort();
        all
    }
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// State shared by the handle (hot path) and the actor (sweeping, stats).
pub(crate) struct Inner {
    pub(crate) config: RateLimitConfig,
    redis: Option<RedisHandle>,
    pub(crate) memory: MemoryStore,
    pub(crate) fallback: MemoryStore,
    /// Storage key → microsecond until which it is denied locally.
    pub(crate) blocked: Sharded<u64>,
    pub(crate) counters: Counters,
    /// Batches the decisions made on Redis (present with Redis).
    coalescer: Option<Coalescer>,
}

/// Which configured policy: the global one or a route's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PolicyId {
    Global,
    Route(usize),
}

/// The decisions of every policy applying to one request.
#[derive(Debug)]
pub(crate) struct Verdict {
    pub(crate) decisions: Vec<(PolicyId, Decision)>,
    /// Index in `decisions` of the enforcing policy that denied, if any.
    pub(crate) denied: Option<usize>,
}

/// A cloneable handle to the rate limiter. Decisions run in the caller's task on state the
/// [`RateLimitActor`] owns and cleans (see the [module docs](super)).
#[derive(Clone)]
pub struct RateLimitHandle {
    inner: Arc<Inner>,
    addr: Addr<RateLimitActor>,
    users: Option<UserResolver>,
}

impl std::fmt::Debug for RateLimitHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimitHandle")
            .field("global", &self.inner.config.global)
            .field("routes", &self.inner.config.routes.len())
            .field("redis", &self.inner.redis.is_some())
            .field("user_resolver", &self.users.is_some())
            .finish_non_exhaustive()
    }
}

impl RateLimitHandle {
    /// Starts the limiter's actor on the current actix system; decisions use Redis when given.
    pub fn start(config: RateLimitConfig, redis: Option<RedisHandle>) -> Self {
        let random = RandomState::new().hash_one(std::process::id());
        // A standalone Redis takes a whole batch in one call; a cluster one call per slot
        // (see `batch`).
        let coalescer = redis.as_ref().map(|redis| {
            Coalescer::new(
                redis.clone(),
                config.clock.clone(),
                format!("{random:016x}-"),
                redis.requires_single_slot(),
            )
        });
        let inner = Arc::new(Inner {
            config,
            redis,
            memory: MemoryStore::new(),
            fallback: MemoryStore::new(),
            blocked: Sharded::new(16),
            counters: Counters::default(),
            coalescer,
        });
        let addr = RateLimitActor::new(inner.clone()).start();
        Self {
            inner,
            addr,
            users: None,
        }
    }

    /// This handle, identifying requests by the verified user `resolver` answers (else by IP).
    #[must_use]
    pub fn with_user_resolver(mut self, resolver: UserResolver) -> Self {
        self.users = Some(resolver);
        self
    }

    /// The configuration in use.
    pub fn config(&self) -> &RateLimitConfig {
        &self.inner.config
    }

    /// The global middleware for this limiter: the configured route policies and the global
    /// one. `App::wrap` it.
    pub fn middleware(&self) -> super::RateLimit {
        super::RateLimit::new(self.clone())
    }

    /// A middleware that applies `policy` alone to every request it sees (except `OPTIONS`
    /// preflights): wrap one `web::scope` or `web::resource` of your own app with it.
    ///
    /// It shares this limiter's stores (Redis, or the in-process backend and fallback), identity
    /// (the verified user, else the client IP), clock, counters and metrics; it ignores the
    /// configured route and global policies. The policy's name is part of its storage key: give
    /// each scope its own name. Combined with the global [`middleware`](Self::middleware), each
    /// counts its own policy and the outer one's headers win.
    ///
    /// ```no_run
    /// # fn demo(limiter: redkit::ratelimit::RateLimitHandle) {
    /// use std::time::Duration;
    /// use actix_web::{App, HttpResponse, web};
    /// use redkit::ratelimit::Policy;
    ///
    /// let search = Policy::new("search", 10, Duration::from_secs(60));
    /// let app = App::new().service(
    ///     web::scope("/search")
    ///         .wrap(limiter.middleware_for(search))
    ///         .route("", web::get().to(HttpResponse::Ok)),
    /// );
    /// # }
    /// ```
    pub fn middleware_for(&self, policy: Policy) -> super::RateLimit {
        super::RateLimit::with_policy(self.clone(), policy)
    }

    /// The identity `req` is limited as: `user:<id>` when the resolver verifies a user, else
    /// `ip:<client address>` (IPv6 addresses grouped by
    /// [`ipv6_prefix`](RateLimitConfig::ipv6_prefix) bits, as `ip:2001:db8::/64`; `ip:unknown`
    /// without a peer address).
    pub fn identity(&self, req: &HttpRequest) -> String {
        use std::fmt::Write;
        if let Some(user) = self.users.as_ref().and_then(|resolve| resolve(req)) {
            return ["user:", &user].concat();
        }
        let grouped = client_ip(req, &self.inner.config.trusted_proxies)
            .map(|ip| super::client_group(ip, self.inner.config.ipv6_prefix));
        match grouped {
            Some(ip) => {
                let mut identity = String::with_capacity(48);
                identity.push_str("ip:");
                // Writing to a String cannot fail.
                let _ = write!(identity, "{ip}");
                let prefix = self.inner.config.ipv6_prefix;
                if ip.is_ipv6() && prefix < 128 {
                    let _ = write!(identity, "/{prefix}");
                }
                identity
            }
            None => "ip:unknown".to_owned(),
        }
    }

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
    async fn spend(
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

    /// Whether a login for `username` from `ip` is currently refused because of earlier failures
    /// (5 per 15 minutes by default). Spends nothing. Call before verifying the password; on a
    /// denial answer 429 with `Retry-After: decision.retry_after_secs()`.
    pub async fn login_blocked(&self, username: &str, ip: IpAddr) -> Decision {
        let policy = &self.inner.config.login;
        let identity = login_identity(username, ip);
        match self.peek(policy, &identity, 1).await {
            Ok(decision) => decision,
            Err(_) => fail_closed_decision(policy),
        }
    }

    /// The 429 `quota-exceeded` response (with `Retry-After`) for a login refused by
    /// [`login_blocked`](Self::login_blocked).
    pub fn login_denied(&self, decision: &Decision) -> actix_web::HttpResponse {
        super::middleware::too_many_requests(&self.inner.config.login, decision)
    }

    /// Records one failed login for `username` from `ip`; answers the state after it.
    pub async fn record_login_failure(&self, username: &str, ip: IpAddr) -> Decision {
        let policy = &self.inner.config.login;
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
        let policy = &self.inner.config.login;
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
        let Some(Spent { ask, now, source }) = attempt.spent else {
            return;
        };
        let store = match (source, &self.inner.redis) {
            (Source::Redis, Some(redis)) => {
                if let Err(err) = lua::refund(redis, &ask, now).await {
                    tracing::warn!(error = %err, "rate-limit: login refund failed");
                }
                return;
            }
            (Source::Fallback, _) => &self.inner.fallback,
            _ => &self.inner.memory,
        };
        store.decide(&ask.key, &ask.args(now, Mode::Refund));
    }

    /// Counters since start, read directly (no actor message): for scrapes and stats streams.
    pub fn stats_now(&self) -> RateLimitStats {
        self.inner.stats()
    }

    /// Decisions per policy since start: `(policy name, [allowed, denied, shadow_denied])`.
    pub fn decisions_by_policy(&self) -> Vec<(String, [u64; 3])> {
        self.inner.counters.per_policy()
    }

    /// Counters since start, from the actor.
    pub async fn stats(&self) -> RateLimitStats {
        self.addr.send(GetStats).await.unwrap_or_default()
    }

    /// Asks the actor to forget expired in-process state now; answers how many entries went.
    pub async fn sweep(&self) -> usize {
        self.addr.send(Sweep).await.unwrap_or(0)
    }

    pub(crate) fn policy(&self, id: PolicyId) -> &Policy {
        match id {
            PolicyId::Route(i) => &self.inner.config.routes[i].policy,
            PolicyId::Global => self
                .inner
                .config
                .global
                .as_ref()
                // unwrap: PolicyId::Global is only made when a global policy exists.
                .expect("global policy"),
        }
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
        store: &MemoryStore,
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
fn refund(store: &MemoryStore, spent: &[&Ask], now: u64) {
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

/// A login attempt spent by [`RateLimitHandle::login_attempt`].
#[derive(Debug)]
pub struct LoginAttempt {
    /// Whether the attempt may go on to verify the password.
    pub decision: Decision,
    spent: Option<Spent>,
}

/// Which store made a decision, so that a refund goes back to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Memory,
    Redis,
    Fallback,
}

/// What an allowed decision spent: its ask, the time it was decided at (a log refund removes
/// the entries stamped with it) and where.
#[derive(Debug)]
struct Spent {
    ask: Ask,
    now: u64,
    source: Source,
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

fn fail_closed_decision(policy: &Policy) -> Decision {
    Decision {
        allowed: false,
        limit: policy.limit,
        remaining: 0,
        reset: Duration::from_secs(1),
        retry_after: Duration::from_secs(1),
    }
}

impl RateLimitHandle {
    /// Every configured request policy (global first, then routes) with `identity`'s state in
    /// it, spending nothing.
    ///
    /// # Errors
    /// As [`check`](Self::check), for a fail-closed policy while Redis is unavailable.
    pub async fn status(&self, identity: &str) -> Result<Vec<(&Policy, Decision)>, RateLimitError> {
        let config = &self.inner.config;
        let mut out = Vec::new();
        for policy in config
            .global
            .iter()
            .chain(config.routes.iter().map(|r| &r.policy))
        {
            out.push((policy, self.peek(policy, identity, 1).await?));
        }
        Ok(out)
    }
}
