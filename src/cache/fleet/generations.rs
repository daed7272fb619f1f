//! Invalidating one widget for every user in O(1): a generation per widget.
//!
//! Each widget has two thresholds, and an entry records the stamp its fetch
//! began with (its fencing token, see `store::Store`). Invalidating the
//! widget for all users sets a threshold to a new stamp: entries of an
//! older one are misses (a hard invalidation) or stale (a soft one). No key
//! is scanned or deleted; every read checks the entry against the table.
//!
//! Thresholds are stamps from one clock (Redis `TIME`, or the local store's
//! stamp clock), taken as `max(clock, last + 1)`: they never regress, even
//! if Redis loses `percache:v1:gen:w:<id>` (the next bump is still later
//! than every fetch before it, and an instance that knew a threshold writes
//! it back when it reloads), and entries fetched after the loss are not
//! judged by a counter that started again at 1.
//!
//! With Redis the thresholds live in Redis and a bump is announced on the
//! change feed, so every instance reloads that widget's thresholds at once
//! (and all of them periodically, in case an announcement is lost). With
//! `--data-dir` they are kept in SQLite; with the in-process store, here.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;

/// One widget's thresholds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Gen {
    /// The newest stamp of either threshold.
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
    /// After an invalidation of `kind` at stamp `at`.
    pub fn bumped_to(self, at: u64, kind: Kind) -> Self {
        let at = at.max(self.current + 1);
        match kind {
            Kind::Hard => Self {
                current: at,
                hard: at,
                soft: self.soft,
            },
            Kind::Soft => Self {
                current: at,
                hard: self.hard,
                soft: at,
            },
        }
    }

    /// Each threshold at the later of the two: what both sides knew.
    pub fn merged(self, other: Gen) -> Self {
        Self {
            current: self.current.max(other.current),
            hard: self.hard.max(other.hard),
            soft: self.soft.max(other.soft),
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
    /// cannot undo a newer bump seen through another path, nor a store that
    /// lost its record undo one this instance knew).
    pub fn set(&self, widget: &str, gen: Gen) {
        self.change(|map| {
            let known = map.entry(widget.to_owned()).or_default();
            *known = known.merged(gen);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hard_makes_older_entries_misses_and_soft_makes_them_stale() {
        let g = Generations::default();
        assert_eq!(g.get("3").verdict(0), Verdict::Valid);
        g.set("3", g.get("3").bumped_to(100, Kind::Soft));
        let soft = g.get("3");
        assert_eq!(soft.verdict(99), Verdict::Stale);
        assert_eq!(soft.verdict(100), Verdict::Valid);
        g.set("3", soft.bumped_to(200, Kind::Hard));
        let hard = g.get("3");
        assert_eq!(hard.verdict(99), Verdict::Gone);
        assert_eq!(hard.verdict(150), Verdict::Gone);
        assert_eq!(hard.verdict(200), Verdict::Valid);
        assert_eq!(g.get("1"), Gen::default(), "other widgets are untouched");
    }

    #[test]
    fn a_late_reload_or_a_lost_record_does_not_undo_a_newer_bump() {
        let g = Generations::default();
        let newer = Gen::default().bumped_to(500, Kind::Hard);
        g.set("3", newer);
        g.set("3", Gen::default());
        g.set("3", Gen::default().bumped_to(10, Kind::Soft));
        assert_eq!(g.get("3").hard, 500);
        assert_eq!(g.get("3").verdict(499), Verdict::Gone);
    }

    #[test]
    fn a_bump_is_later_than_the_last_one_even_if_the_clock_is_behind() {
        let gen = Gen::default().bumped_to(1_000, Kind::Hard);
        let again = gen.bumped_to(10, Kind::Hard);
        assert!(again.hard > gen.hard);
    }
}
