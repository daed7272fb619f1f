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

    /// Notified when the clock jumps (a mock clock in tests), so that
    /// [`sleep_until`] wakes at once instead of at the real-time deadline.
    fn jumps(&self) -> Option<&tokio::sync::Notify> {
        None
    }
}

/// Sleeps until `clock` reads at least `at`: real time, cut short when a
/// mock clock jumps past it.
pub async fn sleep_until(clock: &dyn Clock, at: Millis) {
    loop {
        // Registered before reading the clock: a jump in between is not missed.
        let jumped = clock.jumps().map(|n| n.notified());
        let now = clock.now_ms();
        if now >= at {
            return;
        }
        let wait = tokio::time::sleep(Duration::from_millis((at - now) as u64));
        match jumped {
            Some(jumped) => {
                tokio::select! {
                    _ = wait => {}
                    _ = jumped => {}
                }
            }
            None => wait.await,
        }
    }
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
    jumped: tokio::sync::Notify,
}

impl MockClock {
    /// A mock clock that starts at the real time.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Jump forward by `by`.
    pub fn advance(&self, by: Duration) {
        self.offset_ms.fetch_add(by.as_millis() as i64, Ordering::SeqCst);
        self.jumped.notify_waiters();
    }
}

impl Clock for MockClock {
    fn now_ms(&self) -> Millis {
        system_now_ms() + self.offset_ms.load(Ordering::SeqCst)
    }

    fn jumps(&self) -> Option<&tokio::sync::Notify> {
        Some(&self.jumped)
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

    #[tokio::test]
    async fn sleep_until_wakes_when_the_mock_clock_jumps() {
        let clock = MockClock::new();
        let at = clock.now_ms() + 3_600_000;
        let c = Arc::clone(&clock);
        let sleeper = tokio::spawn(async move { sleep_until(&*c, at).await });
        tokio::task::yield_now().await;
        clock.advance(Duration::from_secs(3_600));
        tokio::time::timeout(Duration::from_secs(5), sleeper)
            .await
            .expect("woke on the jump")
            .unwrap();
    }

    #[test]
    fn formats_rfc3339_and_hh_mm() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(hh_mm(3_600_000 + 5 * 60_000), "01:05");
    }
}
