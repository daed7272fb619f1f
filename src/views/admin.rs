//! The operator page (`/admin`) and its sign-in form.
//!
//! Each figure carries a stable hook, `data-figure="<name>"`, for tests and
//! scripts. The charts are inline SVG ([`super::charts`]); the only script
//! is the page's htmx, which reloads the figures every 10 s (no script at all
//! is needed to read them).

use maud::{html, Markup};

use super::charts::{line_chart, Chart, Series};
use super::page;
use crate::admin::figures::{Figures, Latency, Point};
use crate::clock::Millis;

/// The sign-in form of the page, with a message after a refused attempt.
pub fn admin_login_page(message: Option<&str>) -> Markup {
    page(
        "Operator sign-in",
        html! {
            main.login {
                h1 { "percache · operator" }
                p.lede { "This page needs the server's admin token (" code { "--admin-token" } ")." }
                form method="post" action="/admin/login" {
                    label for="token" { "Admin token" }
                    input #token name="token" type="password" autocomplete="off" autofocus required
                        aria-invalid=[message.map(|_| "true")]
                        aria-describedby=[message.map(|_| "token-error")];
                    @if let Some(message) = message {
                        p #token-error.error role="alert" { (message) }
                    }
                    button type="submit" { "Open the operator page" }
                }
            }
        },
    )
}

/// The page. `cookie`: the visitor came in through the form, so the page
/// offers to sign out.
pub fn admin_page(f: &Figures, cookie: bool) -> Markup {
    page(
        "Operator",
        html! {
            header.top {
                h1 { "percache · operator" }
                div.who {
                    @if cookie {
                        form method="post" action="/admin/logout" {
                            button.secondary type="submit" { "Sign out" }
                        }
                    }
                }
            }
            main.admin hx-get="/admin" hx-trigger="every 10s" hx-select="main.admin" hx-swap="outerHTML" {
                p.muted.status {
                    "Last " (minutes(f.window_seconds)) " · " (f.samples) " samples, one per "
                    (f.sample_interval_seconds) " s · at " (clock(&f.generated_at)) " UTC"
                }
                (tiles(f))
                (widget_table(f))
                (charts(f))
            }
        },
    )
}

fn tiles(f: &Figures) -> Markup {
    html! {
        section.tiles aria-label="Figures" {
            div.tile data-figure="hit-ratio" {
                span.label { "Hit ratio" }
                span.value { (percent(f.hit_ratio)) }
                span.muted { "of " (f.requests) " widget requests" }
            }
            div.tile data-figure="upstream-calls" {
                span.label { "Upstream calls made" }
                span.value { (f.upstream.calls) }
                span.muted { (f.upstream.errors) " failed" }
            }
            div.tile data-figure="upstream-saved" {
                span.label { "Upstream calls saved" }
                span.value { (f.upstream.saved) }
                span.muted { "hits, stale and collapsed requests" }
            }
            div.tile data-figure="latency" {
                span.label { "Upstream latency" }
                span.value { "p50 " (seconds(f.upstream.latency_seconds.p50)) }
                span.muted { "p95 " (seconds(f.upstream.latency_seconds.p95)) }
            }
            div.tile data-figure="fetches-in-flight" {
                span.label { "Fetches in flight" }
                span.value { (f.fetches_in_flight) }
                span.muted { "upstream fetches running now" }
            }
            div.tile data-figure="open-pages" {
                span.label { "Open pages" }
                span.value { (f.open_pages) }
                span.muted { "dashboards with a live connection" }
            }
            div.tile data-figure="prewarm-queue" {
                span.label { "Prewarm queue" }
                span.value { (f.prewarm_queue) }
                span.muted { "last wait " (seconds(f.prewarm_wait_seconds)) }
            }
            div.tile.store.down[!f.store.ok] data-figure="store" data-ok=(f.store.ok) {
                span.label { "Store" }
                span.value { (f.store.kind) " · " @if f.store.ok { "ok" } @else { "unreachable" } }
                span.muted {
                    @if let Some(error) = &f.store.error { (error) " · " }
                    (f.store.errors_in_window) " errors"
                }
            }
        }
    }
}

