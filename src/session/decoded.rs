//! Sessions decoded once per cookie, not once per request.
//!
//! actix-session's cookie store decrypts and parses the session cookie on
//! every request, and the username is then validated and hashed again. A
//! dashboard sends the same cookie on every request of a visit, so the
//! decoded user is kept here, keyed by the cookie's value (the map hashes
//! it; a hit compares the whole value), and a read-only request (`GET`,
//! `HEAD`) with a cookie seen before skips actix-session altogether.
//!
//! Why this cannot sign anyone in as someone else: an entry is only ever
//! learnt from a request that actix-session itself decrypted and verified,
//! and maps that exact cookie value to the user it held. Cookie sessions
//! keep no state on the server, so a cookie value means the same user for
//! as long as the key lasts: caching it changes nothing about who a
//! request is. A response that changes, renews or purges the session forgets
//! the cookie it came with (on its worker: to the others, as to actix-session,
//! the cookie still holds what it held).
//!
//! Each worker keeps its own: a lookup takes no lock and touches no memory
//! that another core writes.
//!
//! Requests that may write the session (`POST`, …) always go through
//! actix-session, so every `Set-Cookie` it would send is still sent.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use actix_session::storage::CookieSessionStore;
use actix_session::{SessionExt as _, SessionMiddleware, SessionStatus};
use actix_web::body::MessageBody;
use actix_web::dev::{forward_ready, Service, ServiceRequest, ServiceResponse, Transform};
use actix_web::http::{header, Method};
use actix_web::HttpMessage as _;
use futures_util::future::{Either, LocalBoxFuture};
use percent_encoding::percent_decode_str;

use super::ended::SessionEnds;
use super::{SignedIn, COOKIE_NAME};

/// Most cookies a worker remembers before it starts over. About 300 bytes
/// each (the cookie and the user): 3 MiB per worker for 10,000 visitors.
const CAPACITY: usize = 10_000;

/// The user a request's session holds, once known: put in the request's
/// extensions by the middleware (a cookie seen before) or by
/// [`super::CurrentUser`] (decoded now, for the middleware to learn).
#[derive(Clone)]
pub(super) struct Decoded(pub(super) Arc<SignedIn>);

/// The cookies one worker has decoded. Per worker, like the worker's
/// services: no lock and no atomic on the way of a request (each worker
/// decodes a cookie once).
///
/// Hashed with foldhash (seeded per map), not SipHash: a lookup hashes the
/// whole cookie, some 200 bytes, on every request. Flooding it with
/// colliding keys is not open to a client: only cookies that actix-session
/// verified are ever inserted, and their values are sealed with a random
/// nonce the client does not choose.
#[derive(Default)]
struct DecodedSessions(RefCell<HashMap<Box<str>, Arc<SignedIn>, foldhash::fast::RandomState>>);

impl DecodedSessions {
    fn get(&self, cookie: &str) -> Option<Arc<SignedIn>> {
        self.0.borrow().get(cookie).cloned()
    }

    fn forget(&self, cookie: &str) {
        self.0.borrow_mut().remove(cookie);
    }

    /// After actix-session handled a request: remember the user it decoded
    /// from `cookie` if the session is unchanged, forget the cookie if the
    /// session changed.
    fn learn<B>(&self, cookie: &str, read_only: bool, res: &ServiceResponse<B>) {
        let status = res.request().get_session().status();
        let mut known = self.0.borrow_mut();
        match status {
            SessionStatus::Unchanged if read_only => {
                if let Some(Decoded(user)) = res.request().extensions().get::<Decoded>() {
                    if known.len() >= CAPACITY {
                        known.clear();
                    }
                    known.insert(cookie.into(), Arc::clone(user));
                }
            }
            SessionStatus::Unchanged => {}
            _ => {
                known.remove(cookie);
            }
        }
    }
}

/// The middleware: the decoded cookies in front of actix-session's.
pub struct Sessions {
    cookie: SessionMiddleware<CookieSessionStore>,
    /// A remembered session that has ended since goes through
    /// actix-session, so that its refusal clears the cookie.
    ends: Arc<SessionEnds>,
}

impl Sessions {
    /// actix-session's middleware (`cookie`), behind each worker's decoded
    /// cookies, which `ends` may refuse.
    pub fn in_front_of(cookie: SessionMiddleware<CookieSessionStore>, ends: Arc<SessionEnds>) -> Self {
        Self { cookie, ends }
    }
}

