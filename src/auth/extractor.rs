use std::{
    future::{Ready, ready},
    rc::Rc,
};

use actix_web::{FromRequest, HttpRequest, dev::Payload, http::header};
use futures_util::future::{Either, LocalBoxFuture};

use super::{ACCESS_COOKIE, AuthError, AuthHandle, Principal, RejectReason};

/// The token of a request: `Authorization: Bearer <t>` (read once per request,
/// [`crate::client::bearer`]), else the access cookie.
pub(crate) fn token_from(req: &HttpRequest) -> Option<Rc<str>> {
    let headers = req.headers();
    if headers.contains_key(header::AUTHORIZATION) {
        return crate::client::bearer(req);
    }
    for cookie_header in headers.get_all(header::COOKIE) {
        let Ok(text) = cookie_header.to_str() else {
            continue;
        };
        for pair in text.split(';') {
            if let Some((name, value)) = pair.trim().split_once('=')
                && name == ACCESS_COOKIE
                && !value.is_empty()
            {
                return Some(Rc::from(value));
            }
        }
    }
    None
}

/// An authenticated request: its verified, unrevoked access token's principal.
///
/// Add it as a handler argument to require a token: a missing, invalid, expired or revoked
/// token answers 401 `application/problem+json` with `WWW-Authenticate: Bearer
/// error="invalid_token"`; the reason is logged, never sent. Needs [`AuthHandle`] in app data,
/// as itself or as `web::Data<AuthHandle>` (`Services::configure` registers both).
#[derive(Debug, Clone)]
pub struct AuthUser(pub Principal);

/// Like [`AuthUser`], but a request without any token is let through as `None`. A token that
/// is present but bad is still a 401.
#[derive(Debug, Clone)]
pub struct OptionalAuthUser(pub Option<Principal>);

/// A principal verified earlier in this request (by the rate limiter's identity hook,
/// [`AuthHandle::verified_user`]), kept in the request's extensions so that the extractors do not
/// verify the same token a second time.
/// It names the handle that verified it and the token it came from: another handle (a scope with
/// its own) or a rewritten `Authorization` header verifies afresh.
#[derive(Clone)]
pub(crate) struct Verified {
    pub(crate) by: usize,
    pub(crate) token: Rc<str>,
    pub(crate) principal: Principal,
}

type AuthFuture<T> =
    Either<Ready<Result<T, AuthError>>, LocalBoxFuture<'static, Result<T, AuthError>>>;

fn extract(req: &HttpRequest, optional: bool) -> AuthFuture<Option<Principal>> {
    // Either form of app data: `App::app_data(handle)` or `App::app_data(web::Data::new(handle))`.
    let auth = req.app_data::<AuthHandle>().or_else(|| {
        req.app_data::<actix_web::web::Data<AuthHandle>>()
            .map(|data| data.get_ref())
    });
    let Some(auth) = auth else {
        tracing::error!("auth: AuthHandle is not in app data; refusing the request");
        return Either::Left(ready(Err(AuthError::Internal(
            "auth not configured".into(),
        ))));
    };
    let Some(token) = token_from(req) else {
        // A malformed Authorization header is a bad token, not an absent one.
        if req.headers().contains_key(header::AUTHORIZATION) {
            return Either::Left(ready(Err(AuthError::Unauthorized(RejectReason::Malformed))));
        }
        return Either::Left(ready(if optional {
            Ok(None)
        } else {
            Err(AuthError::Unauthorized(RejectReason::Missing))
        }));
    };
    if let Some(principal) = auth.verified_before(req, &token) {
        return Either::Left(ready(Ok(Some(principal))));
    }
    match auth.verify_local(&token) {
        Ok(Some(p)) => Either::Left(ready(Ok(Some(p)))),
        Err(reason) => Either::Left(ready(Err(AuthError::Unauthorized(reason)))),
        Ok(None) => {
            // The view is not trusted right now: ask Redis (fail closed).
            let auth = auth.clone();
            Either::Right(Box::pin(async move {
                auth.authenticate(&token).await.map(Some)
            }))
        }
    }
}

impl FromRequest for AuthUser {
    type Error = AuthError;
    type Future =
        Either<Ready<Result<Self, AuthError>>, LocalBoxFuture<'static, Result<Self, AuthError>>>;

