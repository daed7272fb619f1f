//! The responses the page routes share: HTML that no shared cache keeps,
//! and redirects.

use actix_web::http::{header, StatusCode};
use actix_web::HttpResponse;

/// A 303 See Other to `to`.
pub(crate) fn see_other(to: &'static str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, to))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .finish()
}

/// An HTML response that no shared cache may keep.
pub(crate) fn html(status: StatusCode, body: maud::Markup) -> HttpResponse {
    HttpResponse::build(status)
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .content_type("text/html; charset=utf-8")
        .body(body.into_string())
}
