//! Static assets, embedded in the binary so the server runs from any
//! directory and a container needs nothing beside it.

use actix_web::http::header;
use actix_web::{get, web, HttpResponse};

/// (name, content type, bytes).
const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "htmx.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/htmx.min.js"),
    ),
    (
        "ages.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/ages.js"),
    ),
    (
        "leaving.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/leaving.js"),
    ),
    (
        "live.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/live.js"),
    ),
    (
        "app.css",
        "text/css; charset=utf-8",
        include_bytes!("../../assets/app.css"),
    ),
    (
        "htmx.LICENSE",
        "text/plain; charset=utf-8",
        include_bytes!("../../assets/htmx.LICENSE"),
    ),
];

/// `GET /assets/{name}`: long-lived cache headers (URLs carry a version).
#[get("/assets/{name}")]
pub async fn asset(name: web::Path<String>) -> HttpResponse {
    match ASSETS.iter().find(|(n, _, _)| *n == name.as_str()) {
        Some((_, content_type, bytes)) => HttpResponse::Ok()
            .insert_header((header::CACHE_CONTROL, "public, max-age=31536000, immutable"))
            .content_type(*content_type)
            .body(*bytes),
        None => HttpResponse::NotFound()
            .content_type("text/plain")
            .body("no such asset"),
    }
}
