//! `/openapi.json` and `/docs`: the document is OpenAPI 3.1 with resolvable references, it lists
//! exactly the routes and methods the app registers, real responses match their documented
//! schemas (both backends), and the UI is served from the binary with same-origin assets only.

#![cfg(feature = "server")]

mod common;

use std::{
    cell::RefCell,
    collections::{BTreeMap, BTreeSet},
    rc::Rc,
};

use actix_web::{
    dev::{Service, ServiceResponse},
    http::{
        Method,
        header::{HeaderName, HeaderValue},
    },
    test::{self, TestRequest},
};
use common::{Backend, Reply, bearer, call, services};
use serde_json::{Value, json};

/// The methods probed on every path.
const METHODS: [&str; 6] = ["get", "head", "post", "put", "patch", "delete"];

/// The header the probe middleware writes the matched resource pattern into.
const PATTERN: &str = "x-test-pattern";

/// An app whose responses say which resource pattern matched (`x-test-pattern`), and which
/// keeps the `Debug` text of the app's `ResourceMap` (every registered pattern) in `map`.
async fn probed_app(
    services: &redkit::http::Services,
    map: Rc<RefCell<Option<String>>>,
) -> impl Service<
    actix_http::Request,
    Response = ServiceResponse<impl actix_web::body::MessageBody>,
    Error = actix_web::Error,
> {
    test::init_service(
        redkit::http::app(services.clone()).wrap_fn(move |req, srv| {
            let map = map.clone();
            let fut = srv.call(req);
            async move {
                let mut res = fut.await?;
                if map.borrow().is_none() {
                    *map.borrow_mut() = Some(format!("{:?}", res.request().resource_map()));
                }
                if let Some(pattern) = res.request().match_pattern() {
                    res.headers_mut().insert(
                        HeaderName::from_static(PATTERN),
                        HeaderValue::from_str(&pattern).unwrap(),
                    );
                }
                Ok(res)
            }
        }),
    )
    .await
}

/// `/cache/{key:.+}` → `/cache/{key}`: an actix pattern in OpenAPI's path syntax.
fn openapi_path(pattern: &str) -> String {
    let mut out = String::new();
    let mut in_var = false;
    let mut skipping = false;
    for c in pattern.chars() {
        match c {
            '{' => {
                in_var = true;
                out.push(c);
            }
            ':' if in_var => skipping = true,
            '}' if in_var => {
                in_var = false;
                skipping = false;
                out.push(c);
            }
            _ if skipping => {}
            _ => out.push(c),
        }
    }
    out
}

/// A concrete request path for a documented path: each `{param}` gets a valid sample.
fn concrete(path: &str) -> String {
    path.replace("{key}", "probe/key")
        .replace("{id}", "1")
        .replace("{channel}", "probe")
        .replace("{sid}", "probe")
}

/// Every `patterns: Single("…")` in a `ResourceMap`'s Debug text, in OpenAPI syntax.
fn registered_patterns(map_debug: &str) -> BTreeSet<String> {
    let marker = "patterns: Single(\"";
    let mut out = BTreeSet::new();
    let mut rest = map_debug;
    while let Some(at) = rest.find(marker) {
        rest = &rest[at + marker.len()..];
        let end = rest.find("\")").expect("pattern end");
        let pattern = &rest[..end];
        if !pattern.is_empty() {
            out.insert(openapi_path(pattern));
        }
        rest = &rest[end..];
    }
    assert!(
        !map_debug.contains("patterns: List("),
        "multi-pattern resources are not expected"
    );
    out
}

async fn document(services: &redkit::http::Services) -> Value {
    let app = common::app(services).await;
    let reply = call(&app, TestRequest::get().uri("/openapi.json")).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    reply.json()
}

/// Documented (path, method) pairs.
fn operations(doc: &Value) -> BTreeMap<String, BTreeSet<&'static str>> {
    let mut out = BTreeMap::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        let methods = METHODS
            .iter()
            .copied()
            .filter(|m| item.get(*m).is_some())
            .collect();
        out.insert(path.clone(), methods);
    }
    out
}

/// Resolves a local `$ref` (`#/components/...`).
fn resolve<'a>(doc: &'a Value, reference: &str) -> Option<&'a Value> {
    doc.pointer(reference.strip_prefix('#')?)
}

