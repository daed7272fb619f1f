//! The `Cache-Status` header (RFC 9211) of widget responses.

use std::fmt::Write as _;

use actix_web::http::header::{HeaderName, HeaderValue};

use crate::cache::service::{Lookup, Outcome};

/// The header's name.
pub const HEADER: &str = "cache-status";
/// The header's name, checked once when compiled (see `routes::respond`).
static NAME: HeaderName = HeaderName::from_static(HEADER);

/// Renders `Cache-Status` for a lookup, e.g. `percache; hit; ttl=42`.
///
/// One list member (RFC 8941) with at most one `detail`: when the store was
/// unavailable, a fetched entry was not stored (no `stored`), and the
/// outcome's own detail, if it has one, is joined to it with a `/` (a token
/// may hold one).
pub fn cache_status(lookup: &Lookup) -> String {
    // Room for the longest value without growing; a hit's number written
    // by itoa, not through the formatting machinery (it is on every hit).
    let mut s = String::with_capacity(64);
    s.push_str("percache; ");
    let detail: Option<&str> = match &lookup.outcome {
        Outcome::Hit { ttl } | Outcome::Eager { ttl } => {
            s.push_str("hit; ttl=");
            s.push_str(itoa::Buffer::new().format(*ttl));
            None
        }
        Outcome::Outdated { ttl } => {
            let _ = write!(s, "hit; ttl={ttl}");
            Some("outdated")
        }
        Outcome::OnlyIfCached => {
            s.push_str("fwd=miss");
            Some("only-if-cached")
        }
        Outcome::Stale { ttl } => {
            let _ = write!(s, "hit; ttl={ttl}");
            Some("revalidating")
        }
        Outcome::Miss { collapsed } | Outcome::Forced { collapsed } => {
            s.push_str(match lookup.outcome {
                Outcome::Forced { .. } => "fwd=request",
                _ => "fwd=miss",
            });
            if !lookup.store_unavailable {
                s.push_str("; stored");
            }
            if *collapsed {
                s.push_str("; collapsed");
            }
            None
        }
        Outcome::StaleIfError { status } => {
            let _ = write!(s, "fwd=miss; fwd-status={status}");
            Some("stale-if-error")
        }
        Outcome::Revalidated { collapsed } => {
            s.push_str("fwd=stale; fwd-status=304");
            if *collapsed {
                s.push_str("; collapsed");
            }
            None
        }
        Outcome::Error { status } => {
            let _ = write!(s, "fwd=miss; fwd-status={status}");
            None
        }
    };
    match (detail, lookup.store_unavailable) {
        (Some(detail), true) => {
            let _ = write!(s, "; detail={detail}/store-unavailable");
        }
        (Some(detail), false) => {
            let _ = write!(s, "; detail={detail}");
        }
        (None, true) => s.push_str("; detail=store-unavailable"),
        (None, false) => {}
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::widget::Registry;

    fn lookup(outcome: Outcome, store_unavailable: bool) -> Lookup {
        Lookup {
            instance: Registry::builtin().default_instance("1").unwrap(),
            entry: None,
            outcome,
            error: None,
            store_unavailable,
            now: 0,
        }
    }

    /// Every outcome, with and without the store: the exact value, one
    /// list member of RFC 8941 named `percache`, at most one `detail`, and
    /// `stored` only when the store took the entry.
    #[test]
    fn every_outcome_is_one_structured_field_member_with_at_most_one_detail() {
        use Outcome::*;
        let table: [(Outcome, &str, &str); 13] = [
            (
                Hit { ttl: 42 },
                "percache; hit; ttl=42",
                "percache; hit; ttl=42; detail=store-unavailable",
            ),
            (
                Eager { ttl: 3 },
                "percache; hit; ttl=3",
                "percache; hit; ttl=3; detail=store-unavailable",
            ),
            (
                Outdated { ttl: -700 },
                "percache; hit; ttl=-700; detail=outdated",
                "percache; hit; ttl=-700; detail=outdated/store-unavailable",
            ),
            (
                OnlyIfCached,
                "percache; fwd=miss; detail=only-if-cached",
                "percache; fwd=miss; detail=only-if-cached/store-unavailable",
            ),
            (
                Stale { ttl: -5 },
                "percache; hit; ttl=-5; detail=revalidating",
                "percache; hit; ttl=-5; detail=revalidating/store-unavailable",
            ),
            (
                Miss { collapsed: false },
                "percache; fwd=miss; stored",
                "percache; fwd=miss; detail=store-unavailable",
            ),
            (
                Miss { collapsed: true },
                "percache; fwd=miss; stored; collapsed",
                "percache; fwd=miss; collapsed; detail=store-unavailable",
            ),
            (
                Forced { collapsed: false },
                "percache; fwd=request; stored",
                "percache; fwd=request; detail=store-unavailable",
            ),
            (
                Forced { collapsed: true },
                "percache; fwd=request; stored; collapsed",
                "percache; fwd=request; collapsed; detail=store-unavailable",
            ),
            (
                StaleIfError { status: 503 },
                "percache; fwd=miss; fwd-status=503; detail=stale-if-error",
                "percache; fwd=miss; fwd-status=503; detail=stale-if-error/store-unavailable",
            ),
            (
                Error { status: 504 },
                "percache; fwd=miss; fwd-status=504",
                "percache; fwd=miss; fwd-status=504; detail=store-unavailable",
            ),
            (
                Revalidated { collapsed: false },
                "percache; fwd=stale; fwd-status=304",
                "percache; fwd=stale; fwd-status=304; detail=store-unavailable",
            ),
            (
                Revalidated { collapsed: true },
                "percache; fwd=stale; fwd-status=304; collapsed",
                "percache; fwd=stale; fwd-status=304; collapsed; detail=store-unavailable",
            ),
        ];
        for (outcome, with_store, without) in table {
            for (unavailable, expected) in [(false, with_store), (true, without)] {
                let value = cache_status(&lookup(outcome, unavailable));
                assert_eq!(value, expected, "{outcome:?}, store unavailable: {unavailable}");
                assert!(value.matches("detail=").count() <= 1, "{value}");
                assert!(!(unavailable && value.contains("stored")), "{value}");
                let list = sfv::Parser::parse_list(value.as_bytes())
                    .unwrap_or_else(|e| panic!("{value} is not an RFC 8941 list: {e}"));
                assert_eq!(list.len(), 1, "{value}");
                match &list[0] {
                    sfv::ListEntry::Item(item) => {
                        assert_eq!(item.bare_item, sfv::BareItem::Token("percache".into()), "{value}");
                        let detail = item.params.get("detail").and_then(|d| d.as_token());
                        if unavailable {
                            assert!(
                                detail.is_some_and(|d| d.ends_with("store-unavailable")),
                                "{value}"
                            );
                        }
                    }
                    other => panic!("{value}: not an item: {other:?}"),
                }
            }
        }
    }
}
