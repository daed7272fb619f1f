//! How long entries stay fresh, stale and in grace, per widget.

use std::time::Duration;

use crate::cache::entry::Entry;
use crate::clock::Millis;
use crate::config::Settings;
use crate::widget::WidgetId;

/// Lifetimes of entries. Built once from [`Settings`].
#[derive(Debug, Clone)]
pub struct CachePolicy {
    fresh: [Duration; 5],
    ttl: [Duration; 5],
    grace: Duration,
}

/// A policy that cannot work (fresh longer than ttl).
#[derive(Debug, thiserror::Error)]
#[error("widget {widget}: fresh ({fresh:?}) must not be longer than ttl ({ttl:?})")]
pub struct PolicyError {
    widget: WidgetId,
    fresh: Duration,
    ttl: Duration,
}

impl CachePolicy {
    /// From the flags, applying the per-widget overrides.
    pub fn from_settings(s: &Settings) -> Result<Self, PolicyError> {
        let mut fresh = [s.fresh; 5];
        let mut ttl = [s.ttl; 5];
        for w in WidgetId::ALL {
            if let Some(d) = s.widget_fresh.as_ref().and_then(|o| o.0[w.index()]) {
                fresh[w.index()] = d;
            }
            if let Some(d) = s.widget_ttl.as_ref().and_then(|o| o.0[w.index()]) {
                ttl[w.index()] = d;
            }
            if fresh[w.index()] > ttl[w.index()] {
                return Err(PolicyError {
                    widget: w,
                    fresh: fresh[w.index()],
                    ttl: ttl[w.index()],
                });
            }
        }
        Ok(Self {
            fresh,
            ttl,
            grace: s.grace,
        })
    }

    /// A new entry for data fetched at `now`.
    pub fn entry(&self, widget: WidgetId, data: serde_json::Value, now: Millis) -> Entry {
        let stale_until = now + ms(self.ttl[widget.index()]);
        Entry {
            data,
            fetched_at: now,
            fresh_until: now + ms(self.fresh[widget.index()]),
            stale_until,
            grace_until: stale_until + ms(self.grace),
        }
    }

    /// The ttl of a widget (end of stale).
    pub fn ttl(&self, widget: WidgetId) -> Duration {
        self.ttl[widget.index()]
    }

    /// The grace period after ttl.
    pub fn grace(&self) -> Duration {
        self.grace
    }
}

fn ms(d: Duration) -> Millis {
    d.as_millis().min(i64::MAX as u128) as Millis
}

/// How long the store should keep an entry from `now`: until its grace ends.
pub fn store_ttl(entry: &Entry, now: Millis) -> Duration {
    Duration::from_millis((entry.grace_until - now).max(1) as u64)
}
