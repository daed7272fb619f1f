//! `percache_cache_requests_total{widget,outcome}`, counted without a write
//! that every core shares.
//!
//! Every widget request counts once (a dashboard five times). Counting into
//! the recorder's counter is an atomic add on a word that every worker
//! writes, so the word's cache line moves between cores on nearly every
//! request. Here each series is split in shards, one per thread (up to
//! [`SHARDS`]), each on a cache line of its own; `/metrics` (and the
//! operator page, which reads the same recorder) publish the sums first
//! ([`CacheCounters::publish`], run by `Metrics::render`), so every scrape
//! sees every request counted before it.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;

use metrics::{Counter, Recorder};

use super::Outcome;
use crate::widget::{Registry, Widget, WidgetId};

/// Shards per series: at least the workers of a typical instance.
const SHARDS: usize = 8;

/// One shard: a count on a cache line of its own.
#[repr(align(128))]
#[derive(Default)]
struct Shard(AtomicU64);

/// One series: its shards and, once it has counted, the recorder's counter.
#[derive(Default)]
struct Series {
    shards: [Shard; SHARDS],
    published: OnceLock<Counter>,
}

static NEXT_THREAD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// This thread's shard.
    static SHARD: usize = NEXT_THREAD.fetch_add(1, Ordering::Relaxed) % SHARDS;
}

/// The counters of one application, for every widget of its registry.
pub struct CacheCounters {
    /// The application's recorder; `None`: count straight into whichever
    /// recorder the counting thread has (no publishing then).
    recorder: Option<&'static (dyn Recorder + Sync)>,
    /// Each widget's series, at the widget's index in the registry: found
    /// on every request without hashing its id.
    by_widget: Vec<(WidgetId, Vec<Series>)>,
}

impl CacheCounters {
    /// Counters for `registry`'s widgets, published to `recorder`.
    pub fn new(registry: &Registry, recorder: Option<&'static (dyn Recorder + Sync)>) -> Self {
        let by_widget = registry
            .all()
            .iter()
            .map(|w| {
                (
                    w.id.clone(),
                    (0..Outcome::LABELS.len()).map(|_| Series::default()).collect(),
                )
            })
            .collect();
        Self { recorder, by_widget }
    }

    /// Counts one request of `widget` answered with `outcome`.
    pub fn count(&self, widget: &Widget, outcome: Outcome) {
        let series = self
            .by_widget
            .get(widget.index)
            .filter(|(id, _)| *id == widget.id)
            .map(|(_, series)| series);
        match (self.recorder, series) {
            (Some(_), Some(series)) => {
                let shard = SHARD.with(|s| *s);
                series[outcome.index()].shards[shard]
                    .0
                    .fetch_add(1, Ordering::Relaxed);
            }
            // Not a widget of the registry (cannot happen), or no recorder
            // of its own: counted at once.
            _ => counter(&widget.id, outcome.label()).increment(1),
        }
    }

    /// Writes every series' sum into the recorder (a series appears once it
    /// has counted, as a counter does).
    pub fn publish(&self) {
        let Some(recorder) = self.recorder else {
            return;
        };
        for (widget, series) in &self.by_widget {
            for (series, label) in series.iter().zip(Outcome::LABELS) {
                let sum: u64 = series.shards.iter().map(|s| s.0.load(Ordering::Relaxed)).sum();
                if sum > 0 {
                    let published = series
                        .published
                        .get_or_init(|| metrics::with_local_recorder(recorder, || counter(widget, label)));
                    published.absolute(sum);
                }
            }
        }
    }
}

fn counter(widget: &WidgetId, outcome: &'static str) -> Counter {
    metrics::counter!(
        "percache_cache_requests_total",
        "widget" => widget.label(),
        "outcome" => outcome,
    )
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn counts_from_many_threads_are_all_published() {
        let recorder: &'static _ = Box::leak(Box::new(
            metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder(),
        ));
        let registry = Registry::builtin();
        let counters = Arc::new(CacheCounters::new(&registry, Some(recorder)));
        let widget = Arc::clone(&registry.all()[0]);

        let threads: Vec<_> = (0..12)
            .map(|_| {
                let (counters, widget) = (Arc::clone(&counters), Arc::clone(&widget));
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        counters.count(&widget, Outcome::Hit { ttl: 1 });
                    }
                    counters.count(&widget, Outcome::Miss { collapsed: false });
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        counters.publish();
        counters.publish();

        let text = recorder.handle().render();
        let sample = |outcome: &str| {
            text.lines()
                .find(|l| {
                    l.contains(&format!(r#"outcome="{outcome}""#))
                        && l.contains(&format!(r#"widget="{}""#, widget.id))
                })
                .and_then(|l| l.rsplit(' ').next())
                .map(str::to_owned)
        };
        assert_eq!(sample("hit").as_deref(), Some("12000"), "{text}");
        assert_eq!(sample("miss").as_deref(), Some("12"), "{text}");
        assert_eq!(
            sample("error"),
            None,
            "a series that never counted is not there: {text}"
        );
    }
}
