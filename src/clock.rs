//! An injectable wall clock.
//!
//! Cache freshness, ttl and grace are all decided against [`Clock::now_ms`]
//! so that tests can move time forward instead of sleeping for minutes.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch.
pub type Millis = i64;

/// A source of "now" for the cache policy.
pub trait Clock: Send + Sync + 'static {
    /// The current time in milliseconds since the Unix epoch.
    fn now_ms(&self) -> Millis;
}

/// The real clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> Millis {
        system_now_ms()
    }
}

/// Real time in milliseconds since the epoch (0 if the system clock is before 1970).
pub fn system_now_ms() -> Millis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as Millis)
        .unwrap_or(0)
}

/// A clock that follows real time plus an offset the test controls.
///
/// Following real time (rather than standing still) keeps "updated N s ago"
/// and Redis TTLs sensible while a test jumps over freshness windows.
#[derive(Debug, Default)]
pub struct MockClock {
    offset_ms: AtomicI64,
}

impl MockClock {
    /// A mock clock that starts at the real time.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Jump forward by `by`.
    pub fn advance(&self, by: Duration) {
        self.offset_ms.fetch_add(by.as_millis() as i64, Ordering::SeqCst);
    }
}

impl Clock for MockClock {
    fn now_ms(&self) -> Millis {
        system_now_ms() + self.offset_ms.load(Ordering::SeqCst)
    }
}

/// Formats epoch milliseconds as RFC 3339 (UTC), e.g. `2026-11-21T17:36:21.123Z`.
pub fn rfc3339(ms: Millis) -> String {
    use time::format_description::well_known::Rfc3339;
    time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".to_string())
}

/// Formats epoch milliseconds as `HH:MM` (UTC), for "showing data from HH:MM".
pub fn hh_mm(ms: Millis) -> String {
    match time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000) {
        Ok(t) => format!("{:02}:{:02}", t.hour(), t.minute()),
        Err(_) => "--:--".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mock_clock_advances() {
        let clock = MockClock::new();
        let before = clock.now_ms();
        clock.advance(Duration::from_secs(600));
        assert!(clock.now_ms() - before >= 600_000);
    }

    #[test]
    fn formats_rfc3339_and_hh_mm() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(hh_mm(3_600_000 + 5 * 60_000), "01:05");
    }
}
