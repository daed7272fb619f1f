//! The client of the slow widgets API (awc over rustls), with a per-call
//! timeout, retries of transient failures, the widgets file's headers on
//! every call, and pooled keep-alive connections.
//!
//! awc's client is not `Send`: one [`Upstream`] is built per worker thread and
//! fetches run as local tasks on that worker.
//!
//! Connections are reused (over TLS a new one costs a handshake), but awc
//! only drops an idle pooled connection when it next connects to the same
//! host: after a burst, the sockets an upstream closed would sit in
//! CLOSE-WAIT. So idle connections are closed by us first: a connection idle
//! for [`IDLE_LIMIT`] is not reused, and a worker whose client has been idle
//! that long swaps it for a new one, which closes every pooled connection.
//! [`IDLE_LIMIT`] is below the 5 s keep-alive of most servers, so percache
//! normally closes before the upstream does.

use std::cell::RefCell;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::http::header::{self, HeaderName, HeaderValue};

use serde_json::value::RawValue;

use crate::widget::{Instance, Redirects};

/// Largest upstream body accepted.
const MAX_BODY: usize = 1 << 20;
/// Attempts per fetch, the first included.
const MAX_ATTEMPTS: u32 = 3;
/// First retry delay; doubled each time, plus up to 100% jitter.
const BACKOFF_BASE: Duration = Duration::from_millis(100);
/// A pooled connection idle this long is closed, not reused.
pub const IDLE_LIMIT: Duration = Duration::from_secs(3);
/// No connection is reused past this age.
const CONN_LIFETIME: Duration = Duration::from_secs(300);
/// Connections per worker.
const CONN_LIMIT: usize = 256;

/// Why a fetch failed. `Clone` because one result is handed to every waiter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    /// The upstream answered with a non-success status.
    #[error("upstream answered {0}")]
    Status(u16),
    /// No answer within `--upstream-timeout`.
    #[error("upstream timed out")]
    Timeout,
    /// Could not connect or the connection broke.
    #[error("upstream unreachable: {0}")]
    Connect(String),
    /// The TLS handshake failed (an untrusted or wrong certificate): not
    /// retried, it will fail the same way.
    #[error("upstream TLS failed: {0}")]
    Tls(String),
    /// The body was not a JSON object or was too large.
    #[error("upstream sent an invalid body: {0}")]
    Body(String),
    /// The key failed recently (with this status) and is in backoff; the
    /// cause, when this instance saw it.
    #[error(
        "upstream failed recently ({0}{cause}); retrying shortly",
        cause = .1.as_deref().map(|c| format!(": {c}")).unwrap_or_default()
    )]
    RecentFailure(u16, Option<Arc<str>>),
    /// The fetch was abandoned (its task ended without a result).
    #[error("fetch abandoned")]
    Abandoned,
    /// The widget's upstream kept timing out, or asked to wait: its calls
    /// fail at once for this many more seconds.
    #[error("upstream paused; trying again in {0} s")]
    Paused(u64),
    /// The upstream asked to wait (`429`, or `503` with `Retry-After`), for
    /// this many seconds if it said (RFC 9110 `Retry-After`, capped at 5 min).
    #[error("upstream asked to wait ({0}{wait})", wait = .1.map(|s| format!(", {s} s")).unwrap_or_default())]
    Limited(u16, Option<u64>),
}

/// The longest an upstream's `Retry-After` pauses it.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// A `Retry-After` value (delta-seconds or an HTTP date) as seconds from
/// `now`, capped at [`MAX_RETRY_AFTER`].
pub fn retry_after_secs(value: &str, now: std::time::SystemTime) -> Option<u64> {
    let value = value.trim();
    let secs = match value.parse::<u64>() {
        Ok(secs) => secs,
        Err(_) => {
            let at: std::time::SystemTime = value.parse::<actix_web::http::header::HttpDate>().ok()?.into();
            at.duration_since(now).map(|d| d.as_secs()).unwrap_or(0)
        }
    };
    Some(secs.min(MAX_RETRY_AFTER.as_secs()))
}

