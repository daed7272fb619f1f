//! Card parts rendered once per entry, not once per hit.
//!
//! A card's body (the view kind's HTML for the upstream's data) depends only
//! on the entry and its widget instance, never on the state the card is shown
//! in (ready, stale, outdated…). Decoding the upstream's JSON and rendering it
//! is most of a card's cost. So is, for the common case of a fresh hit, the
//! rest of the ready card around it (title, controls, buttons), where only
//! the age changes from one hit to the next. Both are made on the first
//! request that shows the entry and kept with it ([`Entry::rendered`]): a
//! later hit on an entry that a store holds (the in-process store, the L1)
//! writes the age between two pre-rendered halves.
//!
//! An entry decoded for one request only (Redis with the L1 off) is dropped
//! with what was rendered for it.

use maud::{Markup, PreEscaped};

use super::kinds;
use crate::cache::entry::{Entry, RenderedCard};
use crate::widget::Instance;

/// How the ready card is cut around its age (the card template's own, in
/// `views::widget`, which calls in here: passed down, not imported back).
pub type ReadyHalves = fn(&Instance, &Entry, &str, Option<u64>) -> Option<(String, String)>;

/// The card parts of `entry` for `instance`: those an earlier request
/// rendered for the same entry, or rendered now (the ready card cut by `ready`).
pub fn card<'e>(entry: &'e Entry, instance: &Instance, ready: ReadyHalves) -> &'e RenderedCard {
    entry
        .rendered
        .parts()
        .card
        .get_or_init(|| render(entry, instance, ready))
}

/// Markup rendered once with `slot` (an HTML comment, which no escaped text
/// can produce) where the part that changes from response to response goes,
/// and cut there: `(before, after)`. The last slot counts: what follows it
/// is the template's own markup. `None` if the template left the slot out.
pub(super) fn cut_at(slot: &str, render: impl FnOnce(Markup) -> Markup) -> Option<(String, String)> {
    let whole = render(PreEscaped(slot.to_owned())).into_string();
    whole
        .rsplit_once(slot)
        .map(|(before, after)| (before.to_owned(), after.to_owned()))
}

fn render(entry: &Entry, instance: &Instance, ready: ReadyHalves) -> RenderedCard {
    let data = entry.value();
    let body = kinds::body(instance.widget.view.as_ref(), &data, &instance.params).into_string();
    let version = Some(entry.version());
    let ready = ready(instance, entry, &body, version);
    RenderedCard { body, version, ready }
}

#[cfg(test)]
mod tests {
    use crate::views::widget;
    use std::sync::Arc;

    use super::*;
    use crate::cache::{Lookup, Outcome};
    use crate::widget::Registry;

    fn entry(json: &str, fetched_at: i64) -> Arc<Entry> {
        Arc::new(Entry {
            data: serde_json::value::RawValue::from_string(json.to_owned()).unwrap(),
            fetched_at,
            fresh_until: fetched_at + 1_000_000,
            stale_until: fetched_at + 2_000_000,
            grace_until: fetched_at + 3_000_000,
            fingerprint: 0,
            generation: 0,
            started: 0,
            validators: Default::default(),
            rendered: Default::default(),
        })
    }

    fn instance(id: &str) -> Instance {
        Registry::builtin().get(id).unwrap().default_instance()
    }

    fn lookup(instance: &Instance, entry: &Arc<Entry>, outcome: Outcome, now: i64) -> Lookup {
        Lookup {
            instance: instance.clone(),
            entry: Some(Arc::clone(entry)),
            outcome,
            error: None,
            store_unavailable: false,
            now,
        }
    }

    #[test]
    fn an_entry_is_rendered_once() {
        let instance = instance("1");
        let e = entry(r#"{"name":"alice","version":3}"#, 0);

        let first: *const RenderedCard = card(&e, &instance, widget::ready_halves);
        let second: *const RenderedCard = card(&e, &instance, widget::ready_halves);

        assert_eq!(first, second, "the second hit reuses the first rendering");
        let parts = card(&e, &instance, widget::ready_halves);
        assert!(parts.body.contains("alice"));
        assert_eq!(parts.version, Some(e.version()));
        assert!(parts.ready.is_some(), "the ready card is cut where its age goes");
    }

    #[test]
    fn a_copy_of_an_entry_is_rendered_again() {
        let instance = instance("1");
        let e = entry(r#"{"name":"alice","version":3}"#, 0);
        let _ = card(&e, &instance, widget::ready_halves);

        let mut copy = (*e).clone();
        copy.data = serde_json::value::RawValue::from_string(r#"{"name":"bob","version":4}"#.into()).unwrap();

        assert!(card(&copy, &instance, widget::ready_halves).body.contains("bob"));
        assert!(!card(&copy, &instance, widget::ready_halves)
            .body
            .contains("alice"));
    }

    /// A card assembled from the halves is the card rendered in one go,
    /// whatever the age, and for widgets with parameters too.
    #[test]
    fn an_assembled_ready_card_is_the_rendered_one() {
        for (id, json) in [
            ("1", r#"{"name":"<b>alice</b>","version":3}"#),
            ("3", r#"{"days":7,"points":[1,2,3],"version":9}"#),
        ] {
            let instance = instance(id);
            for age_ms in [0, 59_000, 61_000, 7_200_000, 200_000_000] {
                let held = entry(json, 1_000);
                let once = entry(json, 1_000);
                let hit = lookup(&instance, &held, Outcome::Hit { ttl: 1 }, 1_000 + age_ms);
                let fresh = lookup(&instance, &once, Outcome::Hit { ttl: 1 }, 1_000 + age_ms);

                let assembled = widget::widget_card(&hit).into_string();
                let again = widget::widget_card(&hit).into_string();
                let rendered = widget::render_card(&fresh, false).into_string();

                assert_eq!(assembled, rendered, "widget {id}, age {age_ms} ms");
                assert_eq!(again, rendered, "widget {id}, age {age_ms} ms, second hit");
                assert!(assembled.contains(r#"data-state="ready""#));
            }
        }
    }
}
