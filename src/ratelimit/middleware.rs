//! The middleware: applies the route's policy and the global one (or, for a scope, one policy of
//! its own), adds the headers, and answers 429 (or 503 for a fail-closed policy without Redis) as
//! a normal response.

use std::{
    future::{Ready, ready},
    rc::Rc,
    sync::Arc,
};

use actix_web::{
    Error, ResponseError,
    body::{EitherBody, MessageBody},
    dev::{Service, ServiceRequest, ServiceResponse, Transform, forward_ready},
    http::Method,
};
use futures_util::{
    FutureExt,
    future::{Either, LocalBoxFuture, Map},
};

use super::{
    Policy, RateLimitConfig, RateLimitHandle,
    response::{too_many_requests, write_headers},
};

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

/// Which configured policies apply to `req`: none (`None`), or the route policy at an index of
/// [`RateLimitConfig::routes`](super::RateLimitConfig::routes), if any, then the global one.
fn applying(config: &RateLimitConfig, req: &ServiceRequest) -> Option<Option<usize>> {
    if req.method() == Method::OPTIONS || EXEMPT.contains(&req.path()) {
        return None;
    }
    // The path as the router matched it (percent-decoded where decoding is safe): a policy on
    // `/expensive-operation` also guards `/expensive%2Doperation`, which reaches the same
    // handler.
    let routed = req.match_info().get_ref().path();
    let route = config.route_for(req.method(), routed, || req.match_pattern());
    (route.is_some() || config.global.is_some()).then_some(route)
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
        let Some(route) = applying(self.handle.config(), &req) else {
            return Either::Left(self.service.call(req).map(pass));
        };
        let handle = self.handle.clone();
        let service = self.service.clone();
        Either::Right(Box::pin(async move {
            let config = handle.config();
            let policies: Vec<&Policy> = route
                .map(|i| &config.routes[i].policy)
                .into_iter()
                .chain(&config.global)
                .collect();
            let identity = handle.identity(req.request());
            let decisions = match handle.check_request(&policies, &identity).await {
                Ok(decisions) => decisions,
                Err(err) => {
                    let response = err.error_response();
                    return Ok(req.into_response(response).map_into_right_body());
                }
            };
            let now_us = config.clock.now_us();
            // The list stops at an enforcing denial; else the enforcing decision with the fewest
            // units left (then the longest reset) is reported. Shadow policies never are.
            let report = match decisions.last() {
                Some(&(policy, decision)) if !decision.allowed && !policy.shadow => {
                    let mut response = too_many_requests(policy, &decision);
                    write_headers(response.headers_mut(), policy, &decision, now_us);
                    return Ok(req.into_response(response).map_into_right_body());
                }
                _ => decisions
                    .iter()
                    .filter(|(policy, _)| !policy.shadow)
                    .min_by(|(_, a), (_, b)| {
                        a.remaining.cmp(&b.remaining).then(b.reset.cmp(&a.reset))
                    })
                    .copied(),
            };
            let mut res = service.call(req).await?;
            if let Some((policy, decision)) = report {
                write_headers(res.headers_mut(), policy, &decision, now_us);
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

impl RateLimitHandle {
    /// The global middleware for this limiter: the configured route policies and the global
    /// one. `App::wrap` it.
    pub fn middleware(&self) -> RateLimit {
        RateLimit::new(self.clone())
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
    pub fn middleware_for(&self, policy: Policy) -> RateLimit {
        RateLimit::with_policy(self.clone(), policy.clamped())
    }
}
