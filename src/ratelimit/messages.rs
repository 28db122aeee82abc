use serde::Serialize;

/// The limiter's counters since start, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[non_exhaustive]
pub struct RateLimitStats {
    /// Decisions that admitted a request.
    pub allowed: u64,
    /// Decisions of enforcing policies that denied a request.
    pub denied: u64,
    /// Decisions of shadow policies that would have denied (the request went on).
    pub shadow_denied: u64,
    /// Denials answered from the local block, without asking the store.
    pub blocked_locally: u64,
    /// Admissions spent from a quota lease this instance holds, without asking the store.
    pub leased: u64,
    /// Decisions made by the in-process fallback because Redis could not be asked (fail-open).
    pub fallback_decisions: u64,
    /// Requests refused with 503 because Redis could not be asked (fail-closed).
    pub fail_closed: u64,
    /// Redis calls that failed.
    pub store_errors: u64,
    /// Keys held by the in-process stores (memory backend and fallback).
    pub memory_keys: u64,
    /// Identities currently blocked locally.
    pub blocked_identities: u64,
}
