//! The login route's limit when the app registered no rate limiter.

use actix_web::{App, test, web};
use serde_json::json;

use super::AuthHandle;

fn login(password: &str) -> test::TestRequest {
    test::TestRequest::post()
        .uri("/auth/login")
        .peer_addr("10.9.0.1:40000".parse().unwrap())
        .set_json(json!({"username": "victim", "password": password}))
}

/// Auth routes mounted without a `RateLimitHandle` in app data still limit logins: five wrong
/// passwords are 401s, the sixth attempt (even with the right password) is a 429 with
/// `Retry-After`; another address still logs in.
#[actix_web::test]
async fn logins_are_limited_without_a_registered_limiter() {
    let config = crate::Config::for_tests();
    let auth = AuthHandle::start(&config.auth, &config.database, None).unwrap();
    let app = test::init_service(
        App::new()
            .app_data(auth.clone())
            .app_data(web::Data::new(auth))
            .configure(super::routes::configure),
    )
    .await;
    let register = test::TestRequest::post().uri("/auth/register").set_json(
        json!({"username": "victim", "email": "v@example.com", "password": "correct horse"}),
    );
    assert_eq!(
        test::call_service(&app, register.to_request())
            .await
            .status(),
        201
    );
    for attempt in 1..=5 {
        let reply = test::call_service(&app, login("wrong password").to_request()).await;
        assert_eq!(reply.status(), 401, "attempt {attempt}");
    }
    let refused = test::call_service(&app, login("correct horse").to_request()).await;
    assert_eq!(refused.status(), 429);
    let retry: u64 = refused
        .headers()
        .get("retry-after")
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=900).contains(&retry), "{retry}");
    let elsewhere = login("correct horse").peer_addr("10.9.0.2:40000".parse().unwrap());
    assert_eq!(
        test::call_service(&app, elsewhere.to_request())
            .await
            .status(),
        200
    );
}
