//! `/products` routes: thin handlers reading through the cache and writing through the catalog.

use actix_web::{HttpResponse, http::header, web};
use bytes::Bytes;
use serde::Deserialize;
use utoipa::ToSchema;

use super::CatalogHandle;
use super::{CatalogError, NewProduct, Product, ProductPatch};
use crate::{
    auth::AuthUser,
    cache::{Remembered, Tier, with_tier},
    problem::Problem,
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
#[derive(serde::Serialize, ToSchema)]
pub(crate) struct ProductList<'a> {
    /// Every product, by id.
    products: &'a [Product],
}

const LIST_KEY: &str = "products:list";

/// A body read only from a JSON object: serde's derive also reads a struct from an array of
/// its fields (`["Pen", 2.5]`), which the API document does not allow and no client means.
pub(crate) struct ObjectOnly<T>(pub(crate) T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for ObjectOnly<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Object<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for Object<T> {
            type Value = T;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
            }
        }
        deserializer
            .deserialize_map(Object(std::marker::PhantomData))
            .map(ObjectOnly)
    }
}

/// `products:<id>`, built on the stack: the hot read allocates no key.
struct ProductKey {
    buf: [u8; PRODUCT_KEY_MAX],
    len: usize,
}

const PRODUCT_KEY_PREFIX: &[u8] = b"products:";
/// The prefix and the longest `i64`.
const PRODUCT_KEY_MAX: usize = PRODUCT_KEY_PREFIX.len() + 20;

impl ProductKey {
    fn new(id: i64) -> Self {
        let mut buf = [0u8; PRODUCT_KEY_MAX];
        let mut itoa = itoa::Buffer::new();
        let digits = itoa.format(id).as_bytes();
        let len = PRODUCT_KEY_PREFIX.len() + digits.len();
        buf[..PRODUCT_KEY_PREFIX.len()].copy_from_slice(PRODUCT_KEY_PREFIX);
        buf[PRODUCT_KEY_PREFIX.len()..len].copy_from_slice(digits);
        Self { buf, len }
    }

    fn as_str(&self) -> &str {
        // ASCII by construction: the check cannot fail.
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or_default()
    }
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
            Err(crate::problem::invalid_path_parameter()
                .with_detail("The product id must be a positive integer."))
        }
    }
}

fn cached_json(remembered: Remembered<Bytes>) -> HttpResponse {
    let tier = remembered.tier.header_value();
    let mut res = match remembered.value {
        Some(json) => crate::cache::cached_json(json, tier),
        None => with_tier(
            Problem::not_found("No product with this id.").into_response(),
            tier,
        ),
    };
    if let Some(age) = remembered.age {
        res.headers_mut()
            .insert(header::AGE, header::HeaderValue::from(age.as_secs()));
    }
    res
}

