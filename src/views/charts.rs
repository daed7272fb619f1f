//! Server-rendered line charts: inline SVG with no script and no style
//! attribute (colours and sizes come from classes in `assets/app.css`), so
//! the Content-Security-Policy stays as it is.
//!
//! The time axis runs from `from_ms` to `to_ms` (the operator page passes
//! its window: the last hour, or the time since the sampler started). A
//! missing value (`None`) breaks the line; a lone point is drawn as a dot.

use std::fmt::Write as _;

use maud::{html, Markup};

use crate::clock::Millis;

/// Width and height of the SVG's coordinate system.
const W: f64 = 640.0;
const H: f64 = 170.0;
/// The plot area inside it (room for the axis labels).
const LEFT: f64 = 52.0;
const RIGHT: f64 = 630.0;
const TOP: f64 = 10.0;
const BOTTOM: f64 = 146.0;

/// One line of a chart.
pub struct Series {
    /// Its name in the legend.
    pub name: &'static str,
    /// Its CSS class (`series-a`, `series-b`...): the colour.
    pub class: &'static str,
    /// (time, value) points, oldest first; `None` leaves a gap.
    pub points: Vec<(Millis, Option<f64>)>,
}

/// A chart: a title, a time range, a y axis and its lines.
pub struct Chart<'a> {
    /// The chart's title (also its accessible name).
    pub title: &'a str,
    /// Hook for tests and scripts: `data-chart="<id>"`.
    pub id: &'a str,
    /// Start of the time axis.
    pub from_ms: Millis,
    /// End of the time axis.
    pub to_ms: Millis,
    /// The y axis goes at least this high (e.g. 100 for percentages).
    pub y_floor: f64,
    /// How a value is written in the legend (with its unit).
    pub format: fn(f64) -> String,
    /// The lines.
    pub series: Vec<Series>,
}

/// The chart as a `<figure>`: the SVG, a legend with each line's last value.
pub fn line_chart(chart: &Chart) -> Markup {
    let top = nice_ceiling(
        chart
            .series
            .iter()
            .flat_map(|s| s.points.iter().filter_map(|(_, v)| *v))
            .fold(chart.y_floor, f64::max),
    );
    let range = (chart.to_ms - chart.from_ms).max(1);
    let span = range as f64;
    let x = |t: Millis| LEFT + (t - chart.from_ms).clamp(0, range) as f64 / span * (RIGHT - LEFT);
    let y = |v: f64| BOTTOM - (v / top).clamp(0.0, 1.0) * (BOTTOM - TOP);
    let title_id = format!("chart-{}-title", chart.id);
    html! {
        figure.chart-box data-chart=(chart.id) {
            figcaption #(title_id) { (chart.title) }
            svg.timeline viewBox={ "0 0 " (W) " " (H) } role="img" aria-labelledby=(title_id) {
                title { (chart.title) ", last " (ago(range)) }
                @for frac in [0.0, 0.5, 1.0] {
                    line.grid x1=(LEFT) x2=(RIGHT) y1=(fmt(y(top * frac))) y2=(fmt(y(top * frac))) {}
                    text.axis x=(LEFT - 6.0) y=(fmt(y(top * frac) + 4.0)) text-anchor="end" {
                        (axis_label(top * frac))
                    }
                }
                text.axis x=(LEFT) y=(H - 6.0) text-anchor="start" { (ago(range)) " ago" }
                text.axis x=(fmt((LEFT + RIGHT) / 2.0)) y=(H - 6.0) text-anchor="middle" { (ago(range / 2)) " ago" }
                text.axis x=(RIGHT) y=(H - 6.0) text-anchor="end" { "now" }
                @for series in &chart.series {
                    @for run in runs(&series.points) {
                        @if run.len() == 1 {
                            circle class=(series.class) cx=(fmt(x(run[0].0))) cy=(fmt(y(run[0].1))) r="3" {}
                        } @else {
                            polyline class=(series.class) points=(points(&run, &x, &y)) {}
                        }
                    }
                }
            }
            ul.legend {
                @for series in &chart.series {
                    li {
                        span.swatch.(series.class) aria-hidden="true" {}
                        (series.name) ": "
                        @match series.points.iter().rev().find_map(|(_, v)| *v) {
                            Some(v) => { strong { ((chart.format)(v)) } " now" }
                            None => { span.muted { "no data" } }
                        }
                    }
                }
            }
        }
    }
}

