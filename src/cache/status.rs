//! The `Cache-Status` header (RFC 9211) of widget responses.

use std::fmt::Write as _;

use crate::cache::service::{Lookup, Outcome};

/// The header's name.
pub const HEADER: &str = "cache-status";

/// Renders `Cache-Status` for a lookup, e.g. `percache; hit; ttl=42`.
pub fn cache_status(lookup: &Lookup) -> String {
    let mut s = String::from("percache; ");
    match &lookup.outcome {
        Outcome::Hit { ttl } | Outcome::Eager { ttl } => {
            let _ = write!(s, "hit; ttl={ttl}");
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
