//! Refusal of cross-site requests to the browser's state-changing routes.
//!
//! SameSite=Lax cookies stop most cross-site requests from carrying a
//! session, but not a login CSRF (signing a victim in as the attacker), and
//! not a request from a sibling subdomain. This middleware refuses, with 403
//! and a message, every request with an unsafe method (anything but `GET`,
//! `HEAD`, `OPTIONS`, `TRACE`) except the machine webhook `/api/invalidate`,
//! when:
//!
//! - `Sec-Fetch-Site` is `cross-site` or `same-site` (a sibling subdomain is
//!   another origin too; browsers that send it also send an `Origin` that
//!   would be refused below); or
//! - `Origin` is present and is not this server's origin: its scheme, host
//!   and port (default ports filled in) must equal the request's, as
//!   [`actix_web::dev::ConnectionInfo`] sees them (`Forwarded`,
//!   `X-Forwarded-Proto`, `X-Forwarded-Host`, then `Host`). `Origin: null`
//!   (sandboxed frames, some redirects) is foreign.
//!
//! `Sec-Fetch-Site: same-origin` or `none` (the user typed or bookmarked the
//! address) and requests with neither header (curl, scripts, old browsers)
//! pass. A browser cannot forge these headers, and a client that can set
//! them does not need a victim's browser.

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderMap};
use actix_web::http::{Method, StatusCode};
use actix_web::middleware::Next;
use actix_web::{HttpResponse, ResponseError};

use crate::views;

/// The route that is for machines and never checked.
const EXEMPT: &[&str] = &["/api/invalidate"];

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CrossSiteError {
    /// `Sec-Fetch-Site` says the request came from another site.
    #[error(
        "This request came from another site ({0}) and was refused. \
         Please use percache's own page."
    )]
    FetchSite(&'static str),
    /// `Origin` names another origin (or `null`).
    #[error(
        "This request came from another origin and was refused. \
         Please use percache's own page."
    )]
    ForeignOrigin,
}

impl ResponseError for CrossSiteError {
    fn status_code(&self) -> StatusCode {
        StatusCode::FORBIDDEN
    }

    fn error_response(&self) -> HttpResponse {
        HttpResponse::build(self.status_code())
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .content_type("text/html; charset=utf-8")
            .body(views::error_fragment(&self.to_string()).into_string())
    }
}

/// The middleware (`actix_web::middleware::from_fn`).
pub async fn refuse_cross_site(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    if is_guarded(req.method(), req.path()) {
        let own = {
            let info = req.connection_info();
            (info.scheme().to_owned(), info.host().to_owned())
        };
        if let Err(refusal) = check(req.headers(), &own.0, &own.1) {
            ::metrics::counter!("percache_refused_total", "reason" => "cross_site").increment(1);
            tracing::warn!(reason = %refusal, path = req.path(), "cross-site request refused");
            let response = refusal.error_response();
            return Ok(req.into_response(response).map_into_right_body());
        }
    }
    next.call(req).await.map(ServiceResponse::map_into_left_body)
}

/// Whether a request with this method and path is checked.
fn is_guarded(method: &Method, path: &str) -> bool {
    let safe = matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    );
    !safe && !EXEMPT.contains(&path)
}

/// Checks the request's headers against this server's `scheme` and `host`
/// (`host[:port]`).
pub fn check(headers: &HeaderMap, scheme: &str, host: &str) -> Result<(), CrossSiteError> {
    if let Some(site) = headers.get("sec-fetch-site") {
        let site = site.as_bytes();
        if site.eq_ignore_ascii_case(b"cross-site") {
            return Err(CrossSiteError::FetchSite("cross-site"));
        }
        if site.eq_ignore_ascii_case(b"same-site") {
            return Err(CrossSiteError::FetchSite("same-site"));
        }
    }
    let mut origins = headers.get_all(header::ORIGIN);
    if let Some(origin) = origins.next() {
        let single = origins.next().is_none();
        let ours = origin
            .to_str()
            .is_ok_and(|origin| single && same_origin(origin, scheme, host));
        if !ours {
            return Err(CrossSiteError::ForeignOrigin);
        }
    }
    Ok(())
}

