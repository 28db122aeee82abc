//! Real responses match their documented schemas, on every backend.

use super::*;

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
    let app = crate::common::app(&services).await;
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
    let app = crate::common::app(&services).await;
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
