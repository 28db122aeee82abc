use std::future::{Ready, ready};

use actix_web::{
    FromRequest, HttpRequest,
    dev::Payload,
    http::header::{self, HeaderMap},
};
use futures_util::future::{Either, LocalBoxFuture};

use super::{ACCESS_COOKIE, AuthError, AuthHandle, Principal, RejectReason};

/// The token of a request: `Authorization: Bearer <t>`, else the access cookie.
pub(crate) fn token_from(headers: &HeaderMap) -> Option<&str> {
    if headers.contains_key(header::AUTHORIZATION) {
        return crate::client::bearer_token(headers);
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
                return Some(value);
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
    pub(crate) token: Box<str>,
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
    let Some(token) = token_from(req.headers()) else {
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
    if let Some(principal) = auth.verified_before(req, token) {
        return Either::Left(ready(Ok(Some(principal))));
    }
    match auth.verify_local(token) {
        Ok(Some(p)) => Either::Left(ready(Ok(Some(p)))),
        Err(reason) => Either::Left(ready(Err(AuthError::Unauthorized(reason)))),
        Ok(None) => {
            // The view is not trusted right now: ask Redis (fail closed).
            let auth = auth.clone();
            let token = token.to_owned();
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
    use actix_web::http::header::{HeaderName, HeaderValue};
    use proptest::prelude::*;

    use super::*;

    fn headers(pairs: &[(HeaderName, &[u8])]) -> Option<HeaderMap> {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(name.clone(), HeaderValue::from_bytes(value).ok()?);
        }
        Some(map)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Any `Authorization` and `Cookie` bytes: never a panic, and a token is only ever a
        /// non-empty piece of what was sent.
        #[test]
        fn any_headers(
            auth in proptest::collection::vec(any::<u8>(), 0..80),
            cookie in proptest::collection::vec(any::<u8>(), 0..80),
        ) {
            let Some(map) = headers(&[
                (header::AUTHORIZATION, &auth),
                (header::COOKIE, &cookie),
            ]) else {
                return Ok(());
            };
            if let Some(token) = token_from(&map) {
                prop_assert!(!token.is_empty());
                let auth = String::from_utf8_lossy(&auth);
                prop_assert!(auth.contains(token));
            }
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
            prop_assert_eq!(token_from(&map), Some(token.as_str()));
            let cookies = format!("{before}; {ACCESS_COOKIE}={token}; other=1");
            let map = headers(&[(header::COOKIE, cookies.as_bytes())]).unwrap();
            prop_assert_eq!(token_from(&map), Some(token.as_str()));
            let empty = format!("{before}; {ACCESS_COOKIE}=");
            let map = headers(&[(header::COOKIE, empty.as_bytes())]).unwrap();
            prop_assert_eq!(token_from(&map), None);
        }
    }
}
