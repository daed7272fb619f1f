//! The responses the page routes share: HTML that no shared cache keeps,
//! and redirects.

use actix_web::body::MessageBody;
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::HttpResponse;

use crate::cache::{status, Lookup, Outcome};

// The header values responses share, checked once when compiled: made at
// run time, `HeaderValue::from_static` checks every byte on every response
// (about 470 instructions of a warm hit's 7k-instruction handler, callgrind).
// A response takes a copy of one (a static
// `Bytes`: no allocation, no count).

/// `Content-Type` of HTML responses.
pub(crate) static HTML: HeaderValue = HeaderValue::from_static("text/html; charset=utf-8");
/// `Content-Type` of JSON responses.
pub(crate) static JSON: HeaderValue = HeaderValue::from_static("application/json");
/// `Cache-Control` of a user's data: for no shared cache, and not kept.
static PRIVATE_NO_STORE: HeaderValue = HeaderValue::from_static("private, no-store");
/// `Cache-Control` of the other HTML responses.
static NO_STORE: HeaderValue = HeaderValue::from_static("no-store");

/// A 200 answering a widget request from `lookup`: its `Cache-Status`,
/// `private, no-store` (a user's data, for no shared cache) and
/// `content_type`.
pub(crate) fn widget_ok(
    lookup: &Lookup,
    content_type: &'static HeaderValue,
    body: impl MessageBody + 'static,
) -> HttpResponse {
    let mut res = direct(StatusCode::OK, &PRIVATE_NO_STORE, content_type, body);
    let (name, value) = status::header(lookup);
    res.headers_mut().insert(name, value);
    res
}

/// A response with its `Cache-Control` and `Content-Type`, made directly,
/// not through the builder, which parses each name and value it is given
/// and copies each value: on a warm hit that was a fifth of the handler's
/// work.
fn direct(
    status: StatusCode,
    cache_control: &'static HeaderValue,
    content_type: &'static HeaderValue,
    body: impl MessageBody + 'static,
) -> HttpResponse {
    let mut res = HttpResponse::with_body(status, body).map_into_boxed_body();
    let headers = res.headers_mut();
    headers.insert(header::CACHE_CONTROL, cache_control.clone());
    headers.insert(header::CONTENT_TYPE, content_type.clone());
    res
}

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
    direct(status, &NO_STORE, &HTML, body.into_string())
}

/// The request's reference, as errors show it to users and the log keeps
/// it (the request id of its span).
pub(crate) fn reference(req: &actix_web::HttpRequest) -> String {
    use actix_web::HttpMessage as _;
    req.extensions()
        .get::<tracing_actix_web::RequestId>()
        .map(|id| id.to_string())
        .unwrap_or_else(|| format!("{:016x}", fastrand::u64(..)))
}