/// Whether `origin` (`scheme://host[:port]`) is `scheme` + `host` (`host[:port]`).
fn same_origin(origin: &str, scheme: &str, host: &str) -> bool {
    let Some((origin_scheme, authority)) = origin.trim().split_once("://") else {
        return false; // `null`, or garbage
    };
    if !origin_scheme.eq_ignore_ascii_case(scheme) || authority.contains(['/', '?', '#', '@']) {
        return false;
    }
    let default = default_port(scheme);
    match (host_and_port(authority, default), host_and_port(host, default)) {
        (Some((a, a_port)), Some((b, b_port))) => a.eq_ignore_ascii_case(b) && a_port == b_port,
        _ => false,
    }
}

fn default_port(scheme: &str) -> Option<u16> {
    if scheme.eq_ignore_ascii_case("https") {
        Some(443)
    } else if scheme.eq_ignore_ascii_case("http") {
        Some(80)
    } else {
        None
    }
}

/// `example.com`, `example.com:8080`, `[::1]:8080` → host and port (the
/// scheme's default when absent). `None` for an empty host or a bad port.
fn host_and_port(authority: &str, default: Option<u16>) -> Option<(&str, Option<u16>)> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        match after {
            "" => (inside, None),
            _ => (inside, Some(after.strip_prefix(':')?)),
        }
    } else {
        match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return None;
    }
    let port = match port {
        None => default,
        Some(p) => Some(p.parse::<u16>().ok()?),
    };
    Some((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::{HeaderName, HeaderValue};

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    const HOST: &str = "127.0.0.1:8080";

    #[test]
    fn same_origin_and_headerless_requests_pass() {
        for pairs in [
            vec![],
            vec![("origin", "http://127.0.0.1:8080")],
            vec![
                ("origin", "HTTP://127.0.0.1:8080"),
                ("sec-fetch-site", "same-origin"),
            ],
            vec![("sec-fetch-site", "same-origin")],
            vec![("sec-fetch-site", "none")],
        ] {
            assert_eq!(check(&headers(&pairs), "http", HOST), Ok(()), "{pairs:?}");
        }
    }

    #[test]
    fn cross_site_and_foreign_origins_are_refused() {
        let refused = [
            vec![("sec-fetch-site", "cross-site")],
            vec![("sec-fetch-site", "same-site")],
            vec![("origin", "https://evil.example")],
            vec![("origin", "null")],
            vec![("origin", "http://127.0.0.1:8081")],
            vec![("origin", "https://127.0.0.1:8080")],
            vec![("origin", "http://127.0.0.1:8080.evil.example")],
            vec![("origin", "http://127.0.0.1:8080/path")],
            vec![("origin", "http://user@127.0.0.1:8080")],
            vec![
                ("origin", "http://127.0.0.1:8080"),
                ("origin", "https://evil.example"),
            ],
            vec![
                ("origin", "http://127.0.0.1:8080"),
                ("sec-fetch-site", "cross-site"),
            ],
        ];
        for pairs in refused {
            assert!(check(&headers(&pairs), "http", HOST).is_err(), "{pairs:?}");
        }
    }

    #[test]
    fn default_ports_and_ipv6_hosts_compare_as_equal() {
        assert!(same_origin("https://example.com", "https", "example.com:443"));
        assert!(same_origin("https://example.com:443", "https", "Example.COM"));
        assert!(same_origin("http://[::1]:8080", "http", "[::1]:8080"));
        assert!(!same_origin("http://[::1]:8080", "http", "[::2]:8080"));
        assert!(!same_origin("http://example.com", "https", "example.com"));
        assert!(!same_origin("http://", "http", "example.com"));
        assert!(!same_origin("http://example.com:99999", "http", "example.com"));
    }

    #[test]
    fn only_unsafe_methods_outside_the_webhook_are_checked() {
        assert!(is_guarded(&Method::POST, "/login"));
        assert!(is_guarded(&Method::PUT, "/widgets/1"));
        assert!(is_guarded(&Method::POST, "/widgets/1/refresh"));
        assert!(!is_guarded(&Method::GET, "/login"));
        assert!(!is_guarded(&Method::POST, "/api/invalidate"));
    }
}
