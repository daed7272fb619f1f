//! Sign-in and sign-out.
//!
//! `POST /login` reads its form itself rather than through `web::Form`: the
//! usual decoder turns bytes that are not UTF-8 into U+FFFD, which would sign
//! in another user than the one typed, while here such a form gets 422. Each
//! attempt first counts against the client address's `--login-rate`.

use std::time::Duration;

use actix_session::Session;
use actix_web::http::StatusCode;
use actix_web::{get, post, web, HttpMessage as _, HttpRequest, HttpResponse};
use serde::Deserialize;

use super::respond::{html, see_other};
use super::AppState;
use crate::defence::login_rate::LoginLimiter;
use crate::routes::error::{PageError, SignInError};
use crate::session;
use crate::session::ended::SessionEnds;
use crate::session::CurrentUser;
use crate::user::UserId;
use crate::views;

/// `GET /`: to the dashboard when signed in, else to the sign-in page.
#[get("/")]
pub async fn index(req: HttpRequest, user: CurrentUser) -> HttpResponse {
    match user.into_inner() {
        Some(_) => see_other("/dashboard"),
        None if proxy_mode(&req) => not_signed_in(),
        None => see_other("/login"),
    }
}

/// Whether the user comes from an identity proxy's header (`--user-header`).
pub(crate) fn proxy_mode(req: &HttpRequest) -> bool {
    req.app_data::<crate::session::ProxyIdentity>().is_some()
}

/// Behind an identity proxy, a request without its word: 401, a plain page.
pub(crate) fn not_signed_in() -> HttpResponse {
    html(StatusCode::UNAUTHORIZED, views::not_signed_in_page())
}

