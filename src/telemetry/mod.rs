//! Logging through `tracing` (pretty for people, JSON for machines) and
//! the Prometheus recorder.
//!
//! Logs are written by a background thread (tracing-appender), so a worker
//! never blocks on stdout; under overload lines are dropped rather than
//! requests slowed. Each request's span is lean (method, route, request id):
//! the per-request line is short, and costs little on the hot path.

pub mod http;
pub use http::{track, Route, RouteTable};

use std::io::IsTerminal as _;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::HttpMessage as _;
use std::rc::Rc;

use tracing::Span;

use tracing_actix_web::{RequestId, RootSpanBuilder};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

/// Installs the global subscriber (once; later calls are ignored, which
/// suits tests that build many applications). `RUST_LOG` overrides the level.
pub fn init(format: LogFormat) {
    static GUARD: OnceLock<tracing_appender::non_blocking::WorkerGuard> = OnceLock::new();
    if GUARD.get().is_some() {
        return;
    }
    // The writer thread drains the queue into this buffer and writes it when
    // the queue is empty: under load, one write for many lines instead of a
    // system call per line (the thread shares the cores with the workers);
    // when idle, every line is written as soon as it comes.
    let buffered = std::io::BufWriter::with_capacity(LOG_BUFFER_BYTES, std::io::stdout());
    let (writer, guard) = tracing_appender::non_blocking(buffered);
    let (targets, env) = filter(std::env::var("RUST_LOG").ok().as_deref());
    let ansi = std::io::stdout().is_terminal();
    let fmt = match format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(writer)
            .boxed(),
        LogFormat::Pretty => tracing_subscriber::fmt::layer()
            .compact()
            .with_ansi(ansi)
            .with_writer(writer)
            .boxed(),
    };
    let installed = tracing_subscriber::registry()
        .with(targets)
        .with(env)
        .with(fmt)
        .try_init();
    if installed.is_ok() {
        // Kept for the life of the process: dropping it stops the writer.
        let _ = GUARD.set(guard);
    }
}

/// What the log writer thread gathers before one write.
const LOG_BUFFER_BYTES: usize = 64 * 1024;

/// The level filter of `RUST_LOG` (default `info`). Levels per target (the
/// usual `info,percache=debug`) are a static filter, decided once per
/// call site. Only directives on spans or fields need `EnvFilter`, which
/// also does work on every span entered, so it is used only for those.
fn filter(rust_log: Option<&str>) -> (Option<Targets>, Option<EnvFilter>) {
    let directives = rust_log
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .unwrap_or("info");
    if let Ok(targets) = directives.parse::<Targets>() {
        return (Some(targets), None);
    }
    let env = EnvFilter::try_new(directives).unwrap_or_else(|_| EnvFilter::new("info"));
    (None, Some(env))
}

/// The root span of every request: method, route pattern, request id.
pub struct RequestSpan;

impl RootSpanBuilder for RequestSpan {
    fn on_request_start(request: &ServiceRequest) -> Span {
        let request_id = request.extensions().get::<RequestId>().copied();
        // Found once per path by the metrics middleware, which runs first.
        let route = request.extensions().get::<Route>().map(|r| Rc::clone(&r.0));
        tracing::info_span!(
            "request",
            method = %request.method(),
            route = route.as_deref().unwrap_or("unmatched"),
            request_id = tracing::field::display(DisplayOrEmpty(request_id)),
        )
    }

    /// Nothing: no line is written inside the span once the response is
    /// made, so a status recorded now would be formatted and never shown
    /// (`percache_http_request_duration_seconds` has it, by route).
    fn on_request_end<B: MessageBody>(_: Span, _: &Result<ServiceResponse<B>, actix_web::Error>) {}
}

/// A request id, or nothing: written straight into the span's fields.
struct DisplayOrEmpty(Option<RequestId>);

impl std::fmt::Display for DisplayOrEmpty {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Some(id) => id.fmt(f),
            None => Ok(()),
        }
    }
}

use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

/// Buckets (seconds) of the duration histograms: sub-millisecond cache hits
/// up to the 15 s upstream calls.
const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0,
];

/// How often the histograms' samples are folded into their buckets between
/// scrapes (the exporter's own default): see [`Metrics::keep_up`].
pub const UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Writes counts kept outside the recorder into it (see [`Metrics::render`]).
pub type Publish = Arc<dyn Fn() + Send + Sync>;

/// One application's metrics: a recorder of its own, so that two
/// applications in one process (the tests run many) never count into each
/// other's `/metrics`, and a test can assert exact deltas.
///
/// A recorder is found per thread: each HTTP worker makes its
/// application's the one it records to ([`Metrics::record_on_this_thread`]),
/// and everything a request does, fetch tasks included, runs on its worker.
#[derive(Clone)]
pub struct Metrics {
    recorder: &'static PrometheusRecorder,
    handle: PrometheusHandle,
    /// Counts kept outside the recorder, written into it before each render.
    sources: Arc<Mutex<Vec<Publish>>>,
}

