//! The document: OpenAPI 3.1, resolvable references, exactly the registered routes and methods, its
//! stated constraints, and the offline UI.

use super::*;

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

/// The document states what the server enforces (schemathesis found requests valid by
/// the document that the server refused), and SSE answers carry no schema of one string.
#[actix_web::test]
async fn document_states_the_real_constraints() {
    let services = crate::common::services(&Backend::memory().config());
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

/// A JSON array is not a product body (serde's derive reads structs from arrays):
/// `PUT /products/1` and `POST /products` answer 400 `invalid-body`.
#[actix_web::test]
async fn product_bodies_must_be_objects() {
    let services = crate::common::services(&Backend::memory().config());
    let app = crate::common::app(&services).await;
    crate::common::authorize(&app).await;
    for (method, uri) in [
        (actix_web::http::Method::PUT, "/products/1"),
        (actix_web::http::Method::POST, "/products"),
    ] {
        let reply = call(
            &app,
            crate::common::with_token(actix_web::test::TestRequest::default())
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
    let app = crate::common::app(&services).await;
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
            "docs/swagger-ui.css" => Some(
                include_bytes!(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/assets/swagger-ui/swagger-ui.css"
                ))
                .len(),
            ),
            "docs/swagger-ui-bundle.js" => Some(
                include_bytes!(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/assets/swagger-ui/swagger-ui-bundle.js"
                ))
                .len(),
            ),
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
