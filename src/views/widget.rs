//! Widget cards: one partial per state (loading, ready, stale,
//! stale-if-error, error); the body is rendered by the widget's view kind
//! (`views::kinds`) once per entry (`views::prerender`), as is the whole
//! ready card but its age, and enum parameters get a control that reloads
//! the card.
//!
//! Every card's outer element carries the stable hooks of SPEC §8:
//! `data-widget`, `data-state`, `data-fetched-at` once it has data, and
//! `aria-busy` while loading.

use maud::{html, Markup, PreEscaped, Render};

use super::prerender;
use crate::cache::entry::Entry;
use crate::cache::{Lookup, Outcome};
use crate::clock::{hh_mm, rfc3339};
use crate::widget::Instance;

/// A placeholder that htmx replaces with the widget as soon as the page loads.
pub fn loading_card(instance: &Instance) -> Markup {
    let widget = instance.id();
    html! {
        article.card.loading id={ "widget-" (widget) } data-widget=(widget) data-state="loading"
            aria-busy="true" aria-live="polite"
            hx-get=(instance.url("")) hx-trigger="load" hx-swap="outerHTML" {
            header { h2 { (instance.widget.title) } span.badge { "loading…" } }
            div.body.skeleton aria-hidden="true" {
                div.line {} div.line {} div.line.short {}
            }
        }
    }
}

/// The card for a lookup: data (fresh, stale or stale-if-error) or an error.
pub fn widget_card(lookup: &Lookup) -> Markup {
    card(lookup, false)
}

/// The card for a lookup, an error card carrying `reference` (the request
/// id, under which the log has the details).
pub fn widget_card_ref(lookup: &Lookup, reference: &str) -> Markup {
    if lookup.entry.is_none() {
        return render_card_ref(lookup, false, Some(reference));
    }
    card(lookup, false)
}

/// The same card marked for an htmx out-of-band swap: sent by `/updates`,
/// it replaces the card with the same id wherever it is on the page.
pub fn live_card(lookup: &Lookup) -> Markup {
    card(lookup, true)
}

/// Where the age goes in the ready card rendered once per entry: an HTML
/// comment, which escaped text (all upstream data, every name) can never
/// produce, and which nothing after the age (the refresh button) holds.
const AGE_SLOT: &str = "<!--age-->";

fn card(lookup: &Lookup, oob: bool) -> Markup {
    let mut html = String::new();
    write_card(lookup, oob, &mut html);
    PreEscaped(html)
}

/// Writes the card for `lookup` at the end of `buffer`.
fn write_card(lookup: &Lookup, oob: bool, buffer: &mut String) {
    if let (
        Some(entry),
        Outcome::Hit { .. } | Outcome::Eager { .. } | Outcome::Miss { .. } | Outcome::Forced { .. },
        false,
    ) = (lookup.entry.as_deref(), lookup.outcome, oob)
    {
        if let Some((before, after)) = &prerender::card(entry, &lookup.instance, ready_halves).ready {
            // The ready card: its two pre-rendered halves and the age.
            buffer.reserve(before.len() + after.len() + 64);
            buffer.push_str(before);
            age_span(age_secs(lookup, entry)).render_to(buffer);
            buffer.push_str(after);
            return;
        }
    }
    render_card(lookup, oob).render_to(buffer);
}

/// A card of the dashboard: the widget's data, or a placeholder that htmx
/// loads. Renders straight into the page.
pub enum DashboardCard {
    /// Data the cache holds.
    Ready(Lookup),
    /// Nothing yet: the loading card.
    Loading(Instance),
}

impl Render for DashboardCard {
    fn render_to(&self, buffer: &mut String) {
        match self {
            DashboardCard::Ready(lookup) => write_card(lookup, false, buffer),
            DashboardCard::Loading(instance) => loading_card(instance).render_to(buffer),
        }
    }
}

