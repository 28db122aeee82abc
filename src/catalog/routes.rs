//! `/products` routes: thin handlers reading through the cache and writing through the catalog.

use actix_web::{HttpResponse, http::header, web};
use bytes::Bytes;
use serde::Deserialize;

use super::{CatalogError, NewProduct, ProductPatch};
use crate::{
    auth::AuthUser,
    cache::{Remembered, Tier},
    http::{Problem, Services},
};

pub(crate) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/products")
            .route(web::get().to(list))
            .route(web::post().to(create)),
    )
    .service(
        web::resource("/products/{id}")
            .route(web::get().to(get))
            .route(web::put().to(update))
            .route(web::delete().to(delete)),
    );
}

/// The body of `GET /products`.
#[derive(serde::Serialize)]
struct ProductList<'a> {
    products: &'a [super::Product],
}

const LIST_KEY: &str = "products:list";

fn product_key(id: i64) -> String {
    format!("products:{id}")
}

/// A product id from the path: a positive integer.
#[derive(Debug, Deserialize)]
struct ProductId {
    id: i64,
}

impl ProductId {
    fn checked(&self) -> Result<i64, Problem> {
        if self.id > 0 {
            Ok(self.id)
        } else {
            Err(Problem::new(
                actix_web::http::StatusCode::BAD_REQUEST,
                "invalid-parameter",
                "Invalid path parameter",
            )
            .with_detail("The product id must be a positive integer."))
        }
    }
}

fn cached_json(remembered: Remembered<Bytes>) -> HttpResponse {
    match remembered.value {
        Some(json) => HttpResponse::Ok()
            .content_type("application/json")
            .insert_header(("X-Cache", remembered.tier.header_value()))
            .body(json),
        None => {
            let mut res = Problem::not_found("No product with this id.").into_response();
            res.headers_mut().insert(
                header::HeaderName::from_static("x-cache"),
                header::HeaderValue::from_static(remembered.tier.header_value()),
            );
            res
        }
    }
}

async fn list(services: web::Data<Services>) -> Result<HttpResponse, CatalogError> {
    let catalog = &services.catalog;
    let remembered = services
        .cache
        .remember_json(LIST_KEY, services.settings.product_list_ttl, || async {
            let products = catalog.list().await?;
            let body = serde_json::to_vec(&ProductList {
                products: &products,
            })
            .map_err(crate::cache::CacheError::from)?;
            Ok::<_, CatalogError>(Some(Bytes::from(body)))
        })
        .await?;
    Ok(cached_json(remembered))
}

async fn get(
    services: web::Data<Services>,
    path: web::Path<ProductId>,
) -> Result<HttpResponse, actix_web::Error> {
    let id = path.checked()?;
    let catalog = &services.catalog;
    let remembered = services
        .cache
        .remember_json(&product_key(id), services.settings.product_ttl, || async {
            match catalog.get(id).await? {
                Some(product) => Ok::<_, CatalogError>(Some(Bytes::from(
                    serde_json::to_vec(&product).map_err(crate::cache::CacheError::from)?,
                ))),
                None => Ok(None),
            }
        })
        .await?;
    Ok(cached_json(remembered))
}

/// Refuses a write up front when its invalidation could not reach L2: better a 503 before the
/// database changes than a stale shared cache after.
fn writable(services: &Services) -> Result<(), CatalogError> {
    services.cache.ensure_writable().map_err(CatalogError::from)
}

async fn invalidate(services: &Services, id: i64) {
    for key in [product_key(id), LIST_KEY.to_owned()] {
        if let Err(err) = services.cache.delete(&key).await {
            tracing::error!(error = %err, key, "catalog: cache invalidation failed after a write");
        }
    }
}

async fn create(
    _user: AuthUser,
    services: web::Data<Services>,
    body: web::Json<NewProduct>,
) -> Result<HttpResponse, CatalogError> {
    writable(&services)?;
    let product = services.catalog.create(body.into_inner()).await?;
    // The id may have been cached as absent before it existed.
    invalidate(&services, product.id).await;
    Ok(HttpResponse::Created()
        .insert_header((header::LOCATION, format!("/products/{}", product.id)))
        .insert_header(("X-Cache", Tier::Miss.header_value()))
        .json(product))
}

async fn update(
    _user: AuthUser,
    services: web::Data<Services>,
    path: web::Path<ProductId>,
    body: web::Json<ProductPatch>,
) -> Result<HttpResponse, actix_web::Error> {
    let id = path.checked()?;
    writable(&services)?;
    let product = services
        .catalog
        .update(id, body.into_inner())
        .await?
        .ok_or(CatalogError::NotFound)?;
    invalidate(&services, id).await;
    Ok(HttpResponse::Ok().json(product))
}

async fn delete(
    _user: AuthUser,
    services: web::Data<Services>,
    path: web::Path<ProductId>,
) -> Result<HttpResponse, actix_web::Error> {
    let id = path.checked()?;
    writable(&services)?;
    if !services.catalog.delete(id).await? {
        return Err(CatalogError::NotFound.into());
    }
    invalidate(&services, id).await;
    Ok(HttpResponse::NoContent().finish())
}
