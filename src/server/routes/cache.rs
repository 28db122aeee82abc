//! `/cache` routes: thin handlers over [`CacheHandle`].

use std::time::Duration;

use actix_web::{HttpResponse, http::StatusCode, web};
use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use utoipa::{IntoParams, ToSchema};

use crate::cache::{CacheError, CacheHandle, Tier, cached_json, with_tier};
use crate::{auth::AuthUser, problem::Problem};

/// The part of the cache namespace that the HTTP API reads and writes: a key `k` of the API is
/// stored as `api:k`, so API callers can neither read nor overwrite what the server caches for
/// itself (`products:list`, [`cached`](crate::cache::cached) keys), and `DELETE /cache?pattern=` can
/// only flush API keys. Embedders: do not give your own keys this prefix.
pub const API_KEY_PREFIX: &str = "api:";

/// Longest key of the HTTP API, in characters: at most 508 bytes, so that with
/// [`API_KEY_PREFIX`] it stays within the handle's 512. Characters, not bytes, so that the API
/// document can state it exactly.
pub const MAX_API_KEY_CHARS: usize = (crate::cache::MAX_KEY_BYTES - API_KEY_PREFIX.len()) / 4;

/// Longest flush pattern of the HTTP API, in characters: the handle's limit less
/// [`API_KEY_PREFIX`], which the API puts in front.
pub const MAX_API_PATTERN_CHARS: usize = crate::cache::MAX_PATTERN_CHARS - API_KEY_PREFIX.len();

/// The handle key behind the API key `key`, once `key` is checked (1 to
/// [`MAX_API_KEY_CHARS`] characters of printable UTF-8).
fn api_key(key: &str) -> Result<String, CacheError> {
    if key.chars().count() > MAX_API_KEY_CHARS {
        return Err(CacheError::InvalidKey("key is longer than 127 characters"));
    }
    crate::cache::validate_key(key)?;
    Ok(format!("{API_KEY_PREFIX}{key}"))
}

/// Longest tag of the HTTP API, in characters (stored under [`API_KEY_PREFIX`], like its keys:
/// API callers cannot drop the server's own tags).
pub const MAX_API_TAG_CHARS: usize = 64;

/// An API tag, checked (1 to [`MAX_API_TAG_CHARS`] characters, none a control character), as
/// the handle's tag.
fn api_tag(tag: &str) -> Result<String, CacheError> {
    if tag.chars().count() > MAX_API_TAG_CHARS {
        return Err(CacheError::InvalidTag("a tag is longer than 64 characters"));
    }
    crate::cache::validate_tag(tag)?;
    Ok(format!("{API_KEY_PREFIX}{tag}"))
}

/// The `tag` parameters of a query string (repeatable, which `web::Query` cannot read),
/// percent-decoded and checked, as the handle's tags.
fn api_tags(query: &str) -> Result<Vec<String>, CacheError> {
    let mut tags = Vec::new();
    for pair in query.split('&') {
        let value = match pair.split_once('=') {
            Some(("tag", value)) => value,
            None if pair == "tag" => "",
            _ => continue,
        };
        if tags.len() == crate::cache::MAX_TAGS {
            return Err(CacheError::InvalidTag("more than 8 tags"));
        }
        let tag = percent_decode(value)
            .ok_or(CacheError::InvalidTag("a tag is not percent-encoded UTF-8"))?;
        tags.push(api_tag(&tag)?);
    }
    Ok(tags)
}

/// `application/x-www-form-urlencoded` decoding of one value; `None` for a bad escape or bytes
/// that are not UTF-8.
fn percent_decode(value: &str) -> Option<String> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

pub(crate) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/cache").route(web::delete().to(flush)))
        .service(
            web::resource("/cache/{key:.+}")
                .route(web::get().to(get))
                .route(web::head().to(head))
                .route(web::put().to(put))
                .route(web::delete().to(delete)),
        );
}

