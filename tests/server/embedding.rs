//! The embedding example (`examples/embed.rs`), compiled into this test and driven in-process
//! and over real TCP on both backends: its own routes, the cached summary, the rate-limited
//! search scope (`RateLimitHandle::middleware_for`), `AuthUser`, and events it publishes.

// The example's `main` and `Cli` are not called here; `start` is what `main` runs.
#[allow(dead_code)]
#[path = "../../examples/embed.rs"]
mod embed;

use std::{sync::Arc, sync::atomic::Ordering, time::Duration};

use actix_web::{
    body::MessageBody,
    dev::{Service, ServiceResponse},
    test::{self, TestRequest},
    web,
};
use futures_util::StreamExt;
use redkit::{clock::ManualClock, http::Services};
use serde_json::json;

use crate::common::{Backend, bearer, call, services, sse::Sse};

const PASSWORD: &str = "correct horse";
const WAIT: Duration = Duration::from_secs(5);

/// The example app on fresh services, with its state for inspection.
async fn notes_app(
    services: &Services,
) -> (
    impl Service<
        actix_http::Request,
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
    >,
    web::Data<embed::Notes>,
) {
    let notes = web::Data::new(embed::Notes::default());
    let app = test::init_service(embed::app(services.clone(), notes.clone())).await;
    (app, notes)
}

/// Signs `name` up and logs in through the example's own routes; answers (user id, access token).
async fn signup_and_login<S, B>(app: &S, name: &str) -> (i64, String)
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    let email = format!("{name}@example.com");
    let reply = call(
        app,
        TestRequest::post()
            .uri("/signup")
            .set_json(json!({"username": name, "email": email, "password": PASSWORD})),
    )
    .await;
    assert_eq!(reply.status, 201, "{:?}", reply.body);
    let user = reply.json();
    assert_eq!(user["username"], name);
    assert_eq!(user["email"], email.as_str());
    let reply = call(
        app,
        TestRequest::post()
            .uri("/login")
            .set_json(json!({"username": name, "password": PASSWORD})),
    )
    .await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    let tokens = reply.json();
    assert_eq!(tokens["token_type"], "bearer");
    (
        user["id"].as_i64().unwrap(),
        tokens["access_token"].as_str().unwrap().to_owned(),
    )
}

fn post_note(token: &str, text: &str) -> TestRequest {
    TestRequest::post()
        .uri("/notes")
        .insert_header(bearer(token))
        .set_json(json!({ "text": text }))
}

/// The app's own routes work: sign-up, login, create, list and search, with problem+json errors.
async fn own_routes_work(backend: Backend) {
    let services = services(&backend.config());
    let (app, _) = notes_app(&services).await;
    let reply = call(&app, TestRequest::get().uri("/notes")).await;
    assert_eq!((reply.status, reply.json()), (200, json!([])));
    let (ada, token) = signup_and_login(&app, "ada").await;
    let reply = call(&app, post_note(&token, "Buy milk")).await;
    let note = json!({"id": 1, "author": ada, "text": "Buy milk"});
    assert_eq!((reply.status, reply.json()), (201, note.clone()));
    let reply = call(&app, TestRequest::get().uri("/notes")).await;
    assert_eq!((reply.status, reply.json()), (200, json!([note])));
    let reply = call(&app, TestRequest::get().uri("/search?q=MILK")).await;
    assert_eq!((reply.status, reply.json()), (200, json!([note])));
    let reply = call(&app, TestRequest::get().uri("/search?q=eggs")).await;
    assert_eq!((reply.status, reply.json()), (200, json!([])));
    // redkit's extractor configs make bad input a problem, not a bare text error.
    let bad = TestRequest::post()
        .uri("/notes")
        .insert_header(bearer(&token))
        .insert_header(("content-type", "application/json"))
        .set_payload("{not json");
    call(&app, bad).await.problem(400);
    call(&app, TestRequest::get().uri("/search"))
        .await
        .problem(400);
    let taken = TestRequest::post()
        .uri("/signup")
        .set_json(json!({"username": "ada", "email": "ada@example.com", "password": PASSWORD}));
    call(&app, taken).await.problem(409);
}

