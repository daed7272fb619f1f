//! How long entries stay fresh, stale and in grace, per widget.

use super::settings::{override_of, LifetimeSettings};
use std::time::Duration;

use serde_json::value::RawValue;

use crate::cache::entry::Entry;
use crate::clock::Millis;
use crate::widget::{Registry, WidgetId};

/// The lifetimes one widget's entries get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetimes {
    /// Served with no upstream call.
    pub fresh: Duration,
    /// Then served at once and refreshed in the background, until ttl.
    pub ttl: Duration,
    /// Then still served if the upstream fails.
    pub grace: Duration,
}

/// Lifetimes of entries, per widget (indexed like the registry).
#[derive(Debug, Clone)]
pub struct CachePolicy {
    widgets: Vec<Lifetimes>,
}

/// A policy that cannot work.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// Fresh longer than ttl.
    #[error("widget {widget}: fresh ({fresh:?}) must not be longer than ttl ({ttl:?})")]
    FreshPastTtl {
        /// Which widget.
        widget: WidgetId,
        /// Its fresh window.
        fresh: Duration,
        /// Its ttl.
        ttl: Duration,
    },
    /// `--widget-ttl 9=1m` for a widget the file does not define.
    #[error("{flag}: there is no widget `{widget}` (the widgets are {known})")]
    UnknownWidget {
        /// The flag.
        flag: &'static str,
        /// The id given.
        widget: WidgetId,
        /// The ids of the registry.
        known: String,
    },
}

impl CachePolicy {
    /// Every widget's lifetimes by the flags' group (`--fresh`, `--ttl`,
    /// `--grace`, `--widget-fresh`, `--widget-ttl`) and the widgets file.
    pub fn from_settings(registry: &Registry, settings: &LifetimeSettings) -> Result<Self, PolicyError> {
        let defaults = Lifetimes {
            fresh: settings.fresh,
            ttl: settings.ttl,
            grace: settings.grace,
        };
        let fresh = settings.widget_fresh.as_ref().map_or(&[][..], |o| &o.0);
        let ttl = settings.widget_ttl.as_ref().map_or(&[][..], |o| &o.0);
        Self::new(registry, defaults, fresh, ttl)
    }

    /// Every widget's lifetimes. Precedence, most specific first:
    /// `--widget-fresh`/`--widget-ttl`, then the widgets file, then `defaults`.
    pub fn new(
        registry: &Registry,
        defaults: Lifetimes,
        widget_fresh: &[(WidgetId, Duration)],
        widget_ttl: &[(WidgetId, Duration)],
    ) -> Result<Self, PolicyError> {
        for (flag, overrides) in [("--widget-fresh", widget_fresh), ("--widget-ttl", widget_ttl)] {
            for (id, _) in overrides {
                if registry.get(id.as_str()).is_none() {
                    let known = registry
                        .all()
                        .iter()
                        .map(|w| w.id.to_string())
                        .collect::<Vec<_>>();
                    return Err(PolicyError::UnknownWidget {
                        flag,
                        widget: id.clone(),
                        known: known.join(", "),
                    });
                }
            }
        }
        let mut widgets = Vec::with_capacity(registry.all().len());
        for w in registry.all() {
            let fresh = override_of(widget_fresh, &w.id)
                .or(w.fresh)
                .unwrap_or(defaults.fresh);
            let ttl = override_of(widget_ttl, &w.id).or(w.ttl).unwrap_or(defaults.ttl);
            if fresh > ttl {
                return Err(PolicyError::FreshPastTtl {
                    widget: w.id.clone(),
                    fresh,
                    ttl,
                });
            }
            widgets.push(Lifetimes {
                fresh,
                ttl,
                grace: w.grace.unwrap_or(defaults.grace),
            });
        }
        Ok(Self { widgets })
    }

    /// The lifetimes of the widget at `index` in the registry.
    pub fn lifetimes(&self, index: usize) -> Lifetimes {
        self.widgets.get(index).copied().unwrap_or(Lifetimes {
            fresh: Duration::ZERO,
            ttl: Duration::ZERO,
            grace: Duration::ZERO,
        })
    }

    /// A new entry for data fetched at `now`, for the widget at `index`
    /// whose definition has `fingerprint`. Its fresh window is shortened by
    /// a random jitter of up to [`FRESH_JITTER`], so that entries written
    /// together (a sign-in's prewarm) do not all turn stale together.
    pub fn entry(&self, index: usize, fingerprint: u64, data: Box<RawValue>, now: Millis) -> Entry {
        self.entry_with_jitter(index, fingerprint, data, now, fastrand::f64())
    }

    /// [`CachePolicy::entry`] with the jitter drawn: `u` in [0, 1) takes
    /// `u × FRESH_JITTER` off the fresh window.
    pub fn entry_with_jitter(
        &self,
        index: usize,
        fingerprint: u64,
        data: Box<RawValue>,
        now: Millis,
        u: f64,
    ) -> Entry {
        let l = self.lifetimes(index);
        let stale_until = now + ms(l.ttl);
        let fresh = l.fresh.mul_f64(1.0 - FRESH_JITTER * u.clamp(0.0, 1.0));
        Entry {
            data,
            fetched_at: now,
            fresh_until: now + ms(fresh),
            stale_until,
            grace_until: stale_until + ms(l.grace),
            fingerprint,
            generation: 0,
            started: 0,
            validators: Default::default(),
            rendered: Default::default(),
        }
    }
}

/// The largest share of a fresh window that jitter takes off (SPEC §7: up to 10%).
pub const FRESH_JITTER: f64 = 0.1;

