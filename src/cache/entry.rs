//! One cached widget value with its lifetimes, and its wire encoding.

use std::fmt;
use std::sync::OnceLock;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::clock::Millis;
use crate::upstream::Validators;

/// The data of one (user, widget) and the moments that decide how it is served.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry {
    /// The upstream's JSON object, kept as its bytes (checked when fetched):
    /// compact in memory, sent verbatim by the JSON API, decoded only to
    /// render a card ([`Entry::value`]).
    pub data: Box<RawValue>,
    /// When the upstream answered.
    pub fetched_at: Millis,
    /// Until then the entry is served with no upstream call.
    pub fresh_until: Millis,
    /// Until then (ttl) it is served at once and refreshed in the background.
    pub stale_until: Millis,
    /// Until then it may still be served when the upstream fails.
    pub grace_until: Millis,
    /// The fingerprint of the widget definition the data was fetched for;
    /// an entry of another definition is a miss.
    #[serde(default)]
    pub fingerprint: u64,
    /// The stamp its fetch began with (its lease's fencing token): older
    /// than the widget's `allUsers` thresholds, the entry is a miss or
    /// stale. Equal to `started` for an entry its fetch wrote; a soft
    /// invalidation's stale copy has a newer `started`.
    #[serde(default)]
    pub generation: u64,
    /// The stamp of the write that made this entry: the fetch's fencing
    /// token (issued when its fetch began), or a newer stamp for an entry
    /// a soft invalidation rewrote. A store replaces an entry only by one
    /// with a greater stamp, and an invalidation leaves a greater one
    /// behind (a tombstone), so writes never go backwards and a fetch that
    /// began before an invalidation cannot land after it (SPEC §7 "Ordering").
    #[serde(default)]
    pub started: u64,
    /// The upstream's `ETag` and `Last-Modified` of the data, so that a
    /// refresh can ask whether it changed (SPEC §7 "Conditional refresh").
    /// Kept in every store, as part of the entry; dropped by any
    /// invalidation, so the fetch after one is unconditional.
    /// Boxed, and `None` when the upstream sent none (the common case): an
    /// entry is 24 bytes smaller, a size class of the allocator less.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validators: Option<Box<Validators>>,
    /// The responses' bytes made from this entry, on first use (never stored).
    #[serde(skip)]
    pub rendered: Rendered,
}

/// What the responses that serve an entry make of it, made once, on the
/// first request that needs it, and kept with the entry for as long as a
/// store holds it (the in-process store, the L1): every later hit
/// assembles these bytes instead of decoding and rendering the data again.
///
/// It depends only on the entry and its widget instance (which the entry's
/// key names), never on the request, the moment or the state the entry is
/// served in, so it can never show one user's data to another. It is not
/// data: never stored, never compared, and a copy of an entry (made to
/// change it) starts without it. Made lazily rather than when the entry is
/// stored, so that entries nobody reads (a sign-in's prewarm of widgets not
/// on screen, Redis entries read once) cost no rendering and no memory.
///
/// The parts are boxed together: every entry of a store carries this, read
/// or not, and a box to come is two words where the parts themselves are
/// 120 bytes (issue 26: a sign-in's prewarm stores five entries, most never
/// rendered). The box is made by the first request that renders a part.
#[derive(Default)]
pub struct Rendered(OnceLock<Box<RenderedParts>>);

/// The parts an entry's responses are assembled from.
#[derive(Default)]
pub struct RenderedParts {
    /// The card's parts (`views::prerender`).
    pub card: OnceLock<RenderedCard>,
    /// The JSON API's whole body for a fresh entry (`routes::api`).
    pub json_fresh: OnceLock<Bytes>,
}

impl Rendered {
    /// The parts, made (empty) on the first use.
    pub fn parts(&self) -> &RenderedParts {
        self.0.get_or_init(Box::default)
    }
}

/// A card's parts that do not depend on the state it is shown in.
#[derive(Debug)]
pub struct RenderedCard {
    /// The body's HTML (the view kind's, for the data), escaped by maud.
    pub body: String,
    /// The entry's version ([`Entry::version`]), for the card's `data-version`.
    pub version: Option<u64>,
    /// The whole ready card but its age, cut where the age goes: `(before,
    /// after)`. `None` if the card could not be cut (then it is rendered).
    pub ready: Option<(String, String)>,
}

impl Clone for Rendered {
    /// Empty: a copy of an entry is made to change it.
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl fmt::Debug for Rendered {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rendered")
            .field("card", &self.0.get().is_some_and(|p| p.card.get().is_some()))
            .field(
                "json_fresh",
                &self.0.get().is_some_and(|p| p.json_fresh.get().is_some()),
            )
            .finish()
    }
}

/// Where an entry stands at a given moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// Serve it, no upstream call.
    Fresh,
    /// Serve it at once and refresh in the background.
    Stale,
    /// A miss, but still good as a fallback if the upstream fails.
    Expired,
    /// Past grace: useless.
    Dead,
}