/// The card rendered from its template (every state; the ready one is
/// assembled from its halves by [`card`] instead, to the same bytes).
pub(super) fn render_card(lookup: &Lookup, oob: bool) -> Markup {
    render_card_ref(lookup, oob, None)
}

fn render_card_ref(lookup: &Lookup, oob: bool, reference: Option<&str>) -> Markup {
    let instance = &lookup.instance;
    let Some(entry) = lookup.entry.as_ref() else {
        // Plain words; the details are in the log under the reference.
        let mut message = match &lookup.error {
            Some(e) => format!("Could not load this widget: {}.", e.plain()),
            None => "Could not load this widget.".to_owned(),
        };
        if let Some(reference) = reference {
            message.push_str(&format!(" (ref {reference})"));
        }
        return error_card(instance, &message);
    };
    let (state, badge) = match lookup.outcome {
        Outcome::Stale { .. } => ("stale", Some("refreshing…".to_owned())),
        Outcome::Outdated { .. } => (
            "outdated",
            Some(format!(
                "from {} ago · updating…",
                ago(((lookup.now - entry.fetched_at) / 1000).max(0))
            )),
        ),
        Outcome::StaleIfError { .. } => (
            "stale-if-error",
            Some(format!(
                "showing data from {} UTC, source unavailable",
                hh_mm(entry.fetched_at)
            )),
        ),
        _ => ("ready", None),
    };
    let parts = prerender::card(entry, instance, ready_halves);
    let frame = Frame {
        instance,
        entry,
        state,
        badge: badge.as_deref(),
        body: &parts.body,
        version: parts.version,
        oob,
    };
    frame.render(age_span(age_secs(lookup, entry)).render())
}

/// The ready card of `entry`, rendered once with [`AGE_SLOT`] for its age
/// and cut there: `(before, after)`.
pub(super) fn ready_halves(
    instance: &Instance,
    entry: &Entry,
    body: &str,
    version: Option<u64>,
) -> Option<(String, String)> {
    let frame = Frame {
        instance,
        entry,
        state: "ready",
        badge: None,
        body,
        version,
        oob: false,
    };
    prerender::cut_at(AGE_SLOT, |age| frame.render(age))
}

/// A card with data: everything but its age is known from the entry, the
/// instance and the state.
struct Frame<'a> {
    instance: &'a Instance,
    entry: &'a Entry,
    state: &'a str,
    badge: Option<&'a str>,
    body: &'a str,
    version: Option<u64>,
    oob: bool,
}

impl Frame<'_> {
    fn render(&self, age: Markup) -> Markup {
        let instance = self.instance;
        let widget = instance.id();
        html! {
            article.card.{ "state-" (self.state) } id={ "widget-" (widget) } data-widget=(widget)
                data-state=(self.state) data-fetched-at=(rfc3339(self.entry.fetched_at))
                data-version=[self.version] aria-live="polite"
                hx-swap-oob=[self.oob.then_some("true")] {
                // What the live poll reports the page shows (`/updates?seen=`).
                // The poll watches the default parameters: a card shown with
                // others reports `-`, "leave it as it is".
                @if let Some(version) = self.version {
                    @if instance.is_default() {
                        input type="hidden" name="seen" value={ (widget) ":" (version) };
                    } @else {
                        input type="hidden" name="seen" value={ (widget) ":-" };
                    }
                }
                header {
                    h2 { (instance.widget.title) }
                    (param_controls(instance))
                    @if let Some(badge) = self.badge { span.badge role="status" { (badge) } }
                }
                div.body { (PreEscaped(self.body)) }
                footer {
                    (age)
                    (refresh_button(instance, "refresh", "Refresh"))
                }
            }
        }
    }
}

/// Whole seconds since the entry was fetched.
fn age_secs(lookup: &Lookup, entry: &Entry) -> i64 {
    ((lookup.now - entry.fetched_at) / 1000).max(0)
}