fn collect_refs<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                if k == "$ref" {
                    out.push(v.as_str().expect("$ref is a string"));
                } else {
                    collect_refs(v, out);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_refs(v, out)),
        _ => {}
    }
}

/// The document is OpenAPI 3.1, every `$ref` resolves, operation ids are unique, and the
/// security schemes that operations name exist.
#[actix_web::test]
async fn document_is_openapi_31_and_refs_resolve() {
    let services = services(&Backend::memory().config());
    let doc = document(&services).await;
    let version = doc["openapi"].as_str().unwrap();
    assert!(version.starts_with("3.1."), "openapi {version}");
    assert_eq!(doc["info"]["title"], "redkit");
    let mut refs = Vec::new();
    collect_refs(&doc, &mut refs);
    assert!(refs.len() > 20, "only {} refs", refs.len());
    for reference in refs {
        assert!(
            resolve(&doc, reference).is_some(),
            "unresolved $ref {reference}"
        );
    }
    let schemes = doc["components"]["securitySchemes"].as_object().unwrap();
    assert_eq!(schemes["bearer"]["type"], "http");
    assert_eq!(schemes["bearer"]["scheme"], "bearer");
    assert_eq!(schemes["cookie"]["type"], "apiKey");
    assert_eq!(schemes["cookie"]["in"], "cookie");
    assert_eq!(schemes["cookie"]["name"], "redkit_access");
    let mut ids = BTreeSet::new();
    for (path, methods) in operations(&doc) {
        for method in methods {
            let op = &doc["paths"][&path][method];
            let id = op["operationId"].as_str().unwrap();
            assert!(ids.insert(id.to_owned()), "duplicate operationId {id}");
            for requirement in op["security"].as_array().into_iter().flatten() {
                for name in requirement.as_object().unwrap().keys() {
                    assert!(schemes.contains_key(name), "{method} {path}: scheme {name}");
                }
            }
        }
    }
}

/// Every documented path, filled with sample parameters, is routed to a resource whose pattern
/// is that path, and the registered patterns are exactly the documented paths.
#[actix_web::test]
async fn documented_paths_are_the_registered_patterns() {
    let services = services(&Backend::memory().config());
    let doc = document(&services).await;
    let map = Rc::new(RefCell::new(None));
    let app = probed_app(&services, map.clone()).await;
    let documented = operations(&doc);
    for (path, methods) in &documented {
        for method in methods {
            let req = TestRequest::default()
                .method(Method::from_bytes(method.to_uppercase().as_bytes()).unwrap())
                .uri(&concrete(path));
            let res = test::call_service(&app, req.to_request()).await;
            let pattern = res
                .headers()
                .get(PATTERN)
                .map(|v| openapi_path(v.to_str().unwrap()));
            assert_eq!(pattern.as_deref(), Some(path.as_str()), "{method} {path}");
        }
    }
    let registered = registered_patterns(map.borrow().as_deref().unwrap());
    let documented: BTreeSet<String> = documented.into_keys().collect();
    assert_eq!(
        registered.difference(&documented).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "registered but not documented"
    );
    assert_eq!(
        documented.difference(&registered).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "documented but not registered"
    );
    assert_eq!(registered.len(), 31);
}

/// On every path, exactly the documented methods are registered: an undocumented method
/// answers 405 (not the default 404), a documented one anything but 405.
#[actix_web::test]
async fn documented_methods_are_the_registered_methods() {
    let services = services(&Backend::memory().config());
    let doc = document(&services).await;
    let app = probed_app(&services, Rc::new(RefCell::new(None))).await;
    let mut probed = 0;
    for (path, methods) in operations(&doc) {
        for method in METHODS {
            let req = TestRequest::default()
                .method(Method::from_bytes(method.to_uppercase().as_bytes()).unwrap())
                .uri(&concrete(&path));
            let res = test::call_service(&app, req.to_request()).await;
            let status = res.status().as_u16();
            let matched = res.headers().contains_key(PATTERN);
            assert!(matched, "{method} {path}: no resource matched ({status})");
            if methods.contains(method) {
                assert_ne!(status, 405, "{method} {path} is documented");
            } else {
                assert_eq!(status, 405, "{method} {path} is not documented");
            }
            probed += 1;
        }
    }
    assert_eq!(probed, 31 * METHODS.len());
}

// ---- a JSON-schema check for the subset utoipa emits ----

