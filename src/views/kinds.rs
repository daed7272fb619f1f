//! A card's body, by the widget's view kind (SPEC §10): `fields`, `stat`,
//! `list`, `chart`, and a generic view for a widget with no `view`.
//!
//! Values come from the upstream's JSON through JSON Pointers; maud escapes
//! every one of them. The chart is an inline SVG with no script and no style
//! attribute, so the CSP stays as it is.

use std::borrow::Cow;
use std::fmt::Write as _;

use maud::{html, Markup};
use serde_json::Value;

use crate::widget::params::Canonical;
use crate::widget::view::{pieces, ChartView, Field, FieldsView, Format, ListView, Piece, Shown, View};

/// The body of a card for `data`, as `view` says (generic without one).
pub fn body(view: Option<&View>, data: &Value, params: &Canonical) -> Markup {
    match view {
        None => generic(data),
        Some(View::Fields(v)) => fields(v, data, params),
        Some(View::Stat(s)) => headline(Some(s), data, params),
        Some(View::List(v)) => list(v, data, params),
        Some(View::Chart(v)) => chart(v, data, params),
    }
}

/// A value as text: strings as they are, numbers as written, arrays as a
/// count; missing or null as an em dash. Borrowed when it is a string
/// (the common case): no copy per render.
pub fn text(v: Option<&Value>) -> Cow<'_, str> {
    match v {
        Some(Value::String(s)) => Cow::Borrowed(s),
        Some(Value::Number(n)) => Cow::Owned(n.to_string()),
        Some(Value::Bool(b)) => Cow::Borrowed(if *b { "true" } else { "false" }),
        Some(Value::Array(a)) => Cow::Owned(format!("{} items", a.len())),
        Some(Value::Object(o)) => Cow::Owned(format!("{} fields", o.len())),
        Some(Value::Null) | None => Cow::Borrowed("—"),
    }
}

/// A value in a format.
fn formatted<'a>(
    v: Option<&'a Value>,
    format: Format,
    currency: Option<&str>,
    scale: u32,
    data: &'a Value,
) -> Cow<'a, str> {
    match format {
        Format::Text => text(v),
        Format::Count => match v {
            Some(Value::Array(a)) => Cow::Owned(a.len().to_string()),
            Some(Value::Object(o)) => Cow::Owned(o.len().to_string()),
            other => text(other),
        },
        Format::Money => {
            let code = match currency {
                Some(c) if c.starts_with('/') => text(data.pointer(c)).into_owned(),
                Some(c) => c.to_owned(),
                None => String::new(),
            };
            match v.and_then(|v| money(v, scale)) {
                Some(amount) if code.is_empty() => Cow::Owned(amount),
                Some(amount) => Cow::Owned(format!("{amount} {code}")),
                None => text(v),
            }
        }
    }
}

/// `1234` at scale 2 → `12.34`; `-5` → `-0.05`; `12.5` at scale 0 → `12.50`.
fn money(v: &Value, scale: u32) -> Option<String> {
    if let Some(n) = v.as_i64() {
        if scale == 0 {
            return Some(n.to_string());
        }
        let unit = 10i128.checked_pow(scale)?;
        let n = i128::from(n);
        let sign = if n < 0 { "-" } else { "" };
        let (whole, frac) = (n.abs() / unit, n.abs() % unit);
        return Some(format!("{sign}{whole}.{frac:0width$}", width = scale as usize));
    }
    let f = v.as_f64()? / 10f64.powi(i32::try_from(scale).ok()?);
    Some(format!("{f:.2}"))
}

/// Fills a caption or label template.
fn fill(template: &str, data: &Value, params: &Canonical) -> String {
    let mut out = String::with_capacity(template.len() + 16);
    for piece in pieces(template) {
        match piece {
            Piece::Text(t) => out.push_str(t),
            Piece::Data(p) => out.push_str(&text(data.pointer(p))),
            Piece::Param(p) => out.push_str(params.get(p).unwrap_or("")),
        }
    }
    out
}

/// The big line at the top of a card (or all of a `stat`).
fn headline(h: Option<&Shown>, data: &Value, params: &Canonical) -> Markup {
    let Some(h) = h else { return html! {} };
    let value = formatted(h.value.get(data), h.format, h.currency.as_deref(), h.scale, data);
    html! {
        p.big {
            (value)
            @if let Some(suffix) = &h.suffix { (suffix) }
            @if let Some(caption) = &h.caption { " " span.muted { (fill(caption, data, params)) } }
        }
    }
}

fn field(f: &Field, data: &Value) -> Markup {
    html! {
        dt { (f.label) }
        dd { (formatted(f.value.get(data), f.format, f.currency.as_deref(), f.scale, data)) }
    }
}

fn fields(v: &FieldsView, data: &Value, params: &Canonical) -> Markup {
    html! {
        (headline(v.headline.as_ref(), data, params))
        dl { @for f in &v.fields { (field(f, data)) } }
    }
}

fn list(v: &ListView, data: &Value, params: &Canonical) -> Markup {
    let items = v
        .items
        .get(data)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    html! {
        (headline(v.headline.as_ref(), data, params))
        ul {
            @for item in items.iter().take(v.limit) {
                li {
                    @if let Some(secondary) = &v.secondary {
                        strong { (text(v.primary.get(item))) } " " (text(secondary.get(item)))
                    } @else {
                        (text(v.primary.get(item)))
                    }
                }
            }
        }
    }
}

