//! Whether a stored entry counts now. Two things can make an entry that is
//! in the store not data for a request: it was made for another definition
//! of its widget (the widgets file changed: the fingerprint differs), or an
//! invalidation of its widget for all users came after its fetch began (the
//! widget's generations, as the change feed keeps them). The read policy
//! and single flight both ask the judge; neither asks the other.

use std::sync::Arc;

use super::entry::Entry;
use super::fleet::changes::Changes;
use super::fleet::generations::Verdict;
use crate::widget::Instance;

/// Judges stored entries against the widgets' definitions and thresholds.
#[derive(Clone)]
pub(crate) struct Judge {
    /// Holds the generations heard from the fleet.
    changes: Arc<Changes>,
}

impl Judge {
    pub(crate) fn new(changes: Arc<Changes>) -> Self {
        Self { changes }
    }

    /// A stored entry as it counts now: none if it was made for another
    /// definition of the widget (fingerprint) or before a hard invalidation
    /// of it for all users; stale if before a soft one.
    pub(crate) fn judged(&self, entry: Arc<Entry>, instance: &Instance) -> Option<Arc<Entry>> {
        if entry.fingerprint != instance.widget.fingerprint {
            return None;
        }
        let gen = self.changes.generations().get(instance.id().as_str());
        match gen.verdict(entry.generation) {
            Verdict::Valid => Some(entry),
            Verdict::Gone => None,
            Verdict::Stale if entry.fresh_until <= entry.fetched_at => Some(entry),
            Verdict::Stale => {
                let mut stale = (*entry).clone();
                stale.fresh_until = stale.fetched_at;
                Some(Arc::new(stale))
            }
        }
    }

    /// A stored entry if it counts as current now: made for this definition
    /// of the widget, and not made stale or gone by an invalidation for all
    /// users since its fetch began.
    pub(crate) fn current(&self, entry: Arc<Entry>, instance: &Instance) -> Option<Arc<Entry>> {
        let gen = self.changes.generations().get(instance.id().as_str());
        (entry.fingerprint == instance.widget.fingerprint && gen.verdict(entry.generation) == Verdict::Valid)
            .then_some(entry)
    }
}