fn ms(d: Duration) -> Millis {
    d.as_millis().min(i64::MAX as u128) as Millis
}

/// How long the store should keep an entry from `now`: until its grace ends.
pub fn store_ttl(entry: &Entry, now: Millis) -> Duration {
    Duration::from_millis((entry.grace_until - now).max(1) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_widget_durations;
    use crate::widget::file::parse;

    const FILE: &str = "[[widget]]\nid = \"a\"\ntitle = \"A\"\npath = \"/a\"\nttl = \"1h\"\n\n\
                        [[widget]]\nid = \"b\"\ntitle = \"B\"\npath = \"/b\"\n";

    fn raw_empty() -> Box<RawValue> {
        serde_json::value::to_raw_value(&serde_json::json!({})).unwrap()
    }

    fn defaults() -> Lifetimes {
        Lifetimes {
            fresh: Duration::from_secs(60),
            ttl: Duration::from_secs(600),
            grace: Duration::from_secs(3600),
        }
    }

    #[test]
    fn flags_beat_the_file_which_beats_the_defaults() {
        let reg = parse("w", FILE, &|_| None).unwrap();
        let p = CachePolicy::new(&reg, defaults(), &[], &[]).unwrap();
        assert_eq!(p.lifetimes(0).ttl, Duration::from_secs(3600));
        assert_eq!(p.lifetimes(1).ttl, Duration::from_secs(600));
        let ttl = parse_widget_durations("a=2h").unwrap();
        let p = CachePolicy::new(&reg, defaults(), &[], &ttl.0).unwrap();
        assert_eq!(p.lifetimes(0).ttl, Duration::from_secs(7200));
        let e = p.entry_with_jitter(0, 9, raw_empty(), 1_000, 0.0);
        assert_eq!(e.stale_until, 1_000 + 7_200_000);
        assert_eq!(e.grace_until, e.stale_until + 3_600_000);
        assert_eq!(e.fingerprint, 9);
    }

    #[test]
    fn widget_fresh_beats_the_files_fresh_which_beats_the_default() {
        let file = "[[widget]]\nid = \"a\"\ntitle = \"A\"\npath = \"/a\"\nfresh = \"5m\"\n\n\
                    [[widget]]\nid = \"b\"\ntitle = \"B\"\npath = \"/b\"\nfresh = \"2m\"\n\n\
                    [[widget]]\nid = \"c\"\ntitle = \"C\"\npath = \"/c\"\n";
        let reg = parse("w", file, &|_| None).unwrap();
        let fresh = parse_widget_durations("a=30s,c=10s").unwrap();
        let p = CachePolicy::new(&reg, defaults(), &fresh.0, &[]).unwrap();
        assert_eq!(
            p.lifetimes(0).fresh,
            Duration::from_secs(30),
            "the flag over the file"
        );
        assert_eq!(
            p.lifetimes(1).fresh,
            Duration::from_secs(120),
            "the file over the default"
        );
        assert_eq!(
            p.lifetimes(2).fresh,
            Duration::from_secs(10),
            "the flag over the default"
        );
        let none = CachePolicy::new(&reg, defaults(), &[], &[]).unwrap();
        assert_eq!(none.lifetimes(2).fresh, Duration::from_secs(60), "the default");
        // The last of two values for one widget wins, as for --widget-ttl.
        let twice = parse_widget_durations("a=30s,a=40s").unwrap();
        let p = CachePolicy::new(&reg, defaults(), &twice.0, &[]).unwrap();
        assert_eq!(p.lifetimes(0).fresh, Duration::from_secs(40));
        // A fresh window past the ttl is refused, wherever each comes from.
        let long = parse_widget_durations("c=11m").unwrap();
        assert!(CachePolicy::new(&reg, defaults(), &long.0, &[]).is_err());
    }

    #[test]
    fn fresh_windows_get_up_to_ten_percent_of_jitter() {
        let reg = parse("w", FILE, &|_| None).unwrap();
        let p = CachePolicy::new(&reg, defaults(), &[], &[]).unwrap();
        let window = |e: &Entry| e.fresh_until - e.fetched_at;
        let none = p.entry_with_jitter(1, 0, raw_empty(), 0, 0.0);
        let most = p.entry_with_jitter(1, 0, raw_empty(), 0, 1.0);
        assert_eq!(window(&none), 60_000);
        assert_eq!(window(&most), 54_000);
        let entries: Vec<Entry> = (0..500).map(|_| p.entry(1, 0, raw_empty(), 0)).collect();
        let windows: Vec<i64> = entries.iter().map(window).collect();
        assert!(
            windows.iter().all(|w| (54_000..=60_000).contains(w)),
            "{windows:?}"
        );
        let distinct: std::collections::HashSet<_> = windows.iter().collect();
        assert!(
            distinct.len() > 100,
            "the jitter spreads windows: {} distinct",
            distinct.len()
        );
        assert_eq!(none.stale_until, 600_000);
        assert!(
            entries.iter().all(|e| e.stale_until == 600_000),
            "ttl has no jitter"
        );
    }

    #[test]
    fn refuses_unknown_widgets_and_fresh_past_ttl() {
        let reg = parse("w", FILE, &|_| None).unwrap();
        let unknown = parse_widget_durations("zz=1m").unwrap();
        let e = CachePolicy::new(&reg, defaults(), &unknown.0, &[]).unwrap_err();
        assert!(e.to_string().contains("no widget `zz`"), "{e}");
        let long = parse_widget_durations("b=1h").unwrap();
        assert!(CachePolicy::new(&reg, defaults(), &long.0, &[]).is_err());
    }
}