/// Checks `value` against `schema`. `strict`: an object may only hold documented properties.
fn check(doc: &Value, schema: &Value, value: &Value, strict: bool, at: &str) -> Result<(), String> {
    if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
        let target = resolve(doc, reference).ok_or(format!("{at}: unresolved {reference}"))?;
        return check(doc, target, value, strict, at);
    }
    if let Some(branches) = schema.get("allOf").and_then(Value::as_array) {
        for branch in branches {
            check(doc, branch, value, false, at)?;
        }
        if strict && let Some(object) = value.as_object() {
            let known = known_properties(doc, schema);
            for key in object.keys() {
                if !known.contains(key) {
                    return Err(format!("{at}: undocumented property {key:?}"));
                }
            }
        }
        return Ok(());
    }
    for keyword in ["oneOf", "anyOf"] {
        if let Some(branches) = schema.get(keyword).and_then(Value::as_array) {
            let passing = branches
                .iter()
                .filter(|b| check(doc, b, value, strict, at).is_ok())
                .count();
            let ok = if keyword == "oneOf" {
                passing == 1
            } else {
                passing >= 1
            };
            if !ok {
                return Err(format!("{at}: {passing} {keyword} branches match {value}"));
            }
        }
    }
    if let Some(types) = schema.get("type") {
        let types: Vec<&str> = match types {
            Value::String(t) => vec![t.as_str()],
            Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
            other => return Err(format!("{at}: bad type {other}")),
        };
        let fits = |t: &str| match t {
            "null" => value.is_null(),
            "boolean" => value.is_boolean(),
            "integer" => value.is_i64() || value.is_u64(),
            "number" => value.is_number(),
            "string" => value.is_string(),
            "array" => value.is_array(),
            "object" => value.is_object(),
            _ => false,
        };
        if !types.iter().any(|t| fits(t)) {
            return Err(format!("{at}: {value} is not {types:?}"));
        }
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        return Err(format!("{at}: {value} not in {allowed:?}"));
    }
    if let Some(min) = schema.get("minimum").and_then(Value::as_f64)
        && let Some(n) = value.as_f64()
        && n < min
    {
        return Err(format!("{at}: {n} < minimum {min}"));
    }
    if let Some(object) = value.as_object() {
        let properties = schema.get("properties").and_then(Value::as_object);
        for name in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let name = name.as_str().unwrap();
            if !object.contains_key(name) {
                return Err(format!("{at}: required property {name:?} missing"));
            }
        }
        if let Some(properties) = properties {
            for (key, item) in object {
                match properties.get(key) {
                    Some(property) => check(doc, property, item, true, &format!("{at}.{key}"))?,
                    None if strict && schema.get("additionalProperties").is_none() => {
                        return Err(format!("{at}: undocumented property {key:?}"));
                    }
                    None => {}
                }
            }
        }
    }
    if let (Some(items), Some(array)) = (schema.get("items"), value.as_array()) {
        for (i, item) in array.iter().enumerate() {
            check(doc, items, item, true, &format!("{at}[{i}]"))?;
        }
    }
    Ok(())
}

fn known_properties(doc: &Value, schema: &Value) -> BTreeSet<String> {
    if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
        return resolve(doc, reference)
            .map(|s| known_properties(doc, s))
            .unwrap_or_default();
    }
    let mut out: BTreeSet<String> = schema
        .get("properties")
        .and_then(Value::as_object)
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default();
    for branch in schema
        .get("allOf")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        out.extend(known_properties(doc, branch));
    }
    out
}

/// The schema check is not vacuous: it refuses a missing required property, a wrong type, an
/// undocumented property (also through `allOf`), and accepts a conforming body.
#[actix_web::test]
async fn schema_check_rejects_mismatches() {
    let services = services(&Backend::memory().config());
    let doc = document(&services).await;
    let product = json!({"$ref": "#/components/schemas/Product"});
    let ok = json!({"id": 1, "name": "Lamp", "price": 2.5, "description": null});
    assert_eq!(check(&doc, &product, &ok, true, "body"), Ok(()));
    for bad in [
        json!({"id": 1, "price": 2.5}),
        json!({"id": 1, "name": "Lamp", "price": "2.5"}),
        json!({"id": 1.5, "name": "Lamp", "price": 2.5}),
        json!({"id": 1, "name": "Lamp", "price": 2.5, "secret": true}),
        json!([ok.clone()]),
    ] {
        assert!(check(&doc, &product, &bad, true, "body").is_err(), "{bad}");
    }
    let list = json!({"$ref": "#/components/schemas/SessionList"});
    let session = json!({
        "sid": "s", "created_at": 1, "last_used_at": 2, "ip": "::1", "user_agent": "t",
    });
    let mut item = session.clone();
    item["current"] = json!(true);
    assert_eq!(
        check(
            &doc,
            &list,
            &json!({"sessions": [item.clone()]}),
            true,
            "body"
        ),
        Ok(())
    );
    item["refresh_jti"] = json!("leak");
    assert!(check(&doc, &list, &json!({"sessions": [item]}), true, "body").is_err());
    assert!(check(&doc, &list, &json!({"sessions": [session]}), true, "body").is_err());
}

