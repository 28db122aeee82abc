//! The Grafana dashboard shipped in `dashboards/redkit.json` queries only what `/metrics`
//! exports: every metric name in every PromQL expression of the dashboard is checked against the
//! families of a real scrape of a Redis-backed instance that has served traffic.

use std::collections::{BTreeMap, BTreeSet};

use actix_web::test::TestRequest;
use serde_json::Value;

use crate::common::{Backend, app, call, services, with_token};

const DASHBOARD: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/dashboards/redkit.json"
));

/// Every family of a scrape, by name, with its type (`# TYPE` lines).
fn families(exposition: &str) -> BTreeMap<String, String> {
    exposition
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .map(|rest| {
            let (name, kind) = rest.split_once(' ').unwrap();
            (name.to_owned(), kind.to_owned())
        })
        .collect()
}

/// The names of the samples of a scrape (what a query can select).
fn sample_names(exposition: &str) -> BTreeSet<String> {
    exposition
        .lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| line.split(['{', ' ']).next().unwrap().to_owned())
        .collect()
}

/// PromQL keywords followed by a parenthesised list of label names.
const GROUPING: [&str; 6] = [
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];
/// PromQL words that are neither metrics nor functions.
const KEYWORDS: [&str; 5] = ["and", "or", "unless", "bool", "offset"];

/// The metric names a PromQL expression selects: identifiers that are not functions or
/// aggregations (followed by `(`), keywords, label names (inside `{}` or after `by`/`without`/
/// ...), durations (`[5m]`), strings, numbers or Grafana variables (`$__rate_interval`).
fn metric_names(expr: &str) -> BTreeSet<String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    let skip_to = |from: usize, close: char| {
        let mut j = from;
        while j < chars.len() && chars[j] != close {
            if chars[j] == '"' {
                j += 1;
                while j < chars.len() && chars[j] != '"' {
                    j += if chars[j] == '\\' { 2 } else { 1 };
                }
            }
            j += 1;
        }
        j + 1
    };
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' {
            i = skip_to(i + 1, c);
        } else if c == '{' {
            i = skip_to(i + 1, '}');
        } else if c == '[' {
            i = skip_to(i + 1, ']');
        } else if c == '$' || c.is_ascii_digit() || c == '.' {
            i += 1;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || "_.{}".contains(chars[i]))
            {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
            {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let mut next = i;
            while next < chars.len() && chars[next].is_whitespace() {
                next += 1;
            }
            let following: String = chars[next..]
                .iter()
                .take_while(|c| c.is_ascii_alphabetic())
                .collect();
            // `sum(...)`, and `sum by (...) (...)` / `sum without (...) (...)`.
            let called =
                chars.get(next) == Some(&'(') || following == "by" || following == "without";
            if GROUPING.contains(&word.as_str()) {
                if called {
                    i = skip_to(next + 1, ')');
                }
            } else if !called && !KEYWORDS.contains(&word.as_str()) {
                names.insert(word);
            }
        } else {
            i += 1;
        }
    }
    names
}

/// The extractor itself: functions, aggregations, grouping labels, matchers, durations,
/// numbers and variables are not metric names.
#[test]
fn metric_names_are_extracted_from_promql() {
    let expr = r#"histogram_quantile(0.99, sum by (instance, le) (rate(http_request_duration_seconds_bucket{instance=~"$instance", route!="/x{y}"}[$__rate_interval])))
        / ignoring(tier) group_left sum without (result) (cache_lookups_total offset 5m) > bool 1e3
        or on(instance) redis_up{job="a\"b"} * 100 and max_over_time(sse_clients[5m:1m])"#;
    let names: Vec<String> = metric_names(expr).into_iter().collect();
    assert_eq!(
        names,
        [
            "cache_lookups_total",
            "http_request_duration_seconds_bucket",
            "redis_up",
            "sse_clients"
        ]
    );
    assert!(
        metric_names("label_values(http_requests_total, instance)").contains("http_requests_total")
    );
}

/// The selector of a variable's `label_values(selector, label)` query (the label is no metric).
fn variable_selector(query: &str) -> String {
    query
        .strip_prefix("label_values(")
        .and_then(|rest| rest.strip_suffix(')'))
        .and_then(|args| args.rsplit_once(','))
        .map_or(query, |(selector, _label)| selector)
        .to_owned()
}

/// Every PromQL expression of the dashboard: panel targets' `expr` and query variables.
fn expressions(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("expr", Value::String(expr)) => out.push(expr.clone()),
                    ("query", Value::String(query)) if query.contains('(') => {
                        out.push(query.clone())
                    }
                    ("query", Value::Object(query)) => {
                        if let Some(Value::String(q)) = query.get("query") {
                            out.push(variable_selector(q));
                        }
                    }
                    _ => expressions(value, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| expressions(item, out)),
        _ => {}
    }
}

/// The family a sample name belongs to, given the scrape's families and their types: counters
/// are selected as `<family>_total`, histograms as `<family>_bucket`/`_sum`/`_count`, gauges by
/// their name.
fn family_of<'a>(
    name: &'a str,
    families: &BTreeMap<String, String>,
) -> Option<(&'a str, &'static str)> {
    let typed = |family: &'a str, kind: &'static str| {
        (families.get(family).map(String::as_str) == Some(kind)).then_some((family, kind))
    };
    typed(name, "gauge")
        .or_else(|| typed(name.strip_suffix("_total")?, "counter"))
        .or_else(|| {
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))?;
            typed(family, "histogram")
        })
}