/// The card's age, the only part of a ready card that changes between hits.
fn age_span(age: i64) -> AgeSpan {
    AgeSpan(age)
}

/// `<span class="age" data-age="…">updated … ago</span>`, written straight
/// into the card (no string of its own); only digits and fixed words, so
/// nothing to escape.
struct AgeSpan(i64);

impl Render for AgeSpan {
    fn render_to(&self, buffer: &mut String) {
        let secs = self.0;
        buffer.push_str(r#"<span class="age" data-age=""#);
        buffer.push_str(itoa::Buffer::new().format(secs));
        buffer.push_str(r#"">updated "#);
        write_ago(buffer, secs);
        buffer.push_str(" ago</span>");
    }
}

/// An error card with a retry button; one widget's failure stays in its card.
fn error_card(instance: &Instance, message: &str) -> Markup {
    let widget = instance.id();
    html! {
        article.card.state-error id={ "widget-" (widget) } data-widget=(widget) data-state="error"
            aria-live="polite" {
            header { h2 { (instance.widget.title) } (param_controls(instance)) }
            div.body { p.error role="alert" { (message) } }
            footer {
                button data-action="retry" hx-post=(instance.url("/refresh"))
                    hx-target="closest .card" hx-swap="outerHTML" { "Retry" }
                (refresh_button(instance, "refresh", "Refresh"))
            }
        }
    }
}

fn refresh_button(instance: &Instance, action: &str, label: &str) -> Markup {
    html! {
        button.secondary data-action=(action) hx-post=(instance.url("/refresh"))
            hx-target="closest .card" hx-swap="outerHTML" { (label) }
    }
}

/// One `<select>` per parameter: choosing a value reloads just this card
/// with every parameter of the card (`hx-include`). No script: htmx only.
fn param_controls(instance: &Instance) -> Markup {
    let widget = &instance.widget;
    if widget.params.is_empty() {
        return html! {};
    }
    html! {
        span.params {
            @for param in &widget.params {
                @let current = instance.params.get(&param.name).unwrap_or(&param.default);
                label {
                    span.muted { (param.label) " " }
                    select name=(param.name) data-action="param" hx-get={ "/widgets/" (widget.id) }
                        hx-trigger="change" hx-include="closest .params"
                        hx-target="closest .card" hx-swap="outerHTML" {
                        @for value in &param.values {
                            option value=(value) selected[value == current] { (value) }
                        }
                    }
                }
            }
        }
    }
}

/// An age in words, as `assets/ages.js` writes it: `40 s`, `12 min`, `3 h`, `2 d`.
pub fn ago(secs: i64) -> String {
    let mut s = String::with_capacity(8);
    write_ago(&mut s, secs);
    s
}

/// Numbers by itoa, not through the formatting machinery: a ready card's
/// age is written on every hit (five times per dashboard).
fn write_ago(buffer: &mut String, secs: i64) {
    let (n, unit) = match secs {
        s if s < 60 => (s, " s"),
        s if s < 3600 => (s / 60, " min"),
        s if s < 86_400 => (s / 3600, " h"),
        s => (s / 86_400, " d"),
    };
    buffer.push_str(itoa::Buffer::new().format(n));
    buffer.push_str(unit);
}

/// A small fragment for request errors (unknown widget, signed out).
pub fn error_fragment(message: &str) -> Markup {
    html! { p.error role="alert" { (message) } }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_age_reads_in_the_largest_whole_unit() {
        for (secs, text) in [
            (0, "0 s"),
            (59, "59 s"),
            (60, "1 min"),
            (3_599, "59 min"),
            (3_600, "1 h"),
            (86_399, "23 h"),
            (86_400, "1 d"),
            (200_000, "2 d"),
        ] {
            let span = age_span(secs).render().into_string();
            assert_eq!(
                span,
                format!(r#"<span class="age" data-age="{secs}">updated {text} ago</span>"#)
            );
            assert_eq!(ago(secs), text);
        }
    }
}