/// Asserts that `reply` to `method path` is documented: its status, its content type, and a
/// body that matches the schema (strictly: no undocumented properties). Answers the body.
fn conforms(doc: &Value, method: &str, path: &str, reply: &Reply) -> Value {
    let op = &doc["paths"][path][method];
    assert!(op.is_object(), "{method} {path} is not documented");
    let response = &op["responses"][reply.status.to_string()];
    assert!(
        response.is_object(),
        "{method} {path}: status {} is not documented; body {}",
        reply.status,
        String::from_utf8_lossy(&reply.body)
    );
    let response = match response.get("$ref").and_then(Value::as_str) {
        Some(r) => resolve(doc, r).unwrap(),
        None => response,
    };
    if reply.body.is_empty() && method == "head" {
        return Value::Null;
    }
    let content_type = reply.header("content-type").expect("content type");
    let content = &response["content"][content_type];
    assert!(
        content.is_object(),
        "{method} {path} {}: content type {content_type} is not documented",
        reply.status
    );
    let body = reply.json();
    if let Err(err) = check(doc, &content["schema"], &body, true, "body") {
        panic!(
            "{method} {path} {}: {err}\nbody: {body}\nschema: {}",
            reply.status, content["schema"]
        );
    }
    body
}

/// Real responses of the main routes (health, products, cache, auth, rate-limit status,
/// events, stats, problems) have documented statuses and content types and match their schemas.
async fn responses_match_their_schemas(backend: Backend) {
    let services = services(&backend.config());
    let doc = document(&services).await;
    let app = common::app(&services).await;
    let get = |uri: &str| TestRequest::get().uri(uri);

    let reply = call(&app, get("/health")).await;
    assert_eq!(reply.status, 200);
    conforms(&doc, "get", "/health", &reply);
    let reply = call(&app, get("/health/live")).await;
    conforms(&doc, "get", "/health/live", &reply);
    let reply = call(&app, get("/stats")).await;
    conforms(&doc, "get", "/stats", &reply);
    let reply = call(&app, get("/ratelimit/status")).await;
    assert_eq!(reply.status, 200);
    let body = conforms(&doc, "get", "/ratelimit/status", &reply);
    assert!(body["identity"].as_str().unwrap().starts_with("ip:"));

    // Auth.
    let reply = call(
        &app,
        TestRequest::post().uri("/auth/register").set_json(json!({
            "username": "schema", "email": "schema@example.com", "password": "correct horse",
        })),
    )
    .await;
    assert_eq!(reply.status, 201);
    conforms(&doc, "post", "/auth/register", &reply);
    let reply = call(
        &app,
        TestRequest::post()
            .uri("/auth/login")
            .set_json(json!({"username": "schema", "password": "correct horse"})),
    )
    .await;
    assert_eq!(reply.status, 200);
    let pair = conforms(&doc, "post", "/auth/login", &reply);
    let token = pair["access_token"].as_str().unwrap().to_owned();
    let reply = call(
        &app,
        TestRequest::post()
            .uri("/auth/login")
            .set_json(json!({"username": "schema", "password": "wrong password"})),
    )
    .await;
    reply.problem(401);
    conforms(&doc, "post", "/auth/login", &reply);
    let reply = call(&app, get("/auth/me").insert_header(bearer(&token))).await;
    assert_eq!(reply.status, 200);
    conforms(&doc, "get", "/auth/me", &reply);
    let reply = call(&app, get("/auth/sessions").insert_header(bearer(&token))).await;
    assert_eq!(reply.status, 200);
    conforms(&doc, "get", "/auth/sessions", &reply);
    let reply = call(&app, get("/auth/me")).await;
    reply.problem(401);
    conforms(&doc, "get", "/auth/me", &reply);

    // Products.
    let reply = call(
        &app,
        TestRequest::post()
            .uri("/products")
            .insert_header(bearer(&token))
            .set_json(json!({"name": "Lamp", "price": 12.5})),
    )
    .await;
    assert_eq!(reply.status, 201);
    let product = conforms(&doc, "post", "/products", &reply);
    let id = product["id"].as_i64().unwrap();
    let reply = call(&app, get("/products")).await;
    assert_eq!(reply.status, 200);
    conforms(&doc, "get", "/products", &reply);
    let reply = call(&app, get(&format!("/products/{id}"))).await;
    assert_eq!(reply.status, 200);
    conforms(&doc, "get", "/products/{id}", &reply);
    let reply = call(
        &app,
        TestRequest::put()
            .uri(&format!("/products/{id}"))
            .insert_header(bearer(&token))
            .set_json(json!({"description": "A lamp."})),
    )
    .await;
    assert_eq!(reply.status, 200);
    conforms(&doc, "put", "/products/{id}", &reply);
    for (req, status) in [
        (get("/products/999"), 404),
        (get("/products/0"), 400),
        (
            TestRequest::post()
                .uri("/products")
                .insert_header(bearer(&token))
                .set_json(json!({"name": "", "price": 1})),
            422,
        ),
        (
            TestRequest::post()
                .uri("/products")
                .insert_header(bearer(&token))
                .insert_header(("content-type", "text/plain"))
                .set_payload("{}"),
            415,
        ),
        (
            TestRequest::post()
                .uri("/products")
                .insert_header(bearer(&token))
                .insert_header(("content-type", "application/json"))
                .set_payload("{"),
            400,
        ),
        (
            TestRequest::post()
                .uri("/products")
                .set_json(json!({"name": "x", "price": 1})),
            401,
        ),
    ] {
        let req = req.to_request();
        let path = if req.path() == "/products" {
            "/products"
        } else {
            "/products/{id}"
        };
        let method = req.method().as_str().to_lowercase();
        let res = test::call_service(&app, req).await;
        let reply = Reply {
            status: res.status().as_u16(),
            headers: res.headers().clone(),
            body: test::read_body(res).await,
        };
        reply.problem(status);
        conforms(&doc, &method, path, &reply);
    }

    // Cache.
    let reply = call(
        &app,
        TestRequest::put()
            .uri("/cache/schema/a?ttl=60")
            .insert_header(bearer(&token))
            .set_json(json!({"nested": [1, "two", null]})),
    )
    .await;
    assert_eq!(reply.status, 200);
    conforms(&doc, "put", "/cache/{key}", &reply);
    let reply = call(&app, get("/cache/schema/a")).await;
    assert_eq!(reply.status, 200);
    let entry = conforms(&doc, "get", "/cache/{key}", &reply);
    assert_eq!(entry["value"], json!({"nested": [1, "two", null]}));
    let reply = call(&app, get("/cache/schema/missing")).await;
    reply.problem(404);
    conforms(&doc, "get", "/cache/{key}", &reply);
    let reply = call(
        &app,
        TestRequest::default()
            .method(Method::HEAD)
            .uri("/cache/schema/a"),
    )
    .await;
    assert_eq!(reply.status, 200);
    conforms(&doc, "head", "/cache/{key}", &reply);
    let reply = call(
        &app,
        TestRequest::delete()
            .uri("/cache?pattern=schema/*")
            .insert_header(bearer(&token)),
    )
    .await;
    assert_eq!(reply.status, 200);
    conforms(&doc, "delete", "/cache", &reply);

    // Events.
    let reply = call(
        &app,
        TestRequest::post()
            .uri("/events/news?event=note")
            .insert_header(bearer(&token))
            .set_json(json!({"text": "hi"})),
    )
    .await;
    assert_eq!(reply.status, 202);
    conforms(&doc, "post", "/events/{channel}", &reply);
    let reply = call(&app, get("/events/news/info")).await;
    assert_eq!(reply.status, 200);
    conforms(&doc, "get", "/events/{channel}/info", &reply);
    let reply = call(
        &app,
        TestRequest::post()
            .uri("/events/ticket")
            .insert_header(bearer(&token)),
    )
    .await;
    assert_eq!(reply.status, 200);
    conforms(&doc, "post", "/events/ticket", &reply);
    let reply = call(
        &app,
        get("/events/user:999999/info").insert_header(bearer(&token)),
    )
    .await;
    reply.problem(403);
    conforms(&doc, "get", "/events/{channel}/info", &reply);

    let reply = call(&app, TestRequest::post().uri("/expensive-operation")).await;
    assert_eq!(reply.status, 200);
    conforms(&doc, "post", "/expensive-operation", &reply);
}