/// A Redis-backed instance that has served cache hits and misses, allowed and denied requests
/// of a policy, a published event and Redis commands: every family then has samples.
async fn scrape_after_traffic() -> String {
    let backend = Backend::redis();
    let mut config = crate::common::with_test_secret(backend.config());
    config.rate_limit = redkit::ratelimit::RateLimitConfig::parse(
        &["default=1000/60s", "POST /expensive-operation=1/60s"],
        &[] as &[&str],
    )
    .unwrap();
    let services = services(&config);
    let app = app(&services).await;
    crate::common::authorize(&app).await;
    let put = with_token(TestRequest::put().uri("/cache/k")).set_json(serde_json::json!(1));
    assert_eq!(call(&app, put).await.status, 200);
    assert_eq!(
        call(&app, TestRequest::get().uri("/cache/k")).await.status,
        200
    );
    assert_eq!(
        call(&app, TestRequest::get().uri("/cache/none"))
            .await
            .status,
        404
    );
    for status in [200, 429] {
        let reply = call(&app, TestRequest::post().uri("/expensive-operation")).await;
        assert_eq!(reply.status, status);
    }
    let publish =
        with_token(TestRequest::post().uri("/events/dash")).set_json(serde_json::json!({"a": 1}));
    assert_eq!(call(&app, publish).await.status, 202);
    let reply = call(&app, TestRequest::get().uri("/metrics")).await;
    assert_eq!(reply.status, 200);
    String::from_utf8(reply.body.to_vec()).unwrap()
}

/// Every metric the dashboard queries is one a real `/metrics` exports, with samples, selected
/// by the right name for its type; so the dashboard and the exporter cannot drift apart.
#[actix_web::test]
async fn dashboard_queries_only_exported_metrics() {
    let dashboard: Value = serde_json::from_str(DASHBOARD).expect("the dashboard is JSON");
    let mut exprs = Vec::new();
    expressions(&dashboard, &mut exprs);
    assert!(exprs.len() >= 20, "{exprs:?}");
    let scrape = scrape_after_traffic().await;
    let families = families(&scrape);
    let samples = sample_names(&scrape);
    let mut queried = BTreeSet::new();
    for expr in &exprs {
        let names = metric_names(expr);
        assert!(!names.is_empty(), "no metric in {expr:?}");
        for name in names {
            let family = family_of(&name, &families)
                .unwrap_or_else(|| panic!("{name} (in {expr:?}) is not exported: {families:?}"));
            assert!(
                samples.contains(&name) || family.1 == "histogram",
                "{name} has no sample: {scrape}"
            );
            queried.insert(family.0.to_owned());
        }
    }
    // The views the dashboard promises are all there.
    for family in [
        "http_requests",
        "http_request_duration_seconds",
        "cache_lookups",
        "ratelimit_decisions",
        "ratelimit_fail_open",
        "sse_clients",
        "sse_deliveries",
        "redis_up",
        "redis_ping_latency_microseconds",
        "redis_command_duration_seconds",
    ] {
        assert!(
            queried.contains(family),
            "the dashboard does not query {family}"
        );
    }
}

/// The dashboard imports as is: one Prometheus datasource input that every panel and query
/// uses, unique panel ids, panels that fit the 24-column grid without overlapping, and every
/// query filtered by the `job` and `instance` variables (which exist).
#[test]
fn dashboard_is_importable() {
    let dashboard: Value = serde_json::from_str(DASHBOARD).unwrap();
    let inputs = dashboard["__inputs"].as_array().unwrap();
    assert_eq!(inputs.len(), 1);
    assert_eq!(inputs[0]["name"], "DS_PROMETHEUS");
    assert_eq!(inputs[0]["type"], "datasource");
    assert_eq!(inputs[0]["pluginId"], "prometheus");
    assert!(dashboard["id"].is_null());
    assert!(dashboard["uid"].is_string() && dashboard["title"] == "redkit");
    let variables: Vec<&str> = dashboard["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(variables, ["job", "instance"]);
    let datasource = serde_json::json!({"type": "prometheus", "uid": "${DS_PROMETHEUS}"});
    let panels = dashboard["panels"].as_array().unwrap();
    let mut ids = BTreeSet::new();
    let mut boxes = Vec::new();
    let mut rows = 0;
    for panel in panels {
        assert!(
            ids.insert(panel["id"].as_u64().unwrap()),
            "duplicate id: {panel}"
        );
        let grid = &panel["gridPos"];
        let [x, y, w, h] = ["x", "y", "w", "h"].map(|k| grid[k].as_u64().unwrap());
        assert!(x + w <= 24 && w > 0 && h > 0, "{panel}");
        for (other_x, other_y, other_w, other_h) in &boxes {
            let apart = x >= other_x + other_w
                || other_x >= &(x + w)
                || y >= other_y + other_h
                || other_y >= &(y + h);
            assert!(apart, "panel overlaps another: {panel}");
        }
        boxes.push((x, y, w, h));
        if panel["type"] == "row" {
            rows += 1;
            continue;
        }
        assert_eq!(panel["datasource"], datasource, "{panel}");
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty());
        let refs: BTreeSet<&str> = targets
            .iter()
            .map(|t| t["refId"].as_str().unwrap())
            .collect();
        assert_eq!(refs.len(), targets.len(), "{panel}");
        for target in targets {
            assert_eq!(target["datasource"], datasource, "{panel}");
            let expr = target["expr"].as_str().unwrap();
            assert!(
                expr.contains(r#"job=~"$job", instance=~"$instance""#),
                "{expr}"
            );
        }
    }
    assert_eq!(rows, 6);
}