impl Metrics {
    /// A new recorder, with every series described (and those the alerts
    /// read registered at zero).
    pub fn new() -> Self {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), BUCKETS)
            .map(PrometheusBuilder::build_recorder)
            .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
        let handle = recorder.handle();
        // Lives as long as the process: worker threads hold it as their
        // recorder by reference (one per application built).
        let recorder: &'static PrometheusRecorder = Box::leak(Box::new(recorder));
        metrics::with_local_recorder(recorder, describe);
        Self {
            recorder,
            handle,
            sources: Arc::default(),
        }
    }

    /// Makes this application's recorder the one this thread records to,
    /// for the rest of the thread's life (called once by each worker).
    pub fn record_on_this_thread(&self) {
        // The guard would restore the previous recorder when dropped; a
        // worker keeps its application's until it ends.
        std::mem::forget(metrics::set_default_local_recorder(self.recorder));
    }

    /// The recorder itself, to register handles with from any thread.
    pub fn recorder(&self) -> &'static PrometheusRecorder {
        self.recorder
    }

    /// Runs `publish` before every render: it writes into the recorder the
    /// counts kept outside it (see `cache::counters`).
    pub fn publish_before_render(&self, publish: Publish) {
        self.sources
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(publish);
    }

    /// Folds, every [`UPKEEP_EVERY`], the samples each histogram holds
    /// into its buckets. Runs for as long as it is polled (the server's life).
    ///
    /// Why: a histogram of this recorder keeps every value recorded until
    /// something drains it, which a scrape does. With nobody scraping
    /// `/metrics`, each request's duration sample stayed in memory: about
    /// 20 bytes a request, 6 MB for every 300,000 (`build_recorder`, which
    /// an application of its own needs, starts no upkeep task of its own).
    pub async fn keep_up(self) {
        let mut tick = tokio::time::interval(UPKEEP_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.handle.run_upkeep();
        }
    }

    /// The Prometheus text page of everything recorded so far.
    pub fn render(&self) -> String {
        let sources = self
            .sources
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        for publish in sources {
            publish();
        }
        self.handle.render()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// The help text of every series the server exports (Prometheus wants one
/// per metric: `promtool check metrics`, run by the tests, fails without it;
/// a new metric gets its line here), and the series that alerts and the
/// dashboard read registered at zero, so they exist from the first scrape
/// (a counter first seen at 5 loses those 5 to `rate()`, and an absent
/// series never fires an alert).
fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        "percache_cache_requests_total",
        "Widget requests answered, by widget and cache outcome."
    );
    describe_counter!(
        "percache_upstream_requests_total",
        "Upstream calls (each attempt), by widget and status."
    );
    describe_histogram!(
        "percache_upstream_duration_seconds",
        Unit::Seconds,
        "Duration of one upstream call attempt, by widget."
    );
    describe_counter!(
        "percache_refresh_total",
        "Fetch tasks by outcome (ok, collapsed, error, revalidated: a 304 renewed the entry, \
         superseded); skipped: background work refused at a cap."
    );
    describe_counter!(
        "percache_upstream_capped_total",
        "Upstream calls held at the --max-upstream-calls cap: requests that waited for a slot \
         (foreground_waited) or for their widget's share (bulkhead_waited), background fetches \
         skipped (background_skipped), prewarms skipped with the queue full (prewarm_skipped)."
    );
    describe_counter!(
        "percache_refused_total",
        "Requests refused by a defence, by reason (cross_site, login_rate, webhook_replay)."
    );
    describe_counter!(
        "percache_store_errors_total",
        "Failed commands of the cache store (Redis)."
    );
    describe_counter!(
        "percache_prewarm_total",
        "Fetches started or joined by sign-in prewarm."
    );
    describe_gauge!(
        "percache_fetches_in_flight",
        "Upstream fetches in flight in this process."
    );
    describe_gauge!(
        "percache_upstream_paused",
        "1 while a widget's upstream calls fail at once (its breaker is open, or the upstream asked to wait)."
    );
    describe_counter!(
        "percache_upstream_paused_seconds_total",
        "Seconds the upstream or a widget was paused by Retry-After."
    );
    describe_counter!(
        "percache_sessions_refused_total",
        "Sessions refused, by reason (expired, signed_out)."
    );
    describe_gauge!(
        "percache_open_pages",
        "Dashboards open right now (live connections)."
    );
    describe_gauge!(
        "percache_prewarm_queue",
        "Prewarm fetches waiting for an upstream slot (--prewarm-queue bounds them)."
    );
    describe_gauge!("percache_cache_entries", "Entries in the in-process store.");
    describe_gauge!(
        "percache_cache_bytes",
        Unit::Bytes,
        "Approximate size of the in-process store."
    );
    describe_histogram!(
        "percache_http_request_duration_seconds",
        Unit::Seconds,
        "HTTP request durations, by method, route pattern and status."
    );
    metrics::counter!("percache_store_errors_total").increment(0);
    metrics::counter!("percache_prewarm_total").increment(0);
    metrics::counter!("percache_refresh_total", "outcome" => "skipped").increment(0);
    metrics::counter!("percache_refresh_total", "outcome" => "revalidated").increment(0);
    metrics::gauge!("percache_open_pages").increment(0.0);
    metrics::gauge!("percache_prewarm_queue").increment(0.0);
    for kind in ["foreground_waited", "background_skipped", "prewarm_skipped"] {
        metrics::counter!("percache_upstream_capped_total", "kind" => kind).increment(0);
    }
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Pretty,
    /// One JSON object per line.
    Json,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_per_target_are_a_static_filter_and_span_directives_need_env_filter() {
        for plain in [
            None,
            Some(""),
            Some("info"),
            Some("warn,percache=debug"),
            Some("percache::cache=trace"),
        ] {
            let (targets, env) = filter(plain);
            assert!(targets.is_some() && env.is_none(), "{plain:?}");
        }
        let (targets, env) = filter(Some("info,[request{route=/dashboard}]=debug"));
        assert!(targets.is_none() && env.is_some(), "a span directive");
        let (targets, _) = filter(None);
        let targets = targets.map(|t| t.to_string());
        assert_eq!(targets.as_deref(), Some("info"), "the default is info");
    }
}
