//! Invalidating one widget for every user in O(1): a generation per widget.
//!
//! Each widget has a counter. An entry records the counter's value when its
//! fetch started. Invalidating the widget for all users bumps the counter
//! and remembers the new value as a threshold: entries of an older
//! generation are misses (a hard invalidation) or stale (a soft one). No key
//! is scanned or deleted; every read checks the entry against the table.
//!
//! With Redis the counters live in Redis (`percache:v1:gen:w:<id>`) and a
//! bump is announced on the change feed, so every instance reloads that
//! widget's thresholds at once (and all of them periodically, in case an
//! announcement is lost). With an in-process store they live here only.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;

/// One widget's generation counter and thresholds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Gen {
    /// The value new entries get.
    pub current: u64,
    /// Entries older than this are misses.
    pub hard: u64,
    /// Entries older than this are stale.
    pub soft: u64,
}

/// A hard invalidation (entries disappear) or a soft one (they turn stale).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Entries become misses.
    Hard,
    /// Entries become stale: still served at once while they refresh.
    Soft,
}

impl Kind {
    /// The threshold's field name in Redis.
    pub fn field(self) -> &'static str {
        match self {
            Kind::Hard => "hard",
            Kind::Soft => "soft",
        }
    }
}

/// What an entry of some generation is worth now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// As its own lifetimes say.
    Valid,
    /// Stale, whatever its fresh window says.
    Stale,
    /// A miss.
    Gone,
}

impl Gen {
    /// After one more invalidation of `kind`.
    pub fn bumped(self, kind: Kind) -> Self {
        let current = self.current + 1;
        match kind {
            Kind::Hard => Self {
                current,
                hard: current,
                soft: self.soft,
            },
            Kind::Soft => Self {
                current,
                hard: self.hard,
                soft: current,
            },
        }
    }

    /// What an entry stamped with `generation` is worth.
    pub fn verdict(&self, generation: u64) -> Verdict {
        if generation < self.hard {
            Verdict::Gone
        } else if generation < self.soft {
            Verdict::Stale
        } else {
            Verdict::Valid
        }
    }
}

/// The generations of every widget, by id, as this instance knows them.
///
/// Every read of an entry asks for its widget's generation, and only an
/// invalidation changes one: readers load the current map without taking a
/// lock (a lock's count, written by every reader, would move between cores
/// on each read), and a change swaps in a new map.
#[derive(Debug, Default)]
pub struct Generations {
    by_widget: ArcSwap<HashMap<String, Gen>>,
    /// Serialises the changes (each one reads, then swaps).
    changing: Mutex<()>,
}

impl Generations {
    /// A widget's generation (all zero until its first invalidation).
    pub fn get(&self, widget: &str) -> Gen {
        self.by_widget.load().get(widget).copied().unwrap_or_default()
    }

    /// Changes the map under the writers' lock, then publishes it.
    fn change<T>(&self, f: impl FnOnce(&mut HashMap<String, Gen>) -> T) -> T {
        let _changing = self.changing.lock().unwrap_or_else(PoisonError::into_inner);
        let mut map = HashMap::clone(&self.by_widget.load());
        let out = f(&mut map);
        self.by_widget.store(Arc::new(map));
        out
    }

    /// Records what the shared store says; never goes back (a late reload
    /// cannot undo a newer bump seen through another path).
    pub fn set(&self, widget: &str, gen: Gen) {
        self.change(|map| {
            let known = map.entry(widget.to_owned()).or_default();
            if gen.current >= known.current {
                *known = gen;
            }
        });
    }

    /// Bumps a widget here (in-process stores) and returns its new generation.
    pub fn bump(&self, widget: &str, kind: Kind) -> Gen {
        self.change(|map| {
            let gen = map.entry(widget.to_owned()).or_default();
            *gen = gen.bumped(kind);
            *gen
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hard_makes_older_entries_misses_and_soft_makes_them_stale() {
        let g = Generations::default();
        assert_eq!(g.get("3").verdict(0), Verdict::Valid);
        let soft = g.bump("3", Kind::Soft);
        assert_eq!(soft.verdict(0), Verdict::Stale);
        assert_eq!(soft.verdict(soft.current), Verdict::Valid);
        let hard = g.bump("3", Kind::Hard);
        assert_eq!(hard.verdict(0), Verdict::Gone);
        assert_eq!(hard.verdict(soft.current), Verdict::Gone);
        assert_eq!(hard.verdict(hard.current), Verdict::Valid);
        assert_eq!(g.get("1"), Gen::default(), "other widgets are untouched");
    }

    #[test]
    fn a_late_reload_does_not_undo_a_newer_bump() {
        let g = Generations::default();
        let newer = g.bump("3", Kind::Hard);
        g.set("3", Gen::default());
        assert_eq!(g.get("3"), newer);
    }
}