/// The body of `GET /cache/{key}` (for the API document; the handler writes the bytes itself).
#[derive(ToSchema)]
#[expect(
    dead_code,
    reason = "describes a body assembled from raw bytes by `entry_body`"
)]
pub(crate) struct CacheEntry {
    /// The key.
    key: String,
    /// The stored JSON value, as it was stored.
    value: serde_json::Value,
}

/// `{"key": .., "value": <stored JSON>}`, assembled without re-parsing the value.
fn entry_body(key: &str, json: &[u8]) -> Bytes {
    // unwrap: serializing a string cannot fail.
    let key = serde_json::to_vec(key).unwrap();
    let mut body = BytesMut::with_capacity(key.len() + json.len() + 20);
    body.put_slice(b"{\"key\":");
    body.put_slice(&key);
    body.put_slice(b",\"value\":");
    body.put_slice(json);
    body.put_u8(b'}');
    body.freeze()
}

/// The JSON value stored under `key` (`X-Cache` says which tier answered).
#[utoipa::path(
    get,
    path = "/cache/{key}",
    operation_id = "cache_get",
    tag = "cache",
    params(("key" = String, Path, min_length = 1, max_length = 127, pattern = r"^[^\u0000-\u001F\u007F-\u009F]+$",
        description = "1 to 127 characters, none a control character; may hold `/`. A \
        namespace of its own: the server's cached data cannot be read or written here.")),
    responses(
        (status = 200, description = "The stored value.", body = CacheEntry,
            headers(("X-Cache" = String, description = "`HIT-L1` or `HIT-L2`: the tier that answered."))),
        (status = 400, description = "Invalid key (`invalid-key`).", body = Problem,
            content_type = "application/problem+json"),
        (status = 404, description = "Nothing is cached under this key (`X-Cache: MISS`).",
            body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "L1 misses and Redis cannot be reached.", body = Problem,
            content_type = "application/problem+json"),
    )
)]
async fn get(
    cache: web::Data<CacheHandle>,
    key: web::Path<String>,
) -> Result<HttpResponse, CacheError> {
    match cache.get_raw(&api_key(&key)?).await? {
        Some(hit) => Ok(cached_json(
            entry_body(&key, &hit.json),
            hit.tier.header_value(),
        )),
        None => Ok(with_tier(
            Problem::not_found("No value is cached under this key.").into_response(),
            Tier::Miss.header_value(),
        )),
    }
}

/// Whether a value is cached under `key`, without its body.
#[utoipa::path(
    head,
    path = "/cache/{key}",
    operation_id = "cache_head",
    tag = "cache",
    params(("key" = String, Path, min_length = 1, max_length = 127, pattern = r"^[^\u0000-\u001F\u007F-\u009F]+$",
        description = "1 to 127 characters, none a control character; may hold `/`. A \
        namespace of its own: the server's cached data cannot be read or written here.")),
    responses(
        (status = 200, description = "A value is cached under this key."),
        (status = 400, description = "Invalid key."),
        (status = 404, description = "Nothing is cached under this key."),
        (status = 503, description = "L1 misses and Redis cannot be reached."),
    )
)]
async fn head(
    cache: web::Data<CacheHandle>,
    key: web::Path<String>,
) -> Result<HttpResponse, CacheError> {
    let status = if cache.exists(&api_key(&key)?).await? {
        StatusCode::OK
    } else {
        StatusCode::NOT_FOUND
    };
    Ok(HttpResponse::build(status).finish())
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct TtlQuery {
    /// Seconds to keep the value, from 1 to the configured maximum (30 days unless
    /// `--cache-max-ttl` says otherwise; default: the configured default TTL).
    #[param(minimum = 1, maximum = 2592000)]
    ttl: Option<u64>,
}

/// The body of `PUT /cache/{key}`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct CachePut<'a> {
    /// The key.
    key: &'a str,
    /// The TTL applied, in seconds.
    ttl: u64,
}