impl<S, B> Transform<S, ServiceRequest> for Sessions
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    S::Future: 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<B>;
    type Error = actix_web::Error;
    type Transform = SessionsService<S, CookieService<S>>;
    type InitError = ();
    type Future = LocalBoxFuture<'static, Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        // One inner service, reached two ways: directly (a known cookie) or
        // through actix-session.
        let service = Rc::new(service);
        let cookie = self.cookie.new_transform(Rc::clone(&service));
        let ends = Arc::clone(&self.ends);
        Box::pin(async move {
            Ok(SessionsService {
                service,
                cookie: Rc::new(cookie.await?),
                decoded: Rc::default(),
                ends,
            })
        })
    }
}

/// actix-session's service over the same inner service.
type CookieService<S> =
    <SessionMiddleware<CookieSessionStore> as Transform<Rc<S>, ServiceRequest>>::Transform;

/// The service [`Sessions`] builds for each worker: `S` reached directly,
/// or through actix-session's `C`.
pub struct SessionsService<S, C> {
    service: Rc<S>,
    cookie: Rc<C>,
    decoded: Rc<DecodedSessions>,
    ends: Arc<SessionEnds>,
}

impl<S, C, B> Service<ServiceRequest> for SessionsService<S, C>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    S::Future: 'static,
    C: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<B>;
    type Error = actix_web::Error;
    type Future = Either<S::Future, LocalBoxFuture<'static, Result<ServiceResponse<B>, actix_web::Error>>>;

    forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        let read_only = matches!(*req.method(), Method::GET | Method::HEAD);
        // Found once: the lookup below and the learning after actix-session
        // both key on it.
        let cookie = session_cookie(&req);
        if read_only {
            if let Some((value, session)) = cookie.and_then(|value| Some((value, self.decoded.get(value)?))) {
                if self.ends.refuses(&session).is_none() {
                    req.extensions_mut().insert(Decoded(session));
                    return Either::Left(self.service.call(req));
                }
                // Ended since: through actix-session, which clears it.
                self.decoded.forget(value);
            }
        }
        let cookie: Option<Box<str>> = cookie.map(Into::into);
        let through = Rc::clone(&self.cookie);
        let decoded = Rc::clone(&self.decoded);
        Either::Right(Box::pin(async move {
            let res = through.call(req).await?;
            if let Some(cookie) = cookie {
                decoded.learn(&cookie, read_only, &res);
            }
            Ok(res)
        }))
    }
}

/// The request's session cookie, as actix-session finds it: the first
/// cookie of that name that `HttpRequest::cookies` would keep (it skips a
/// pair it cannot parse, percent-decoding included), found without copying
/// every cookie of the header. Its value is only a key here: a value is only
/// ever learnt from a request that actix-session decoded, and both must have
/// read the same cookie. Were they to differ (a raw `percache_session=%FF`
/// ahead of a good cookie, which actix skips), a worker would learn the bad
/// value as the good cookie's user and serve that user to whoever sends it.
///
/// The key is the value as sent (trimmed and unquoted, not decoded): the
/// value actix-session decrypts is its percent-decoding, a function of it,
/// so one key still means one session.
///
/// `None` when a Cookie header is not UTF-8: actix then reads no cookie.
fn session_cookie(req: &ServiceRequest) -> Option<&str> {
    let mut found = None;
    for h in req.headers().get_all(header::COOKIE) {
        // Checked on every header, even past the cookie: one that is not
        // UTF-8 makes actix read none.
        let h = std::str::from_utf8(h.as_bytes()).ok()?;
        if found.is_none() {
            found = h
                .split(';')
                .map(str::trim)
                .filter(|pair| !pair.is_empty())
                .find_map(session_value);
        }
    }
    found
}

/// The value of one `name=value` pair, as sent, if `Cookie::parse_encoded`
/// reads the pair as the session cookie: a non-empty name that decodes to
/// [`COOKIE_NAME`], and a name and a value that both decode to UTF-8.
///
/// What the parse does, without its copies: split at the first `=`, trim
/// both sides, unquote and trim the value. The session cookie's value is
/// base64 with `%2F`-style escapes, so a request's pair has a `%`, and
/// decoding it into a new string (what the parse does) was most of a warm
/// hit's session cost. A pair of ASCII whose escapes all decode to ASCII
/// decodes to UTF-8, which is all the check needs; any other pair (rare: a
/// client's own cookie) goes through the decoding itself.
fn session_value(pair: &str) -> Option<&str> {
    let (name, value) = pair.split_once('=')?;
    let name = name.trim();
    let value = value.trim();
    let value = match value.len() >= 2 && value.starts_with('"') && value.ends_with('"') {
        true => value[1..value.len() - 1].trim(),
        false => value,
    };
    let named = match name.contains('%') {
        false => name == COOKIE_NAME,
        true => percent_decode_str(name).eq(COOKIE_NAME.bytes()),
    };
    // A name that decodes to the cookie's name decodes to UTF-8.
    (named && decodes_to_utf8(value)).then_some(value)
}

