//! How a widget request was answered: the outcome (rendered as
//! `Cache-Status` and counted in metrics) and the lookup the views render.

use std::sync::Arc;

use crate::cache::entry::Entry;
use crate::upstream::FetchError;
use crate::widget::Instance;

/// How a widget request was answered; rendered as `Cache-Status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Fresh entry, no upstream call. `ttl`: seconds of freshness left.
    Hit { ttl: i64 },
    /// Fresh entry late in its fresh window: served, and one background
    /// refresh started (eager refresh).
    Eager { ttl: i64 },
    /// Stale entry served at once while a background refresh runs. `ttl` < 0.
    Stale { ttl: i64 },
    /// Fetched from the upstream; `collapsed` if it joined a fetch in flight.
    Miss { collapsed: bool },
    /// Forced refresh; `collapsed` if it joined a fetch in flight.
    Forced { collapsed: bool },
    /// The fetch failed and an entry within grace was served.
    StaleIfError { status: u16 },
    /// The fetch failed and there was nothing to serve.
    Error { status: u16 },
    /// Past ttl (within grace): served at once, or after `--soft-timeout`
    /// of waiting, while the fetch goes on. `ttl` < 0.
    Outdated { ttl: i64 },
    /// `only-if-cached` and nothing usable: no upstream call.
    OnlyIfCached,
    /// The fetch asked the upstream whether the entry changed, and it had
    /// not (`304`): the entry was renewed, no body transferred; `collapsed`
    /// if it joined that fetch.
    Revalidated { collapsed: bool },
}

impl Outcome {
    /// Every label, in the order of [`Outcome::index`].
    pub const LABELS: [&'static str; 10] = [
        "hit",
        "eager",
        "outdated",
        "only_if_cached",
        "stale",
        "collapsed",
        "miss",
        "stale_if_error",
        "error",
        "revalidated",
    ];

    /// The label of `percache_cache_requests_total{outcome}` and of logs.
    pub fn label(&self) -> &'static str {
        Self::LABELS[self.index()]
    }

    /// The position of the outcome's label in [`Outcome::LABELS`].
    pub fn index(&self) -> usize {
        match self {
            Outcome::Hit { .. } => 0,
            Outcome::Eager { .. } => 1,
            Outcome::Outdated { .. } => 2,
            Outcome::OnlyIfCached => 3,
            Outcome::Stale { .. } => 4,
            Outcome::Miss { collapsed: true } | Outcome::Forced { collapsed: true } => 5,
            Outcome::Miss { .. } | Outcome::Forced { .. } => 6,
            Outcome::StaleIfError { .. } => 7,
            Outcome::Error { .. } => 8,
            Outcome::Revalidated { .. } => 9,
        }
    }
}

/// The answer to one widget request.
#[derive(Debug, Clone)]
pub struct Lookup {
    /// Which widget, with which parameters.
    pub instance: Instance,
    /// The data served, if any.
    pub entry: Option<Arc<Entry>>,
    /// How it was obtained.
    pub outcome: Outcome,
    /// The fetch error, when there was one.
    pub error: Option<FetchError>,
    /// The store could not be read; the upstream was asked directly.
    pub store_unavailable: bool,
    /// The clock reading the decision was made at.
    pub now: i64,
}
