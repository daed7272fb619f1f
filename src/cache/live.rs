//! Open pages: how many there are (`percache_open_pages`), and keeping an
//! open page's widgets current (refresh-ahead).
//!
//! An open dashboard holds a long-poll on `/updates`. While it does, each of
//! the user's widgets is refreshed when it turns stale, through the same
//! single-flight path as any background refresh (so several tabs, or several
//! instances, still make one upstream call) and within the background cap.
//! Each entry is refreshed at most once per poll: a refresh that lands makes
//! a new, fresh entry, and one that fails leaves the key in failure backoff,
//! which no instance retries before it ends. When the page closes, nothing
//! polls, and nothing is refreshed for it.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use futures_util::future::join_all;

use super::entry::Freshness;
use super::service::WidgetCache;
use crate::clock::Millis;
use crate::upstream::Upstream;
use crate::user::UserId;

/// The entries one open page has already asked to refresh: (widget index,
/// the entry's `fetched_at`).
#[derive(Debug, Default)]
pub struct RefreshedAhead(HashSet<(usize, Millis)>);

impl RefreshedAhead {
    /// Whether this entry has not been asked for yet (and remembers it).
    fn first_time(&mut self, widget: usize, fetched_at: Millis) -> bool {
        self.0.insert((widget, fetched_at))
    }
}

/// Counts one open page for as long as it lives.
#[must_use = "the page counts as open while the guard lives"]
pub struct OpenPage {
    cache: Arc<WidgetCache>,
}

impl Drop for OpenPage {
    fn drop(&mut self) {
        self.cache.open_pages.fetch_sub(1, Ordering::SeqCst);
        metrics::gauge!("percache_open_pages").decrement(1.0);
    }
}

impl WidgetCache {
    /// Marks a page as open (a live connection) until the guard is dropped.
    pub fn open_page(self: &Arc<Self>) -> OpenPage {
        self.open_pages.fetch_add(1, Ordering::SeqCst);
        metrics::gauge!("percache_open_pages").increment(1.0);
        OpenPage {
            cache: Arc::clone(self),
        }
    }

    /// How many pages are open on this instance.
    pub fn open_pages(&self) -> usize {
        self.open_pages.load(Ordering::SeqCst)
    }

    /// Starts the refresh of each of `user`'s widgets that is stale or
    /// outdated and not yet asked for by this page. Returns when the next
    /// fresh one turns stale, to wake up then.
    pub async fn refresh_ahead(
        self: &Arc<Self>,
        user: &UserId,
        up: &Upstream,
        asked: &mut RefreshedAhead,
    ) -> Option<Millis> {
        let reads = self.registry().all().iter().map(|w| async move {
            let instance = w.default_instance();
            let key = user.tag().key(&instance);
            let entry = self.read_current(&key, &instance).await;
            (instance, key, entry)
        });
        let now = self.now();
        let mut next: Option<Millis> = None;
        for (instance, key, entry) in join_all(reads).await {
            // No entry: the page shows a placeholder that is loading it.
            let Some(entry) = entry else { continue };
            match entry.freshness(now) {
                Freshness::Fresh => {
                    next = Some(next.map_or(entry.fresh_until, |n| n.min(entry.fresh_until)));
                }
                Freshness::Stale | Freshness::Expired => {
                    if asked.first_time(instance.widget.index, entry.fetched_at)
                        && self.start_background(&key, user, &instance, up, entry.fetched_at)
                    {
                        metrics::counter!("percache_refresh_total", "outcome" => "ahead").increment(1);
                    }
                }
                Freshness::Dead => {}
            }
        }
        next
    }

    /// Sleeps until the cache's clock reads `at` (a mock clock's jump wakes it).
    pub async fn sleep_until(&self, at: Millis) {
        crate::clock::sleep_until(self.clock(), at).await;
    }
}