/// `GET /login`: the form (or the dashboard when already signed in); off
/// (404) behind an identity proxy.
#[get("/login")]
pub async fn login_form(req: HttpRequest, user: CurrentUser) -> HttpResponse {
    if proxy_mode(&req) {
        return HttpResponse::NotFound().finish();
    }
    if user.into_inner().is_some() {
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

/// Largest sign-in form body (one short field).
const LOGIN_FORM_LIMIT: usize = 4 * 1024;

/// Reads the sign-in form's body: `application/x-www-form-urlencoded` in
/// UTF-8 (415 otherwise), at most [`LOGIN_FORM_LIMIT`] bytes (413).
async fn read_form(req: &HttpRequest, payload: web::Payload) -> Result<web::Bytes, SignInError> {
    let url_encoded = req
        .content_type()
        .eq_ignore_ascii_case("application/x-www-form-urlencoded");
    let utf8 = req.encoding().is_ok_and(|enc| enc.name() == "UTF-8");
    if !url_encoded || !utf8 {
        return Err(SignInError::ContentType);
    }
    match payload.to_bytes_limited(LOGIN_FORM_LIMIT).await {
        Ok(Ok(body)) => Ok(body),
        Ok(Err(e)) => Err(SignInError::Malformed(e.to_string())),
        Err(_) => Err(SignInError::TooLarge),
    }
}

/// Parses the form strictly: every name and value must decode to UTF-8
/// (422), and `username` may appear at most once (400).
fn parse_form(body: &[u8]) -> Result<LoginForm, SignInError> {
    let utf8 = body
        .split(|b| *b == b'&')
        .flat_map(|pair| pair.splitn(2, |b| *b == b'='))
        .all(|part| percent_encoding::percent_decode(part).decode_utf8().is_ok());
    if !utf8 {
        return Err(SignInError::NotUtf8);
    }
    serde_urlencoded::from_bytes(body).map_err(|e| SignInError::Malformed(e.to_string()))
}

/// Whole seconds to wait, rounded up, at least 1 (for `Retry-After`).
fn whole_seconds(wait: Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

/// `POST /login`: count the attempt, validate, start the session, prewarm,
/// redirect at once.
#[post("/login")]
pub async fn login(
    req: HttpRequest,
    payload: web::Payload,
    session: Session,
    state: web::Data<AppState>,
    limiter: web::Data<LoginLimiter>,
) -> Result<HttpResponse, actix_web::Error> {
    if proxy_mode(&req) {
        // The form is off: the identity proxy signs people in.
        return Ok(HttpResponse::NotFound().finish());
    }
    // Every attempt counts, whatever its body.
    let allowed = limiter.check(&req);
    let body = read_form(&req, payload).await;
    if let Err(wait) = allowed {
        ::metrics::counter!("percache_refused_total", "reason" => "login_rate").increment(1);
        tracing::debug!(client = ?limiter.client_address(&req), "sign-in rate limit reached");
        // Only to fill the form in again: a lossy parse is fine here.
        let username = body
            .ok()
            .and_then(|b| serde_urlencoded::from_bytes::<LoginForm>(&b).ok())
            .map(|f| f.username.chars().take(200).collect())
            .unwrap_or_default();
        return Err(SignInError::TooMany {
            retry_after_secs: whole_seconds(wait),
            username,
        }
        .into());
    }
    let form = parse_form(&body?)?;
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
    session::sign_in(&session, &user, state.cache.now()).map_err(|_| PageError::Session)?;
    if state.prewarm {
        // Registers the fetches (they run as tasks) and returns without waiting for them.
        let started = state.cache.prewarm(&user).await;
        tracing::info!(started, "prewarm started");
    }
    Ok(see_other("/dashboard"))
}

/// Where sign-out sends the browser (`--logout-url`).
pub struct Logout {
    /// `/login`, or an identity proxy's own sign-out.
    pub url: String,
}

/// `everywhere=1`, in the form or the query.
#[derive(serde::Deserialize, Default)]
struct LogoutForm {
    #[serde(default)]
    everywhere: Option<String>,
}

/// `POST /logout`: ends the session, on the server too (a copy of the
/// cookie is refused from now on, fleet-wide); with `everywhere=1`, every
/// session of the user that began before now.
#[post("/logout")]
pub async fn logout(
    req: HttpRequest,
    body: web::Bytes,
    session: Session,
    ends: web::Data<SessionEnds>,
    to: web::Data<Logout>,
) -> HttpResponse {
    let asked = |raw: &[u8]| {
        serde_urlencoded::from_bytes::<LogoutForm>(raw)
            .unwrap_or_default()
            .everywhere
            .is_some_and(|v| v == "1" || v == "true")
    };
    let everywhere = asked(&body) || asked(req.query_string().as_bytes());
    // Behind an identity proxy its own sign-out (`--logout-url`) ends it.
    let own = !proxy_mode(&req);
    if let Some(signed_in) = session::signed_in(&session).filter(|_| own) {
        if everywhere {
            ends.end_everywhere(&signed_in.user, ends.now()).await;
        } else {
            ends.end(&signed_in).await;
        }
    }
    session::sign_out(&session);
    HttpResponse::SeeOther()
        .insert_header((actix_web::http::header::LOCATION, to.url.as_str()))
        .insert_header((actix_web::http::header::CACHE_CONTROL, "no-store"))
        .finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_must_be_utf8_once_decoded() {
        assert_eq!(
            parse_form(b"username=al%C3%A9+x").map(|f| f.username).ok(),
            Some("alé x".into())
        );
        assert_eq!(
            parse_form(b"name=x").map(|f| f.username).ok(),
            Some(String::new())
        );
        for bad in [
            &b"username=%FF%FE"[..],
            b"username=ok&%FF=1",
            b"\xff\x00=\x01",
            b"username=\xc3(",
        ] {
            assert!(matches!(parse_form(bad), Err(SignInError::NotUtf8)), "{bad:?}");
        }
        assert!(matches!(
            parse_form(b"username=a&username=b"),
            Err(SignInError::Malformed(_))
        ));
    }

    #[test]
    fn waits_round_up_to_whole_seconds() {
        assert_eq!(whole_seconds(Duration::ZERO), 1);
        assert_eq!(whole_seconds(Duration::from_millis(2_001)), 3);
        assert_eq!(whole_seconds(Duration::from_secs(180)), 180);
    }
}