/// The unbroken runs of a series (split at each `None`).
fn runs(points: &[(Millis, Option<f64>)]) -> Vec<Vec<(Millis, f64)>> {
    let mut runs = Vec::new();
    let mut current = Vec::new();
    for &(t, v) in points {
        match v {
            Some(v) if v.is_finite() => current.push((t, v)),
            _ if !current.is_empty() => runs.push(std::mem::take(&mut current)),
            _ => {}
        }
    }
    if !current.is_empty() {
        runs.push(current);
    }
    runs
}

/// `x,y x,y ...` of a run, in one buffer.
fn points(run: &[(Millis, f64)], x: &impl Fn(Millis) -> f64, y: &impl Fn(f64) -> f64) -> String {
    let mut out = String::with_capacity(run.len() * 12);
    for (i, &(t, v)) in run.iter().enumerate() {
        let sep = if i == 0 { "" } else { " " };
        let _ = write!(out, "{sep}{:.1},{:.1}", x(t), y(v));
    }
    out
}

/// A value on the y axis: as few digits as tell the grid lines apart
/// (`2.5`, `0.05`, `250`).
fn axis_label(v: f64) -> String {
    if v.fract() == 0.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.1}")
    } else {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').to_owned()
    }
}

/// `90_000` ms → `90 s`; `3_600_000` → `60 min`.
fn ago(ms: Millis) -> String {
    let secs = ms / 1000;
    if secs < 120 {
        format!("{secs} s")
    } else {
        format!("{} min", secs / 60)
    }
}

fn fmt(v: f64) -> String {
    format!("{v:.1}")
}

/// The smallest of 1, 2, 2.5, 5 × 10^k at or above `v` (at least 1).
fn nice_ceiling(v: f64) -> f64 {
    if !v.is_finite() || v <= 1.0 {
        return 1.0;
    }
    let magnitude = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|&c| c >= v)
        .unwrap_or(10.0 * magnitude)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chart(points: Vec<(Millis, Option<f64>)>) -> String {
        line_chart(&Chart {
            title: "Test <chart>",
            id: "test",
            from_ms: 0,
            to_ms: 3_600_000,
            y_floor: 1.0,
            format: |v| format!("{v:.0}"),
            series: vec![Series {
                name: "made",
                class: "series-a",
                points,
            }],
        })
        .into_string()
    }

    #[test]
    fn lines_break_at_gaps_and_lone_points_are_dots() {
        let html = chart(vec![
            (0, Some(1.0)),
            (600_000, Some(3.0)),
            (1_200_000, None),
            (1_800_000, Some(2.0)),
        ]);
        assert_eq!(html.matches("<polyline").count(), 1, "{html}");
        assert_eq!(html.matches("<circle").count(), 1, "{html}");
        assert!(html.contains("Test &lt;chart&gt;"), "escaped: {html}");
        assert!(!html.contains("style="), "no style attribute: {html}");
        assert!(html.contains("<strong>2</strong> now"), "last value: {html}");
    }

    #[test]
    fn an_empty_series_says_so() {
        let html = chart(vec![]);
        assert!(html.contains("no data"), "{html}");
        assert!(!html.contains("<polyline"), "{html}");
    }

    #[test]
    fn axis_labels_tell_grid_lines_apart() {
        assert_eq!(axis_label(2.5), "2.5");
        assert_eq!(axis_label(0.5), "0.5");
        assert_eq!(axis_label(0.05), "0.05");
        assert_eq!(axis_label(0.0), "0");
        assert_eq!(axis_label(250.0), "250");
    }

    #[test]
    fn time_labels_read_well() {
        assert_eq!(ago(22_000), "22 s");
        assert_eq!(ago(3_600_000), "60 min");
    }

    #[test]
    fn axis_tops_are_round() {
        assert_eq!(nice_ceiling(0.3), 1.0);
        assert_eq!(nice_ceiling(7.0), 10.0);
        assert_eq!(nice_ceiling(13.0), 20.0);
        assert_eq!(nice_ceiling(230.0), 250.0);
        assert_eq!(nice_ceiling(f64::NAN), 1.0);
    }
}
