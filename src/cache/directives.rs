//! The request's own cache directives (RFC 9111 §5.2.1), as the JSON API
//! honours them: `no-cache`, `max-age`, `min-fresh`, `max-stale` and
//! `only-if-cached`. The cache policy asks these what an entry may be
//! served for; the routes only parse the header.

use crate::cache::entry::Entry;
use crate::clock::Millis;

/// What a request allows; the default is the server's own policy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Directives {
    /// Fetch, even with a fresh entry (still single-flight).
    pub no_cache: bool,
    /// Serve only an entry at most this many seconds old.
    pub max_age: Option<u64>,
    /// Serve only an entry that stays fresh at least this many seconds more.
    pub min_fresh: Option<u64>,
    /// An entry past ttl may be served at once: up to this many seconds
    /// past it (`Some(None)`: any, within grace).
    pub max_stale: Option<Option<u64>>,
    /// Never call the upstream: serve what is usable, else 504.
    pub only_if_cached: bool,
}

/// A directive with a value that is not a number of seconds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Cache-Control: `{0}` needs a number of seconds, e.g. max-age=60")]
pub struct DirectiveError(pub String);

impl Directives {
    /// Reads one or more `Cache-Control` values (comma-separated; the
    /// directives of several headers joined). Unknown directives are
    /// ignored, as RFC 9111 asks; a known one with a bad value is an error.
    pub fn parse<'a>(values: impl IntoIterator<Item = &'a str>) -> Result<Self, DirectiveError> {
        let mut d = Self::default();
        for part in values.into_iter().flat_map(|v| v.split(',')) {
            let part = part.trim();
            let (name, value) = match part.split_once('=') {
                Some((n, v)) => (n.trim(), Some(v.trim().trim_matches('"'))),
                None => (part, None),
            };
            let seconds = || -> Result<u64, DirectiveError> {
                value
                    .and_then(|v| v.parse::<u64>().ok())
                    .ok_or_else(|| DirectiveError(part.to_owned()))
            };
            match name.to_ascii_lowercase().as_str() {
                "no-cache" => d.no_cache = true,
                "only-if-cached" => d.only_if_cached = true,
                "max-age" => d.max_age = Some(seconds()?),
                "min-fresh" => d.min_fresh = Some(seconds()?),
                "max-stale" => d.max_stale = Some(value.map(|_| seconds()).transpose()?),
                _ => {}
            }
        }
        Ok(d)
    }

    /// What the dashboard does: serve anything within grace at once.
    pub fn inline() -> Self {
        Self {
            max_stale: Some(None),
            ..Self::default()
        }
    }

    /// Whether the request sets limits on the age or freshness it accepts.
    pub fn demands_fresher(&self) -> bool {
        self.max_age.is_some() || self.min_fresh.is_some()
    }

    /// Whether an entry within ttl satisfies `max-age` and `min-fresh`.
    pub fn accepts(&self, entry: &Entry, now: Millis) -> bool {
        let age_ok = self.max_age.is_none_or(|a| now - entry.fetched_at <= secs(a));
        let fresh_ok = self.min_fresh.is_none_or(|f| entry.fresh_until - now >= secs(f));
        age_ok && fresh_ok
    }

    /// Whether an entry past ttl may be served at once (`max-stale`).
    pub fn allows_past_ttl(&self, entry: &Entry, now: Millis) -> bool {
        match self.max_stale {
            None => false,
            Some(None) => true,
            Some(Some(n)) => now - entry.stale_until <= secs(n),
        }
    }
}

fn secs(s: u64) -> Millis {
    Millis::try_from(s.saturating_mul(1000)).unwrap_or(Millis::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry {
        Entry {
            data: serde_json::value::to_raw_value(&serde_json::json!({})).unwrap(),
            fetched_at: 0,
            fresh_until: 60_000,
            stale_until: 600_000,
            grace_until: 86_400_000,
            fingerprint: 0,
            generation: 0,
            started: 0,
            validators: Default::default(),
            rendered: Default::default(),
        }
    }

    #[test]
    fn parses_every_directive() {
        let d = Directives::parse([
            "no-cache, max-age=5",
            "MIN-FRESH=\"7\", max-stale, only-if-cached, x-y=z",
        ])
        .unwrap();
        assert!(d.no_cache && d.only_if_cached);
        assert_eq!(
            (d.max_age, d.min_fresh, d.max_stale),
            (Some(5), Some(7), Some(None))
        );
        assert_eq!(
            Directives::parse(["max-stale=30"]).unwrap().max_stale,
            Some(Some(30))
        );
        assert_eq!(Directives::parse([""]).unwrap(), Directives::default());
        assert!(Directives::parse(["max-age=soon"]).is_err());
        assert!(Directives::parse(["max-age"]).is_err());
        assert!(Directives::parse(["min-fresh=-1"]).is_err());
    }

    #[test]
    fn limits_follow_age_and_freshness() {
        let e = entry();
        let d = Directives::parse(["max-age=10"]).unwrap();
        assert!(d.accepts(&e, 10_000));
        assert!(!d.accepts(&e, 10_001));
        let d = Directives::parse(["min-fresh=20"]).unwrap();
        assert!(d.accepts(&e, 40_000));
        assert!(!d.accepts(&e, 40_001));
        let d = Directives::parse(["max-stale=30"]).unwrap();
        assert!(d.allows_past_ttl(&e, 630_000));
        assert!(!d.allows_past_ttl(&e, 630_001));
        assert!(Directives::inline().allows_past_ttl(&e, 86_000_000));
        assert!(!Directives::default().allows_past_ttl(&e, 600_000));
    }
}
