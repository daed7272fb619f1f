//! The session: who is signed in, kept in a private (encrypted and signed)
//! cookie by actix-session's cookie store, decoded once per cookie
//! ([`decoded`]).

pub mod decoded;

use actix_session::config::{CookieContentSecurity, PersistentSession};
use actix_session::storage::CookieSessionStore;
use std::convert::Infallible;
use std::future::{ready, Ready};
use std::sync::Arc;

use actix_session::{Session, SessionExt as _, SessionInsertError, SessionMiddleware};
use actix_web::cookie::{time::Duration as CookieDuration, Key, SameSite};
use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpMessage as _, HttpRequest};
use base64::Engine as _;

use decoded::{Decoded, Sessions};

use crate::user::UserId;

/// The cookie's name.
pub const COOKIE_NAME: &str = "percache_session";
/// The session field holding the username.
const USER_FIELD: &str = "user";
/// Shortest accepted `--session-key`, in bytes.
pub const MIN_KEY_BYTES: usize = 64;

/// A `--session-key` that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SessionKeyError {
    /// Neither hex nor base64.
    #[error("SESSION_KEY must be hex or base64 encoded")]
    Encoding,
    /// Too short to sign and encrypt with.
    #[error("SESSION_KEY is {0} bytes long; it must be at least {MIN_KEY_BYTES} bytes (e.g. `openssl rand -hex 64`)")]
    TooShort(usize),
}

/// The cookie key: decoded from `--session-key`, or random for this process
/// (sessions then do not survive a restart, nor work across instances).
pub fn session_key(raw: Option<&str>) -> Result<Key, SessionKeyError> {
    let Some(raw) = raw.map(str::trim).filter(|r| !r.is_empty()) else {
        tracing::warn!(
            "no SESSION_KEY set: using a random key; sessions end when the process stops \
             and are not shared between instances"
        );
        return Ok(Key::generate());
    };
    let bytes = hex::decode(raw)
        .ok()
        .or_else(|| base64::engine::general_purpose::STANDARD.decode(raw).ok())
        .or_else(|| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(raw).ok())
        .ok_or(SessionKeyError::Encoding)?;
    if bytes.len() < MIN_KEY_BYTES {
        return Err(SessionKeyError::TooShort(bytes.len()));
    }
    Ok(Key::from(&bytes))
}

/// The session middleware: private cookie, HttpOnly, SameSite=Lax, 7 days,
/// behind each worker's decoded cookies.
pub fn middleware(key: Key, secure: bool) -> Sessions {
    let cookie = SessionMiddleware::builder(CookieSessionStore::default(), key)
        .cookie_name(COOKIE_NAME.to_owned())
        .cookie_content_security(CookieContentSecurity::Private)
        .cookie_http_only(true)
        .cookie_same_site(SameSite::Lax)
        .cookie_secure(secure)
        .session_lifecycle(PersistentSession::default().session_ttl(CookieDuration::days(7)))
        .build();
    Sessions::in_front_of(cookie)
}

/// The signed-in user, if any. Anything odd in the session means "signed out".
pub fn current_user(session: &Session) -> Option<UserId> {
    let name: String = session.get(USER_FIELD).ok().flatten()?;
    UserId::parse(&name).ok()
}

/// The request's signed-in user, if any: an extractor for handlers that
/// only read the session. It takes the user the middleware already knows
/// for this cookie, or decodes the session (and leaves the user for the
/// middleware to remember).
pub struct CurrentUser(Option<Arc<UserId>>);

impl CurrentUser {
    /// The user, or `None` when signed out (shared with the worker's
    /// decoded cookies: no copy per request).
    pub fn into_inner(self) -> Option<Arc<UserId>> {
        self.0
    }
}

impl FromRequest for CurrentUser {
    type Error = Infallible;
    type Future = Ready<Result<Self, Infallible>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        if let Some(Decoded(user)) = req.extensions().get::<Decoded>() {
            return ready(Ok(Self(Some(Arc::clone(user)))));
        }
        let user = current_user(&req.get_session()).map(Arc::new);
        if let Some(user) = &user {
            req.extensions_mut().insert(Decoded(Arc::clone(user)));
        }
        ready(Ok(Self(user)))
    }
}

/// Signs `user` in, with a fresh session (no fixation).
pub fn sign_in(session: &Session, user: &UserId) -> Result<(), SessionInsertError> {
    session.renew();
    session.insert(USER_FIELD, user.as_str())
}

/// Signs out.
pub fn sign_out(session: &Session) {
    session.purge();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_long_keys_in_hex_and_base64() {
        assert!(session_key(Some(&"ab".repeat(64))).is_ok());
        let b64 = base64::engine::general_purpose::STANDARD.encode([7u8; 64]);
        assert!(session_key(Some(&b64)).is_ok());
    }

    #[test]
    fn refuses_short_or_garbled_keys() {
        assert!(matches!(
            session_key(Some(&"ab".repeat(32))),
            Err(SessionKeyError::TooShort(32))
        ));
        assert!(matches!(
            session_key(Some("not a key!")),
            Err(SessionKeyError::Encoding)
        ));
    }

    #[test]
    fn falls_back_to_a_random_key() {
        assert!(session_key(None).is_ok());
    }
}
