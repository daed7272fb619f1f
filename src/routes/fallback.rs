//! What a request that no route took gets: 405 with `Allow` when its path is
//! one of the routes' but its method is not, 404 otherwise.
//!
//! actix-web's method macros (`#[get]`, `#[post]`) guard each resource by
//! method, so a known path with another method falls through to the default
//! service like an unknown path. The router still knows which pattern the
//! path matches ([`HttpRequest::match_pattern`]); [`ROUTES`] knows which
//! methods each pattern takes. A route added to [`super::configure`] belongs
//! in [`ROUTES`] too (a test checks every entry against the server).

use actix_web::http::{header, StatusCode};
use actix_web::{HttpRequest, HttpResponse};

use crate::views;

/// Every route pattern and the methods it takes, as `Allow` lists them.
pub const ROUTES: &[(&str, &str)] = &[
    ("/", "GET"),
    ("/login", "GET, POST"),
    ("/logout", "POST"),
    ("/dashboard", "GET"),
    ("/widgets/{id}", "GET"),
    ("/widgets/{id}/refresh", "POST"),
    ("/updates", "GET"),
    ("/api/widgets/{id}", "GET"),
    ("/api/invalidate", "POST"),
    ("/metrics", "GET"),
    ("/healthz", "GET"),
    ("/readyz", "GET"),
    ("/assets/{name}", "GET"),
    ("/admin", "GET"),
    ("/admin.json", "GET"),
    ("/admin/login", "POST"),
    ("/admin/logout", "POST"),
];

/// The methods a route pattern takes, if it is one of [`ROUTES`].
pub fn allowed(pattern: &str) -> Option<&'static str> {
    ROUTES
        .iter()
        .find(|(p, _)| *p == pattern)
        .map(|(_, allow)| *allow)
}

/// The default service: 405 with `Allow` for a known path, else 404.
pub async fn not_found_or_wrong_method(req: HttpRequest) -> HttpResponse {
    let Some(allow) = req.match_pattern().as_deref().and_then(allowed) else {
        return HttpResponse::NotFound().finish();
    };
    let message = format!("This address does not take that method; it takes {allow}.");
    HttpResponse::build(StatusCode::METHOD_NOT_ALLOWED)
        .insert_header((header::ALLOW, allow))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .content_type("text/html; charset=utf-8")
        .body(views::error_fragment(&message).into_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_are_listed_once() {
        for (i, (pattern, _)) in ROUTES.iter().enumerate() {
            assert!(
                ROUTES[i + 1..].iter().all(|(p, _)| p != pattern),
                "{pattern} is listed twice"
            );
        }
        assert_eq!(allowed("/login"), Some("GET, POST"));
        assert_eq!(allowed("/nope"), None);
    }
}
