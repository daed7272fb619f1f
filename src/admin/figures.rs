//! The figures of the operator page and of its JSON, computed from the
//! sampler's window (at most the last hour) and a reading taken at request
//! time.
//!
//! Definitions (by `percache_cache_requests_total{outcome}`):
//! - **hit ratio**: requests served from the cache without waiting for the
//!   upstream ([`HIT_OUTCOMES`]: `hit`, `eager`, `stale`, `outdated`) over
//!   all requests;
//! - **upstream calls made**: `percache_upstream_requests_total`, every
//!   attempt (retries too); **errors** are those whose status is not 2xx;
//! - **upstream calls saved**: requests that made no upstream call of their
//!   own ([`SAVED_OUTCOMES`]: the hits above, plus `collapsed` requests that
//!   joined a fetch in flight);
//! - **latency**: p50 and p95 of `percache_upstream_duration_seconds`,
//!   interpolated within buckets as Prometheus' `histogram_quantile` does.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;

use super::reading::{Buckets, Reading};
use super::sampler::Sample;
use super::SAMPLE_INTERVAL;
use crate::clock::{rfc3339, Millis};
use crate::widget::{Widget, WidgetId};

/// Outcomes served from the cache without waiting for the upstream.
pub const HIT_OUTCOMES: &[&str] = &["hit", "eager", "stale", "outdated"];
/// Outcomes that made no upstream call of their own.
pub const SAVED_OUTCOMES: &[&str] = &["hit", "eager", "stale", "outdated", "collapsed"];

/// Everything the operator page shows.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Figures {
    /// When the figures were computed (RFC 3339).
    pub generated_at: String,
    /// Length of the window the counts cover (at most an hour).
    pub window_seconds: u64,
    /// Time between two samples of the charts.
    pub sample_interval_seconds: u64,
    /// Samples in the window.
    pub samples: usize,
    /// Widget requests in the window.
    pub requests: u64,
    /// Share of requests served from the cache; `None` without requests.
    pub hit_ratio: Option<f64>,
    /// Upstream calls made and saved, and their latency.
    pub upstream: UpstreamFigures,
    /// This application's upstream fetches in flight now.
    pub fetches_in_flight: usize,
    /// This application's open dashboards (live connections) now.
    pub open_pages: usize,
    /// Prewarm fetches waiting for an upstream slot now.
    pub prewarm_queue: usize,
    /// How long the last prewarm to get its slot had waited for it.
    pub prewarm_wait_seconds: Option<f64>,
    /// The store's health now (as `/readyz` says it).
    pub store: StoreHealth,
    /// One row per widget of the registry.
    pub widgets: Vec<WidgetFigures>,
    /// One point per sample interval of the window, oldest first.
    pub series: Vec<Point>,
    /// Start of the window (Unix ms), for the charts' time axis.
    #[serde(skip)]
    pub window_start_ms: Millis,
    /// End of the window (Unix ms).
    #[serde(skip)]
    pub now_ms: Millis,
}

/// Upstream calls made and saved, and their latency.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UpstreamFigures {
    /// Calls made (every attempt).
    pub calls: u64,
    /// Calls whose status was not 2xx (timeouts and connection errors too).
    pub errors: u64,
    /// Requests answered without an upstream call of their own.
    pub saved: u64,
    /// Latency quantiles of the calls made.
    pub latency_seconds: Latency,
}

/// Latency quantiles in seconds; `None` without calls.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Latency {
    /// Median.
    pub p50: Option<f64>,
    /// 95th percentile.
    pub p95: Option<f64>,
}

impl Latency {
    fn of(buckets: &Buckets) -> Self {
        Self {
            p50: buckets.quantile(0.5),
            p95: buckets.quantile(0.95),
        }
    }
}

/// The store's kind and whether it answers a ping.
#[derive(Debug, Clone, Serialize)]
pub struct StoreHealth {
    /// `memory`, `redis`, `redis-cluster`...
    pub kind: &'static str,
    /// It answered.
    pub ok: bool,
    /// Why it did not.
    pub error: Option<String>,
    /// Store errors in the window (`percache_store_errors_total`).
    #[serde(rename = "errorsInWindow")]
    pub errors_in_window: u64,
}

/// One widget's row.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WidgetFigures {
    /// The widget's id.
    pub id: WidgetId,
    /// Its title.
    pub title: String,
    /// Requests in the window.
    pub requests: u64,
    /// Share served from the cache; `None` without requests.
    pub hit_ratio: Option<f64>,
    /// Requests by cache outcome.
    pub outcomes: BTreeMap<String, u64>,
    /// Upstream calls made.
    pub upstream_calls: u64,
    /// Upstream calls that failed.
    pub upstream_errors: u64,
    /// Latency of its upstream calls.
    pub latency_seconds: Latency,
    /// Seconds its upstream calls still fail at once (its breaker is
    /// open, or the upstream asked to wait); `None` while they go through.
    pub paused_seconds: Option<u64>,
}

