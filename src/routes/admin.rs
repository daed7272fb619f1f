//! `/admin`: the operator page and its JSON (SPEC §5), behind `--admin-token`.
//!
//! - `GET /admin`: the page (`?format=json`: the JSON); `GET /admin.json`: the JSON.
//! - `POST /admin/login` (form field `token`): sets the page's own cookie, 303 to `/admin`.
//! - `POST /admin/logout`: removes it, 303 to `/admin`.
//!
//! Without a token configured every one of them is 404. Access takes
//! `Authorization: Bearer <token>` or the page's cookie; anything else is
//! 401 with `WWW-Authenticate: Bearer`, and the sign-in form (HTML) or
//! `{"error": ...}` (JSON). A wrong bearer token is refused even when a
//! good cookie comes with it.

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{get, post, web, HttpRequest, HttpResponse, ResponseError};
use serde::Deserialize;

use crate::admin::auth::{self, COOKIE_NAME};
use crate::admin::{Admin, Figures};
use crate::defence::login_rate::{LoginLimiter, WrongTokens};
use crate::session::ended::SessionEnds;
use crate::views;

/// Why a request to `/admin` was not served.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// No `--admin-token`: the page does not exist.
    #[error("not found")]
    Disabled,
    /// No token, or a wrong one.
    #[error("{}", .message.unwrap_or("the admin token is required"))]
    Unauthorized {
        /// Answer in JSON rather than with the form.
        json: bool,
        /// What to tell the visitor (`None`: they showed no credential).
        message: Option<&'static str>,
    },
    /// Too many wrong tokens from this address: wait this many seconds.
    #[error("too many wrong admin tokens; try again in {retry_after} s")]
    TooMany {
        /// Answer in JSON rather than with the form.
        json: bool,
        /// Whole seconds to wait (`Retry-After`).
        retry_after: u64,
    },
}

impl ResponseError for AdminError {
    fn status_code(&self) -> StatusCode {
        match self {
            AdminError::Disabled => StatusCode::NOT_FOUND,
            AdminError::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            AdminError::TooMany { .. } => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let (json, message) = match self {
            // Off: the very answer of an unknown path.
            AdminError::Disabled => return HttpResponse::NotFound().finish(),
            AdminError::Unauthorized { json, message } => (*json, *message),
            AdminError::TooMany { json, retry_after } => {
                let mut resp = HttpResponse::build(self.status_code());
                resp.insert_header((header::CACHE_CONTROL, "no-store"))
                    .insert_header((header::RETRY_AFTER, retry_after.to_string()));
                return if *json {
                    resp.json(serde_json::json!({ "error": self.to_string() }))
                } else {
                    resp.content_type("text/html; charset=utf-8").body(
                        views::admin_login_page(Some(
                            "Too many wrong tokens from your address; wait a minute.",
                        ))
                        .into_string(),
                    )
                };
            }
        };
        let challenge = match message {
            Some(_) => r#"Bearer realm="percache admin", error="invalid_token""#,
            None => r#"Bearer realm="percache admin""#,
        };
        let mut resp = HttpResponse::build(self.status_code());
        resp.insert_header((header::CACHE_CONTROL, "no-store"))
            .insert_header((header::WWW_AUTHENTICATE, HeaderValue::from_static(challenge)));
        if json {
            resp.json(serde_json::json!({ "error": self.to_string() }))
        } else {
            resp.content_type("text/html; charset=utf-8")
                .body(views::admin_login_page(message).into_string())
        }
    }
}

/// How a request was let in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    Bearer,
    Cookie,
}

/// Lets in the holder of the token (bearer header or the page's cookie).
fn check(req: &HttpRequest, admin: &Admin, json: bool) -> Result<Access, AdminError> {
    let token = admin.token().ok_or(AdminError::Disabled)?;
    if let Some(value) = req.headers().get(header::AUTHORIZATION) {
        guard(req, json)?;
        return match value.to_str() {
            Ok(v) if token.matches_bearer(v) => Ok(Access::Bearer),
            _ => {
                wrong(req, json)?;
                Err(AdminError::Unauthorized {
                    json,
                    message: Some("The bearer token was not accepted."),
                })
            }
        };
    }
    match req.cookie(COOKIE_NAME) {
        Some(c)
            if token
                .cookie_id(c.value(), admin.now_secs())
                .is_some_and(|(id, _)| !revoked(req, id)) =>
        {
            Ok(Access::Cookie)
        }
        Some(_) => Err(AdminError::Unauthorized {
            json,
            message: Some("Your operator sign-in has expired; enter the token again."),
        }),
        None => Err(AdminError::Unauthorized { json, message: None }),
    }
}

/// `?format=json` (other parameters are ignored).
fn wants_json(req: &HttpRequest) -> bool {
    serde_urlencoded::from_str::<Vec<(String, String)>>(req.query_string())
        .unwrap_or_default()
        .iter()
        .any(|(k, v)| k == "format" && v == "json")
}