/// A 429 from the global rate limiter is a documented response of the route it denied.
async fn rate_limit_denial_is_documented(backend: Backend) {
    let mut config = backend.config();
    config.rate_limit =
        redkit::ratelimit::RateLimitConfig::parse(&["default=2/60s"], &[] as &[&str]).unwrap();
    let services = services(&config);
    // The document's own request spends the first unit.
    let doc = document(&services).await;
    let app = common::app(&services).await;
    let first = call(&app, TestRequest::get().uri("/products")).await;
    assert_eq!(first.status, 200);
    let denied = call(&app, TestRequest::get().uri("/products")).await;
    denied.problem(429);
    assert!(denied.header("retry-after").is_some());
    conforms(&doc, "get", "/products", &denied);
    let op = &doc["paths"]["/products"]["get"]["responses"]["429"];
    assert!(op["headers"]["Retry-After"].is_object());
}

backend_suite!(
    responses_match_their_schemas,
    rate_limit_denial_is_documented
);

/// Issue 16: the document states what the server enforces (schemathesis found requests valid by
/// the document that the server refused), and SSE answers carry no schema of one string.
#[actix_web::test]
async fn document_states_the_real_constraints() {
    let services = common::services(&Backend::memory().config());
    let doc = document(&services).await;
    let schema = |name: &str| doc["components"]["schemas"][name].clone();
    let register = schema("Register");
    assert_eq!(
        register["properties"]["username"]["pattern"],
        "^[a-z0-9_.-]{3,32}$"
    );
    assert_eq!(register["properties"]["password"]["minLength"], 8);
    assert_eq!(register["properties"]["password"]["maxLength"], 1024);
    assert_eq!(register["properties"]["email"]["maxLength"], 254);
    for name in ["NewProduct", "ProductPatch"] {
        let product = schema(name);
        assert_eq!(product["properties"]["name"]["minLength"], 1, "{name}");
        assert_eq!(product["properties"]["name"]["maxLength"], 200, "{name}");
        assert_eq!(product["properties"]["price"]["minimum"], 0, "{name}");
    }
    let param = |path: &str, method: &str, name: &str| {
        doc["paths"][path][method]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap()["schema"]
            .clone()
    };
    assert_eq!(param("/cache/{key}", "put", "ttl")["maximum"], 2_592_000);
    assert_eq!(param("/cache/{key}", "put", "key")["maxLength"], 127);
    assert_eq!(param("/cache", "delete", "pattern")["minLength"], 1);
    assert_eq!(param("/cache", "delete", "pattern")["maxLength"], 124);
    assert_eq!(
        param("/events/{channel}", "post", "event")["pattern"],
        "^[A-Za-z0-9_.-]{1,64}$"
    );
    assert_eq!(
        param("/events/{channel}", "get", "channel")["pattern"],
        "^[A-Za-z0-9:_.-]{1,128}$"
    );
    for path in ["/events/{channel}", "/events", "/stats/stream"] {
        let content = &doc["paths"][path]["get"]["responses"]["200"]["content"];
        assert!(content.get("text/event-stream").is_some(), "{path}");
        assert_eq!(content["text/event-stream"].get("schema"), None, "{path}");
    }
}

