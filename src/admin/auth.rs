//! Who may see the operator page: the holder of `--admin-token`, shown as
//! `Authorization: Bearer <token>` on each request, or once through the
//! page's form, which then sets the page's own cookie (`percache_admin`,
//! separate from the user session).
//!
//! Comparisons are constant-time: the presented token and the real one are
//! both run through HMAC-SHA256 under a random per-process key and the
//! tags compared with `verify_slice` (which uses `subtle`), so neither the
//! content nor the length of the token leaks through timing. The cookie
//! holds an expiry and an HMAC of it, keyed with a key derived from the
//! token *and the server's session key*: it does not reveal the token, a
//! stolen cookie does not allow an offline guess of the token (the guesser
//! lacks the session key), it works on every instance that shares both, and
//! it stops working when either changes.

use actix_web::cookie::{time::Duration as CookieDuration, Cookie, SameSite};
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The page's cookie.
pub const COOKIE_NAME: &str = "percache_admin";
/// How long the cookie is good for, in seconds (12 h).
pub const COOKIE_LIFETIME_SECS: i64 = 12 * 3600;
/// What the cookie's HMAC is computed over, before the expiry.
const COOKIE_CONTEXT: &[u8] = b"percache admin cookie v3:";
/// Shortest accepted `--admin-token`, in characters.
pub const MIN_TOKEN_CHARS: usize = 32;

/// The admin token of `--admin-token`.
pub struct AdminToken {
    /// The cookie's HMAC key: HMAC(server secret, token).
    cookie_key: Vec<u8>,
    /// Random key of the constant-time comparison.
    check_key: Vec<u8>,
    /// HMAC of the token under `check_key`.
    expected: Vec<u8>,
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(<hidden>)")
    }
}

impl AdminToken {
    /// The token, its cookies keyed also with `server_secret` (the session
    /// key); `None` for an empty one (`/admin` stays off).
    pub fn new(raw: &str, server_secret: &[u8]) -> Option<Self> {
        if raw.is_empty() {
            return None;
        }
        let check_key = actix_web::cookie::Key::generate().signing().to_vec();
        let expected = mac(&check_key, &[raw.as_bytes()])?;
        let cookie_key = mac(server_secret, &[b"percache admin cookie key:", raw.as_bytes()])?;
        Some(Self {
            cookie_key,
            check_key,
            expected,
        })
    }

    /// Whether `presented` is the token (constant time).
    pub fn matches(&self, presented: &str) -> bool {
        let Ok(mut m) = HmacSha256::new_from_slice(&self.check_key) else {
            return false;
        };
        m.update(presented.as_bytes());
        m.verify_slice(&self.expected).is_ok()
    }

    /// Whether an `Authorization` header value carries the token as a bearer token.
    pub fn matches_bearer(&self, header: &str) -> bool {
        bearer(header).is_some_and(|t| self.matches(t))
    }

    /// The cookie value for a sign-in at `now` (Unix seconds):
    /// `<expiry>.<id>.<hex HMAC-SHA256(key, context + expiry + "." + id)>`,
    /// with a random id, by which a sign-out revokes this cookie alone.
    pub fn cookie_value(&self, now: i64) -> String {
        let expires = now + COOKIE_LIFETIME_SECS;
        let id = format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..));
        let signed = format!("{expires}.{id}");
        let tag = mac(&self.cookie_key, &[COOKIE_CONTEXT, signed.as_bytes()]).unwrap_or_default();
        format!("{signed}.{}", hex::encode(tag))
    }

    /// The id and expiry (Unix seconds) of a cookie value made by
    /// [`AdminToken::cookie_value`] with this token, if it has not expired
    /// at `now` (constant-time check of its tag).
    pub fn cookie_id<'v>(&self, value: &'v str, now: i64) -> Option<(&'v str, i64)> {
        let (signed, tag) = value.rsplit_once('.')?;
        let (expires, id) = signed.split_once('.')?;
        let at = expires.parse::<i64>().ok()?;
        if at <= now || at > now + COOKIE_LIFETIME_SECS || id.is_empty() {
            return None;
        }
        let tag = hex::decode(tag).ok()?;
        let mut m = HmacSha256::new_from_slice(&self.cookie_key).ok()?;
        m.update(COOKIE_CONTEXT);
        m.update(signed.as_bytes());
        m.verify_slice(&tag).is_ok().then_some((id, at))
    }

    /// Whether a cookie value is good at `now` (see [`AdminToken::cookie_id`];
    /// a revoked id is the caller's to refuse).
    pub fn cookie_is_valid(&self, value: &str, now: i64) -> bool {
        self.cookie_id(value, now).is_some()
    }
}

