//! Upstream slots: the one place that hands out the right to call the
//! upstream (`--max-upstream-calls` in all), with a bulkhead and a breaker
//! per widget (SPEC §7 "Fair share").
//!
//! Why per widget: a widget whose endpoint hangs keeps each of its calls
//! until the upstream timeout. Without a bulkhead, enough users opening it
//! take every slot, and every other widget of every user waits behind it
//! (seen: 200 ms widgets taking 18 s). So a widget holds at most half the
//! slots (its share), and after [`BREAK_AFTER`] timeouts in a row its
//! breaker opens: its calls fail at once for [`COOL_DOWN`] (cached data is
//! still served, as stale-if-error), then one call is let through to see
//! whether it answers again.
//!
//! Back-pressure (SPEC §7): a `429` with `Retry-After` pauses every call to
//! the upstream, and a `503` with `Retry-After` every call of that widget,
//! for that long (capped at 5 min), on this instance at once and on the
//! others through the change feed (`pause:` messages). Paused calls fail at
//! once; cached data is served meanwhile as stale-if-error.
//!
//! Waiting for a slot holds no fleet lease (`flight` takes the lease only
//! once it holds a slot).

use std::sync::atomic::{AtomicI64, AtomicU32, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use super::fleet::changes::{Changes, Heard};

use super::turns::{Refused, Requester, Turn, Turns};

use crate::clock::{Clock, Millis};
use crate::upstream::FetchError;

/// Timeouts in a row after which a widget's breaker opens.
pub const BREAK_AFTER: u32 = 5;
/// How long an open breaker fails calls at once.
pub const COOL_DOWN: Duration = Duration::from_secs(30);

/// One widget's breaker (its bulkhead is its share in [`Turns`]).
struct Lane {
    timeouts_in_a_row: AtomicU32,
    open_until: AtomicI64,
}

/// The right to make one upstream call, given back when dropped.
pub type Slot = Turn;

/// Feed messages of the pauses: `pause:*:<until ms>` (the upstream) or
/// `pause:<widget index>:<until ms>`.
const PAUSE_PREFIX: &str = "pause:";

/// Every upstream slot of this instance.
pub struct Slots {
    turns: Arc<Turns>,
    lanes: Vec<Lane>,
    clock: Arc<dyn Clock>,
    /// Every call to the upstream is paused until then (a `429`).
    all_paused_until: AtomicI64,
    /// Where pauses are announced to the fleet.
    changes: Option<Arc<Changes>>,
}

impl Slots {
    /// `total` slots shared by `widgets` widgets, each holding at most half
    /// of them (at least one), judged by `clock`.
    pub fn new(total: usize, widgets: usize, clock: Arc<dyn Clock>) -> Self {
        let total = total.max(1);
        let share = total.div_ceil(2).max(1);
        Self {
            all_paused_until: AtomicI64::new(Millis::MIN),
            changes: None,
            turns: Turns::new(total, widgets.max(1), share),
            lanes: (0..widgets.max(1))
                .map(|_| Lane {
                    timeouts_in_a_row: AtomicU32::new(0),
                    open_until: AtomicI64::new(Millis::MIN),
                })
                .collect(),
            clock,
        }
    }

    /// The same slots, their pauses announced on (and heard from) `changes`.
    pub fn on_feed(self, changes: &Arc<Changes>) -> Arc<Self> {
        let slots = Arc::new(Self {
            changes: Some(Arc::clone(changes)),
            ..self
        });
        let heard: Weak<dyn Heard> = Arc::downgrade(&slots) as Weak<Slots>;
        changes.attach_heard(PAUSE_PREFIX, heard);
        slots
    }

    /// How many more seconds `widget`'s calls are paused (back-pressure or
    /// its breaker), if they are.
    pub fn paused(&self, widget: usize) -> Option<u64> {
        let until = self
            .lane(widget)
            .open_until
            .load(Ordering::SeqCst)
            .max(self.all_paused_until.load(Ordering::SeqCst));
        let now = self.clock.now_ms();
        (now < until).then(|| ((until - now) as u64).div_ceil(1000))
    }

    /// Pauses `widget`'s calls (`None`: every call) until `until`.
    fn pause(&self, widget: Option<usize>, until: Millis) {
        match widget {
            Some(w) => self.lane(w).open_until.fetch_max(until, Ordering::SeqCst),
            None => self.all_paused_until.fetch_max(until, Ordering::SeqCst),
        };
    }

    /// Slots free right now, in all.
    pub fn available(&self) -> usize {
        self.turns.available()
    }

    fn lane(&self, widget: usize) -> &Lane {
        &self.lanes[widget.min(self.lanes.len() - 1)]
    }

    /// Fails at once while the widget's calls are paused.
    fn closed(&self, widget: usize) -> Result<(), FetchError> {
        match self.paused(widget) {
            Some(secs) => Err(FetchError::Paused(secs)),
            None => Ok(()),
        }
    }

    /// A slot for `widget` now, if one is free (background work: it never
    /// waits).
    pub fn try_acquire(&self, widget: usize) -> Option<Slot> {
        self.closed(widget).ok()?;
        self.turns.try_take(widget)
    }

    /// A slot for `widget`, waiting at most `within`, in `who`'s turn (SPEC
    /// §7 "Fair share": see [`Turns`]).
    pub async fn acquire(
        &self,
        widget: usize,
        within: Duration,
        who: &Requester,
    ) -> Result<Slot, FetchError> {
        self.closed(widget)?;
        let deadline = tokio::time::Instant::now() + within;
        let waited = |share_full: bool| {
            let kind = if share_full {
                "bulkhead_waited"
            } else {
                "foreground_waited"
            };
            metrics::counter!("percache_upstream_capped_total", "kind" => kind).increment(1);
        };
        self.turns
            .take(widget, who, deadline, waited)
            .await
            .map_err(|refused| match refused {
                Refused::Timeout => FetchError::Timeout,
                Refused::Abandoned => FetchError::Abandoned,
            })
    }

    /// What a call of `widget` came to: timeouts in a row open its breaker.
    pub fn record<T>(&self, widget: usize, result: &Result<T, FetchError>) {
        let lane = self.lane(widget);
        match result {
            Err(FetchError::Timeout) => {
                let n = lane.timeouts_in_a_row.fetch_add(1, Ordering::SeqCst) + 1;
                if n >= BREAK_AFTER {
                    let until = self.clock.now_ms() + COOL_DOWN.as_millis() as i64;
                    if lane.open_until.swap(until, Ordering::SeqCst) < self.clock.now_ms() {
                        tracing::warn!(
                            widget,
                            timeouts = n,
                            "widget's upstream keeps timing out: failing its calls at once for a while"
                        );
                    }
                }
            }
            Err(FetchError::Limited(status, Some(secs))) => {
                let until = self.clock.now_ms() + (*secs as i64) * 1000;
                let scope = (*status != 429).then_some(widget);
                self.pause(scope, until);
                metrics::counter!("percache_upstream_paused_seconds_total").increment(*secs);
                tracing::warn!(
                    widget,
                    status,
                    secs,
                    "the upstream asked to wait: its calls are paused"
                );
                if let Some(changes) = self.changes.clone() {
                    let message = match scope {
                        Some(w) => format!("{PAUSE_PREFIX}{w}:{until}"),
                        None => format!("{PAUSE_PREFIX}*:{until}"),
                    };
                    tokio::spawn(async move { changes.announce_raw(&message).await });
                }
            }
            Err(_) => {}
            Ok(_) => lane.timeouts_in_a_row.store(0, Ordering::SeqCst),
        }
    }
}

impl Heard for Slots {
    fn heard(&self, message: &str) {
        let Some((scope, until)) = message.strip_prefix(PAUSE_PREFIX).and_then(|m| m.split_once(':')) else {
            return;
        };
        let Ok(until) = until.parse::<Millis>() else {
            return;
        };
        match scope {
            "*" => self.pause(None, until),
            w => {
                if let Ok(w) = w.parse::<usize>() {
                    self.pause(Some(w), until);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::turns::Work;
    use crate::clock::MockClock;

    fn anyone() -> Requester {
        Requester {
            work: Work::Request,
            address: None,
            user: Arc::from("t"),
            urgency: None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_widget_holds_at_most_half_the_slots_and_others_still_get_theirs() {
        let slots = Slots::new(4, 3, MockClock::new());
        let held: Vec<Slot> = (0..2)
            .map(|_| slots.try_acquire(0).expect("within its share"))
            .collect();
        assert!(slots.try_acquire(0).is_none(), "widget 0 is at its share");
        let waited = slots.acquire(0, Duration::from_millis(50), &anyone()).await;
        assert!(
            matches!(waited, Err(FetchError::Timeout)),
            "it waits for its own share"
        );
        assert!(slots.try_acquire(1).is_some(), "widget 1 still gets a slot");
        let two = slots.try_acquire(2).expect("and widget 2");
        assert_eq!(slots.available(), 1);
        drop(held);
        drop(two);
        assert_eq!(slots.available(), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_pauses_the_upstream_or_the_widget_for_that_long() {
        let clock = MockClock::new();
        let slots = Slots::new(8, 3, clock.clone());
        slots.record::<()>(1, &Err(FetchError::Limited(503, Some(10))));
        assert_eq!(slots.paused(1), Some(10), "a 503 pauses its widget");
        assert_eq!(slots.paused(0), None);
        assert!(matches!(
            slots.acquire(1, Duration::ZERO, &anyone()).await,
            Err(FetchError::Paused(10))
        ));
        slots.record::<()>(0, &Err(FetchError::Limited(429, None)));
        assert_eq!(slots.paused(0), None, "a 429 without Retry-After pauses nothing");
        slots.record::<()>(0, &Err(FetchError::Limited(429, Some(3))));
        assert_eq!(
            (slots.paused(0), slots.paused(2)),
            (Some(3), Some(3)),
            "a 429 pauses every call"
        );
        clock.advance(Duration::from_secs(3));
        assert_eq!((slots.paused(0), slots.paused(1)), (None, Some(7)));
        slots.heard(&format!("pause:*:{}", clock.now_ms() + 2_000));
        assert_eq!(slots.paused(2), Some(2), "another instance's pause holds here");
        slots.heard("pause:junk");
    }

    #[tokio::test(start_paused = true)]
    async fn timeouts_in_a_row_open_the_breaker_until_the_cool_down_ends() {
        let clock = MockClock::new();
        let slots = Slots::new(8, 2, clock.clone());
        for _ in 0..BREAK_AFTER - 1 {
            slots.record::<()>(0, &Err(FetchError::Timeout));
        }
        assert!(
            slots.acquire(0, Duration::ZERO, &anyone()).await.is_ok(),
            "not yet"
        );
        slots.record::<()>(0, &Ok(()));
        for _ in 0..BREAK_AFTER - 1 {
            slots.record::<()>(0, &Err(FetchError::Timeout));
        }
        assert!(
            slots.try_acquire(0).is_some(),
            "a success started the count again"
        );
        slots.record::<()>(0, &Err(FetchError::Timeout));
        assert!(matches!(
            slots.acquire(0, Duration::ZERO, &anyone()).await,
            Err(FetchError::Paused(30))
        ));
        assert!(slots.try_acquire(0).is_none());
        assert!(slots.try_acquire(1).is_some(), "only that widget");

        clock.advance(COOL_DOWN);
        assert!(
            slots.try_acquire(0).is_some(),
            "after the cool-down, a call goes through"
        );
        slots.record::<()>(0, &Err(FetchError::Timeout));
        assert!(
            slots.try_acquire(0).is_none(),
            "and one more timeout opens it again"
        );
        clock.advance(COOL_DOWN);
        slots.record::<()>(0, &Ok(()));
        assert!(slots.try_acquire(0).is_some());
    }
}
