//! The responses the page routes share: HTML that no shared cache keeps,
//! and redirects.

use actix_web::http::{header, StatusCode};
use actix_web::HttpResponse;

use crate::cache::{Lookup, Outcome};

/// Logs how a widget request was answered, with the request's span (its
/// id and route). A fresh hit, the steady state of a warm cache, is logged
/// at debug: at info every hit would be a line, formatted on the worker,
/// for what `percache_cache_requests_total{outcome="hit"}` already counts.
/// Every other outcome (miss, stale, error…) is worth its line at info.
pub(crate) fn log_served(lookup: &Lookup) {
    let widget = lookup.instance.id();
    let outcome = lookup.outcome.label();
    if matches!(lookup.outcome, Outcome::Hit { .. }) {
        tracing::debug!(%widget, outcome, "widget served");
    } else {
        tracing::info!(%widget, outcome, "widget served");
    }
}

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