/// Every product (read through the cache; `X-Cache` says which tier answered).
#[utoipa::path(
    get,
    path = "/products",
    operation_id = "products_list",
    tag = "products",
    responses(
        (status = 200, description = "The products.", body = ProductList<'static>,
            headers(("X-Cache" = String, description = "`HIT-L1`, `HIT-L2`, `MISS` (loaded) or \
                `STALE` (past its TTL, served because loading failed or was too slow: fail-safe)."),
                ("Age" = u64, description = "With `X-Cache: STALE`: seconds since the value was loaded."))),
        (status = 500, description = "The database failed and nothing stale was at hand.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The server is shutting down.", body = Problem, content_type = "application/problem+json"),
        (status = 504, description = "The database did not answer within the hard loader timeout, and nothing stale was at hand.", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn list(catalog: web::Data<CatalogHandle>) -> Result<HttpResponse, CatalogError> {
    let catalog = catalog.get_ref();
    let remembered = catalog
        .cache()
        .remember_json_tagged(
            LIST_KEY,
            catalog.config().product_list_ttl,
            &[super::CATALOG_TAG],
            || {
                let catalog = catalog.clone();
                async move {
                    let products = catalog.list().await?;
                    let body = serde_json::to_vec(&ProductList {
                        products: &products,
                    })
                    .map_err(crate::cache::CacheError::from)?;
                    Ok::<_, CatalogError>(Some(Bytes::from(body)))
                }
            },
        )
        .await?;
    Ok(cached_json(remembered))
}

/// One product (read through the cache; `X-Cache` says which tier answered).
#[utoipa::path(
    get,
    path = "/products/{id}",
    operation_id = "products_get",
    tag = "products",
    params(("id" = i64, Path, minimum = 1, description = "A product id: a positive integer.")),
    responses(
        (status = 200, description = "The product.", body = Product,
            headers(("X-Cache" = String, description = "`HIT-L1`, `HIT-L2`, `MISS` (loaded) or \
                `STALE` (past its TTL, served because loading failed or was too slow: fail-safe)."),
                ("Age" = u64, description = "With `X-Cache: STALE`: seconds since the value was loaded."))),
        (status = 400, description = "The id is not a positive integer (`invalid-parameter`).",
            body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No product with this id.", body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "The database failed and nothing stale was at hand.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The server is shutting down.", body = Problem, content_type = "application/problem+json"),
        (status = 504, description = "The database did not answer within the hard loader timeout, and nothing stale was at hand.", body = Problem, content_type = "application/problem+json"),
    )
)]
async fn get(req: actix_web::HttpRequest) -> Result<HttpResponse, actix_web::Error> {
    // The hot cached route takes one extractor and reads its handle and its one segment from
    // the request (no serde path deserializer); the answers are `web::Path<ProductId>`'s, as on
    // the other product routes.
    let Some(catalog) = req.app_data::<web::Data<CatalogHandle>>() else {
        return Err(actix_web::error::ErrorInternalServerError(
            "the catalog handle is not registered: use Services::configure",
        ));
    };
    let id = match req.match_info().get("id").map(str::parse::<i64>) {
        Some(Ok(id)) => ProductId { id }.checked()?,
        _ => return Err(crate::problem::invalid_path_parameter().into()),
    };
    let catalog = catalog.get_ref();
    let remembered = catalog
        .cache()
        .remember_json_tagged(
            ProductKey::new(id).as_str(),
            catalog.config().product_ttl,
            &[super::CATALOG_TAG],
            || {
                // Owned, so that a slow load can finish (and a refresh run) in the background;
                // cloned only when a load begins.
                let catalog = catalog.clone();
                async move {
                    match catalog.get(id).await? {
                        Some(product) => Ok::<_, CatalogError>(Some(Bytes::from(
                            serde_json::to_vec(&product).map_err(crate::cache::CacheError::from)?,
                        ))),
                        None => Ok(None),
                    }
                }
            },
        )
        .await?;
    Ok(cached_json(remembered))
}

/// Refuses a write up front when its invalidation could not reach L2: better a 503 before the
/// database changes than a stale shared cache after.
fn writable(catalog: &CatalogHandle) -> Result<(), CatalogError> {
    catalog
        .cache()
        .ensure_writable()
        .map_err(CatalogError::from)
}

async fn invalidate(catalog: &CatalogHandle, id: i64) {
    for key in [ProductKey::new(id).as_str(), LIST_KEY] {
        if let Err(err) = catalog.cache().delete(key).await {
            tracing::error!(error = %err, key, "catalog: cache invalidation failed after a write");
        }
    }
}

/// Adds a product and invalidates the cached list.
#[utoipa::path(
    post,
    path = "/products",
    operation_id = "products_create",
    tag = "products",
    request_body = NewProduct,
    responses(
        (status = 201, description = "Created.", body = Product,
            headers(("Location" = String, description = "`/products/{id}` of the new product."))),
        (status = 401, description = "No valid access token.", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A field breaks a rule (`validation-failed`).", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Redis cannot be written, so the cache could not be \
            invalidated (or revocation cannot be checked).", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []), ("cookie" = []))
)]
async fn create(
    _user: AuthUser,
    catalog: web::Data<CatalogHandle>,
    body: web::Json<ObjectOnly<NewProduct>>,
) -> Result<HttpResponse, CatalogError> {
    writable(&catalog)?;
    let product = catalog.create(body.into_inner().0).await?;
    // The id may have been cached as absent before it existed.
    invalidate(&catalog, product.id).await;
    let created = HttpResponse::Created()
        .insert_header((header::LOCATION, format!("/products/{}", product.id)))
        .json(product);
    Ok(with_tier(created, Tier::Miss.header_value()))
}