/// Issue 16: a JSON array is not a product body (serde's derive reads structs from arrays):
/// `PUT /products/1` and `POST /products` answer 400 `invalid-body`.
#[actix_web::test]
async fn product_bodies_must_be_objects() {
    let services = common::services(&Backend::memory().config());
    let app = common::app(&services).await;
    common::authorize(&app).await;
    for (method, uri) in [
        (actix_web::http::Method::PUT, "/products/1"),
        (actix_web::http::Method::POST, "/products"),
    ] {
        let reply = call(
            &app,
            common::with_token(actix_web::test::TestRequest::default())
                .method(method)
                .uri(uri)
                .insert_header(("content-type", "application/json"))
                .set_payload(r#"["Pen", 2.5, null]"#),
        )
        .await;
        assert_eq!(
            reply.problem(400)["type"],
            "https://redkit.dev/problems/invalid-body",
            "{uri}"
        );
    }
}

/// `/docs` is an HTML page whose scripts and styles are all same-origin relative URLs, served
/// from the binary with their content types and long cache lifetimes, pointing the UI at
/// `openapi.json` without the online validator.
#[actix_web::test]
async fn docs_are_served_offline() {
    let services = services(&Backend::memory().config());
    let app = common::app(&services).await;
    let page = call(&app, TestRequest::get().uri("/docs")).await;
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    let csp = page.header("content-security-policy").unwrap();
    assert!(csp.contains("script-src 'self';"), "{csp}");
    assert!(csp.contains("connect-src 'self'"), "{csp}");
    let html = String::from_utf8(page.body.to_vec()).unwrap();
    assert!(!html.contains("<script>"), "no inline script");
    let mut urls = Vec::new();
    for attr in ["src=\"", "href=\""] {
        let mut rest = html.as_str();
        while let Some(at) = rest.find(attr) {
            rest = &rest[at + attr.len()..];
            let end = rest.find('"').unwrap();
            urls.push(rest[..end].to_owned());
            rest = &rest[end..];
        }
    }
    assert_eq!(urls.len(), 3, "{urls:?}");
    let expected = [
        ("docs/swagger-ui.css", "text/css; charset=utf-8"),
        (
            "docs/swagger-ui-bundle.js",
            "text/javascript; charset=utf-8",
        ),
        (
            "docs/swagger-initializer.js",
            "text/javascript; charset=utf-8",
        ),
    ];
    for url in &urls {
        assert!(
            !url.contains("//") && !url.starts_with('/') && !url.contains(':'),
            "{url} is not a same-origin relative URL"
        );
        let (file, content_type) = expected
            .iter()
            .find(|(f, _)| url.split('?').next() == Some(*f))
            .unwrap_or_else(|| panic!("unexpected asset {url}"));
        // Relative to `/docs`, i.e. to `/`.
        let reply = call(&app, TestRequest::get().uri(&format!("/{url}"))).await;
        assert_eq!(reply.status, 200, "{url}");
        assert_eq!(reply.header("content-type"), Some(*content_type), "{url}");
        assert_eq!(
            reply.header("cache-control"),
            Some("public, max-age=31536000, immutable")
        );
        let on_disk = match *file {
            "docs/swagger-ui.css" => {
                Some(include_bytes!("../assets/swagger-ui/swagger-ui.css").len())
            }
            "docs/swagger-ui-bundle.js" => {
                Some(include_bytes!("../assets/swagger-ui/swagger-ui-bundle.js").len())
            }
            _ => None,
        };
        if let Some(len) = on_disk {
            assert_eq!(reply.body.len(), len, "{url} is the embedded file");
        } else {
            let script = String::from_utf8(reply.body.to_vec()).unwrap();
            assert!(script.contains("url: \"openapi.json\""), "{script}");
            assert!(script.contains("validatorUrl: null"), "{script}");
        }
    }
}

/// Every `X-Cache` header the document describes names its values as the code sends them
/// (`Tier::header_value`): no other value in backticks, and all of them across the routes.
#[actix_web::test]
async fn x_cache_values_are_the_ones_sent() {
    use redkit::cache::Tier;
    let sent: BTreeSet<&str> = [Tier::L1, Tier::L2, Tier::Miss, Tier::Stale]
        .into_iter()
        .map(Tier::header_value)
        .collect();
    let services = services(&Backend::memory().config());
    let doc = document(&services).await;
    let mut documented = BTreeSet::new();
    let mut headers = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let Some(responses) = op["responses"].as_object() else {
                continue;
            };
            for (status, response) in responses {
                let Some(description) = response["headers"]["X-Cache"]["description"].as_str()
                else {
                    continue;
                };
                headers += 1;
                for value in description.split('`').skip(1).step_by(2) {
                    assert!(
                        sent.contains(value),
                        "{method} {path} {status}: X-Cache `{value}` is never sent"
                    );
                    documented.insert(value);
                }
            }
        }
    }
    assert_eq!(headers, 3, "X-Cache is documented on three responses");
    assert_eq!(documented, sent);
}
