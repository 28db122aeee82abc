//! `/cache` routes: thin handlers over [`CacheHandle`].

use std::time::Duration;

use actix_web::{HttpResponse, http::StatusCode, web};
use bytes::{BufMut, Bytes, BytesMut};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::{CacheError, CacheHandle};
use crate::{
    auth::AuthUser,
    http::{Problem, Services},
};

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

async fn get(
    cache: web::Data<CacheHandle>,
    key: web::Path<String>,
) -> Result<HttpResponse, CacheError> {
    match cache.get_raw(&key).await? {
        Some(hit) => Ok(HttpResponse::Ok()
            .content_type("application/json")
            .insert_header(("X-Cache", hit.tier.header_value()))
            .body(entry_body(&key, &hit.json))),
        None => {
            let mut res = Problem::not_found("No value is cached under this key.").into_response();
            res.headers_mut().insert(
                actix_web::http::header::HeaderName::from_static("x-cache"),
                actix_web::http::header::HeaderValue::from_static("MISS"),
            );
            Ok(res)
        }
    }
}

async fn head(
    cache: web::Data<CacheHandle>,
    key: web::Path<String>,
) -> Result<HttpResponse, CacheError> {
    let status = if cache.exists(&key).await? {
        StatusCode::OK
    } else {
        StatusCode::NOT_FOUND
    };
    Ok(HttpResponse::build(status).finish())
}

#[derive(Debug, Deserialize)]
struct TtlQuery {
    ttl: Option<u64>,
}

async fn put(
    _user: AuthUser,
    services: web::Data<Services>,
    key: web::Path<String>,
    query: web::Query<TtlQuery>,
    value: web::Json<Box<RawValue>>,
) -> Result<HttpResponse, actix_web::Error> {
    let settings = &services.settings;
    let ttl = match query.ttl {
        None => settings.cache_default_ttl,
        Some(secs) if secs >= 1 && secs <= settings.cache_max_ttl.as_secs() => {
            Duration::from_secs(secs)
        }
        Some(_) => {
            return Err(Problem::bad_request(format!(
                "ttl must be a whole number of seconds from 1 to {}.",
                settings.cache_max_ttl.as_secs()
            ))
            .into());
        }
    };
    let json = Bytes::copy_from_slice(value.get().as_bytes());
    services.cache.set_json(&key, json, ttl).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({"key": key.as_str(), "ttl": ttl.as_secs()})))
}

async fn delete(
    _user: AuthUser,
    cache: web::Data<CacheHandle>,
    key: web::Path<String>,
) -> Result<HttpResponse, CacheError> {
    if cache.delete(&key).await? {
        Ok(HttpResponse::NoContent().finish())
    } else {
        Ok(Problem::not_found("No value is cached under this key.").into_response())
    }
}

#[derive(Debug, Deserialize)]
struct FlushQuery {
    pattern: String,
}

async fn flush(
    _user: AuthUser,
    cache: web::Data<CacheHandle>,
    query: web::Query<FlushQuery>,
) -> Result<HttpResponse, CacheError> {
    let deleted = cache.flush_pattern(&query.pattern).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({"deleted": deleted})))
}
