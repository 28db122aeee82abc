//! The cache's HTTP vocabulary: the `X-Cache` header and cached-JSON answers. Owned by the cache
//! feature; the catalog's routes (which read through the cache) use it too.

use actix_web::http::header::HeaderName;
// The cached-JSON answers belong to the routes, which the `server` feature builds.
#[cfg(feature = "server")]
use actix_web::{
    HttpResponse,
    http::header::{CONTENT_TYPE, HeaderValue},
};
#[cfg(feature = "server")]
use bytes::Bytes;

/// `X-Cache`, parsed once at compile time; its values are [`Tier::header_value`](super::Tier::header_value)'s.
pub const X_CACHE: HeaderName = HeaderName::from_static("x-cache");

/// `res` with `X-Cache: tier` (static name and value: no parsing or allocation per request).
#[cfg(feature = "server")]
pub(crate) fn with_tier(mut res: HttpResponse, tier: &'static str) -> HttpResponse {
    res.headers_mut()
        .insert(X_CACHE, HeaderValue::from_static(tier));
    res
}

/// A 200 `application/json` answer of cached bytes, with the tier that answered.
#[cfg(feature = "server")]
pub(crate) fn cached_json(body: Bytes, tier: &'static str) -> HttpResponse {
    let mut res = HttpResponse::Ok().body(body);
    res.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    with_tier(res, tier)
}
