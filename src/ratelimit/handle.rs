//! The limiter's handle: its shared state, identities, policies and stats. Decisions are in
//! `decide`, the login rules in `login`, the counters in `counters`.

use std::{
    hash::{BuildHasher, RandomState},
    sync::Arc,
};

use actix_web::HttpRequest;

use super::{
    Decision, Policy, RateLimitConfig, RateLimitError, RateLimitStats, UserResolver,
    algo::{MemoryCounters, Sharded},
    batch::Coalescer,
    counters::Counters,
    lease::Leases,
};
use crate::{client::client_addr, connection::RedisHandle};

/// State shared by the handle (hot path) and its sweeper task.
pub(crate) struct Inner {
    pub(crate) config: RateLimitConfig,
    pub(super) redis: Option<RedisHandle>,
    pub(crate) memory: MemoryCounters,
    pub(crate) fallback: MemoryCounters,
    /// Storage key → microsecond until which it is denied locally.
    pub(crate) blocked: Sharded<u64>,
    pub(crate) counters: Counters,
    /// Batches the decisions made on Redis (present with Redis).
    pub(crate) coalescer: Option<Coalescer>,
    /// Quota leases held by this instance (used with Redis only).
    pub(crate) leases: Arc<Leases>,
}

/// A cloneable handle to the rate limiter. Decisions run in the caller's task on state the
/// handle shares with its sweeper task (see the [module docs](super)).
#[derive(Clone)]
pub struct RateLimitHandle {
    pub(super) inner: Arc<Inner>,
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
    /// Policies past their bounds are clamped ([`Policy::clamped`](super::Policy::clamped)).
    pub fn start(mut config: RateLimitConfig, redis: Option<RedisHandle>) -> Self {
        config.global = config.global.map(super::Policy::clamped);
        for route in &mut config.routes {
            route.policy = route.policy.clone().clamped();
        }
        config.login = config.login.clone().clamped();
        let random = RandomState::new().hash_one(std::process::id());
        // A standalone Redis takes a whole batch in one call; a cluster one call per slot
        // (see `batch`).
        let leases = Arc::new(Leases::new());
        let coalescer = redis.as_ref().map(|redis| {
            Coalescer::new(
                redis.clone(),
                config.clock.clone(),
                format!("{random:016x}-"),
                redis.requires_single_slot(),
                leases.clone(),
            )
        });
        let inner = Arc::new(Inner {
            config,
            redis,
            memory: MemoryCounters::new(),
            fallback: MemoryCounters::new(),
            blocked: Sharded::new(16),
            counters: Counters::default(),
            coalescer,
            leases,
        });
        super::sweeper::start_sweeper(&inner);
        Self { inner, users: None }
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

    /// The identity `req` is limited as: `user:<id>` when the resolver verifies a user, else
    /// `ip:<client address>` (IPv6 addresses grouped by
    /// [`ipv6_prefix`](RateLimitConfig::ipv6_prefix) bits, as `ip:2001:db8::/64`; `ip:unknown`
    /// without a peer address).
    pub fn identity(&self, req: &HttpRequest) -> String {
        use std::fmt::Write;
        if let Some(user) = self.users.as_ref().and_then(|resolve| resolve(req)) {
            return ["user:", &user].concat();
        }
        let grouped = client_addr(req, &self.inner.config.trusted_proxies)
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

    /// Counters since start, read directly from the shared atomics.
    pub fn stats(&self) -> RateLimitStats {
        self.inner.stats()
    }

    /// Decisions per policy since start: `(policy name, [allowed, denied, shadow_denied])`.
    pub fn decisions_by_policy(&self) -> Vec<(String, [u64; 3])> {
        self.inner.counters.per_policy()
    }

    /// Forgets expired in-process state now, as the sweeper does every 10 s; answers how many
    /// entries went.
    pub fn sweep(&self) -> usize {
        super::sweeper::sweep(&self.inner)
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