/// Whether the percent-decoding of `s` is UTF-8, as
/// `PercentDecode::decode_utf8` finds it.
fn decodes_to_utf8(s: &str) -> bool {
    let bytes = s.as_bytes();
    let mut escapes = memchr::memchr_iter(b'%', bytes).peekable();
    if escapes.peek().is_none() {
        // Nothing to decode: the value is the UTF-8 it was.
        return true;
    }
    // An escape decodes to a byte below 0x80 when its first digit is 0 to 7;
    // `%` not followed by two hex digits stays as it is.
    let ascii = s.is_ascii()
        && escapes.all(|i| match bytes.get(i + 1..i + 3) {
            Some([hi, lo]) if hi.is_ascii_hexdigit() && lo.is_ascii_hexdigit() => *hi <= b'7',
            _ => true,
        });
    ascii || percent_decode_str(s).decode_utf8().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::cookie::Cookie;
    use proptest::prelude::*;

    /// The session cookie's value that actix reads from one pair
    /// (`HttpRequest::cookies`, then the cookie of that name).
    fn actix_reads(pair: &str) -> Option<String> {
        Cookie::parse_encoded(pair)
            .ok()
            .filter(|c| c.name() == COOKIE_NAME)
            .map(|c| c.value().to_owned())
    }

    /// What our key stands for: the value it decodes to.
    fn ours(pair: &str) -> Option<String> {
        session_value(pair).map(|v| percent_decode_str(v).decode_utf8_lossy().into_owned())
    }

    #[test]
    fn a_pair_reads_as_actix_reads_it() {
        for pair in [
            "percache_session=abc",
            " percache_session = \"abc\" ",
            "percache_session=\"",
            "percache_session=\"\"",
            "percache_session=\" a \"",
            "percache%5Fsession=abc",
            "percache%5fsession=a%2Fb",
            "percache%5Fsession=%FF",
            "percache_session=%FF",
            "percache_session=%C3%A9",
            "percache_session=%C3",
            "percache_session=%E9t%C3%A9",
            "percache_session=é%A9",
            "percache_session=%%41%4",
            "percache_session=a%3Db",
            "percache_session=nGJH9YenLLdbY8%2FkX4iZH8n24YW+ADE7gPCvQy67xtq0Yp6U7Gtj4W15HG%2F84BGqp3RX",
            "percache_session%FF=abc",
            "other=abc",
            "=abc",
            "junk",
            "a==b",
        ] {
            assert_eq!(ours(pair), actix_reads(pair), "{pair:?}");
        }
    }

    /// Names that are, or are close to, the session cookie's; values with
    /// escapes (ASCII, UTF-8 and not), quotes, spaces and `=`.
    fn pairs() -> impl Strategy<Value = String> {
        let name = prop_oneof![
            Just(COOKIE_NAME.to_owned()),
            Just(format!(" {COOKIE_NAME} ")),
            Just("percache%5Fsession".to_owned()),
            Just("percache%5fsession".to_owned()),
            Just("percache_sessio%6E%FF".to_owned()),
            "[ -:<-~]{0,6}",
        ];
        let piece = prop_oneof![
            "[ -:<-~]{1,4}",
            Just("%".to_owned()),
            Just("\"".to_owned()),
            Just("é".to_owned()),
            "%[0-9A-Fa-f]{2}",
            "%[0-9A-Fa-f]",
        ];
        let value = prop::collection::vec(piece, 0..8).prop_map(|p| p.concat());
        (name, prop::option::of(value)).prop_map(|(n, v)| match v {
            Some(v) => format!("{n}={v}"),
            None => n,
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]
        #[test]
        fn any_pair_reads_as_actix_reads_it(pair in pairs()) {
            prop_assert_eq!(ours(&pair), actix_reads(&pair));
        }

        #[test]
        fn any_printable_pair_reads_as_actix_reads_it(pair in "[ -:<-~]{0,24}") {
            // Printable ASCII but `;`: the header is split at `;` first.
            prop_assert_eq!(ours(&pair), actix_reads(&pair));
        }
    }
}
