//! The operator page behind `--admin-token` (SPEC §5, `/admin`): what the
//! cache saves the upstream, how fast the upstream answers, and whether the
//! store is healthy, now and over the last hour.
//!
//! - [`auth`]: the token (compared in constant time) and the page's own
//!   cookie, separate from the user session.
//! - [`reading`]: the process's counters, read from the Prometheus recorder.
//! - [`sampler`]: a ring buffer of readings (one per 10 s, the last hour),
//!   filled by a background task the application starts.
//! - [`figures`]: the figures the page and its JSON show, from the oldest
//!   sample of the window to a reading taken at request time.
//!
//! **Where the counts come from.** The counts are read from the metrics the
//! application already records (`percache_cache_requests_total`,
//! `percache_upstream_requests_total`, `percache_upstream_duration_seconds`,
//! ...), through the application's own recorder ([`Metrics`](crate::telemetry::Metrics)),
//! not from counters of our own. Counters of our own would need a hook in the
//! cache and upstream layers on every request (a second set of books on the
//! hot path, which could drift from what Prometheus scrapes); reading the
//! recorder means the page and `/metrics` always agree. Each application
//! has its own recorder, so in a process that runs several (only the tests
//! do) each page counts its own application's requests. Fetches in flight,
//! open pages, the prewarm queue, the paused widgets and store health are
//! asked of the application's own cache.

pub mod auth;
pub mod figures;
pub mod reading;
pub mod sampler;

use std::sync::{Arc, Weak};
use std::time::Duration;

use crate::cache::WidgetCache;

pub use auth::AdminToken;
pub use figures::Figures;
pub use sampler::{Sample, Sampler};

/// Time between two samples of the charts.
pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(10);
/// Samples kept: one hour at [`SAMPLE_INTERVAL`].
pub const SAMPLES_KEPT: usize = 360;
/// Longest a store ping of the sampler or the page may take.
const PING_TIMEOUT: Duration = Duration::from_secs(2);

/// The operator page's state, shared by every worker.
pub struct Admin {
    /// `None`: `--admin-token` is unset and `/admin` is off.
    token: Option<AdminToken>,
    /// Mark the page's cookie Secure (`--secure-cookies`).
    secure_cookies: bool,
    cache: Arc<WidgetCache>,
    /// The application's metrics, which the samples read.
    metrics: crate::telemetry::Metrics,
    sampler: Sampler,
}

impl Admin {
    /// The page's state; with a token, also starts the sampler's background
    /// task (it takes a first sample at once, and stops by itself when the
    /// application, which owns the returned value, is gone). Must be called
    /// within a Tokio runtime.
    pub fn start(
        token: Option<&str>,
        server_secret: &[u8],
        secure_cookies: bool,
        cache: Arc<WidgetCache>,
        metrics: crate::telemetry::Metrics,
    ) -> Arc<Self> {
        let admin = Arc::new(Self {
            token: token.and_then(|t| AdminToken::new(t, server_secret)),
            secure_cookies,
            cache,
            metrics,
            sampler: Sampler::new(SAMPLES_KEPT),
        });
        if admin.enabled() {
            tokio::spawn(sample_every(Arc::downgrade(&admin), SAMPLE_INTERVAL));
        }
        admin
    }

    /// Whether `/admin` is on.
    pub fn enabled(&self) -> bool {
        self.token.is_some()
    }

    /// The token, when `/admin` is on.
    pub fn token(&self) -> Option<&AdminToken> {
        self.token.as_ref()
    }

    /// Now, in unix seconds, by the injected clock (the cache's).
    pub fn now_secs(&self) -> i64 {
        self.cache.now().div_euclid(1000)
    }

    /// Whether the operator cookie is marked Secure.
    pub fn secure_cookies(&self) -> bool {
        self.secure_cookies
    }

    /// The ring buffer of samples behind the charts.
    pub fn sampler(&self) -> &Sampler {
        &self.sampler
    }

    /// A reading of everything now: the recorder's counters, this
    /// application's fetches in flight, and a store ping.
    pub async fn sample_now(&self) -> Sample {
        let store = self.cache.store();
        let ping = tokio::time::timeout(PING_TIMEOUT, store.ping()).await;
        let store_error = match ping {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some("the store did not answer the ping in time".to_owned()),
        };
        Sample {
            // The cache's clock, the one the rest of the page is judged by.
            at_ms: self.cache.now(),
            reading: reading::Reading::now(&self.metrics),
            fetches_in_flight: self.cache.fetches_in_flight(),
            open_pages: self.cache.open_pages(),
            store_kind: store.kind(),
            store_error,
        }
    }

    /// The figures of the page: the window's samples, up to a reading taken now.
    pub async fn figures(&self) -> Figures {
        let live = self.sample_now().await;
        let mut figures = Figures::compute(&self.sampler.window(), live, self.cache.registry().all());
        // The breakers and pauses as they are now (not a count of the window).
        for (row, (_, paused)) in figures.widgets.iter_mut().zip(self.cache.paused_widgets()) {
            row.paused_seconds = paused;
        }
        figures.prewarm_queue = self.cache.prewarm_queue();
        figures.prewarm_wait_seconds = self.cache.last_prewarm_wait().map(|d| d.as_secs_f64());
        figures
    }
}

/// The sampler's loop: one sample per `interval`, the first at once. Ends
/// when the [`Admin`] it samples for is dropped.
async fn sample_every(admin: Weak<Admin>, interval: Duration) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(admin) = admin.upgrade() else { return };
        let sample = admin.sample_now().await;
        admin.sampler.push(sample);
    }
}