impl FetchError {
    /// What a user is told, in plain words: the kind of failure, never its
    /// details (addresses, certificates, store errors go to the log, under
    /// the request's reference).
    pub fn plain(&self) -> String {
        match self {
            FetchError::Status(s) => format!("the source answered with an error (HTTP {s})"),
            FetchError::Timeout => "the source did not answer in time".into(),
            FetchError::Connect(_) => "the source could not be reached".into(),
            FetchError::Tls(_) => "the source's TLS certificate was not accepted".into(),
            FetchError::Body(_) => "the source sent data that could not be read".into(),
            // The cause as this instance saw it, already in plain words.
            FetchError::RecentFailure(_, Some(cause)) => format!("{cause}; trying again shortly"),
            FetchError::RecentFailure(s, None) => {
                format!("the source failed a moment ago (HTTP {s}); trying again shortly")
            }
            FetchError::Abandoned => "the request was interrupted".into(),
            FetchError::Paused(secs) => format!("the source is paused; trying again in {secs} s"),
            FetchError::Limited(s, Some(secs)) => {
                format!("the source asked us to wait (HTTP {s}); trying again in {secs} s")
            }
            FetchError::Limited(s, None) => {
                format!("the source asked us to wait (HTTP {s}); trying again shortly")
            }
        }
    }

    /// The status for `Cache-Status: fwd-status=`: the upstream's own, or
    /// 504 for a timeout and 502 for everything else.
    pub fn status(&self) -> u16 {
        match self {
            FetchError::Status(s) | FetchError::RecentFailure(s, _) | FetchError::Limited(s, _) => *s,
            FetchError::Timeout => 504,
            FetchError::Paused(_) => 503,
            _ => 502,
        }
    }

    /// Whether retrying may help: connect errors and 502/503/504 only.
    fn is_transient(&self) -> bool {
        matches!(self, FetchError::Connect(_) | FetchError::Status(502..=504))
    }
}

/// A header that the widgets file gives but HTTP refuses (checked when the
/// file is read, so this only guards the conversion).
#[derive(Debug, thiserror::Error)]
#[error("header `{0}` cannot be sent")]
pub struct HeaderError(String);

/// What every worker's client is built from; built once at start-up.
#[derive(Debug)]
pub struct UpstreamSettings {
    base: String,
    headers: Vec<(HeaderName, HeaderValue)>,
    timeout: Duration,
    tls: Arc<rustls::ClientConfig>,
    redirects: Redirects,
}

/// Hops a `same-origin` redirect is followed at most.
const MAX_REDIRECTS: usize = 5;

impl UpstreamSettings {
    /// The API at `base` (no trailing slash), with `headers` on every call.
    pub fn new(
        base: &str,
        headers: &[(String, String)],
        timeout: Duration,
        tls: Arc<rustls::ClientConfig>,
    ) -> Result<Self, HeaderError> {
        let headers = headers
            .iter()
            .map(|(name, value)| {
                let n = HeaderName::try_from(name.as_str()).map_err(|_| HeaderError(name.clone()))?;
                let mut v = HeaderValue::try_from(value.as_str()).map_err(|_| HeaderError(name.clone()))?;
                // Credentials stay out of logs and debug output.
                v.set_sensitive(true);
                Ok((n, v))
            })
            .collect::<Result<_, HeaderError>>()?;
        Ok(Self {
            base: base.trim_end_matches('/').to_owned(),
            headers,
            timeout,
            tls,
            redirects: Redirects::None,
        })
    }

    /// Follows upstream redirects as `redirects` says (default: never).
    pub fn with_redirects(mut self, redirects: Redirects) -> Self {
        self.redirects = redirects;
        self
    }

    /// The base URL.
    pub fn base(&self) -> &str {
        &self.base
    }
}

