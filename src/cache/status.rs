//! The `Cache-Status` header (RFC 9211) of widget responses.

use std::fmt::Write as _;

use actix_web::http::header::{HeaderName, HeaderValue};

use crate::cache::service::{Lookup, Outcome};

/// The header's name.
pub const HEADER: &str = "cache-status";
/// The header's name, checked once when compiled (see `routes::respond`).
static NAME: HeaderName = HeaderName::from_static(HEADER);

/// Renders `Cache-Status` for a lookup, e.g. `percache; hit; ttl=42`.
pub fn cache_status(lookup: &Lookup) -> String {
    // Room for the longest value without growing; a hit's number written
    // by itoa, not through the formatting machinery (it is on every hit).
    let mut s = String::with_capacity(64);
    s.push_str("percache; ");
    match &lookup.outcome {
        Outcome::Hit { ttl } | Outcome::Eager { ttl } => {
            s.push_str("hit; ttl=");
            s.push_str(itoa::Buffer::new().format(*ttl));
        }
        Outcome::Outdated { ttl } => {
            let _ = write!(s, "hit; ttl={ttl}; detail=outdated");
        }
        Outcome::OnlyIfCached => s.push_str("fwd=miss; detail=only-if-cached"),
        Outcome::Stale { ttl } => {
            let _ = write!(s, "hit; ttl={ttl}; detail=revalidating");
        }
        Outcome::Miss { collapsed } => {
            s.push_str("fwd=miss; stored");
            if *collapsed {
                s.push_str("; collapsed");
            }
        }
        Outcome::Forced { collapsed } => {
            s.push_str("fwd=request; stored");
            if *collapsed {
                s.push_str("; collapsed");
            }
        }
        Outcome::StaleIfError { status } => {
            let _ = write!(s, "fwd=miss; fwd-status={status}; detail=stale-if-error");
        }
        Outcome::Error { status } => {
            let _ = write!(s, "fwd=miss; fwd-status={status}");
        }
    }
    if lookup.store_unavailable {
        s.push_str("; detail=store-unavailable");
    }
    s
}

/// The header, name and value, ready for a response's header map (neither
/// parsed again on the way out).
pub fn header(lookup: &Lookup) -> (HeaderName, HeaderValue) {
    let value = HeaderValue::from_maybe_shared(bytes::Bytes::from(cache_status(lookup)))
        // Unreachable: the value is ASCII made above.
        .unwrap_or_else(|_| HeaderValue::from_static("percache"));
    (NAME.clone(), value)
}
