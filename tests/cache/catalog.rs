//! The product catalog read through the cache, on both backends.

use actix_web::test::TestRequest;
use futures_util::future::join_all;
use serde_json::json;

use crate::common::{Backend, TestServer, app, call, http, services, with_token};

fn json_req(method: actix_web::http::Method, uri: &str, body: serde_json::Value) -> TestRequest {
    with_token(TestRequest::default())
        .method(method)
        .uri(uri)
        .insert_header(("content-type", "application/json"))
        .set_payload(body.to_string())
}

/// Create, read (MISS then HIT-L1), partial update, list and delete, each write invalidating.
async fn crud_invalidates(backend: Backend) {
    use actix_web::http::Method;
    let services = services(&backend.config());
    let app = app(&services).await;
    crate::common::authorize(&app).await;

    let list = call(&app, TestRequest::get().uri("/products")).await;
    assert_eq!(list.status, 200);
    assert_eq!(list.header("x-cache"), Some("MISS"));
    let seeded = list.json()["products"].as_array().unwrap().len();
    assert_eq!(seeded, 10);
    assert_eq!(
        call(&app, TestRequest::get().uri("/products"))
            .await
            .header("x-cache"),
        Some("HIT-L1")
    );

    // Cache the future id as absent first: creating it must not leave a stale 404 behind.
    call(&app, TestRequest::get().uri("/products/11"))
        .await
        .problem(404);
    let created = call(
        &app,
        json_req(
            Method::POST,
            "/products",
            json!({"name": "Pen", "price": 2.5}),
        ),
    )
    .await;
    assert_eq!(created.status, 201);
    assert_eq!(created.header("location"), Some("/products/11"));
    assert_eq!(
        created.json(),
        json!({"id": 11, "name": "Pen", "price": 2.5, "description": null})
    );

    let first = call(&app, TestRequest::get().uri("/products/11")).await;
    assert_eq!((first.status, first.header("x-cache")), (200, Some("MISS")));
    let second = call(&app, TestRequest::get().uri("/products/11")).await;
    assert_eq!(
        (second.status, second.header("x-cache")),
        (200, Some("HIT-L1"))
    );
    assert_eq!(second.json()["name"], "Pen");
    let list = call(&app, TestRequest::get().uri("/products")).await;
    assert_eq!(
        list.json()["products"].as_array().unwrap().len(),
        seeded + 1
    );

    let updated = call(
        &app,
        json_req(Method::PUT, "/products/11", json!({"price": 3})),
    )
    .await;
    assert_eq!(updated.status, 200);
    assert_eq!(
        updated.json(),
        json!({"id": 11, "name": "Pen", "price": 3.0, "description": null})
    );
    let reread = call(&app, TestRequest::get().uri("/products/11")).await;
    assert_eq!(
        (reread.json()["price"].as_f64(), reread.header("x-cache")),
        (Some(3.0), Some("MISS"))
    );
    call(
        &app,
        json_req(Method::PUT, "/products/999", json!({"price": 3})),
    )
    .await
    .problem(404);
    call(
        &app,
        json_req(Method::PUT, "/products/11", json!({"price": "free"})),
    )
    .await
    .problem(400);
    call(
        &app,
        json_req(Method::PUT, "/products/11", json!({"name": ""})),
    )
    .await
    .problem(422);

    assert_eq!(
        call(&app, with_token(TestRequest::delete()).uri("/products/11"))
            .await
            .status,
        204
    );
    call(&app, TestRequest::get().uri("/products/11"))
        .await
        .problem(404);
    call(&app, with_token(TestRequest::delete()).uri("/products/11"))
        .await
        .problem(404);
    let list = call(&app, TestRequest::get().uri("/products")).await;
    assert_eq!(list.json()["products"].as_array().unwrap().len(), seeded);
}

/// A missing product is cached as absent: repeated requests do not reach the database.
async fn missing_product_is_negatively_cached(backend: Backend) {
    let services = services(&backend.config());
    let app = app(&services).await;
    crate::common::authorize(&app).await;
    let before = services.catalog.load_count();
    for _ in 0..20 {
        let reply = call(&app, TestRequest::get().uri("/products/4242")).await;
        assert_eq!(reply.problem(404)["detail"], "No product with this id.");
    }
    assert_eq!(services.catalog.load_count() - before, 1);
}

/// 500 concurrent cold `GET /products/{id}` over TCP (2 workers) load the product exactly once.
async fn concurrent_cold_reads_load_once(backend: Backend) {
    let services = services(&backend.config());
    // As on a running instance: L1 serves (the invalidation feed is armed) from the first read.
    crate::common::feed_ready(&services).await;
    let server = TestServer::start(services, 2);
    let before = server.services.catalog.load_count();
    let replies =
        join_all((0..500).map(|_| http(server.addr, "GET", "/products/5", &[], b""))).await;
    assert_eq!(server.services.catalog.load_count() - before, 1);
    assert!(replies.iter().all(|r| r.status == 200));
    assert!(replies.iter().all(|r| r.json()["name"] == "Laptop stand"));
    let misses = replies
        .iter()
        .filter(|r| r.header("x-cache") == Some("MISS"))
        .count();
    assert!(misses >= 1);
    server.stop().await;
}

backend_suite!(
    crud_invalidates,
    missing_product_is_negatively_cached,
    concurrent_cold_reads_load_once
);

/// The catalog is seeded once per database file and survives a restart.
#[actix_web::test]
async fn seeded_once_per_database() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Backend::memory().config();
    config.database = redkit::config::DatabaseLocation::File(dir.path().join("catalog.db"));
    let first = services(&config);
    assert!(first.catalog.delete(1).await.unwrap());
    drop(first);
    let second = services(&config);
    let products = second.catalog.list().await.unwrap();
    assert_eq!(
        products.len(),
        9,
        "deleted sample products do not come back"
    );
    assert!(products.iter().all(|p| p.id != 1));
}