/// Why a stored value could not be decoded.
#[derive(Debug, thiserror::Error)]
#[error("cache entry could not be decoded: {0}")]
pub struct DecodeError(#[from] serde_json::Error);

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.data.get() == other.data.get()
            && self.fetched_at == other.fetched_at
            && self.fresh_until == other.fresh_until
            && self.stale_until == other.stale_until
            && self.grace_until == other.grace_until
            && self.fingerprint == other.fingerprint
            && self.generation == other.generation
            && self.started == other.started
            && self.validators == other.validators
    }
}

impl Entry {
    /// The data decoded, to render it. It was checked to be a JSON object
    /// when it was fetched; anything undecodable reads as `null`.
    pub fn value(&self) -> serde_json::Value {
        serde_json::from_str(self.data.get()).unwrap_or(serde_json::Value::Null)
    }

    /// The version of this entry, as cards show it (`data-version`) and
    /// open pages report it back (`/updates?seen=`): the upstream's own
    /// top-level `version` when its data has one (the mock's grows with
    /// each change), else the write's stamp, unique per key and growing
    /// with each write (the fetch time for an entry from before stamps).
    pub fn version(&self) -> u64 {
        #[derive(Deserialize)]
        struct Versioned {
            version: Option<u64>,
        }
        let upstream = serde_json::from_str::<Versioned>(self.data.get())
            .ok()
            .and_then(|v| v.version);
        match upstream {
            Some(version) => version,
            None if self.started > 0 => self.started,
            None => u64::try_from(self.fetched_at).unwrap_or(0),
        }
    }

    /// Where the entry stands at `now`.
    pub fn freshness(&self, now: Millis) -> Freshness {
        if now < self.fresh_until {
            Freshness::Fresh
        } else if now < self.stale_until {
            Freshness::Stale
        } else if now < self.grace_until {
            Freshness::Expired
        } else {
            Freshness::Dead
        }
    }

    /// Whole seconds of freshness left (negative once stale), as in `Cache-Status: ttl=`.
    pub fn ttl_secs(&self, now: Millis) -> i64 {
        (self.fresh_until - now).div_euclid(1000)
    }

    /// The bytes stored in Redis.
    pub fn encode(&self) -> Vec<u8> {
        // Serialising a `Value` and integers cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// The inverse of [`Entry::encode`]; any garbage is an error, never a panic.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        Ok(serde_json::from_slice(bytes)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry {
        Entry {
            data: serde_json::value::to_raw_value(&serde_json::json!({"name": "alice", "version": 3}))
                .unwrap(),
            fetched_at: 1_000,
            fresh_until: 61_000,
            stale_until: 601_000,
            grace_until: 86_401_000,
            fingerprint: 7,
            generation: 2,
            started: 2,
            validators: Default::default(),
            rendered: Rendered::default(),
        }
    }

    /// An `Arc<Entry>` (the entry and its two counts) fits the allocator's
    /// 112-byte class (issue 26: RSS per entry after a burst).
    #[test]
    fn an_entry_in_its_arc_fits_112_bytes() {
        let in_arc = std::mem::size_of::<Entry>() + 2 * std::mem::size_of::<usize>();
        assert!(in_arc <= 112, "Arc<Entry> takes {in_arc} bytes");
    }

    #[test]
    fn validators_survive_the_stores_encoding_and_are_left_out_when_none() {
        let mut with = entry();
        with.validators = Validators {
            etag: Some("\"w1-v3\"".into()),
            last_modified: Some("Sun, 06 Dec 2026 09:00:00 GMT".into()),
        }
        .boxed();
        assert!(with.validators.is_some());
        let decoded = Entry::decode(&with.encode()).unwrap();
        assert_eq!(decoded, with);
        assert_eq!(decoded.validators, with.validators);
        let plain = String::from_utf8(entry().encode()).unwrap();
        assert!(!plain.contains("validators"), "{plain}");
        assert_ne!(
            Entry::decode(plain.as_bytes()).unwrap(),
            with,
            "validators count in equality"
        );
    }

    #[test]
    fn freshness_follows_the_boundaries() {
        let e = entry();
        assert_eq!(e.freshness(1_000), Freshness::Fresh);
        assert_eq!(e.freshness(60_999), Freshness::Fresh);
        assert_eq!(e.freshness(61_000), Freshness::Stale);
        assert_eq!(e.freshness(601_000), Freshness::Expired);
        assert_eq!(e.freshness(86_401_000), Freshness::Dead);
    }

    #[test]
    fn ttl_is_negative_once_stale() {
        let e = entry();
        assert_eq!(e.ttl_secs(1_000), 60);
        assert_eq!(e.ttl_secs(62_000), -1);
    }

    #[test]
    fn round_trips_and_rejects_garbage() {
        let e = entry();
        assert_eq!(Entry::decode(&e.encode()).unwrap(), e);
        assert!(Entry::decode(b"").is_err());
        assert!(Entry::decode(b"{\"data\":1}").is_err());
        assert!(Entry::decode(&[0xff, 0xfe]).is_err());
    }
}
