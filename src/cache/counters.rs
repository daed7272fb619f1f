//! `percache_cache_requests_total{widget,outcome}`, counted through handles
//! registered once per series: a hit increments an atomic instead of
//! building the labels and looking the series up in the recorder.

use std::collections::HashMap;
use std::sync::OnceLock;

use metrics::{Counter, Recorder};

use super::Outcome;
use crate::widget::{Registry, WidgetId};

/// One slot per outcome label, filled on the first request with that
/// outcome (a series appears in `/metrics` once it has counted, as before).
type Slots = [OnceLock<Counter>; Outcome::LABELS.len()];

/// The counters of one application, for every widget of its registry.
pub struct CacheCounters {
    /// The application's recorder; `None`: whichever the thread has.
    recorder: Option<&'static (dyn Recorder + Sync)>,
    by_widget: HashMap<WidgetId, Slots>,
}

impl CacheCounters {
    /// Counters for `registry`'s widgets, registered with `recorder`.
    pub fn new(registry: &Registry, recorder: Option<&'static (dyn Recorder + Sync)>) -> Self {
        let by_widget = registry
            .all()
            .iter()
            .map(|w| (w.id.clone(), std::array::from_fn(|_| OnceLock::new())))
            .collect();
        Self { recorder, by_widget }
    }

    /// Counts one request of `widget` answered with `outcome`.
    pub fn count(&self, widget: &WidgetId, outcome: Outcome) {
        let register = || {
            let make = || {
                metrics::counter!(
                    "percache_cache_requests_total",
                    "widget" => widget.label(),
                    "outcome" => outcome.label(),
                )
            };
            match self.recorder {
                Some(recorder) => metrics::with_local_recorder(recorder, make),
                None => make(),
            }
        };
        match self.by_widget.get(widget) {
            Some(slots) => slots[outcome.index()].get_or_init(register).increment(1),
            // Not a widget of the registry (cannot happen): counted all the same.
            None => register().increment(1),
        }
    }
}
