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
}

impl ResponseError for AdminError {
    fn status_code(&self) -> StatusCode {
        match self {
            AdminError::Disabled => StatusCode::NOT_FOUND,
            AdminError::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let (json, message) = match self {
            // Off: the very answer of an unknown path.
            AdminError::Disabled => return HttpResponse::NotFound().finish(),
            AdminError::Unauthorized { json, message } => (*json, *message),
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
        return match value.to_str() {
            Ok(v) if token.matches_bearer(v) => Ok(Access::Bearer),
            _ => Err(AdminError::Unauthorized {
                json,
                message: Some("The bearer token was not accepted."),
            }),
        };
    }
    match req.cookie(COOKIE_NAME) {
        Some(c) if token.cookie_is_valid(c.value(), admin.now_secs()) => Ok(Access::Cookie),
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
pub async fn login(admin: web::Data<Admin>, body: web::Bytes) -> Result<HttpResponse, AdminError> {
    let token = admin.token().ok_or(AdminError::Disabled)?;
    // Not a form, or not UTF-8: no token.
    let form: TokenForm = serde_urlencoded::from_bytes(&body).unwrap_or_default();
    if !token.matches(&form.token) {
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

/// `POST /admin/logout`: removes the page's cookie.
#[post("/admin/logout")]
pub async fn logout(admin: web::Data<Admin>) -> Result<HttpResponse, AdminError> {
    if !admin.enabled() {
        return Err(AdminError::Disabled);
    }
    Ok(HttpResponse::SeeOther()
        .cookie(auth::removal_cookie(admin.secure_cookies()))
        .insert_header((header::LOCATION, "/admin"))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .finish())
}
