//! How many pages each user holds open on this instance (a live connection
//! each), bounded by `--max-open-pages-per-user`. Its own part: the map is
//! touched only here, by the guard that counts a page while it lives.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use crate::user::UserId;

type PerUser = Arc<Mutex<HashMap<Box<str>, usize>>>;

/// The open pages per user (by tag). The map holds only users with a page
/// open, so it is bounded by the connections.
pub(crate) struct OpenPages {
    per_user: PerUser,
    /// `--max-open-pages-per-user` (at least 1).
    max: usize,
}

impl OpenPages {
    pub(crate) fn new(max: usize) -> Self {
        Self {
            per_user: PerUser::default(),
            max: max.max(1),
        }
    }

    /// Counts a page of `user` as open until the guard is dropped; `None`
    /// if the user already holds the most allowed.
    pub(crate) fn open(&self, user: &UserId) -> Option<OpenPage> {
        let tag: Box<str> = user.tag().as_str().into();
        {
            let mut per_user = self.per_user.lock().unwrap_or_else(PoisonError::into_inner);
            let n = per_user.entry(tag.clone()).or_insert(0);
            if *n >= self.max {
                metrics::counter!("percache_refused_total", "reason" => "open_pages").increment(1);
                return None;
            }
            *n += 1;
        }
        metrics::gauge!("percache_open_pages").increment(1.0);
        Some(OpenPage {
            per_user: Arc::clone(&self.per_user),
            user: tag,
        })
    }

    /// How many pages are open.
    pub(crate) fn count(&self) -> usize {
        self.per_user
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .sum()
    }
}

/// Counts one open page for as long as it lives.
#[must_use = "the page counts as open while the guard lives"]
pub struct OpenPage {
    per_user: PerUser,
    user: Box<str>,
}

impl Drop for OpenPage {
    fn drop(&mut self) {
        let mut per_user = self.per_user.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = per_user.get_mut(&self.user) {
            *n -= 1;
            if *n == 0 {
                per_user.remove(&self.user);
            }
        }
        metrics::gauge!("percache_open_pages").decrement(1.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_holds_at_most_max_and_a_closed_page_is_given_back() {
        let pages = OpenPages::new(2);
        let alice = UserId::parse("alice").unwrap();
        let bob = UserId::parse("bob").unwrap();
        let first = pages.open(&alice).unwrap();
        let _second = pages.open(&alice).unwrap();
        assert!(pages.open(&alice).is_none(), "a third page of alice is refused");
        let _bobs = pages.open(&bob).unwrap();
        assert_eq!(pages.count(), 3);
        drop(first);
        assert_eq!(pages.count(), 2);
        assert!(
            pages.open(&alice).is_some(),
            "a closed page's place is given back"
        );
    }
}
