//! Widget cards: one partial per state (loading, ready, stale,
//! stale-if-error, error) and one body renderer per widget.
//!
//! Every card's outer element carries the stable hooks of SPEC §8:
//! `data-widget`, `data-state`, `data-fetched-at` once it has data, and
//! `aria-busy` while loading.

use std::borrow::Cow;
use std::fmt::Write as _;

use maud::{html, Markup};
use serde_json::Value;

use crate::cache::{Entry, Lookup, Outcome};
use crate::clock::{hh_mm, rfc3339};
use crate::widget::WidgetId;

/// A placeholder that htmx replaces with the widget as soon as the page loads.
pub fn loading_card(widget: WidgetId) -> Markup {
    html! {
        article.card.loading id={ "widget-" (widget) } data-widget=(widget) data-state="loading"
            aria-busy="true" aria-live="polite"
            hx-get={ "/widgets/" (widget) } hx-trigger="load" hx-swap="outerHTML" {
            header { h2 { (widget.title()) } span.badge { "loading…" } }
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

/// The same card marked for an htmx out-of-band swap: sent by `/updates`,
/// it replaces the card with the same id wherever it is on the page.
pub fn live_card(lookup: &Lookup) -> Markup {
    card(lookup, true)
}

fn card(lookup: &Lookup, oob: bool) -> Markup {
    let widget = lookup.widget;
    let Some(entry) = lookup.entry.as_deref() else {
        let message = match &lookup.error {
            Some(e) => format!("Could not load this widget ({e})."),
            None => "Could not load this widget.".to_owned(),
        };
        return error_card(widget, &message);
    };
    let (state, badge) = match lookup.outcome {
        Outcome::Stale { .. } => ("stale", Some("refreshing…".to_owned())),
        Outcome::StaleIfError { .. } => (
            "stale-if-error",
            Some(format!(
                "showing data from {} UTC, source unavailable",
                hh_mm(entry.fetched_at)
            )),
        ),
        _ => ("ready", None),
    };
    let age = ((lookup.now - entry.fetched_at) / 1000).max(0);
    html! {
        article.card.{ "state-" (state) } id={ "widget-" (widget) } data-widget=(widget)
            data-state=(state) data-fetched-at=(rfc3339(entry.fetched_at))
            data-version=[entry.data.get("version").and_then(Value::as_u64)] aria-live="polite"
            hx-swap-oob=[oob.then_some("true")] {
            header {
                h2 { (widget.title()) }
                @if let Some(badge) = &badge { span.badge role="status" { (badge) } }
            }
            div.body { (widget_body(widget, entry)) }
            footer {
                span.age { "updated " (age) " s ago" }
                (refresh_button(widget, "refresh", "Refresh"))
            }
        }
    }
}

/// An error card with a retry button; one widget's failure stays in its card.
fn error_card(widget: WidgetId, message: &str) -> Markup {
    html! {
        article.card.state-error id={ "widget-" (widget) } data-widget=(widget) data-state="error"
            aria-live="polite" {
            header { h2 { (widget.title()) } }
            div.body { p.error role="alert" { (message) } }
            footer {
                button data-action="retry" hx-post={ "/widgets/" (widget) "/refresh" }
                    hx-target="closest .card" hx-swap="outerHTML" { "Retry" }
                (refresh_button(widget, "refresh", "Refresh"))
            }
        }
    }
}

fn refresh_button(widget: WidgetId, action: &str, label: &str) -> Markup {
    html! {
        button.secondary data-action=(action) hx-post={ "/widgets/" (widget) "/refresh" }
            hx-target="closest .card" hx-swap="outerHTML" { (label) }
    }
}

/// A small fragment for request errors (unknown widget, signed out).
pub fn error_fragment(message: &str) -> Markup {
    html! { p.error role="alert" { (message) } }
}

fn widget_body(widget: WidgetId, entry: &Entry) -> Markup {
    let d = &entry.data;
    match widget.get() {
        1 => profile(d),
        2 => notifications(d),
        3 => analytics(d),
        4 => billing(d),
        _ => activity(d),
    }
}

/// A field as text, or an em dash when missing.
/// Borrowed when the field is a string (the common case): no copy per render.
fn text<'a>(v: &'a Value, field: &str) -> Cow<'a, str> {
    match v.get(field) {
        Some(Value::String(s)) => Cow::Borrowed(s),
        Some(Value::Number(n)) => Cow::Owned(n.to_string()),
        Some(Value::Bool(b)) => Cow::Borrowed(if *b { "true" } else { "false" }),
        _ => Cow::Borrowed("—"),
    }
}

fn items(v: &Value) -> &[Value] {
    v.get("items")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

fn profile(d: &Value) -> Markup {
    html! {
        dl {
            dt { "Name" } dd { (text(d, "name")) }
            dt { "Email" } dd { (text(d, "email")) }
            dt { "Plan" } dd { (text(d, "plan")) }
            dt { "Joined" } dd { (text(d, "memberSince")) }
            dt { "Location" } dd { (text(d, "location")) }
        }
    }
}

fn notifications(d: &Value) -> Markup {
    html! {
        p.big { (text(d, "unread")) " unread" }
        ul { @for item in items(d).iter().take(5) { li { (text(item, "title")) } } }
    }
}

fn analytics(d: &Value) -> Markup {
    let values: Vec<f64> = d
        .get("series")
        .and_then(Value::as_array)
        .map(|s| {
            s.iter()
                .filter_map(|p| p.get("value").and_then(Value::as_f64))
                .collect()
        })
        .unwrap_or_default();
    html! {
        p.big { (text(d, "total")) " " span.muted { (text(d, "metric")) ", 14 days" } }
        (sparkline(&values))
    }
}

/// An inline SVG line chart (no script, no style attribute: CSP-safe).
fn sparkline(values: &[f64]) -> Markup {
    const W: f64 = 280.0;
    const H: f64 = 60.0;
    if values.len() < 2 {
        return html! { p.muted { "No data" } };
    }
    let max = values.iter().cloned().fold(f64::MIN, f64::max);
    let min = values.iter().cloned().fold(f64::MAX, f64::min);
    let span = if max > min { max - min } else { 1.0 };
    let step = W / (values.len() - 1) as f64;
    // One buffer for all the points (no string per point).
    let mut points = String::with_capacity(values.len() * 12);
    for (i, v) in values.iter().enumerate() {
        let sep = if i == 0 { "" } else { " " };
        let _ = write!(
            points,
            "{sep}{:.1},{:.1}",
            i as f64 * step,
            H - 4.0 - (v - min) / span * (H - 8.0)
        );
    }
    html! {
        svg.chart viewBox="0 0 280 60" role="img" aria-label="Daily values, last 14 days"
            preserveAspectRatio="none" {
            polyline points=(points) fill="none" stroke="currentColor" stroke-width="2"
                vector-effect="non-scaling-stroke" {}
        }
    }
}

fn billing(d: &Value) -> Markup {
    let due = d
        .get("amountDueCents")
        .and_then(Value::as_i64)
        .map(|c| format!("{}.{:02} {}", c / 100, (c % 100).abs(), text(d, "currency")));
    let invoices = d.get("invoices").and_then(Value::as_array).map_or(0, Vec::len);
    html! {
        p.big { (due.unwrap_or_else(|| "—".to_owned())) }
        dl {
            dt { "Plan" } dd { (text(d, "plan")) }
            dt { "Due" } dd { (text(d, "dueDate")) }
            dt { "Invoices" } dd { (invoices) }
        }
    }
}

fn activity(d: &Value) -> Markup {
    html! {
        ul {
            @for item in items(d).iter().take(6) {
                li { strong { (text(item, "action")) } " " (text(item, "target")) }
            }
        }
    }
}