/// One interval of the charts (between two samples).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Point {
    /// End of the interval (RFC 3339).
    pub at: String,
    /// End of the interval (Unix ms).
    #[serde(skip)]
    pub at_ms: Millis,
    /// Length of the interval.
    pub seconds: f64,
    /// Widget requests.
    pub requests: u64,
    /// Hit ratio; `None` without requests.
    pub hit_ratio: Option<f64>,
    /// Upstream calls made.
    pub upstream_calls: u64,
    /// Upstream calls saved.
    pub saved: u64,
    /// Latency of the interval's upstream calls.
    pub latency_seconds: Latency,
    /// Fetches in flight at the end of the interval.
    pub fetches_in_flight: usize,
    /// Open pages at the end of the interval.
    pub open_pages: usize,
    /// Store errors in the interval.
    pub store_errors: u64,
    /// The store answered its ping at the end of the interval.
    pub store_ok: bool,
}

/// Cumulative counts of some widgets in one reading.
#[derive(Debug, Clone, Default)]
struct Tally {
    requests: u64,
    hits: u64,
    saved: u64,
    outcomes: BTreeMap<String, u64>,
    calls: u64,
    errors: u64,
    latency: Buckets,
}

impl Tally {
    /// The counts of the widgets `keep` accepts.
    fn of(reading: &Reading, keep: impl Fn(&str) -> bool) -> Self {
        let mut tally = Self::default();
        for ((widget, outcome), &n) in &reading.requests {
            if !keep(widget) {
                continue;
            }
            tally.requests += n;
            *tally.outcomes.entry(outcome.clone()).or_default() += n;
            if HIT_OUTCOMES.contains(&outcome.as_str()) {
                tally.hits += n;
            }
            if SAVED_OUTCOMES.contains(&outcome.as_str()) {
                tally.saved += n;
            }
        }
        for ((widget, status), &n) in &reading.upstream {
            if !keep(widget) {
                continue;
            }
            tally.calls += n;
            if !status.starts_with('2') {
                tally.errors += n;
            }
        }
        for (widget, buckets) in &reading.latency {
            if keep(widget) {
                tally.latency.merge(buckets);
            }
        }
        tally
    }

    /// What was counted after `earlier`.
    fn since(&self, earlier: &Tally) -> Self {
        Self {
            requests: self.requests.saturating_sub(earlier.requests),
            hits: self.hits.saturating_sub(earlier.hits),
            saved: self.saved.saturating_sub(earlier.saved),
            outcomes: self
                .outcomes
                .iter()
                .map(|(k, &n)| {
                    let before = earlier.outcomes.get(k).copied().unwrap_or(0);
                    (k.clone(), n.saturating_sub(before))
                })
                .filter(|(_, n)| *n > 0)
                .collect(),
            calls: self.calls.saturating_sub(earlier.calls),
            errors: self.errors.saturating_sub(earlier.errors),
            latency: self.latency.since(&earlier.latency),
        }
    }

    fn hit_ratio(&self) -> Option<f64> {
        (self.requests > 0).then(|| self.hits as f64 / self.requests as f64)
    }
}