/// Where the cache gets a widget's data: the widgets API in production, a
/// fake in the cache core's unit tests. `Send + Sync`, so the one cache that
/// holds it is shared by every worker; the future it returns need not be
/// `Send` (awc's client lives on one thread, and fetches run as local tasks).
#[async_trait::async_trait(?Send)]
pub trait Fetch: Send + Sync + 'static {
    /// Fetches one widget instance of one user.
    async fn fetch(&self, user: &str, instance: &Instance) -> Result<Box<RawValue>, FetchError>;

    /// Fetches, asking the upstream whether the body `known` describes is
    /// still current (SPEC §7 "Conditional refresh"): `NotModified` when
    /// it is (a `304`, no body). A fetcher without validators fetches.
    async fn fetch_conditional(
        &self,
        user: &str,
        instance: &Instance,
        known: &Validators,
    ) -> Result<Answer, FetchError> {
        let _ = known;
        let data = self.fetch(user, instance).await?;
        Ok(Answer::Body(data, Validators::default()))
    }
}

/// The upstream's validators of a body: its `ETag` and `Last-Modified`, as
/// it sent them (at most [`MAX_VALIDATOR`] bytes of visible ASCII each).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Validators {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<Box<str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_modified: Option<Box<str>>,
}

/// Longest validator kept.
pub const MAX_VALIDATOR: usize = 256;

impl Validators {
    /// Neither an `ETag` nor a `Last-Modified`.
    pub fn is_empty(&self) -> bool {
        self.etag.is_none() && self.last_modified.is_none()
    }

    /// As an entry keeps them: boxed, and `None` when there are none.
    pub fn boxed(self) -> Option<Box<Self>> {
        (!self.is_empty()).then(|| Box::new(self))
    }

    /// The validators of a response's headers (others, and oversized or
    /// non-ASCII values, are dropped).
    fn of(headers: &header::HeaderMap) -> Self {
        let keep = |name: header::HeaderName| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .filter(|v| !v.is_empty() && v.len() <= MAX_VALIDATOR)
                .map(Box::from)
        };
        Self {
            etag: keep(header::ETAG),
            last_modified: keep(header::LAST_MODIFIED),
        }
    }

    /// These validators, each one missing taken from `known` (a `304` may
    /// omit them).
    fn or(self, known: &Validators) -> Self {
        Self {
            etag: self.etag.or_else(|| known.etag.clone()),
            last_modified: self.last_modified.or_else(|| known.last_modified.clone()),
        }
    }
}

/// What a conditional fetch got.
#[derive(Debug)]
pub enum Answer {
    /// A body, with its validators.
    Body(Box<RawValue>, Validators),
    /// `304 Not Modified`: the known body is current; its validators now.
    NotModified(Validators),
}

/// The widgets API over awc. awc's client is not `Send`, so each thread that
/// fetches gets its own [`Upstream`], built from the shared settings on its
/// first call and kept for the thread's life (a worker's).
pub struct HttpFetcher {
    settings: Arc<UpstreamSettings>,
}

impl HttpFetcher {
    /// A fetcher of the API `settings` describe.
    pub fn new(settings: Arc<UpstreamSettings>) -> Self {
        Self { settings }
    }

    /// This thread's client of our API (several apps may share a thread in tests).
    fn client(&self) -> Upstream {
        thread_local! {
            static CLIENTS: RefCell<Vec<Upstream>> = const { RefCell::new(Vec::new()) };
        }
        CLIENTS.with(|clients| {
            let mut clients = clients.borrow_mut();
            if let Some(up) = clients
                .iter()
                .find(|up| Arc::ptr_eq(&up.settings, &self.settings))
            {
                return up.clone();
            }
            let up = Upstream::new(Arc::clone(&self.settings));
            clients.push(up.clone());
            up
        })
    }
}

#[async_trait::async_trait(?Send)]
impl Fetch for HttpFetcher {
    async fn fetch(&self, user: &str, instance: &Instance) -> Result<Box<RawValue>, FetchError> {
        self.client().fetch(user, instance).await
    }

    async fn fetch_conditional(
        &self,
        user: &str,
        instance: &Instance,
        known: &Validators,
    ) -> Result<Answer, FetchError> {
        self.client().fetch_with(user, instance, known).await
    }
}

/// This worker's awc client and when it was last used.
struct Slot {
    client: awc::Client,
    last_used: Instant,
    /// Whether the client may hold pooled connections.
    used: bool,
    /// Whether the pruning task runs (started by the first call, which
    /// runs on the worker's local task set).
    pruning: bool,
}

