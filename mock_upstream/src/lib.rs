//! A fake, slow, per-user widgets API for percache's tests and demos.
//!
//! It stands in for the real upstream: `GET /api/widgets/{id}?userId=U` answers, after the
//! widget's delay, with plausible JSON that is deterministic per user, plus a per-(user, widget)
//! `version` that grows with every call and a `generatedAt` timestamp. It counts the calls it
//! receives (`GET /stats`, `POST /stats/reset`) and lets tests inject faults (`POST /faults`).
//!
//! Widget 3 (analytics) also takes `days=N` ([`MIN_DAYS`] to [`MAX_DAYS`], default
//! [`DEFAULT_DAYS`]): its series then has N daily points ending on the same anchor day, and
//! `total` is their sum. Any other `days` value is a 400. Other widgets ignore `days`, and all
//! widgets ignore other unknown query parameters. Call counts stay per (user, widget), whatever
//! `days` is.
//!
//! Use it in-process with [`MockUpstream::start`] (bind `127.0.0.1:0` for a free port), or run
//! the `mock-upstream` binary.

mod content;
mod fault;
mod server;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use actix_web::dev::ServerHandle;
use tokio::task::JoinHandle;

pub use fault::Fault;

/// Number of widgets; ids are `1..=WIDGETS`.
pub const WIDGETS: u8 = 5;

/// Fewest points the analytics widget (3) serves, via `days=`.
pub const MIN_DAYS: u32 = 1;
/// Most points the analytics widget (3) serves, via `days=`.
pub const MAX_DAYS: u32 = 90;
/// Points in the analytics series (widget 3) when the request has no `days=`.
pub const DEFAULT_DAYS: u32 = 14;

/// Whether `widget` is a known widget id (1 to 5).
pub fn valid_widget(widget: u8) -> bool {
    (1..=WIDGETS).contains(&widget)
}

/// Start-up configuration of the mock.
#[derive(Clone, Debug)]
pub struct MockConfig {
    /// Delay before answering, per widget (index 0 is widget 1).
    pub delays: [Duration; 5],
    /// Random spread applied to each delay, in percent (0 = exact delays).
    pub jitter_pct: u32,
    /// `--etags`: bodies stay the same until `POST /bump`, with `ETag` and
    /// `Last-Modified`; a matching `If-None-Match` gets `304`.
    pub etags: bool,
}

impl Default for MockConfig {
    /// Delays 1 s, 3 s, 15 s, 6 s, 1 s; no jitter.
    fn default() -> Self {
        Self::with_delays_ms([1000, 3000, 15000, 6000, 1000])
    }
}

impl MockConfig {
    /// A config with these per-widget delays in milliseconds and no jitter.
    pub fn with_delays_ms(ms: [u64; 5]) -> Self {
        MockConfig {
            delays: ms.map(Duration::from_millis),
            jitter_pct: 0,
            etags: false,
        }
    }
}

/// Mutable state shared by the handlers and the [`MockUpstream`] handle.
#[derive(Debug)]
pub(crate) struct State {
    pub total: u64,
    /// Widget calls received and not yet answered (nor dropped by the caller).
    pub in_flight: u64,
    /// Widget calls answered (whatever the answer) since start or the last reset.
    pub answered: u64,
    /// The most calls held unanswered at once since start or the last reset.
    pub peak_in_flight: u64,
    /// The last [`ORDER_KEPT`] calls' stats keys, in the order they arrived.
    pub order: std::collections::VecDeque<String>,
    pub by_key: BTreeMap<String, u64>,
    pub versions: HashMap<(String, u8), u64>,
    pub faults: [Fault; 5],
    pub delays: [Duration; 5],
    pub jitter_pct: u32,
    /// With `--etags`: the body of each (user, widget, days), its `ETag` and
    /// `Last-Modified`, kept until a bump; `None` without `--etags`.
    pub bodies: Option<HashMap<(String, u8, u32), Kept>>,
    /// `304`s answered since start or the last reset.
    pub not_modified: u64,
}

/// One kept body of `--etags`.
#[derive(Debug, Clone)]
pub(crate) struct Kept {
    pub body: actix_web::web::Bytes,
    pub etag: String,
    pub last_modified: String,
}

/// The shared state, behind a mutex that is never held across an await.
#[derive(Debug)]
pub(crate) struct Shared(Mutex<State>);

impl Shared {
    fn new(config: &MockConfig) -> Self {
        Shared(Mutex::new(State {
            total: 0,
            in_flight: 0,
            answered: 0,
            peak_in_flight: 0,
            order: Default::default(),
            by_key: BTreeMap::new(),
            versions: HashMap::new(),
            faults: Default::default(),
            delays: config.delays,
            jitter_pct: config.jitter_pct,
            bodies: config.etags.then(HashMap::new),
            not_modified: 0,
        }))
    }