/// Changes the fields present in the body and invalidates the cached copies.
#[utoipa::path(
    put,
    path = "/products/{id}",
    operation_id = "products_update",
    tag = "products",
    params(("id" = i64, Path, minimum = 1, description = "A product id: a positive integer.")),
    request_body = ProductPatch,
    responses(
        (status = 200, description = "The product as changed.", body = Product),
        (status = 400, description = "The id is not a positive integer, or the body is \
            malformed.", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid access token.", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No product with this id.", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A field breaks a rule (`validation-failed`).", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Redis cannot be written, so the cache could not be \
            invalidated (or revocation cannot be checked).", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []), ("cookie" = []))
)]
async fn update(
    _user: AuthUser,
    catalog: web::Data<CatalogHandle>,
    path: web::Path<ProductId>,
    body: web::Json<ObjectOnly<ProductPatch>>,
) -> Result<HttpResponse, actix_web::Error> {
    let id = path.checked()?;
    writable(&catalog)?;
    let product = catalog
        .update(id, body.into_inner().0)
        .await?
        .ok_or(CatalogError::NotFound)?;
    invalidate(&catalog, id).await;
    Ok(HttpResponse::Ok().json(product))
}

/// Removes a product and invalidates the cached copies.
#[utoipa::path(
    delete,
    path = "/products/{id}",
    operation_id = "products_delete",
    tag = "products",
    params(("id" = i64, Path, minimum = 1, description = "A product id: a positive integer.")),
    responses(
        (status = 204, description = "Removed."),
        (status = 400, description = "The id is not a positive integer.", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid access token.", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No product with this id.", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Redis cannot be written, so the cache could not be \
            invalidated (or revocation cannot be checked).", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []), ("cookie" = []))
)]
async fn delete(
    _user: AuthUser,
    catalog: web::Data<CatalogHandle>,
    path: web::Path<ProductId>,
) -> Result<HttpResponse, actix_web::Error> {
    let id = path.checked()?;
    writable(&catalog)?;
    if !catalog.delete(id).await? {
        return Err(CatalogError::NotFound.into());
    }
    invalidate(&catalog, id).await;
    Ok(HttpResponse::NoContent().finish())
}

#[cfg(test)]
mod tests {
    use super::ProductKey;

    #[test]
    fn product_keys_hold_every_id() {
        assert_eq!(ProductKey::new(1).as_str(), "products:1");
        assert_eq!(
            ProductKey::new(i64::MAX).as_str(),
            "products:9223372036854775807"
        );
        assert_eq!(
            ProductKey::new(i64::MIN).as_str(),
            "products:-9223372036854775808"
        );
    }

    /// The handler's future is allocated and moved on every request (actix boxes it): an L1
    /// hit must not carry the size of the lookup's slow path (2,240 bytes before it was boxed
    /// apart in `CacheHandle::remember_in`).
    #[test]
    fn the_hot_handler_future_stays_small() {
        let req = actix_web::test::TestRequest::default().to_http_request();
        let size = std::mem::size_of_val(&super::get(req));
        assert!(size <= 512, "the products handler's future is {size} bytes");
    }
}