/// `GET /admin`: the operator page, or its JSON with `?format=json`.
#[get("/admin")]
pub async fn page(req: HttpRequest, admin: web::Data<Admin>) -> Result<HttpResponse, AdminError> {
    let json = wants_json(&req);
    let access = check(&req, &admin, json)?;
    let figures = admin.figures().await;
    if json {
        return Ok(json_response(&figures));
    }
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .content_type("text/html; charset=utf-8")
        .body(views::admin_page(&figures, access == Access::Cookie).into_string()))
}

/// `GET /admin.json`: the figures of the page as JSON.
#[get("/admin.json")]
pub async fn figures_json(req: HttpRequest, admin: web::Data<Admin>) -> Result<HttpResponse, AdminError> {
    check(&req, &admin, true)?;
    Ok(json_response(&admin.figures().await))
}

fn json_response(figures: &Figures) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(figures)
}

/// The sign-in form's field.
#[derive(Debug, Default, Deserialize)]
struct TokenForm {
    #[serde(default)]
    token: String,
}

/// `POST /admin/login`: the right token sets the page's cookie and goes to
/// the page; a wrong one gets the form again (401).
#[post("/admin/login")]
pub async fn login(
    req: HttpRequest,
    admin: web::Data<Admin>,
    body: web::Bytes,
) -> Result<HttpResponse, AdminError> {
    let token = admin.token().ok_or(AdminError::Disabled)?;
    guard(&req, false)?;
    // Not a form, or not UTF-8: no token.
    let form: TokenForm = serde_urlencoded::from_bytes(&body).unwrap_or_default();
    if !token.matches(&form.token) {
        wrong(&req, false)?;
        tracing::warn!("operator sign-in refused: wrong admin token");
        return Err(AdminError::Unauthorized {
            json: false,
            message: Some("That is not the admin token."),
        });
    }
    let cookie = auth::cookie(token.cookie_value(admin.now_secs()), admin.secure_cookies());
    Ok(HttpResponse::SeeOther()
        .cookie(cookie)
        .insert_header((header::LOCATION, "/admin"))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .finish())
}

/// The client address (as the sign-in limit reads it) and its record of
/// wrong tokens, if the app has them.
fn wrong_tokens(req: &HttpRequest) -> Option<(std::net::IpAddr, &WrongTokens)> {
    let limits = req.app_data::<web::Data<WrongTokens>>()?;
    let ip = match req.app_data::<web::Data<LoginLimiter>>() {
        Some(limiter) => limiter.client_address(req)?,
        None => req.peer_addr()?.ip(),
    };
    Some((ip, limits.get_ref()))
}

/// Refuses (429) an address that showed too many wrong tokens, before its
/// token is even looked at.
fn guard(req: &HttpRequest, json: bool) -> Result<(), AdminError> {
    match wrong_tokens(req).and_then(|(ip, limits)| limits.wait(ip)) {
        Some(wait) => Err(too_many(json, wait)),
        None => Ok(()),
    }
}

/// Counts a wrong token; 429 once the address is over its budget.
fn wrong(req: &HttpRequest, json: bool) -> Result<(), AdminError> {
    if let Some((ip, limits)) = wrong_tokens(req) {
        limits.wrong(ip).map_err(|wait| too_many(json, wait))?;
    }
    Ok(())
}

fn too_many(json: bool, wait: std::time::Duration) -> AdminError {
    ::metrics::counter!("percache_refused_total", "reason" => "admin_token").increment(1);
    AdminError::TooMany {
        json,
        retry_after: (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1),
    }
}

/// The record of ended sign-ins under which an admin cookie's id is kept.
fn revocation_id(id: &str) -> String {
    format!("admin:{id}")
}

/// Whether the admin cookie with this `id` was signed out (fleet-wide: the
/// same record as the users' sign-outs).
fn revoked(req: &HttpRequest, id: &str) -> bool {
    req.app_data::<web::Data<SessionEnds>>()
        .is_some_and(|ends| ends.is_ended(&revocation_id(id)))
}

/// `POST /admin/logout`: removes the page's cookie and revokes it, so that
/// a copy of it no longer opens the page, on any instance.
#[post("/admin/logout")]
pub async fn logout(req: HttpRequest, admin: web::Data<Admin>) -> Result<HttpResponse, AdminError> {
    let Some(token) = admin.token() else {
        return Err(AdminError::Disabled);
    };
    let signed_in = req.cookie(COOKIE_NAME);
    let id = signed_in
        .as_ref()
        .and_then(|c| token.cookie_id(c.value(), admin.now_secs()));
    if let (Some((id, expires)), Some(ends)) = (id, req.app_data::<web::Data<SessionEnds>>()) {
        ends.end_id(&revocation_id(id), expires.saturating_mul(1000))
            .await;
        tracing::info!("operator signed out; their admin cookie is revoked");
    }
    Ok(HttpResponse::SeeOther()
        .cookie(auth::removal_cookie(admin.secure_cookies()))
        .insert_header((header::LOCATION, "/admin"))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .finish())
}
