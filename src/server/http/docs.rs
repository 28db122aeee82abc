//! `GET /docs`: Swagger UI over [`/openapi.json`](super::openapi), served from the binary.
//!
//! The page, the UI's script and stylesheet and a small start-up script are compiled in
//! (`include_str!`/`include_bytes!` of `assets/swagger-ui/`, swagger-ui-dist 5.35.0, Apache-2.0):
//! nothing is fetched from a CDN, so the UI works offline. URLs are relative, so the UI also
//! works when redkit is mounted in a scope. The assets' URLs carry a version query, so they can
//! be cached for a year. The page has its own Content-Security-Policy: scripts only from this
//! origin (no inline script), and no validator badge (Swagger UI would call out to
//! validator.swagger.io).

use actix_web::{HttpResponse, http::header, web};

/// swagger-ui-dist's version, part of the asset URLs so that an upgrade busts caches.
const ASSET_VERSION: &str = concat!("5.35.0-", env!("CARGO_PKG_VERSION"));

const BUNDLE: &[u8] = include_bytes!("../../../assets/swagger-ui/swagger-ui-bundle.js");
const CSS: &[u8] = include_bytes!("../../../assets/swagger-ui/swagger-ui.css");

/// Starts the UI on the document; a file, not an inline script, so the CSP needs no
/// `'unsafe-inline'` for scripts.
const INITIALIZER: &str = r##"window.addEventListener("load", function () {
  window.ui = SwaggerUIBundle({
    url: "openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
    validatorUrl: null
  });
});
"##;

/// The page's policy: everything from this origin; Swagger UI sets inline styles and uses
/// `data:` images for its icons.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
                   img-src 'self' data:; font-src 'self' data:; connect-src 'self'; \
                   base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// A year: the asset URLs change with their content.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";

pub(super) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/docs").route(web::get().to(page)))
        .service(web::resource("/docs/swagger-ui-bundle.js").route(web::get().to(bundle)))
        .service(web::resource("/docs/swagger-ui.css").route(web::get().to(css)))
        .service(web::resource("/docs/swagger-initializer.js").route(web::get().to(initializer)));
}

fn html() -> String {
    format!(
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>redkit API</title>
<link rel="stylesheet" href="docs/swagger-ui.css?v={ASSET_VERSION}">
</head>
<body>
<div id="swagger-ui"></div>
<script src="docs/swagger-ui-bundle.js?v={ASSET_VERSION}"></script>
<script src="docs/swagger-initializer.js?v={ASSET_VERSION}"></script>
</body>
</html>
"#
    )
}

/// The interactive API documentation (Swagger UI), with no external assets.
#[utoipa::path(
    get,
    path = "/docs",
    operation_id = "docs_page",
    tag = "docs",
    responses((status = 200, description = "The Swagger UI page.",
        content_type = "text/html; charset=utf-8", body = String))
)]
async fn page() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CONTENT_SECURITY_POLICY, CSP))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .body(html())
}

/// A static asset whose URL carries its version: cacheable for a year (the demo page's too).
pub(super) fn asset(content_type: &'static str, body: &'static [u8]) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(content_type)
        .insert_header((header::CACHE_CONTROL, IMMUTABLE))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .body(body)
}

/// Swagger UI's script (swagger-ui-dist 5.35.0).
#[utoipa::path(
    get,
    path = "/docs/swagger-ui-bundle.js",
    operation_id = "docs_bundle",
    tag = "docs",
    responses((status = 200, description = "The script (cacheable for a year).",
        content_type = "text/javascript; charset=utf-8", body = String))
)]
async fn bundle() -> HttpResponse {
    asset("text/javascript; charset=utf-8", BUNDLE)
}

/// Swagger UI's stylesheet (swagger-ui-dist 5.35.0).
#[utoipa::path(
    get,
    path = "/docs/swagger-ui.css",
    operation_id = "docs_css",
    tag = "docs",
    responses((status = 200, description = "The stylesheet (cacheable for a year).",
        content_type = "text/css; charset=utf-8", body = String))
)]
async fn css() -> HttpResponse {
    asset("text/css; charset=utf-8", CSS)
}

/// The script that starts Swagger UI on `openapi.json`.
#[utoipa::path(
    get,
    path = "/docs/swagger-initializer.js",
    operation_id = "docs_initializer",
    tag = "docs",
    responses((status = 200, description = "The script (cacheable for a year).",
        content_type = "text/javascript; charset=utf-8", body = String))
)]
async fn initializer() -> HttpResponse {
    asset("text/javascript; charset=utf-8", INITIALIZER.as_bytes())
}