impl Figures {
    /// The figures from the start of `window` (oldest first) to `live`, for
    /// the registry's `widgets`. With an empty window every count is 0.
    pub fn compute(window: &[Arc<Sample>], live: Sample, widgets: &[Arc<Widget>]) -> Self {
        let ids: Vec<&str> = widgets.iter().map(|w| w.id.as_str()).collect();
        let ours = |w: &str| ids.contains(&w);
        let live = Arc::new(live);
        let base = window.first().cloned().unwrap_or_else(|| Arc::clone(&live));
        let total = Tally::of(&live.reading, ours).since(&Tally::of(&base.reading, ours));

        let rows = widgets
            .iter()
            .map(|w| {
                let id = w.id.as_str();
                let mine = |label: &str| label == id;
                let t = Tally::of(&live.reading, mine).since(&Tally::of(&base.reading, mine));
                WidgetFigures {
                    id: w.id.clone(),
                    title: w.title.clone(),
                    requests: t.requests,
                    hit_ratio: t.hit_ratio(),
                    outcomes: t.outcomes.clone(),
                    upstream_calls: t.calls,
                    upstream_errors: t.errors,
                    latency_seconds: Latency::of(&t.latency),
                    paused_seconds: None,
                }
            })
            .collect();

        let mut all: Vec<Arc<Sample>> = window.to_vec();
        all.push(Arc::clone(&live));
        let tallies: Vec<Tally> = all.iter().map(|s| Tally::of(&s.reading, ours)).collect();
        let series = all
            .windows(2)
            .zip(tallies.windows(2))
            .filter(|(pair, _)| pair[1].at_ms > pair[0].at_ms)
            .map(|(pair, tally)| {
                let (before, after) = (&pair[0], &pair[1]);
                let d = tally[1].since(&tally[0]);
                Point {
                    at: rfc3339(after.at_ms),
                    at_ms: after.at_ms,
                    seconds: (after.at_ms - before.at_ms) as f64 / 1000.0,
                    requests: d.requests,
                    hit_ratio: d.hit_ratio(),
                    upstream_calls: d.calls,
                    saved: d.saved,
                    latency_seconds: Latency::of(&d.latency),
                    fetches_in_flight: after.fetches_in_flight,
                    open_pages: after.open_pages,
                    store_errors: after
                        .reading
                        .store_errors
                        .saturating_sub(before.reading.store_errors),
                    store_ok: after.store_error.is_none(),
                }
            })
            .collect();

        Self {
            generated_at: rfc3339(live.at_ms),
            window_seconds: u64::try_from((live.at_ms - base.at_ms).max(0) / 1000).unwrap_or(0),
            sample_interval_seconds: SAMPLE_INTERVAL.as_secs(),
            samples: window.len(),
            requests: total.requests,
            hit_ratio: total.hit_ratio(),
            upstream: UpstreamFigures {
                calls: total.calls,
                errors: total.errors,
                saved: total.saved,
                latency_seconds: Latency::of(&total.latency),
            },
            fetches_in_flight: live.fetches_in_flight,
            open_pages: live.open_pages,
            prewarm_queue: 0,
            prewarm_wait_seconds: None,
            store: StoreHealth {
                kind: live.store_kind,
                ok: live.store_error.is_none(),
                error: live.store_error.clone(),
                errors_in_window: live
                    .reading
                    .store_errors
                    .saturating_sub(base.reading.store_errors),
            },
            widgets: rows,
            series,
            window_start_ms: base.at_ms,
            now_ms: live.at_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at_ms: Millis, text: &str) -> Sample {
        Sample {
            at_ms,
            reading: Reading::parse(text),
            fetches_in_flight: 2,
            open_pages: 1,
            store_kind: "memory",
            store_error: None,
        }
    }

    #[test]
    fn counts_are_differences_over_the_window() {
        let widgets = crate::widget::Registry::builtin().all().to_vec();
        let first = Arc::new(sample(
            0,
            "percache_cache_requests_total{widget=\"1\",outcome=\"miss\"} 5\n",
        ));
        let live = sample(
            20_000,
            "percache_cache_requests_total{widget=\"1\",outcome=\"miss\"} 6\n\
             percache_cache_requests_total{widget=\"1\",outcome=\"hit\"} 2\n\
             percache_cache_requests_total{widget=\"2\",outcome=\"collapsed\"} 1\n\
             percache_cache_requests_total{widget=\"other\",outcome=\"hit\"} 50\n\
             percache_upstream_requests_total{widget=\"1\",status=\"200\"} 3\n\
             percache_upstream_requests_total{widget=\"1\",status=\"timeout\"} 1\n",
        );
        let f = Figures::compute(&[first], live, &widgets);
        assert_eq!(f.window_seconds, 20);
        assert_eq!(f.requests, 4, "widget `other` is not in the registry");
        assert_eq!(f.hit_ratio, Some(0.5));
        assert_eq!(f.upstream.calls, 4);
        assert_eq!(f.upstream.errors, 1);
        assert_eq!(f.upstream.saved, 3, "2 hits + 1 collapsed");
        assert_eq!(f.widgets[0].requests, 3);
        assert_eq!(f.widgets[0].outcomes.get("hit"), Some(&2));
        assert_eq!(f.widgets[1].hit_ratio, Some(0.0));
        assert_eq!(f.widgets[2].hit_ratio, None);
        assert_eq!(f.series.len(), 1);
        assert_eq!(f.series[0].seconds, 20.0);
        assert_eq!(f.open_pages, 1);
        assert_eq!(f.fetches_in_flight, 2);
    }

    #[test]
    fn an_empty_window_counts_nothing() {
        let widgets = crate::widget::Registry::builtin().all().to_vec();
        let live = sample(
            5,
            "percache_cache_requests_total{widget=\"1\",outcome=\"hit\"} 9\n",
        );
        let f = Figures::compute(&[], live, &widgets);
        assert_eq!((f.requests, f.hit_ratio, f.series.len()), (0, None, 0));
    }
}