/// `AuthUser` (with only `web::Data<AuthHandle>` registered) answers 401 without a valid token
/// and admits the token's user, who sees only their own notes.
async fn protected_route_needs_token(backend: Backend) {
    let services = services(&backend.config());
    let (app, notes) = notes_app(&services).await;
    let reply = call(&app, TestRequest::get().uri("/me/notes")).await;
    reply.problem(401);
    assert!(
        reply
            .header("www-authenticate")
            .unwrap()
            .starts_with("Bearer")
    );
    let forged = TestRequest::get()
        .uri("/me/notes")
        .insert_header(bearer("not.a.token"));
    call(&app, forged).await.problem(401);
    let anonymous = TestRequest::post()
        .uri("/notes")
        .set_json(json!({"text": "spam"}));
    call(&app, anonymous).await.problem(401);
    assert_eq!(notes.summaries_computed.load(Ordering::Relaxed), 0);

    let (ada, ada_token) = signup_and_login(&app, "ada").await;
    let (_, bob_token) = signup_and_login(&app, "bob").await;
    let mine = |token: &str| {
        TestRequest::get()
            .uri("/me/notes")
            .insert_header(bearer(token))
    };
    let reply = call(&app, mine(&ada_token)).await;
    assert_eq!((reply.status, reply.json()), (200, json!([])));
    assert_eq!(call(&app, post_note(&ada_token, "mine")).await.status, 201);
    let reply = call(&app, mine(&ada_token)).await;
    let expected = json!([{"id": 1, "author": ada, "text": "mine"}]);
    assert_eq!((reply.status, reply.json()), (200, expected));
    let reply = call(&app, mine(&bob_token)).await;
    assert_eq!((reply.status, reply.json()), (200, json!([])));
}

/// The cached summary runs its computation once for repeated calls; with Redis, another
/// instance reuses it without computing.
async fn summary_computed_once(backend: Backend) {
    let config = backend.config();
    let services = services(&config);
    let (app, notes) = notes_app(&services).await;
    let (_, token) = signup_and_login(&app, "ada").await;
    for text in ["buy milk", "call the plumber"] {
        assert_eq!(call(&app, post_note(&token, text)).await.status, 201);
    }
    for _ in 0..3 {
        let reply = call(&app, TestRequest::get().uri("/notes/summary")).await;
        assert_eq!(
            (reply.status, reply.json()),
            (200, json!({"notes": 2, "words": 5}))
        );
    }
    assert_eq!(notes.summaries_computed.load(Ordering::Relaxed), 1);
    if backend.is_redis() {
        let other = crate::common::services(&config);
        let (other_app, other_notes) = notes_app(&other).await;
        let reply = call(&other_app, TestRequest::get().uri("/notes/summary")).await;
        assert_eq!(
            (reply.status, reply.json()),
            (200, json!({"notes": 2, "words": 5}))
        );
        assert_eq!(other_notes.summaries_computed.load(Ordering::Relaxed), 0);
    }
}

fn from(ip: &str, uri: &str) -> TestRequest {
    TestRequest::get()
        .uri(uri)
        .peer_addr(format!("{ip}:40000").parse().unwrap())
}

/// Only the `/search` scope is limited (5 per minute per client, its own policy): the sixth
/// search is a 429 problem while the app's other routes answer as before without limit headers;
/// other clients and verified users are counted apart, and the window frees up on the clock.
async fn search_scope_limited_alone(backend: Backend) {
    let mut config = backend.config();
    let clock = ManualClock::new(1_700_000_040_000_000);
    config.rate_limit.clock = Arc::new(clock.clone());
    let services = services(&config);
    let (app, _) = notes_app(&services).await;
    for remaining in (0..embed::SEARCH_LIMIT).rev() {
        let reply = call(&app, from("10.0.0.1", "/search?q=x")).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.header("x-ratelimit-limit"), Some("5"));
        assert_eq!(
            reply.header("x-ratelimit-remaining"),
            Some(remaining.to_string().as_str())
        );
    }
    let reply = call(&app, from("10.0.0.1", "/search?q=x")).await;
    let problem = reply.problem(429);
    assert_eq!(reply.header("retry-after"), Some("60"));
    assert_eq!(
        problem["detail"],
        "Rate limit policy \"notes-search\" allows 5 requests per 60 seconds; retry after 60 seconds."
    );
    for (uri, status) in [("/notes", 200), ("/notes/summary", 200), ("/me/notes", 401)].repeat(10) {
        let reply = call(&app, from("10.0.0.1", uri)).await;
        assert_eq!(reply.status, status, "{uri}");
        assert_eq!(reply.header("x-ratelimit-limit"), None, "{uri}");
    }
    assert_eq!(
        call(&app, from("10.0.0.2", "/search?q=x")).await.status,
        200
    );
    // A verified user is limited as that user, not by the exhausted address it comes from.
    let (_, token) = signup_and_login(&app, "ada").await;
    let as_ada = from("10.0.0.1", "/search?q=x").insert_header(bearer(&token));
    assert_eq!(call(&app, as_ada).await.status, 200);
    clock.advance(embed::SEARCH_WINDOW);
    assert_eq!(
        call(&app, from("10.0.0.1", "/search?q=x")).await.status,
        200
    );
    assert_eq!(
        services.ratelimit.decisions_by_policy(),
        vec![("notes-search".to_owned(), [8, 1, 0])]
    );
}