    fn from_request(req: &HttpRequest, _payload: &mut Payload) -> Self::Future {
        let map = |r: Result<Option<Principal>, AuthError>| {
            r.and_then(|p| {
                p.map(AuthUser)
                    .ok_or(AuthError::Unauthorized(RejectReason::Missing))
            })
        };
        match extract(req, false) {
            Either::Left(ready_result) => Either::Left(ready(map(ready_result.into_inner()))),
            Either::Right(fut) => Either::Right(Box::pin(async move { map(fut.await) })),
        }
    }
}

impl FromRequest for OptionalAuthUser {
    type Error = AuthError;
    type Future =
        Either<Ready<Result<Self, AuthError>>, LocalBoxFuture<'static, Result<Self, AuthError>>>;

    fn from_request(req: &HttpRequest, _payload: &mut Payload) -> Self::Future {
        match extract(req, true) {
            Either::Left(r) => Either::Left(ready(r.into_inner().map(OptionalAuthUser))),
            Either::Right(fut) => {
                Either::Right(Box::pin(async move { fut.await.map(OptionalAuthUser) }))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
    use proptest::prelude::*;

    use super::*;

    fn headers(pairs: &[(HeaderName, &[u8])]) -> Option<HeaderMap> {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(name.clone(), HeaderValue::from_bytes(value).ok()?);
        }
        Some(map)
    }

    /// `token_from` on a request carrying `map`'s headers.
    fn token_of(map: &HeaderMap) -> Option<String> {
        let mut req = actix_web::test::TestRequest::default();
        for (name, value) in map {
            req = req.append_header((name.clone(), value.clone()));
        }
        token_from(&req.to_http_request()).map(|t| t.to_string())
    }

    /// The rule, written out plainly: what `token_from` must answer for `map`.
    fn expected_token(map: &HeaderMap) -> Option<&str> {
        if let Some(auth) = map.get(header::AUTHORIZATION) {
            let (scheme, rest) = auth.to_str().ok()?.split_once(' ')?;
            let token = rest.trim();
            return (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token);
        }
        // The first access cookie with a value, in any `Cookie` header.
        map.get_all(header::COOKIE)
            .filter_map(|value| value.to_str().ok())
            .flat_map(|cookies| cookies.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(name, value)| *name == ACCESS_COOKIE && !value.is_empty())
            .map(|(_, value)| value)
    }

    /// An `Authorization` header: absent, arbitrary bytes, or a scheme (bearer in any case, or
    /// another), a separator and a token (well formed, empty, padded or arbitrary).
    fn authorization() -> impl Strategy<Value = Option<Vec<u8>>> {
        let scheme = proptest::sample::select(vec![
            "Bearer", "bearer", "BEARER", "bEaReR", "Basic", "Bearer:", "Bearerx", "",
        ]);
        let separator = proptest::sample::select(vec![" ", "  ", "", "\t"]);
        let token = prop_oneof![
            3 => "[A-Za-z0-9._~+/=-]{1,40}",
            1 => Just(String::new()),
            1 => "[ ]{1,3}[A-Za-z0-9.]{1,10}[ ]{0,3}",
            1 => "\\PC{0,20}",
        ];
        prop_oneof![
            1 => Just(None),
            1 => proptest::collection::vec(any::<u8>(), 0..80).prop_map(Some),
            4 => (scheme, separator, token)
                .prop_map(|(s, sep, t)| Some(format!("{s}{sep}{t}").into_bytes())),
        ]
    }

    /// A `Cookie` header: absent, arbitrary bytes, or pairs among which the access cookie may
    /// stand (with a value, empty, or only a name that starts the same).
    fn cookie() -> impl Strategy<Value = Option<Vec<u8>>> {
        let pair = prop_oneof![
            2 => "[a-z]{1,8}=[a-z0-9]{0,8}",
            2 => "[A-Za-z0-9._-]{1,30}".prop_map(|v| format!("{ACCESS_COOKIE}={v}")),
            1 => Just(format!("{ACCESS_COOKIE}=")),
            1 => Just(format!("{ACCESS_COOKIE}x=abc")),
        ];
        prop_oneof![
            1 => Just(None),
            1 => proptest::collection::vec(any::<u8>(), 0..80).prop_map(Some),
            3 => proptest::collection::vec(pair, 1..4)
                .prop_map(|pairs| Some(pairs.join("; ").into_bytes())),
        ]
    }

    /// The generators reach each rule of `token_from` in 2,000 draws (as many as the property
    /// runs): a bearer token in three cases of the scheme, another scheme refused, an empty bearer
    /// refused, the access cookie found, an empty one refused, and `Authorization` winning over
    /// a cookie.
    #[test]
    fn header_generators_reach_every_rule() {
        use proptest::{
            strategy::ValueTree,
            test_runner::{Config, RngAlgorithm, TestRng, TestRunner},
        };
        let mut runner = TestRunner::new_with_rng(
            Config::default(),
            TestRng::from_seed(RngAlgorithm::ChaCha, &[3; 32]),
        );
        let strategy = (authorization(), cookie());
        let mut counts = std::collections::BTreeMap::<&str, usize>::new();
        for _ in 0..2000 {
            let (auth, cookie) = strategy.new_tree(&mut runner).unwrap().current();
            let text = |b: Option<Vec<u8>>| b.map(|b| String::from_utf8_lossy(&b).into_owned());
            let (auth, cookie) = (text(auth), text(cookie));
            let class = match (auth.as_deref(), cookie.as_deref()) {
                (Some(a), _) if a.starts_with("Bearer ") && a.len() > 8 => "Bearer token",
                (Some(a), _) if a.starts_with("bearer ") && a.len() > 8 => "bearer token",
                (Some(a), _) if a.starts_with("BEARER ") && a.len() > 8 => "BEARER token",
                (Some(a), _) if a.starts_with("Basic ") => "other scheme",
                (Some(a), _) if a.eq_ignore_ascii_case("bearer ") => "empty bearer",
                (None, Some(c))
                    if c.contains(&format!("{ACCESS_COOKIE}=;"))
                        || c.ends_with(&format!("{ACCESS_COOKIE}=")) =>
                {
                    "empty cookie"
                }
                (None, Some(c)) if c.contains(&format!("{ACCESS_COOKIE}=")) => "cookie token",
                _ => "other",
            };
            *counts.entry(class).or_default() += 1;
            if let (Some(a), Some(c)) = (&auth, &cookie)
                && a.starts_with("Bearer ")
                && c.contains(ACCESS_COOKIE)
            {
                *counts.entry("bearer and cookie").or_default() += 1;
            }
        }
        for class in [
            "Bearer token",
            "bearer token",
            "BEARER token",
            "other scheme",
            "empty bearer",
            "cookie token",
            "empty cookie",
            "bearer and cookie",
        ] {
            let n = counts.get(class).copied().unwrap_or(0);
            assert!(n >= 10, "{class}: {n} of 2000 draws ({counts:?})");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Any `Authorization` and `Cookie` headers, arbitrary bytes or built from the pieces the
        /// rules turn on: the token is exactly what the rule gives (the bearer token, trimmed and
        /// non-empty, when `Authorization` is sent; else a non-empty access cookie), never a
        /// panic.
        #[test]
        fn any_headers((auth, cookie) in (authorization(), cookie())) {
            let mut pairs = Vec::new();
            if let Some(auth) = &auth {
                pairs.push((header::AUTHORIZATION, auth.as_slice()));
            }
            if let Some(cookie) = &cookie {
                pairs.push((header::COOKIE, cookie.as_slice()));
            }
            let Some(map) = headers(&pairs) else {
                return Ok(());
            };
            let token = token_of(&map);
            prop_assert_eq!(token.as_deref(), expected_token(&map));
        }

        /// `Bearer <t>` (any case of the scheme) answers `t`; without `Authorization`, the
        /// access cookie is found among other cookies, and an empty one is no token.
        #[test]
        fn bearer_and_cookie(
            token in "[A-Za-z0-9._~+/=-]{1,60}",
            scheme in proptest::sample::select(vec!["Bearer", "bearer", "BEARER"]),
            before in "[a-z]{1,8}=[a-z0-9]{0,8}",
        ) {
            let bearer = format!("{scheme} {token}");
            let map = headers(&[(header::AUTHORIZATION, bearer.as_bytes())]).unwrap();
            let found = token_of(&map);
            prop_assert_eq!(found.as_deref(), Some(token.as_str()));
            let cookies = format!("{before}; {ACCESS_COOKIE}={token}; other=1");
            let map = headers(&[(header::COOKIE, cookies.as_bytes())]).unwrap();
            let found = token_of(&map);
            prop_assert_eq!(found.as_deref(), Some(token.as_str()));
            let empty = format!("{before}; {ACCESS_COOKIE}=");
            let map = headers(&[(header::COOKIE, empty.as_bytes())]).unwrap();
            prop_assert_eq!(token_of(&map), None);
        }
    }
}