fn chart(v: &ChartView, data: &Value, params: &Canonical) -> Markup {
    let values: Vec<f64> = v
        .series
        .get(data)
        .and_then(Value::as_array)
        .map(|s| {
            s.iter()
                .filter_map(|p| match &v.point {
                    Some(ptr) => ptr.get(p).and_then(Value::as_f64),
                    None => p.as_f64(),
                })
                .collect()
        })
        .unwrap_or_default();
    let label = v
        .label
        .as_deref()
        .map_or_else(|| "Chart".to_owned(), |l| fill(l, data, params));
    html! {
        (headline(v.headline.as_ref(), data, params))
        (sparkline(&values, &label))
    }
}

/// An inline SVG line chart (no script, no style attribute: CSP-safe).
fn sparkline(values: &[f64], label: &str) -> Markup {
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
        svg.chart viewBox="0 0 280 60" role="img" aria-label=(label)
            preserveAspectRatio="none" {
            polyline points=(points) fill="none" stroke="currentColor" stroke-width="2"
                vector-effect="non-scaling-stroke" {}
        }
    }
}

/// No `view`: the top-level fields, as label/value rows.
fn generic(data: &Value) -> Markup {
    match data.as_object() {
        Some(map) => html! {
            dl { @for (key, value) in map { dt { (key) } dd { (text(Some(value))) } } }
        },
        None => html! { p { (text(Some(data))) } },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn money_is_exact_for_minor_units() {
        assert_eq!(money(&json!(1234), 2).as_deref(), Some("12.34"));
        assert_eq!(money(&json!(-5), 2).as_deref(), Some("-0.05"));
        assert_eq!(money(&json!(-150), 2).as_deref(), Some("-1.50"));
        assert_eq!(money(&json!(7), 0).as_deref(), Some("7"));
        assert_eq!(money(&json!(12.5), 0).as_deref(), Some("12.50"));
        assert_eq!(money(&json!("x"), 2), None);
    }

    /// Every kind, fed hostile strings in every slot it reads.
    #[test]
    fn every_kind_escapes_upstream_data() {
        const EVIL: &str = "<script>alert(1)</script>";
        let data = json!({
            "name": EVIL, "cents": 1234, "cur": EVIL,
            "items": [{"a": EVIL, "b": EVIL}],
            "series": [{"v": 1}, {"v": 3}],
        });
        let file = format!(
            r#"[[widget]]
id = "f"
title = "F"
path = "/f"
view = {{ kind = "fields", headline = {{ value = "/cents", format = "money", currency = "/cur", scale = 2, caption = "{{/name}}" }}, fields = [ {{ label = "N", value = "/name" }} ] }}
[[widget]]
id = "s"
title = "S"
path = "/s"
view = {{ kind = "stat", value = "/name", suffix = "{EVIL}", caption = "{{/name}}" }}
[[widget]]
id = "l"
title = "L"
path = "/l"
view = {{ kind = "list", items = "/items", primary = "/a", secondary = "/b" }}
[[widget]]
id = "c"
title = "C"
path = "/c"
view = {{ kind = "chart", series = "/series", point = "/v", label = "{{/name}}", headline = {{ value = "/name" }} }}
[[widget]]
id = "g"
title = "G"
path = "/g"
"#
        );
        let registry = crate::widget::file::parse("t", &file, &|_| None).unwrap();
        for widget in registry.all() {
            let html = body(widget.view.as_ref(), &data, &Canonical::default()).into_string();
            assert!(!html.contains("<script"), "{}: {html}", widget.id);
            assert!(html.contains("&lt;script&gt;"), "{}: {html}", widget.id);
        }
    }

    #[test]
    fn the_builtin_views_show_what_the_cards_showed() {
        let registry = crate::widget::Registry::builtin();
        let billing = registry.get("4").unwrap();
        let data = json!({"amountDueCents": 24500, "currency": "USD", "plan": "Team",
                          "dueDate": "2025-07-28", "invoices": [1, 2, 3]});
        let html = body(billing.view.as_ref(), &data, &Canonical::default()).into_string();
        assert!(html.contains(r#"<p class="big">245.00 USD</p>"#), "{html}");
        assert!(html.contains("<dt>Invoices</dt><dd>3</dd>"), "{html}");
        let analytics = registry.get("3").unwrap().default_instance();
        let data = json!({"metric": "Page views", "total": 7, "series": [{"value": 1}, {"value": 2}]});
        let html = body(analytics.widget.view.as_ref(), &data, &analytics.params).into_string();
        assert!(
            html.contains(r#"7 <span class="muted">Page views, 14 days</span>"#),
            "{html}"
        );
        assert!(
            html.contains(r#"aria-label="Daily values, last 14 days""#),
            "{html}"
        );
    }

    #[test]
    fn text_of_every_json_type() {
        assert_eq!(text(Some(&json!("a"))), "a");
        assert_eq!(text(Some(&json!(1.5))), "1.5");
        assert_eq!(text(Some(&json!([1, 2]))), "2 items");
        assert_eq!(text(Some(&json!(null))), "—");
        assert_eq!(text(None), "—");
    }
}