/// A per-worker handle on the widgets API.
#[derive(Clone)]
pub struct Upstream {
    settings: Arc<UpstreamSettings>,
    slot: Rc<RefCell<Slot>>,
}

impl Upstream {
    /// This worker's client, from the shared settings.
    pub fn new(settings: Arc<UpstreamSettings>) -> Self {
        let slot = Slot {
            client: new_client(&settings),
            last_used: Instant::now(),
            used: false,
            pruning: false,
        };
        Self {
            settings,
            slot: Rc::new(RefCell::new(slot)),
        }
    }

    /// Closes this worker's pooled connections once they have all been idle
    /// for [`IDLE_LIMIT`], by dropping the client that owns them. Runs on the
    /// worker for as long as the handle lives.
    fn spawn_pruner(&self) {
        let slot: Weak<RefCell<Slot>> = Rc::downgrade(&self.slot);
        let settings = Arc::clone(&self.settings);
        actix_web::rt::spawn(async move {
            let mut tick = tokio::time::interval(IDLE_LIMIT / 3);
            loop {
                tick.tick().await;
                let Some(slot) = slot.upgrade() else { return };
                let mut slot = slot.borrow_mut();
                if slot.used && slot.last_used.elapsed() >= IDLE_LIMIT {
                    slot.client = new_client(&settings);
                    slot.used = false;
                }
            }
        });
    }

    /// The client to send with, marked as used now.
    fn client(&self) -> awc::Client {
        let mut slot = self.slot.borrow_mut();
        slot.last_used = Instant::now();
        slot.used = true;
        if !slot.pruning {
            slot.pruning = true;
            drop(slot);
            self.spawn_pruner();
            return self.slot.borrow().client.clone();
        }
        slot.client.clone()
    }

    /// Fetches one widget instance of one user; the whole call, retries
    /// included, is bounded by the timeout.
    pub async fn fetch(&self, user: &str, instance: &Instance) -> Result<Box<RawValue>, FetchError> {
        match self.fetch_with(user, instance, &Validators::default()).await? {
            Answer::Body(data, _) => Ok(data),
            // Asked for nothing conditional: a 304 is not an answer.
            Answer::NotModified(_) => Err(FetchError::Status(304)),
        }
    }

    /// As [`Upstream::fetch`], conditional on `known` (sent as
    /// `If-None-Match` / `If-Modified-Since`).
    pub async fn fetch_with(
        &self,
        user: &str,
        instance: &Instance,
        known: &Validators,
    ) -> Result<Answer, FetchError> {
        let mut url = String::with_capacity(self.settings.base.len() + 64);
        url.push_str(&self.settings.base);
        url.push_str(&instance.widget.path.render(user, &instance.params));
        let label = instance.id().label();
        let attempts = async {
            let mut attempt = 0;
            loop {
                attempt += 1;
                match self.fetch_once(&url, &label, known).await {
                    Err(e) if e.is_transient() && attempt < MAX_ATTEMPTS => {
                        let delay = backoff(attempt);
                        tracing::debug!(widget = %label, attempt, error = %e, ?delay, "retrying upstream");
                        tokio::time::sleep(delay).await;
                    }
                    other => return other,
                }
            }
        };
        tokio::time::timeout(self.settings.timeout, attempts)
            .await
            .unwrap_or(Err(FetchError::Timeout))
    }

    /// One attempt, recorded in `percache_upstream_requests_total{widget,status}`
    /// and `percache_upstream_duration_seconds`.
    async fn fetch_once(
        &self,
        url: &str,
        widget: &Arc<str>,
        known: &Validators,
    ) -> Result<Answer, FetchError> {
        let start = std::time::Instant::now();
        let result = self.attempt(url, known).await;
        let status = match &result {
            Ok(Answer::Body(..)) => "200".to_owned(),
            Ok(Answer::NotModified(_)) => "304".to_owned(),
            Err(FetchError::Status(s)) => s.to_string(),
            Err(FetchError::Timeout) => "timeout".to_owned(),
            Err(_) => "error".to_owned(),
        };
        metrics::counter!("percache_upstream_requests_total", "widget" => Arc::clone(widget), "status" => status)
            .increment(1);
        metrics::histogram!("percache_upstream_duration_seconds", "widget" => Arc::clone(widget))
            .record(start.elapsed().as_secs_f64());
        result
    }

