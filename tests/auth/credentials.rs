//! How a request presents its token: one rule for every route that takes one.

use actix_web::{
    http::header::{AUTHORIZATION, CONTENT_TYPE},
    test::{self, TestRequest},
};

use crate::common::{Backend, app, call, register_and_login, services, with_test_secret};

/// The bearer scheme is case-insensitive (RFC 6750 §2.1) on every route that takes a token: a
/// private channel's stream and publish, and `/auth/me`, each accept `bearer`, `Bearer` and
/// `BEARER`, and refuse another scheme with 401.
async fn bearer_scheme_is_case_insensitive_everywhere(backend: Backend) {
    let services = services(&with_test_secret(backend.config()));
    let app = app(&services).await;
    let (access, _) = register_and_login(&app, "casey").await;
    let me = call(
        &app,
        TestRequest::get()
            .uri("/auth/me")
            .insert_header((AUTHORIZATION, format!("Bearer {access}"))),
    )
    .await;
    assert_eq!(me.status, 200);
    let id = me.json()["id"].as_i64().unwrap();
    let channel = format!("/events/user:{id}");
    for scheme in ["bearer", "Bearer", "BEARER", "bEaReR"] {
        let authorization = (AUTHORIZATION, format!("{scheme} {access}"));
        let me = call(
            &app,
            TestRequest::get()
                .uri("/auth/me")
                .insert_header(authorization.clone()),
        )
        .await;
        assert_eq!(me.status, 200, "{scheme} on /auth/me");
        // The stream never ends: read the head only.
        let stream = test::call_service(
            &app,
            TestRequest::get()
                .uri(&channel)
                .insert_header(authorization.clone())
                .to_request(),
        )
        .await;
        assert_eq!(stream.status(), 200, "{scheme} on GET {channel}");
        assert_eq!(
            stream.headers().get(CONTENT_TYPE).unwrap(),
            "text/event-stream",
            "{scheme} on GET {channel}"
        );
        drop(stream);
        let publish = call(
            &app,
            TestRequest::post()
                .uri(&channel)
                .insert_header(authorization)
                .set_json(serde_json::json!({"n": 1})),
        )
        .await;
        assert_eq!(publish.status, 202, "{scheme} on POST {channel}");
    }
    for refused in [
        format!("Basic {access}"),
        format!("Bearer{access}"),
        "Bearer ".into(),
    ] {
        let stream = call(
            &app,
            TestRequest::post()
                .uri(&channel)
                .insert_header((AUTHORIZATION, refused.clone()))
                .set_json(serde_json::json!({"n": 1})),
        )
        .await;
        assert_eq!(stream.problem(401)["status"], 401, "{refused:?}");
    }
}

backend_suite!(bearer_scheme_is_case_insensitive_everywhere);
