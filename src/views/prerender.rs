//! Card bodies rendered once per fetched entry, not once per hit.
//!
//! A card's body (the view kind's HTML for the upstream's data) depends only
//! on the entry and its widget instance, never on the state the card is shown
//! in (ready, stale, outdated…). Decoding the upstream's JSON and rendering it
//! is most of a card's cost, so a hit reuses the body rendered for the same
//! entry by an earlier hit, and only the few state-dependent parts around it
//! (badge, age, fetched-at) are written per request.
//!
//! The bodies live in a small process-wide cache beside the stores, bounded
//! in bytes ([`CAPACITY_BYTES`]), so the stores' own per-entry footprint and
//! byte capacity stay as they are. It is keyed by the entry's address and
//! holds a [`Weak`] to the entry: while a slot exists, its allocation cannot
//! be reused, so an entry found at a slot's address *is* that slot's entry.
//! A body can never be shown for another entry, let alone another user's.
//!
//! Only entries that a store also holds (the in-process store, the L1) are
//! kept: an entry decoded for one request only (Redis with the L1 off) is
//! never seen again, and keeping it would only evict useful bodies.

use std::sync::{Arc, LazyLock, Weak};

use moka::sync::Cache;
use serde_json::Value;

use super::kinds;
use crate::cache::entry::Entry;
use crate::widget::Instance;

/// The most bytes of rendered bodies kept: about 1,000 cards of the mock's,
/// the dashboards of the 200 most recently active users of an instance. A
/// fixed cost (it keeps the RSS per cached entry of a store of 20,000
/// entries within 1.5 KiB); a larger one would serve more users' hits
/// pre-rendered, at about 1.5 times its size in RSS.
pub const CAPACITY_BYTES: u64 = 1 << 20;

/// The state-independent part of a card, rendered once.
#[derive(Debug)]
pub struct Body {
    /// The body's HTML, escaped by maud when it was rendered.
    pub html: String,
    /// The upstream's `version` field, for the card's `data-version`.
    pub version: Option<u64>,
}

#[derive(Clone)]
struct Slot {
    /// Held, never read: keeps the entry's allocation, and so its address,
    /// from being reused while the slot lives.
    _entry: Weak<Entry>,
    body: Arc<Body>,
}

static BODIES: LazyLock<Cache<usize, Slot>> = LazyLock::new(|| {
    Cache::builder()
        .max_capacity(CAPACITY_BYTES)
        .weigher(|_, slot: &Slot| {
            u32::try_from(slot.body.html.len() + std::mem::size_of::<Slot>() + 64).unwrap_or(u32::MAX)
        })
        .build()
});

/// The body of `entry`'s card for `instance`: the one rendered by an earlier
/// hit on the same entry, or rendered now.
pub fn body(entry: &Arc<Entry>, instance: &Instance) -> Arc<Body> {
    let address = Arc::as_ptr(entry) as usize;
    // `entry` is alive, so a slot at its address holds a `Weak` to it (see
    // the module doc): the body is this entry's.
    if let Some(slot) = BODIES.get(&address) {
        return slot.body;
    }
    let body = Arc::new(render(entry, instance));
    if Arc::strong_count(entry) > 1 {
        BODIES.insert(
            address,
            Slot {
                _entry: Arc::downgrade(entry),
                body: Arc::clone(&body),
            },
        );
    }
    body
}

fn render(entry: &Entry, instance: &Instance) -> Body {
    let data = entry.value();
    Body {
        html: kinds::body(instance.widget.view.as_ref(), &data, &instance.params).into_string(),
        version: data.get("version").and_then(Value::as_u64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::widget::Registry;

    fn entry(json: &str) -> Arc<Entry> {
        Arc::new(Entry {
            data: serde_json::value::RawValue::from_string(json.to_owned()).unwrap(),
            fetched_at: 0,
            fresh_until: 1,
            stale_until: 2,
            grace_until: 3,
            fingerprint: 0,
            generation: 0,
        })
    }

    fn profile() -> Instance {
        Registry::builtin().get("1").unwrap().default_instance()
    }

    #[test]
    fn an_entry_a_store_holds_is_rendered_once() {
        let instance = profile();
        let e = entry(r#"{"name":"alice","version":3}"#);
        let _held_by_a_store = Arc::clone(&e);

        let first = body(&e, &instance);
        let second = body(&e, &instance);

        assert!(
            Arc::ptr_eq(&first, &second),
            "the second hit reuses the first body"
        );
        assert!(first.html.contains("alice"));
        assert_eq!(first.version, Some(3));
    }

    #[test]
    fn another_entry_never_gets_an_earlier_entrys_body() {
        let instance = profile();
        // Entries created and dropped one after the other: the allocator is
        // free to reuse an address once nothing points at it.
        for i in 0..200 {
            let e = entry(&format!(r#"{{"name":"user-{i}","version":{i}}}"#));
            let _held = Arc::clone(&e);

            let b = body(&e, &instance);

            assert!(b.html.contains(&format!("user-{i}<")), "entry {i}: {}", b.html);
            assert_eq!(b.version, Some(i));
        }
    }

    #[test]
    fn an_entry_only_this_request_holds_is_not_kept() {
        let instance = profile();
        let e = entry(r#"{"name":"once","version":1}"#);

        let first = body(&e, &instance);
        let second = body(&e, &instance);

        assert!(!Arc::ptr_eq(&first, &second), "rendered again: nothing kept it");
        assert_eq!(first.html, second.html);
    }
}
