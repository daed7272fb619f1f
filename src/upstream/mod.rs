//! The client of the slow widgets API (awc), with a per-call timeout and
//! retries of transient failures.
//!
//! awc's client is not `Send`: one [`Upstream`] is built per worker thread and
//! fetches run as local tasks on that worker.

use std::rc::Rc;
use std::time::Duration;

use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};

use crate::widget::WidgetId;

/// Largest upstream body accepted.
const MAX_BODY: usize = 1 << 20;
/// Attempts per fetch, the first included.
const MAX_ATTEMPTS: u32 = 3;
/// First retry delay; doubled each time, plus up to 100% jitter.
const BACKOFF_BASE: Duration = Duration::from_millis(100);

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
    /// The body was not a JSON object or was too large.
    #[error("upstream sent an invalid body: {0}")]
    Body(String),
    /// The key failed recently (with this status) and is in backoff.
    #[error("upstream failed recently ({0}); retrying shortly")]
    RecentFailure(u16),
    /// The fetch was abandoned (its task ended without a result).
    #[error("fetch abandoned")]
    Abandoned,
}

impl FetchError {
    /// The status for `Cache-Status: fwd-status=`: the upstream's own, or
    /// 504 for a timeout and 502 for everything else.
    pub fn status(&self) -> u16 {
        match self {
            FetchError::Status(s) | FetchError::RecentFailure(s) => *s,
            FetchError::Timeout => 504,
            _ => 502,
        }
    }

    /// Whether retrying may help: connect errors and 502/503/504 only.
    fn is_transient(&self) -> bool {
        matches!(self, FetchError::Connect(_) | FetchError::Status(502..=504))
    }
}

/// A per-worker handle on the widgets API.
#[derive(Clone)]
pub struct Upstream {
    client: awc::Client,
    base: Rc<str>,
    timeout: Duration,
}

impl Upstream {
    /// A client for the API at `base` (no trailing slash).
    pub fn new(base: &str, timeout: Duration) -> Self {
        let client = awc::Client::builder()
            .timeout(timeout)
            .connector(awc::Connector::new().limit(256))
            .finish();
        Self {
            client,
            base: Rc::from(base.trim_end_matches('/')),
            timeout,
        }
    }

    /// Fetches one widget of one user; the whole call, retries included, is
    /// bounded by the timeout.
    pub async fn fetch(&self, user: &str, widget: WidgetId) -> Result<serde_json::Value, FetchError> {
        let url = format!(
            "{}/api/widgets/{}?userId={}",
            self.base,
            widget,
            utf8_percent_encode(user, NON_ALPHANUMERIC)
        );
        let attempts = async {
            let mut attempt = 0;
            loop {
                attempt += 1;
                match self.fetch_once(&url, widget).await {
                    Err(e) if e.is_transient() && attempt < MAX_ATTEMPTS => {
                        let delay = backoff(attempt);
                        tracing::debug!(%widget, attempt, error = %e, ?delay, "retrying upstream");
                        tokio::time::sleep(delay).await;
                    }
                    other => return other,
                }
            }
        };
        tokio::time::timeout(self.timeout, attempts)
            .await
            .unwrap_or(Err(FetchError::Timeout))
    }

    /// One attempt, recorded in `percache_upstream_requests_total{widget,status}`
    /// and `percache_upstream_duration_seconds`.
    async fn fetch_once(&self, url: &str, widget: WidgetId) -> Result<serde_json::Value, FetchError> {
        let start = std::time::Instant::now();
        let result = self.attempt(url).await;
        let status = match &result {
            Ok(_) => "200".to_owned(),
            Err(FetchError::Status(s)) => s.to_string(),
            Err(FetchError::Timeout) => "timeout".to_owned(),
            Err(_) => "error".to_owned(),
        };
        metrics::counter!("percache_upstream_requests_total", "widget" => widget.as_str(), "status" => status)
            .increment(1);
        metrics::histogram!("percache_upstream_duration_seconds", "widget" => widget.as_str())
            .record(start.elapsed().as_secs_f64());
        result
    }

    async fn attempt(&self, url: &str) -> Result<serde_json::Value, FetchError> {
        // `Connection: close`: awc only drops idle pooled connections when it
        // next connects to the same host, so after a burst the sockets the
        // upstream closed would sit in CLOSE-WAIT until then (the soak test
        // found 126). Upstream calls take seconds; a new connection per call
        // costs nothing next to that.
        let mut resp = self
            .client
            .get(url)
            .force_close()
            .send()
            .await
            .map_err(|e| match e {
                awc::error::SendRequestError::Timeout => FetchError::Timeout,
                other => FetchError::Connect(other.to_string()),
            })?;
        if !resp.status().is_success() {
            return Err(FetchError::Status(resp.status().as_u16()));
        }
        let body = resp
            .body()
            .limit(MAX_BODY)
            .await
            .map_err(|e| FetchError::Body(e.to_string()))?;
        let value: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| FetchError::Body(e.to_string()))?;
        if !value.is_object() {
            return Err(FetchError::Body("not a JSON object".into()));
        }
        Ok(value)
    }
}

/// Exponential backoff with jitter: base * 2^(attempt-1) * (1 + r), r in [0, 1).
fn backoff(attempt: u32) -> Duration {
    let exp = BACKOFF_BASE * 2u32.saturating_pow(attempt.saturating_sub(1));
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let jitter = f64::from(nanos % 1000) / 1000.0;
    exp.mul_f64(1.0 + jitter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_transient_errors_are_retried() {
        assert!(FetchError::Status(503).is_transient());
        assert!(FetchError::Status(502).is_transient());
        assert!(FetchError::Connect("refused".into()).is_transient());
        assert!(!FetchError::Status(404).is_transient());
        assert!(!FetchError::Status(500).is_transient());
        assert!(!FetchError::Timeout.is_transient());
    }

    #[test]
    fn backoff_grows_with_jitter() {
        let first = backoff(1);
        assert!(first >= BACKOFF_BASE && first < BACKOFF_BASE * 2);
        let third = backoff(3);
        assert!(third >= BACKOFF_BASE * 4 && third < BACKOFF_BASE * 8);
    }
}
