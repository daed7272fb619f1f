//! One cached widget value with its lifetimes, and its wire encoding.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::clock::Millis;

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
    /// The widget's generation when the fetch started: older than the
    /// widget's invalidation thresholds, the entry is a miss or stale.
    #[serde(default)]
    pub generation: u64,
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
    }
}

/// Upstream JSON as an entry keeps it: valid JSON, and an object.
pub fn raw_object(bytes: &[u8]) -> Result<Box<RawValue>, String> {
    let raw: Box<RawValue> = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    if raw.get().starts_with('{') {
        Ok(raw)
    } else {
        Err("not a JSON object".into())
    }
}

impl Entry {
    /// The data decoded, to render it. It was checked to be a JSON object
    /// when it was fetched; anything undecodable reads as `null`.
    pub fn value(&self) -> serde_json::Value {
        serde_json::from_str(self.data.get()).unwrap_or(serde_json::Value::Null)
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
        }
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