fn widget_table(f: &Figures) -> Markup {
    let outcome =
        |w: &crate::admin::figures::WidgetFigures, name: &str| w.outcomes.get(name).copied().unwrap_or(0);
    html! {
        section.table-box {
            h2 { "Per widget" }
            div.scroll {
                table.widgets {
                    thead {
                        tr {
                            th scope="col" { "Widget" }
                            th scope="col" { "Requests" }
                            th scope="col" { "Hit ratio" }
                            th scope="col" { "Hits" }
                            th scope="col" { "Stale" }
                            th scope="col" { "Collapsed" }
                            th scope="col" { "Misses" }
                            th scope="col" { "Errors" }
                            th scope="col" { "Upstream calls" }
                            th scope="col" { "p50" }
                            th scope="col" { "p95" }
                            th scope="col" { "Calls" }
                        }
                    }
                    tbody {
                        @for w in &f.widgets {
                            tr data-widget=(w.id.as_str()) {
                                th scope="row" { (w.title) " " span.muted { "(" (w.id.as_str()) ")" } }
                                td { (w.requests) }
                                td data-figure="hit-ratio" { (percent(w.hit_ratio)) }
                                td { (outcome(w, "hit") + outcome(w, "eager")) }
                                td { (outcome(w, "stale") + outcome(w, "outdated")) }
                                td { (outcome(w, "collapsed")) }
                                td { (outcome(w, "miss")) }
                                td { (outcome(w, "error") + outcome(w, "stale_if_error")) }
                                td { (w.upstream_calls) @if w.upstream_errors > 0 { " (" (w.upstream_errors) " failed)" } }
                                td { (seconds(w.latency_seconds.p50)) }
                                td { (seconds(w.latency_seconds.p95)) }
                                td data-figure="calls" {
                                    @match w.paused_seconds {
                                        Some(secs) => strong { "paused " (secs) " s" },
                                        None => "flowing",
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn charts(f: &Figures) -> Markup {
    // The window: the last hour, or since the sampler started.
    let from_ms = f.window_start_ms.max(f.now_ms - 3_600_000);
    let series = |pick: fn(&Point) -> Option<f64>| -> Vec<(Millis, Option<f64>)> {
        f.series.iter().map(|p| (p.at_ms, pick(p))).collect()
    };
    let per_minute = |n: u64, p: &Point| (p.seconds > 0.0).then(|| n as f64 * 60.0 / p.seconds);
    let chart = |title, id, y_floor, format: fn(f64) -> String, lines: Vec<Series>| {
        line_chart(&Chart {
            title,
            id,
            from_ms,
            to_ms: f.now_ms,
            y_floor,
            format,
            series: lines,
        })
    };
    let latency = |pick: fn(&Latency) -> Option<f64>| -> Vec<(Millis, Option<f64>)> {
        f.series
            .iter()
            .map(|p| (p.at_ms, pick(&p.latency_seconds)))
            .collect()
    };
    html! {
        section.charts {
            h2 { "Last " (minutes(f.window_seconds)) }
            div.chart-grid {
                (chart("Hit ratio (%)", "hit-ratio", 100.0, |v| format!("{v:.0} %"), vec![Series {
                    name: "served from the cache",
                    class: "series-a",
                    points: series(|p| p.hit_ratio.map(|r| r * 100.0)),
                }]))
                (chart("Upstream calls per minute", "upstream", 1.0, |v| format!("{v:.0}"), vec![
                    Series { name: "made", class: "series-b",
                             points: f.series.iter().map(|p| (p.at_ms, per_minute(p.upstream_calls, p))).collect() },
                    Series { name: "saved", class: "series-a",
                             points: f.series.iter().map(|p| (p.at_ms, per_minute(p.saved, p))).collect() },
                ]))
                (chart("Upstream latency (s)", "latency", 0.1, |v| seconds(Some(v)), vec![
                    Series { name: "p50", class: "series-a", points: latency(|l| l.p50) },
                    Series { name: "p95", class: "series-b", points: latency(|l| l.p95) },
                ]))
                (chart("Fetches in flight and open pages", "load", 1.0, |v| format!("{v:.0}"), vec![
                    Series { name: "fetches in flight", class: "series-b",
                             points: series(|p| Some(p.fetches_in_flight as f64)) },
                    Series { name: "open pages", class: "series-a", points: series(|p| Some(p.open_pages as f64)) },
                ]))
                (chart("Store errors per minute", "store", 1.0, |v| format!("{v:.0}"), vec![Series {
                    name: "store errors",
                    class: "series-c",
                    points: f.series.iter().map(|p| (p.at_ms, per_minute(p.store_errors, p))).collect(),
                }]))
            }
        }
    }
}

/// `0.8333` → `83.3 %`; no requests → `—`.
fn percent(ratio: Option<f64>) -> String {
    match ratio {
        Some(r) => format!("{:.1} %", r * 100.0),
        None => "—".to_owned(),
    }
}

/// `0.0042` → `4 ms`, `1.5` → `1.50 s`; no calls → `—`.
fn seconds(s: Option<f64>) -> String {
    match s {
        Some(s) if s < 1.0 => format!("{:.0} ms", s * 1000.0),
        Some(s) => format!("{s:.2} s"),
        None => "—".to_owned(),
    }
}

/// `12` s → `0 min`; `3600` → `60 min`.
fn minutes(window_seconds: u64) -> String {
    if window_seconds < 120 {
        format!("{window_seconds} s")
    } else {
        format!("{} min", window_seconds / 60)
    }
}

/// `2025-01-01T12:34:56Z` → `12:34:56`.
fn clock(rfc3339: &str) -> &str {
    rfc3339.get(11..19).unwrap_or(rfc3339)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_are_written_for_people() {
        assert_eq!(percent(Some(0.8333)), "83.3 %");
        assert_eq!(percent(None), "—");
        assert_eq!(seconds(Some(0.0042)), "4 ms");
        assert_eq!(seconds(Some(1.5)), "1.50 s");
        assert_eq!(minutes(30), "30 s");
        assert_eq!(minutes(3600), "60 min");
        assert_eq!(clock("2025-01-01T12:34:56.789Z"), "12:34:56");
    }
}