    /// Locks the state; a poisoned lock is recovered (the state stays usable).
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// How many of the latest calls [`MockUpstream::call_order`] keeps.
pub const ORDER_KEPT: usize = 10_000;

/// Stats key of one (user, widget) pair, as in `GET /stats`: `"alice/1"`.
pub(crate) fn stats_key(user: &str, widget: u8) -> String {
    format!("{user}/{widget}")
}

/// A running mock upstream. Stop it with [`MockUpstream::stop`]; dropping it stops it too
/// (without waiting).
#[derive(Debug)]
pub struct MockUpstream {
    addr: SocketAddr,
    handle: Option<ServerHandle>,
    task: Option<JoinHandle<std::io::Result<()>>>,
    shared: Arc<Shared>,
}

impl MockUpstream {
    /// Binds `bind` (e.g. `"127.0.0.1:0"`), starts the HTTP server on the current Tokio runtime
    /// (plain Tokio or actix) and returns once it is listening.
    pub async fn start(bind: &str, config: MockConfig) -> std::io::Result<MockUpstream> {
        let listener = std::net::TcpListener::bind(bind)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::new(&config));
        let server = server::build(listener, Arc::clone(&shared))?;
        let handle = server.handle();
        let task = tokio::spawn(server);
        Ok(MockUpstream {
            addr,
            handle: Some(handle),
            task: Some(task),
            shared,
        })
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Base URL, e.g. `http://127.0.0.1:8787` (no trailing slash).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Widget calls received since start or the last reset (all users, all widgets).
    pub fn total_calls(&self) -> u64 {
        self.shared.lock().total
    }

    /// Widget calls received for one (user, widget) since start or the last reset.
    pub fn calls_for(&self, user: &str, widget: u8) -> u64 {
        let key = stats_key(user, widget);
        self.shared.lock().by_key.get(&key).copied().unwrap_or(0)
    }

    /// Widget calls received whose answer has not been sent yet (a caller
    /// that gave up no longer counts): what a test waits on instead of
    /// guessing how long a call takes to arrive.
    pub fn in_flight(&self) -> u64 {
        self.shared.lock().in_flight
    }

    /// Widget calls answered (or given up by the caller) since start or the
    /// last reset.
    pub fn answered(&self) -> u64 {
        self.shared.lock().answered
    }

    /// The most calls held unanswered at once since start or the last reset:
    /// a cap on concurrent calls is checked against this, exactly, instead
    /// of by sampling at a guessed moment.
    pub fn peak_in_flight(&self) -> u64 {
        self.shared.lock().peak_in_flight
    }

    /// The stats keys (`"alice/1"`) of the latest calls (at most
    /// [`ORDER_KEPT`]), oldest first, in the order they arrived: which of two
    /// waiting callers was let through first.
    pub fn call_order(&self) -> Vec<String> {
        self.shared.lock().order.iter().cloned().collect()
    }

    /// `304 Not Modified` answers since start or the last reset (`--etags`).
    pub fn not_modified(&self) -> u64 {
        self.shared.lock().not_modified
    }

    /// With `--etags`, changes the body of (`user`, `widget`): its version
    /// grows and its `ETag` changes. Returns the new version (`None`
    /// without `--etags`).
    pub fn bump(&self, user: &str, widget: u8) -> Option<u64> {
        server::bump(&self.shared, user, widget)
    }

    /// Per-key call counts, as in `GET /stats` (`"alice/1"` → count).
    pub fn calls_by_key(&self) -> BTreeMap<String, u64> {
        self.shared.lock().by_key.clone()
    }

    /// Zeroes the call counts. Versions keep growing.
    pub fn reset_stats(&self) {
        let mut st = self.shared.lock();
        st.total = 0;
        st.answered = 0;
        st.peak_in_flight = st.in_flight;
        st.order.clear();
        st.not_modified = 0;
        st.by_key.clear();
    }

    /// Sets how calls for `widget` (1..=5) are answered from now on. Other ids are ignored.
    pub fn set_fault(&self, widget: u8, fault: Fault) {
        if valid_widget(widget) {
            self.shared.lock().faults[usize::from(widget - 1)] = fault;
        }
    }

    /// Changes the delay of `widget` (1..=5) for calls received from now on. Other ids are
    /// ignored.
    pub fn set_delay(&self, widget: u8, delay: Duration) {
        if valid_widget(widget) {
            self.shared.lock().delays[usize::from(widget - 1)] = delay;
        }
    }

    /// Stops the server gracefully: stops accepting, waits (at most about 1 s) for open
    /// connections, then returns.
    pub async fn stop(mut self) {
        if let Some(handle) = self.handle.take() {
            handle.stop(true).await;
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for MockUpstream {
    fn drop(&mut self) {
        if let Some(handle) = self.handle.take() {
            // The stop command is sent at once; the returned future only awaits completion.
            drop(handle.stop(false));
        }
    }
}