    async fn attempt(&self, url: &str, known: &Validators) -> Result<Answer, FetchError> {
        let mut url = url.to_owned();
        let mut hops = 0;
        let mut resp = loop {
            let mut request = self.client().get(&url);
            for (name, value) in &self.settings.headers {
                request = request.insert_header((name.clone(), value.clone()));
            }
            if let Some(etag) = known.etag.as_deref() {
                request = request.insert_header((header::IF_NONE_MATCH, etag));
            }
            if let Some(at) = known.last_modified.as_deref() {
                request = request.insert_header((header::IF_MODIFIED_SINCE, at));
            }
            let resp = request.send().await.map_err(send_error)?;
            // Never followed by awc itself (the client disables it): a
            // redirect elsewhere would carry the file's headers there.
            let status = resp.status();
            if !status.is_redirection() || status.as_u16() == 304 {
                break resp;
            }
            let next = resp
                .headers()
                .get(header::LOCATION)
                .and_then(|l| l.to_str().ok())
                .and_then(|l| same_origin_target(&url, l));
            match (self.settings.redirects, next) {
                (Redirects::SameOrigin, Some(next)) if hops < MAX_REDIRECTS => {
                    hops += 1;
                    url = next;
                }
                _ => return Err(FetchError::Status(status.as_u16())),
            }
        };
        let status = resp.status().as_u16();
        if status == 304 && !known.is_empty() {
            return Ok(Answer::NotModified(Validators::of(resp.headers()).or(known)));
        }
        if !resp.status().is_success() {
            // Back-pressure: a 429 (with or without Retry-After), or a 503
            // with one, asks the fleet to wait; neither is retried.
            let retry_after = resp
                .headers()
                .get(header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| retry_after_secs(v, std::time::SystemTime::now()));
            return Err(match (status, retry_after) {
                (429, after) => FetchError::Limited(429, after),
                (503, Some(after)) => FetchError::Limited(503, Some(after)),
                _ => FetchError::Status(status),
            });
        }
        let body = resp
            .body()
            .limit(MAX_BODY)
            .await
            .map_err(|e| FetchError::Body(e.to_string()))?;
        // Checked, and kept as bytes: no tree of values per entry.
        let validators = Validators::of(resp.headers());
        raw_object(&body)
            .map(|data| Answer::Body(data, validators))
            .map_err(FetchError::Body)
    }
}

/// A client over rustls with bounded keep-alive.
fn new_client(settings: &UpstreamSettings) -> awc::Client {
    let connector = awc::Connector::new()
        .rustls_0_23(Arc::clone(&settings.tls))
        .limit(CONN_LIMIT)
        .conn_keep_alive(IDLE_LIMIT)
        .conn_lifetime(CONN_LIFETIME);
    awc::Client::builder()
        .timeout(settings.timeout)
        .disable_redirects()
        .connector(connector)
        .finish()
}

/// Where a redirect from `from` to `location` goes, if it stays on the same
/// origin (scheme, host and port): an absolute URL of that origin, or a
/// path (`/...`). Anything else (another origin, `//host`, a relative path)
/// is not followed.
fn same_origin_target(from: &str, location: &str) -> Option<String> {
    let origin_of = |url: &str| -> Option<String> {
        let (scheme, rest) = url.split_once("://")?;
        let authority = rest.split(['/', '?', '#']).next()?;
        Some(format!(
            "{}://{}",
            scheme.to_ascii_lowercase(),
            authority.to_ascii_lowercase()
        ))
    };
    let origin = origin_of(from)?;
    if location.starts_with('/') && !location.starts_with("//") {
        return Some(format!("{origin}{location}"));
    }
    let target = origin_of(location)?;
    (target == origin).then(|| format!("{origin}{}", &location[target.len()..]))
}

