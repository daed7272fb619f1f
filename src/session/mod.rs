//! The session: who is signed in, kept in a private (encrypted and signed)
//! cookie by actix-session's cookie store, decoded once per cookie
//! ([`decoded`]).

pub mod decoded;
pub mod ended;

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
use ended::SessionEnds;

/// The cookie's name.
pub const COOKIE_NAME: &str = "percache_session";
/// The session field holding the username.
const USER_FIELD: &str = "user";
/// The session's id (random), for ending it on the server.
const SID_FIELD: &str = "sid";
/// When the session began (ms, the cache's clock), for its max age.
const IAT_FIELD: &str = "iat";
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

/// The session middleware: private cookie, HttpOnly, SameSite=Lax, living
/// `max_age` (`--session-max-age`; the server checks it too, see
/// [`ended`]), behind each worker's decoded cookies.
pub fn middleware(key: Key, secure: bool, max_age: std::time::Duration, ends: Arc<SessionEnds>) -> Sessions {
    let ttl = CookieDuration::seconds(i64::try_from(max_age.as_secs()).unwrap_or(i64::MAX).max(1));
    let cookie = SessionMiddleware::builder(CookieSessionStore::default(), key)
        .cookie_name(COOKIE_NAME.to_owned())
        .cookie_content_security(CookieContentSecurity::Private)
        .cookie_http_only(true)
        .cookie_same_site(SameSite::Lax)
        .cookie_secure(secure)
        .session_lifecycle(PersistentSession::default().session_ttl(ttl))
        .build();
    Sessions::in_front_of(cookie, ends)
}

/// A session as its cookie holds it: the user, the session's id (`None`
/// in a cookie from before v3) and when it began.
#[derive(Debug, Clone)]
pub struct SignedIn {
    /// Who.
    pub user: Arc<UserId>,
    /// The session's id, for ending it on the server.
    pub sid: Option<Box<str>>,
    /// When it began (ms, the cache's clock).
    pub iat: i64,
}

/// The session the cookie holds, if any. Anything odd in it means "signed out".
pub fn signed_in(session: &Session) -> Option<SignedIn> {
    let name: String = session.get(USER_FIELD).ok().flatten()?;
    let user = Arc::new(UserId::parse(&name).ok()?);
    let sid: Option<String> = session.get(SID_FIELD).ok().flatten();
    let iat: Option<i64> = session.get(IAT_FIELD).ok().flatten();
    Some(SignedIn {
        user,
        sid: sid.filter(|s| !s.is_empty()).map(Into::into),
        iat: iat.unwrap_or(i64::MIN),
    })
}

/// The signed-in user, if any (the session as the cookie holds it, not
/// judged: [`CurrentUser`] judges it).
pub fn current_user(session: &Session) -> Option<UserId> {
    signed_in(session).map(|s| UserId::clone(&s.user))
}

/// The user an identity proxy's header names (`--user-header`), put in the
/// request by `defence::identity` when its peer is a trusted proxy.
#[derive(Clone)]
pub struct Identified(pub Arc<UserId>);

/// Marks the identity-proxy mode (app data): the user comes from the
/// proxy's header only, never from a cookie.
#[derive(Clone, Copy)]
pub struct ProxyIdentity;

/// The signed-in user of a request, for handlers that only read the
/// session. It takes the session the middleware already knows for this
/// cookie, or decodes it (and leaves it for the middleware to remember);
/// then the record of ended sessions judges it. A refused session is no
/// user: its cookie is cleared (a purge) and the refusal counted
/// (`percache_sessions_refused_total{reason}`).
pub struct CurrentUser(Option<Arc<UserId>>);

impl CurrentUser {
    /// The user, if signed in.
    pub fn into_inner(self) -> Option<Arc<UserId>> {
        self.0
    }
}

impl FromRequest for CurrentUser {
    type Error = Infallible;
    type Future = Ready<Result<Self, Infallible>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        if req.app_data::<ProxyIdentity>().is_some() {
            let user = req
                .extensions()
                .get::<Identified>()
                .map(|Identified(u)| Arc::clone(u));
            return ready(Ok(Self(user)));
        }
        let known = req.extensions().get::<Decoded>().map(|Decoded(s)| Arc::clone(s));
        let session = match known {
            Some(session) => session,
            None => match signed_in(&req.get_session()) {
                Some(session) => {
                    let session = Arc::new(session);
                    req.extensions_mut().insert(Decoded(Arc::clone(&session)));
                    session
                }
                None => return ready(Ok(Self(None))),
            },
        };
        let refusal = req
            .app_data::<actix_web::web::Data<SessionEnds>>()
            .and_then(|ends| ends.refuses(&session));
        if let Some(refusal) = refusal {
            ::metrics::counter!("percache_sessions_refused_total", "reason" => refusal.label()).increment(1);
            // Through actix-session (the middleware sends a refused session
            // there), so the purge clears the cookie.
            req.get_session().purge();
            return ready(Ok(Self(None)));
        }
        ready(Ok(Self(Some(Arc::clone(&session.user)))))
    }
}

/// Signs `user` in, with a fresh session (no fixation) with a new id,
/// begun at `now` (ms, the cache's clock).
pub fn sign_in(session: &Session, user: &UserId, now: i64) -> Result<(), SessionInsertError> {
    session.renew();
    session.insert(USER_FIELD, user.as_str())?;
    session.insert(
        SID_FIELD,
        format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..)),
    )?;
    session.insert(IAT_FIELD, now)
}

/// Signs out (the cookie; the caller ends the session on the server).
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
