//! The middleware: applies the route's policy and the global one (or, for a scope, one policy of
//! its own), adds the headers, and answers 429 (or 503 for a fail-closed policy without Redis) as
//! a normal response.

use std::{
    future::{Ready, ready},
    rc::Rc,
    sync::Arc,
};

use actix_web::{
    Error, HttpResponse, ResponseError,
    body::{EitherBody, MessageBody},
    dev::{Service, ServiceRequest, ServiceResponse, Transform, forward_ready},
    http::{
        Method, StatusCode,
        header::{HeaderMap, HeaderName, HeaderValue},
    },
};
use futures_util::{
    FutureExt,
    future::{Either, LocalBoxFuture, Map},
};

use super::{
    Decision, Policy, RateLimitHandle,
    algo::ceil_secs,
    handle::{PolicyId, Verdict},
};
use crate::problem::Problem;

/// Paths never counted: the health probes, which cost Redis at most one `PING` a second however
/// often they are asked. `/ratelimit/status` is counted like any route: it asks the store once per
/// policy, so an uncounted one would let a client make the server query Redis without bound.
pub(crate) const EXEMPT: [&str; 2] = ["/health", "/health/live"];

/// The rate-limit middleware; build it with [`RateLimitHandle::middleware`] and `App::wrap` it,
/// or with [`RateLimitHandle::middleware_for`] and wrap one scope or resource with it.
///
/// For each request (except `OPTIONS` preflights and the health probes) the global
/// form decides the matching route policy, then the global policy, for the request's identity.
/// Admitted requests get the most restrictive enforcing policy's headers; a denied request gets
/// 429 with `Retry-After` and a `quota-exceeded` problem naming the policy. The scoped form
/// decides only its own policy, for every request it sees except `OPTIONS` preflights.
#[derive(Debug, Clone)]
pub struct RateLimit {
    handle: RateLimitHandle,
    only: Option<Arc<Policy>>,
}

impl RateLimit {
    /// The middleware for `handle`'s configured policies (route policies and the global one).
    pub fn new(handle: RateLimitHandle) -> Self {
        Self { handle, only: None }
    }

    /// The middleware applying `policy` alone, on `handle`'s stores, identity and clock.
    pub fn with_policy(handle: RateLimitHandle, policy: Policy) -> Self {
        Self {
            handle,
            only: Some(Arc::new(policy)),
        }
    }
}

impl<S, B> Transform<S, ServiceRequest> for RateLimit
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = Error;
    type Transform = RateLimitMiddleware<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(RateLimitMiddleware {
            service: Rc::new(service),
            handle: self.handle.clone(),
            only: self.only.clone(),
        }))
    }
}

/// The service [`RateLimit`] wraps around the app.
pub struct RateLimitMiddleware<S> {
    service: Rc<S>,
    handle: RateLimitHandle,
    /// The scoped form's policy; `None` for the global form.
    only: Option<Arc<Policy>>,
}

impl<S> RateLimitMiddleware<S> {
    fn policies(&self, req: &ServiceRequest) -> Vec<PolicyId> {
        let mut ids = Vec::new();
        if req.method() == Method::OPTIONS || EXEMPT.contains(&req.path()) {
            return ids;
        }
        let config = self.handle.config();
        // The path as the router matched it (percent-decoded where decoding is safe): a policy
        // on `/expensive-operation` also guards `/expensive%2Doperation`, which reaches the
        // same handler.
        let routed = req.match_info().get_ref().path();
        if let Some(policy) = config.route_for(req.method(), routed, || req.match_pattern()) {
            let i = config
                .routes
                .iter()
                .position(|r| std::ptr::eq(&r.policy, policy))
                .unwrap_or_default();
            ids.push(PolicyId::Route(i));
        }
        if config.global.is_some() {
            ids.push(PolicyId::Global);
        }
        ids
    }
}

