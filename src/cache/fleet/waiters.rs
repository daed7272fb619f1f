//! The change feed inside one process: who is waiting for which user's
//! widgets to change.
//!
//! Waiters register by user (the hash tag of their keys), so a change wakes
//! only the waiters of its own user: an idle open page costs nothing when
//! another user's data changes, however many pages are open. Changes come
//! from this instance's writes and from other instances' announcements
//! (`changes::Changes` relays both here).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::Notify;

use crate::cache::key::CacheKey;

/// Waiters by user tag.
#[derive(Debug, Default)]
pub struct Waiters {
    users: Mutex<HashMap<String, Arc<Notify>>>,
}

/// A registration: while it lives, changes of its user wake it.
#[derive(Debug)]
pub struct Watch {
    feed: Arc<Waiters>,
    tag: String,
    notify: Arc<Notify>,
}

impl Waiters {
    /// An empty feed.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Registers a waiter for the user whose keys carry `tag`.
    pub fn watch(self: &Arc<Self>, tag: &str) -> Watch {
        let mut users = self.users.lock().unwrap_or_else(PoisonError::into_inner);
        let notify = Arc::clone(users.entry(tag.to_owned()).or_default());
        Watch {
            feed: Arc::clone(self),
            tag: tag.to_owned(),
            notify,
        }
    }

    /// Wakes the waiters of `key`'s user, if any (a map lookup otherwise).
    pub fn publish(&self, key: &CacheKey) {
        let Some(tag) = key.user_tag() else { return };
        let users = self.users.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(notify) = users.get(tag) {
            notify.notify_waiters();
        }
    }

    /// Wakes every waiter (after a gap in the cross-instance feed, when
    /// changes may have been missed).
    pub fn wake_all(&self) {
        let users = self.users.lock().unwrap_or_else(PoisonError::into_inner);
        for notify in users.values() {
            notify.notify_waiters();
        }
    }

    /// Users with at least one waiter.
    pub fn watched_users(&self) -> usize {
        self.users.lock().unwrap_or_else(PoisonError::into_inner).len()
    }
}

impl Watch {
    /// The notification future of the next change. Create it (and
    /// `enable` it) *before* looking at the data, so a change in between
    /// is not missed.
    pub fn notify(&self) -> &Notify {
        &self.notify
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let mut users = self.feed.users.lock().unwrap_or_else(PoisonError::into_inner);
        // The map holds one reference, and this watch another: the last
        // waiter of a user removes the user.
        if users.get(&self.tag).is_some_and(|n| Arc::strong_count(n) <= 2) {
            users.remove(&self.tag);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::cache::key::UserTag;
    use crate::widget::Registry;

    fn key(user: &str) -> CacheKey {
        UserTag::of(user).key(&Registry::builtin().default_instance("1").unwrap())
    }

    fn tag(user: &str) -> String {
        key(user).user_tag().unwrap().to_owned()
    }

    #[tokio::test]
    async fn a_change_wakes_only_its_own_user() {
        let feed = Waiters::new();
        let (alice, bob) = (feed.watch(&tag("alice")), feed.watch(&tag("bob")));
        let (a, b) = (alice.notify().notified(), bob.notify().notified());
        tokio::pin!(a, b);
        a.as_mut().enable();
        b.as_mut().enable();

        feed.publish(&key("alice"));

        tokio::time::timeout(Duration::from_secs(1), a)
            .await
            .expect("alice woke");
        assert!(
            tokio::time::timeout(Duration::from_millis(50), b).await.is_err(),
            "bob was not woken by alice's change"
        );
    }

    #[test]
    fn the_last_waiter_of_a_user_unregisters_it() {
        let feed = Waiters::new();
        let one = feed.watch(&tag("alice"));
        let two = feed.watch(&tag("alice"));
        assert_eq!(feed.watched_users(), 1);
        drop(one);
        assert_eq!(feed.watched_users(), 1);
        drop(two);
        assert_eq!(feed.watched_users(), 0);
        feed.publish(&key("alice"));
    }
}