/// Stores any JSON value under `key` in both tiers.
#[utoipa::path(
    put,
    path = "/cache/{key}",
    operation_id = "cache_put",
    tag = "cache",
    params(("key" = String, Path, min_length = 1, max_length = 127, pattern = r"^[^\u0000-\u001F\u007F-\u009F]+$",
        description = "1 to 127 characters, none a control character; may hold `/`. A \
        namespace of its own: the server's cached data cannot be read or written here."),
        TtlQuery,
        ("tag" = Option<Vec<ApiTagParam>>, Query, explode = true, style = Form, max_items = 8,
            description = "A tag to write the value with, repeatable (`?tag=a&tag=b`): at most \
            8, each 1 to 64 characters, none a control character. `DELETE /cache?tag=` drops \
            every value written with it.")),
    request_body(content = inline(serde_json::Value), content_type = "application/json",
        description = "Any JSON value."),
    responses(
        (status = 200, description = "Stored.", body = CachePut<'static>),
        (status = 400, description = "Invalid key (`invalid-key`), `ttl` out of range, a bad \
            tag or more than 8 (`invalid-tag`), or a malformed body.", body = Problem,
            content_type = "application/problem+json"),
        (status = 401, description = "No valid access token.", body = Problem,
            content_type = "application/problem+json"),
        (status = 413, description = "The value is longer than the configured maximum (64 KiB \
            by default).", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Redis cannot be written (or revocation cannot be checked).",
            body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []), ("cookie" = []))
)]
async fn put(
    _user: AuthUser,
    req: actix_web::HttpRequest,
    cache: web::Data<CacheHandle>,
    key: web::Path<String>,
    query: web::Query<TtlQuery>,
    value: web::Json<Box<RawValue>>,
) -> Result<HttpResponse, actix_web::Error> {
    let tags = api_tags(req.query_string())?;
    let settings = cache.config();
    let ttl = match query.ttl {
        None => settings.default_ttl,
        Some(secs) if secs >= 1 && secs <= settings.max_ttl.as_secs() => Duration::from_secs(secs),
        Some(_) => {
            return Err(Problem::bad_request(format!(
                "ttl must be a whole number of seconds from 1 to {}.",
                settings.max_ttl.as_secs()
            ))
            .into());
        }
    };
    if value.get().len() > settings.max_value_bytes {
        return Err(Problem::for_status(StatusCode::PAYLOAD_TOO_LARGE)
            .with_detail(format!(
                "A cached value is at most {} bytes of JSON.",
                settings.max_value_bytes
            ))
            .into());
    }
    let json = Bytes::copy_from_slice(value.get().as_bytes());
    let tags: Vec<&str> = tags.iter().map(String::as_str).collect();
    cache
        .set_json_tagged(&api_key(&key)?, json, ttl, &tags)
        .await?;
    Ok(HttpResponse::Ok().json(CachePut {
        key: key.as_str(),
        ttl: ttl.as_secs(),
    }))
}

/// Removes `key` from both tiers.
#[utoipa::path(
    delete,
    path = "/cache/{key}",
    operation_id = "cache_delete",
    tag = "cache",
    params(("key" = String, Path, min_length = 1, max_length = 127, pattern = r"^[^\u0000-\u001F\u007F-\u009F]+$",
        description = "1 to 127 characters, none a control character; may hold `/`. A \
        namespace of its own: the server's cached data cannot be read or written here.")),
    responses(
        (status = 204, description = "Removed."),
        (status = 400, description = "Invalid key (`invalid-key`).", body = Problem,
            content_type = "application/problem+json"),
        (status = 401, description = "No valid access token.", body = Problem,
            content_type = "application/problem+json"),
        (status = 404, description = "Nothing was cached under this key.", body = Problem,
            content_type = "application/problem+json"),
        (status = 503, description = "Redis cannot be written (or revocation cannot be checked).",
            body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []), ("cookie" = []))
)]
async fn delete(
    _user: AuthUser,
    cache: web::Data<CacheHandle>,
    key: web::Path<String>,
) -> Result<HttpResponse, CacheError> {
    if cache.delete(&api_key(&key)?).await? {
        Ok(HttpResponse::NoContent().finish())
    } else {
        Ok(Problem::not_found("No value is cached under this key.").into_response())
    }
}