/// A subscriber of the notes channel (through `EventsHandle::subscribe`) receives the event the
/// app's handler published, as one SSE frame carrying the created note.
async fn event_reaches_subscriber(backend: Backend) {
    let services = services(&backend.config());
    let (app, _) = notes_app(&services).await;
    let (_, token) = signup_and_login(&app, "ada").await;
    let mut stream = services
        .events
        .subscribe(embed::CHANNEL, None)
        .await
        .unwrap();
    let reply = call(&app, post_note(&token, "hello subscribers")).await;
    assert_eq!(reply.status, 201);
    let frame = loop {
        let next = tokio::time::timeout(WAIT, stream.next()).await;
        let bytes = next.expect("event in time").expect("stream open").unwrap();
        let text = String::from_utf8(bytes.to_vec()).unwrap();
        if text.starts_with("id: ") {
            break text;
        }
    };
    let id = frame.lines().next().unwrap().trim_start_matches("id: ");
    let data = serde_json::to_string(&reply.json()).unwrap();
    assert_eq!(frame, format!("id: {id}\nevent: message\ndata: {data}\n\n"));
    assert_eq!(services.events.stats().published, 1);
}

/// What `main` runs (`embed::start`) serves over real TCP: a live client of `/notes/live` gets
/// the note created through the API, search is limited while listing is not, and `/me/notes`
/// needs a token.
async fn example_serves_over_tcp(backend: Backend) {
    let mut config = backend.config();
    config.workers = 1;
    let (server, addr) = embed::start(&config).unwrap();
    assert!(addr.ip().is_loopback() && addr.port() != 0);
    let handle = server.handle();
    actix_web::rt::spawn(server);

    let mut live = Sse::open(addr, "/notes/live", &[]).await;
    assert_eq!(live.status, 200, "{}", live.body);
    assert_eq!(live.header("content-type"), Some("text/event-stream"));

    let json_header = [("content-type", "application/json")];
    let signup = json!({"username": "ada", "email": "ada@example.com", "password": PASSWORD});
    let reply = crate::common::http(
        addr,
        "POST",
        "/signup",
        &json_header,
        signup.to_string().as_bytes(),
    )
    .await;
    assert_eq!(reply.status, 201);
    let login = json!({"username": "ada", "password": PASSWORD});
    let reply = crate::common::http(
        addr,
        "POST",
        "/login",
        &json_header,
        login.to_string().as_bytes(),
    )
    .await;
    assert_eq!(reply.status, 200);
    let token = reply.json()["access_token"].as_str().unwrap().to_owned();
    let auth = format!("Bearer {token}");
    let headers = [
        ("content-type", "application/json"),
        ("authorization", auth.as_str()),
    ];
    let reply =
        crate::common::http(addr, "POST", "/notes", &headers, br#"{"text":"over tcp"}"#).await;
    assert_eq!(reply.status, 201);
    let user = reply.json()["author"].clone();

    let expected = format!(r#"{{"author":{user},"id":1,"text":"over tcp"}}"#);
    let event = loop {
        let frame = live.next_within(WAIT).await.expect("stream open");
        if !frame.is_comment() && frame.retry.is_none() {
            break frame;
        }
    };
    assert_eq!(
        (event.event.as_deref(), event.data()),
        (Some("message"), expected)
    );
    drop(live);

    let mut statuses = Vec::new();
    for _ in 0..=embed::SEARCH_LIMIT {
        statuses.push(
            crate::common::http(addr, "GET", "/search?q=tcp", &[], b"")
                .await
                .status,
        );
    }
    assert_eq!(statuses, [200, 200, 200, 200, 200, 429]);
    for _ in 0..10 {
        assert_eq!(
            crate::common::http(addr, "GET", "/notes", &[], b"")
                .await
                .status,
            200
        );
    }
    let reply = crate::common::http(addr, "GET", "/me/notes", &[], b"").await;
    reply.problem(401);
    let reply = crate::common::http(
        addr,
        "GET",
        "/me/notes",
        &[("authorization", auth.as_str())],
        b"",
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()[0]["text"], "over tcp");
    handle.stop(false).await;
}

backend_suite!(
    own_routes_work,
    protected_route_needs_token,
    summary_computed_once,
    search_scope_limited_alone,
    event_reaches_subscriber,
    example_serves_over_tcp,
);