impl<S, B> Service<ServiceRequest> for RateLimitMiddleware<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = Error;
    /// Requests no policy applies to pass through unboxed; the others are decided in a boxed
    /// future.
    type Future = Either<
        Map<S::Future, PassThrough<B>>,
        LocalBoxFuture<'static, Result<Self::Response, Self::Error>>,
    >;

    forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        let pass: PassThrough<B> = |res| res.map(ServiceResponse::map_into_left_body);
        if let Some(policy) = &self.only {
            if req.method() == Method::OPTIONS {
                return Either::Left(self.service.call(req).map(pass));
            }
            return Either::Right(Box::pin(scoped(
                self.handle.clone(),
                policy.clone(),
                self.service.clone(),
                req,
            )));
        }
        let ids = self.policies(&req);
        if ids.is_empty() {
            return Either::Left(self.service.call(req).map(pass));
        }
        let handle = self.handle.clone();
        let service = self.service.clone();
        Either::Right(Box::pin(async move {
            let identity = handle.identity(req.request());
            let verdict = match handle.check_request(&ids, &identity).await {
                Ok(verdict) => verdict,
                Err(err) => {
                    let response = err.error_response();
                    return Ok(req.into_response(response).map_into_right_body());
                }
            };
            let now_us = handle.config().clock.now_us();
            let report = most_restrictive(&handle, &verdict);
            if let Some(i) = verdict.denied {
                let (id, decision) = verdict.decisions[i];
                let mut response = too_many_requests(handle.policy(id), &decision);
                write_headers(response.headers_mut(), handle.policy(id), &decision, now_us);
                return Ok(req.into_response(response).map_into_right_body());
            }
            let mut res = service.call(req).await?;
            if let Some((id, decision)) = report {
                write_headers(res.headers_mut(), handle.policy(id), &decision, now_us);
            }
            Ok(res.map_into_left_body())
        }))
    }
}

/// How a response no policy applied to leaves the middleware.
pub(crate) type PassThrough<B> =
    fn(Result<ServiceResponse<B>, Error>) -> Result<ServiceResponse<EitherBody<B>>, Error>;

/// The scoped form: one policy, decided for the request's identity; headers unless shadow.
async fn scoped<S, B>(
    handle: RateLimitHandle,
    policy: Arc<Policy>,
    service: Rc<S>,
    req: ServiceRequest,
) -> Result<ServiceResponse<EitherBody<B>>, Error>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = Error> + 'static,
    B: MessageBody + 'static,
{
    let identity = handle.identity(req.request());
    let decision = match handle.check(&policy, &identity, 1).await {
        Ok(decision) => decision,
        Err(err) => {
            return Ok(req
                .into_response(err.error_response())
                .map_into_right_body());
        }
    };
    let now_us = handle.config().clock.now_us();
    if !decision.allowed && !policy.shadow {
        let mut response = too_many_requests(&policy, &decision);
        write_headers(response.headers_mut(), &policy, &decision, now_us);
        return Ok(req.into_response(response).map_into_right_body());
    }
    let mut res = service.call(req).await?;
    if !policy.shadow {
        write_headers(res.headers_mut(), &policy, &decision, now_us);
    }
    Ok(res.map_into_left_body())
}

/// The denying decision, else the enforcing one with the fewest units left (then the longest
/// reset). Shadow policies are never reported to clients.
fn most_restrictive(handle: &RateLimitHandle, verdict: &Verdict) -> Option<(PolicyId, Decision)> {
    if let Some(i) = verdict.denied {
        return Some(verdict.decisions[i]);
    }
    verdict
        .decisions
        .iter()
        .filter(|(id, _)| !handle.policy(*id).shadow)
        .min_by(|(_, a), (_, b)| a.remaining.cmp(&b.remaining).then(b.reset.cmp(&a.reset)))
        .copied()
}

/// The 429 `quota-exceeded` problem naming the violated policy.
pub(crate) fn too_many_requests(policy: &Policy, decision: &Decision) -> HttpResponse {
    let retry = decision.retry_after_secs();
    let mut response = HttpResponse::build(StatusCode::TOO_MANY_REQUESTS);
    response
        .insert_header((
            actix_web::http::header::CONTENT_TYPE,
            HeaderValue::from_static(crate::problem::PROBLEM_JSON),
        ))
        .insert_header((
            actix_web::http::header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        ))
        .insert_header((
            actix_web::http::header::RETRY_AFTER,
            HeaderValue::from(retry),
        ));
    response.body(with_policy(policy, |cached| cached.denial(policy, retry)))
}

/// What is rendered once per policy and thread: the `RateLimit-Policy` value, the name as a
/// structured-field string, and the problem bodies of its denials by retry seconds. A client
/// hammering a blocked route is answered without serializing or formatting anything but a few
/// integers.
struct Rendered {
    name: String,
    limit: u64,
    window: u64,
    policy_header: HeaderValue,
    sf_name: Vec<u8>,
    denials: Vec<(u64, bytes::Bytes)>,
}