/// A send error as a fetch error; certificate trouble is told apart, since
/// retrying cannot help it and the operator needs to see it.
fn send_error(e: awc::error::SendRequestError) -> FetchError {
    match e {
        awc::error::SendRequestError::Timeout => FetchError::Timeout,
        other => {
            let message = other.to_string();
            let lower = message.to_ascii_lowercase();
            if lower.contains("certificate") || lower.contains("tls") || lower.contains("handshake") {
                FetchError::Tls(message)
            } else {
                FetchError::Connect(message)
            }
        }
    }
}

/// Exponential backoff with jitter: base * 2^(attempt-1) * (1 + r), r in [0, 1).
fn backoff(attempt: u32) -> Duration {
    let exp = BACKOFF_BASE * 2u32.saturating_pow(attempt.saturating_sub(1));
    // fastrand: the one source of randomness (the clock's nanoseconds are
    // not random, and are the same on instances that retry together).
    exp.mul_f64(1.0 + fastrand::f64())
}

/// Upstream JSON as an entry keeps it: valid JSON, and an object.
pub fn raw_object(bytes: &[u8]) -> Result<Box<RawValue>, String> {
    let raw: Box<RawValue> = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    if raw.get().starts_with('{') {
        Ok(raw)
    } else {
        Err("not a JSON object".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_transient_errors_are_retried() {
        assert!(FetchError::Status(503).is_transient());
        assert!(FetchError::Status(502).is_transient());
        assert!(FetchError::Status(504).is_transient(), "the top of 502..=504");
        assert!(!FetchError::Status(505).is_transient());
        assert!(!FetchError::Status(501).is_transient());
        assert!(
            !FetchError::Limited(429, None).is_transient(),
            "back-pressure is obeyed, not retried"
        );
        assert!(!FetchError::Limited(503, Some(3)).is_transient());
        assert!(FetchError::Connect("refused".into()).is_transient());
        assert!(!FetchError::Status(404).is_transient());
        assert!(!FetchError::Status(500).is_transient());
        assert!(!FetchError::Timeout.is_transient());
        assert!(!FetchError::Tls("invalid peer certificate".into()).is_transient());
    }

    #[test]
    fn retry_after_is_seconds_or_an_http_date_capped_at_five_minutes() {
        let now = std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(retry_after_secs("3", now), Some(3));
        assert_eq!(retry_after_secs(" 120 ", now), Some(120));
        assert_eq!(retry_after_secs("86400", now), Some(300), "capped");
        let later = httpdate_of(now + Duration::from_secs(42));
        assert_eq!(retry_after_secs(&later, now), Some(42));
        let past = httpdate_of(now - Duration::from_secs(42));
        assert_eq!(retry_after_secs(&past, now), Some(0));
        assert_eq!(retry_after_secs("soon", now), None);
        assert_eq!(retry_after_secs("-1", now), None);
    }

    fn httpdate_of(t: std::time::SystemTime) -> String {
        actix_web::http::header::HttpDate::from(t).to_string()
    }

    #[test]
    fn backoff_grows_with_jitter() {
        let first = backoff(1);
        assert!(first >= BACKOFF_BASE && first < BACKOFF_BASE * 2);
        let third = backoff(3);
        assert!(third >= BACKOFF_BASE * 4 && third < BACKOFF_BASE * 8);
    }

    #[test]
    fn only_same_origin_redirects_have_a_target() {
        let from = "https://api.example:8443/v2/users/a/billing";
        assert_eq!(
            same_origin_target(from, "/v3/x").as_deref(),
            Some("https://api.example:8443/v3/x")
        );
        assert_eq!(
            same_origin_target(from, "https://API.example:8443/y?z=1").as_deref(),
            Some("https://api.example:8443/y?z=1")
        );
        for elsewhere in [
            "https://evil.example/x",
            "https://api.example/x",
            "http://api.example:8443/x",
            "//evil.example/x",
            "x/y",
            "",
        ] {
            assert_eq!(same_origin_target(from, elsewhere), None, "{elsewhere}");
        }
    }
}