/// The page's cookie: HttpOnly, SameSite=Strict, for the whole site (so
/// `/admin.json` gets it too), Secure with `--secure-cookies`.
pub fn cookie(value: String, secure: bool) -> Cookie<'static> {
    Cookie::build(COOKIE_NAME, value)
        .path("/")
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(secure)
        .max_age(CookieDuration::seconds(COOKIE_LIFETIME_SECS))
        .finish()
}

/// A cookie that removes the page's cookie (sign-out).
pub fn removal_cookie(secure: bool) -> Cookie<'static> {
    let mut cookie = cookie(String::new(), secure);
    cookie.make_removal();
    cookie
}

/// The token of `Bearer <token>` (the scheme in any case).
fn bearer(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

fn mac(key: &[u8], parts: &[&[u8]]) -> Option<Vec<u8>> {
    let mut m = HmacSha256::new_from_slice(key).ok()?;
    for part in parts {
        m.update(part);
    }
    Some(m.finalize().into_bytes().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_token_matches() {
        let token = AdminToken::new("s3cret-token", b"server").unwrap();
        assert!(token.matches("s3cret-token"));
        assert!(!token.matches("s3cret-toke"));
        assert!(!token.matches("s3cret-token "));
        assert!(!token.matches(""));
        assert!(token.matches_bearer("Bearer s3cret-token"));
        assert!(token.matches_bearer("bearer s3cret-token"));
        assert!(!token.matches_bearer("Basic s3cret-token"));
        assert!(!token.matches_bearer("s3cret-token"));
        assert!(AdminToken::new("", b"server").is_none());
        assert_eq!(format!("{token:?}"), "AdminToken(<hidden>)");
    }

    #[test]
    fn cookies_are_bound_to_the_token_and_expire() {
        let token = AdminToken::new("one", b"server").unwrap();
        let now = 1_700_000_000;
        let value = token.cookie_value(now);
        assert!(!value.contains("one"));
        assert!(token.cookie_is_valid(&value, now));
        assert!(token.cookie_is_valid(&value, now + COOKIE_LIFETIME_SECS - 1));
        assert!(!token.cookie_is_valid(&value, now + COOKIE_LIFETIME_SECS));
        // Another token (a rotation) refuses it; so does a tampered expiry.
        assert!(!AdminToken::new("two", b"server")
            .unwrap()
            .cookie_is_valid(&value, now));
        // The same token on a server with another secret refuses it too: the
        // cookie's key is not the token alone (no offline guess from a cookie).
        assert!(!AdminToken::new("one", b"other")
            .unwrap()
            .cookie_is_valid(&value, now));
        let (signed, tag) = value.rsplit_once('.').unwrap();
        let bare_token_mac = mac(b"one", &[COOKIE_CONTEXT, signed.as_bytes()]).unwrap();
        assert!(
            !value.ends_with(&hex::encode(bare_token_mac)),
            "not keyed by the token alone"
        );
        let (_, id) = signed.split_once('.').unwrap();
        let tampered = format!("{}.{id}.{tag}", now + 10);
        assert!(!token.cookie_is_valid(&tampered, now));
        let other_id = format!("{}.{}0.{tag}", now + COOKIE_LIFETIME_SECS, &id[1..]);
        assert!(!token.cookie_is_valid(&other_id, now), "the id is signed");
        let too_long = format!("{}.{id}.{tag}", now + COOKIE_LIFETIME_SECS + 100);
        assert!(!token.cookie_is_valid(&too_long, now));
        // Each sign-in gets its own id.
        let second = token.cookie_value(now);
        let (again, _) = token.cookie_id(&second, now).unwrap();
        assert_ne!(token.cookie_id(&value, now).unwrap().0, again);
        for junk in ["", ".", "x.y", "1.zz", "99999999999.00", "99999999999..00"] {
            assert!(!token.cookie_is_valid(junk, now), "{junk}");
        }
    }
}
