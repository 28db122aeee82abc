//! `/openapi.json` and `/docs`: the document is OpenAPI 3.1 with resolvable references, it lists
//! exactly the routes and methods the app registers, real responses match their documented
//! schemas (both backends), and the UI is served from the binary with same-origin assets only.

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
use serde_json::{Value, json};

use crate::common::{Backend, Reply, bearer, call, services};

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
    let app = crate::common::app(services).await;
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

mod document;
mod schemas;