/// One `tag` of `PUT /cache/{key}` in the OpenAPI document: 1 to 64 characters, none a control
/// character (a schema only: the tags are read from the raw query string).
pub(crate) struct ApiTagParam;

impl utoipa::PartialSchema for ApiTagParam {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .min_length(Some(1))
            .max_length(Some(MAX_API_TAG_CHARS))
            .pattern(Some(r"^[^\u0000-\u001F\u007F-\u009F]+$"))
            .into()
    }
}

impl utoipa::ToSchema for ApiTagParam {}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct FlushQuery {
    /// A glob (`*`, `?`, `[..]`, `[^..]`, `\`) over the API's keys: 1 to 124 characters, none
    /// a control character. With neither `pattern` nor `tag`, nothing is removed.
    #[param(
        min_length = 1,
        max_length = 124,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]+$"
    )]
    pattern: Option<String>,
    /// A tag (1 to 64 characters, none a control character): drops every value written with
    /// it before this call (`PUT /cache/{key}?tag=`), on every instance, whatever their number.
    #[param(
        min_length = 1,
        max_length = 64,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]+$"
    )]
    tag: Option<String>,
}

/// The body of `DELETE /cache?pattern=`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Flushed {
    /// How many keys were removed.
    deleted: u64,
}

/// Removes every key matching a glob pattern, or every value written with a tag, from both
/// tiers.
#[utoipa::path(
    delete,
    path = "/cache",
    operation_id = "cache_flush",
    tag = "cache",
    params(FlushQuery),
    responses(
        (status = 200, description = "Removed (`pattern`; with `tag` too, the tag is dropped \
            first and `deleted` counts the pattern's keys).", body = Flushed),
        (status = 204, description = "The tag is dropped (`tag`): values written with it \
            before are gone from every instance."),
        (status = 400, description = "An invalid `pattern` or `tag` (with neither, nothing is \
            removed: 200 with `deleted: 0`).",
            body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid access token.", body = Problem,
            content_type = "application/problem+json"),
        (status = 503, description = "Redis cannot be written (or revocation cannot be checked).",
            body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []), ("cookie" = []))
)]
async fn flush(
    _user: AuthUser,
    cache: web::Data<CacheHandle>,
    query: web::Query<FlushQuery>,
) -> Result<HttpResponse, CacheError> {
    // Both: the tag is dropped, then the pattern flushed (the answer counts the pattern's keys).
    let tag = query.tag.as_deref().map(api_tag).transpose()?;
    let pattern = match (&query.pattern, tag) {
        (Some(pattern), tag) => {
            if let Some(tag) = tag {
                cache.invalidate_tag(&tag).await?;
            }
            pattern
        }
        (None, Some(tag)) => {
            cache.invalidate_tag(&tag).await?;
            return Ok(HttpResponse::NoContent().finish());
        }
        // Nothing selected: nothing removed (never "everything": that is `pattern=*`).
        (None, None) => return Ok(HttpResponse::Ok().json(Flushed { deleted: 0 })),
    };
    crate::cache::validate_pattern(pattern).map_err(CacheError::InvalidPattern)?;
    if pattern.chars().count() > MAX_API_PATTERN_CHARS {
        return Err(CacheError::InvalidPattern(
            "pattern is longer than 124 characters",
        ));
    }
    // The prefix holds no glob metacharacter: the pattern can only match inside it.
    let deleted = cache
        .flush_pattern(&format!("{API_KEY_PREFIX}{pattern}"))
        .await?;
    Ok(HttpResponse::Ok().json(Flushed { deleted }))
}