impl Rendered {
    fn new(policy: &Policy) -> Self {
        let (limit, window) = (policy.limit, policy.window.as_secs());
        let sf_name = sf_string(&policy.name);
        let policy_header = HeaderValue::try_from(format!("{sf_name};q={limit};w={window}"))
            // sf_string keeps printable ASCII only, which is always a valid header value.
            .unwrap_or_else(|_| HeaderValue::from_static(""));
        Self {
            name: policy.name.clone(),
            limit,
            window,
            policy_header,
            sf_name: sf_name.into_bytes(),
            denials: Vec::new(),
        }
    }

    fn matches(&self, policy: &Policy) -> bool {
        self.limit == policy.limit
            && self.window == policy.window.as_secs()
            && self.name == policy.name
    }

    fn denial(&mut self, policy: &Policy, retry: u64) -> bytes::Bytes {
        if let Some((_, body)) = self.denials.iter().find(|(r, _)| *r == retry) {
            return body.clone();
        }
        let (limit, window) = (self.limit, self.window);
        let problem = Problem::new(
            StatusCode::TOO_MANY_REQUESTS,
            "quota-exceeded",
            "Too many requests",
        )
        .with_detail(format!(
            "Rate limit policy \"{}\" allows {limit} requests per {window} seconds; retry after {retry} seconds.",
            policy.name
        ))
        .with_retry_after(retry);
        // unwrap: a struct of strings and integers always serializes.
        let body = bytes::Bytes::from(serde_json::to_vec(&problem).unwrap());
        if self.denials.len() >= MAX_CACHED_DENIALS {
            self.denials.clear();
        }
        self.denials.push((retry, body.clone()));
        body
    }
}

thread_local! {
    static RENDERED: std::cell::RefCell<Vec<Rendered>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// Policies kept per thread (configured ones are few; scoped ones are made by the app).
const MAX_CACHED_POLICIES: usize = 64;
/// Denial bodies kept per policy and thread (one per distinct retry-after).
const MAX_CACHED_DENIALS: usize = 256;

fn with_policy<T>(policy: &Policy, f: impl FnOnce(&mut Rendered) -> T) -> T {
    RENDERED.with(|cell| {
        let mut cache = cell.borrow_mut();
        let i = match cache.iter().position(|r| r.matches(policy)) {
            Some(i) => i,
            None => {
                if cache.len() >= MAX_CACHED_POLICIES {
                    cache.clear();
                }
                cache.push(Rendered::new(policy));
                cache.len() - 1
            }
        };
        f(&mut cache[i])
    })
}

const X_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
const X_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
const X_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");
const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// `X-RateLimit-*` and the draft-ietf-httpapi-ratelimit-headers-11 `RateLimit-Policy` and
/// `RateLimit` fields for one policy's decision.
pub(crate) fn write_headers(headers: &mut HeaderMap, policy: &Policy, d: &Decision, now_us: u64) {
    let reset_at = ceil_secs(std::time::Duration::from_micros(now_us) + d.reset);
    let (policy_header, ratelimit) = with_policy(policy, |cached| {
        let mut itoa = itoa::Buffer::new();
        let mut value = Vec::with_capacity(cached.sf_name.len() + 24);
        value.extend_from_slice(&cached.sf_name);
        value.extend_from_slice(b";r=");
        value.extend_from_slice(itoa.format(d.remaining).as_bytes());
        value.extend_from_slice(b";t=");
        value.extend_from_slice(itoa.format(d.reset_secs()).as_bytes());
        (cached.policy_header.clone(), value)
    });
    headers.insert(X_LIMIT, HeaderValue::from(d.limit));
    headers.insert(X_REMAINING, HeaderValue::from(d.remaining));
    headers.insert(X_RESET, HeaderValue::from(reset_at));
    headers.insert(RATELIMIT_POLICY, policy_header);
    if let Ok(value) = HeaderValue::from_maybe_shared(bytes::Bytes::from(ratelimit)) {
        headers.insert(RATELIMIT, value);
    }
}

/// A structured-field String (RFC 8941): quoted, `"` and `\` escaped, printable ASCII only.
fn sf_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars().filter(|c| (' '..='~').contains(c)) {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}
