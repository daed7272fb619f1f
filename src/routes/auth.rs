//! Sign-in and sign-out.

use actix_session::Session;
use actix_web::http::{header, StatusCode};
use actix_web::{get, post, web, HttpResponse};
use serde::Deserialize;

use super::AppState;
use crate::error::PageError;
use crate::session;
use crate::upstream::Upstream;
use crate::user::UserId;
use crate::views;

/// A 303 See Other to `to`.
pub(crate) fn see_other(to: &'static str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, to))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .finish()
}

/// `GET /`: to the dashboard when signed in, else to the sign-in page.
#[get("/")]
pub async fn index(session: Session) -> HttpResponse {
    match session::current_user(&session) {
        Some(_) => see_other("/dashboard"),
        None => see_other("/login"),
    }
}

/// `GET /login`: the form (or the dashboard when already signed in).
#[get("/login")]
pub async fn login_form(session: Session) -> HttpResponse {
    if session::current_user(&session).is_some() {
        return see_other("/dashboard");
    }
    html(StatusCode::OK, views::login_page(None, ""))
}

/// The sign-in form's fields. A missing field is treated as empty so it gets
/// the form back with a message rather than a bare 400.
#[derive(Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    username: String,
}

/// `POST /login`: validate, start the session, prewarm, redirect at once.
#[post("/login")]
pub async fn login(
    form: web::Form<LoginForm>,
    session: Session,
    state: web::Data<AppState>,
    upstream: web::Data<Upstream>,
) -> Result<HttpResponse, PageError> {
    let user = match UserId::parse(&form.username) {
        Ok(user) => user,
        Err(e) => {
            let shown: String = form.username.chars().take(200).collect();
            return Ok(html(
                StatusCode::UNPROCESSABLE_ENTITY,
                views::login_page(Some(&e.to_string()), &shown),
            ));
        }
    };
    session::sign_in(&session, &user).map_err(|_| PageError::Session)?;
    if state.prewarm {
        // Registers the fetches (they run as tasks) and returns without waiting for them.
        let started = state.cache.prewarm(&user, &upstream).await;
        tracing::info!(started, "prewarm started");
    }
    Ok(see_other("/dashboard"))
}

/// `POST /logout`: end the session.
#[post("/logout")]
pub async fn logout(session: Session) -> HttpResponse {
    session::sign_out(&session);
    see_other("/login")
}

/// An HTML response that no shared cache may keep.
pub(crate) fn html(status: StatusCode, body: maud::Markup) -> HttpResponse {
    HttpResponse::build(status)
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .content_type("text/html; charset=utf-8")
        .body(body.into_string())
}
