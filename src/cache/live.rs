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
use std::sync::Arc;
use std::time::Duration;

use super::entry::{Entry, Freshness};
pub use super::pages::OpenPage;
use super::service::{Lookup, Outcome, WidgetCache};
use crate::clock::Millis;
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

/// What the open page shows, as its poll says: either the clock reading
/// of its newest data (`since`, v2 pages), or the version of each card
/// (`seen`, SPEC §5): every card whose entry differs is sent, whatever its
/// fetch time, so a card that lands with an older `fetched_at` than one
/// already sent is not missed.
#[derive(Debug, Clone)]
pub enum Shown {
    /// Cards with data fetched after this.
    Since(Millis),
    /// `(widget id, data-version)` of each card with data on the page
    /// (`None`: shown with other parameters, not to be replaced).
    Seen(Vec<(String, Option<u64>)>),
}

impl Shown {
    /// Whether the page's card of `widget` shows something other than `entry`.
    fn differs(&self, widget: &str, entry: &Entry) -> bool {
        match self {
            Shown::Since(since) => entry.fetched_at > *since,
            // No version (`-`): the page shows this widget with other
            // parameters than the default ones the poll watches: leave it.
            Shown::Seen(seen) => !seen
                .iter()
                .any(|(id, version)| id == widget && version.is_none_or(|v| v == entry.version())),
        }
    }
}

/// How long an answer waits after the first change it sees, so that cards
/// landing together reach the page together.
pub const GATHER: Duration = Duration::from_millis(50);

/// What one look at an open page found.
#[derive(Debug)]
pub struct PagePoll {
    /// Cards with data newer than the page's: swap them in.
    pub changed: Vec<Lookup>,
    /// When nothing changed: when the next fresh widget turns stale.
    pub next_stale: Option<Millis>,
}

impl WidgetCache {
    /// Marks a page of `user` as open (a live connection) until the guard
    /// is dropped; `None` if the user already holds
    /// `--max-open-pages-per-user` of them on this instance.
    pub fn open_page(&self, user: &UserId) -> Option<OpenPage> {
        self.pages().open(user)
    }

    /// How many pages are open on this instance.
    pub fn open_pages(&self) -> usize {
        self.pages().count()
    }

    /// One look at an open page's widgets, in one store round trip: the
    /// entries fetched after `since` (the cards to swap in), or, if none,
    /// the refresh of each widget that is stale or outdated and not yet
    /// asked for by this page, and when the next fresh one turns stale.
    pub async fn poll_page(
        self: &Arc<Self>,
        user: &UserId,
        shown: &Shown,
        asked: &mut RefreshedAhead,
    ) -> PagePoll {
        let (instances, keys) = self.dashboard_keys(user);
        let (entries, store_unavailable) = self.read_many(&keys, &instances).await;
        let now = self.now();
        let changed: Vec<Lookup> = instances
            .iter()
            .zip(&entries)
            .filter_map(|(instance, entry)| {
                let entry = entry
                    .as_ref()
                    .filter(|e| shown.differs(instance.id().as_str(), e))?;
                let ttl = entry.ttl_secs(now);
                let outcome = match entry.freshness(now) {
                    Freshness::Fresh => Outcome::Hit { ttl },
                    Freshness::Stale => Outcome::Stale { ttl },
                    Freshness::Expired | Freshness::Dead => return None,
                };
                Some(Lookup {
                    instance: instance.clone(),
                    entry: Some(Arc::clone(entry)),
                    outcome,
                    error: None,
                    store_unavailable,
                    now,
                })
            })
            .collect();
        if !changed.is_empty() {
            return PagePoll {
                changed,
                next_stale: None,
            };
        }
        let mut next: Option<Millis> = None;
        for ((instance, key), entry) in instances.into_iter().zip(keys).zip(entries) {
            // No entry: the page shows a placeholder that is loading it.
            let Some(entry) = entry else { continue };
            match entry.freshness(now) {
                Freshness::Fresh => {
                    next = Some(next.map_or(entry.fresh_until, |n| n.min(entry.fresh_until)));
                }
                Freshness::Stale | Freshness::Expired => {
                    if asked.first_time(instance.widget.index, entry.fetched_at)
                        && self.start_background(&key, user, &instance, entry.fetched_at)
                    {
                        metrics::counter!("percache_refresh_total", "outcome" => "ahead").increment(1);
                    }
                }
                Freshness::Dead => {}
            }
        }
        PagePoll {
            changed,
            next_stale: next,
        }
    }

    /// What an open page waits for (`/updates`): the user's cards that
    /// differ from what the page shows, as soon as there are any (gathered
    /// for [`GATHER`] after the first), or none after `within`. Only this
    /// user's changes wake it; meanwhile each widget that turns stale is
    /// refreshed (once) when it does.
    pub async fn wait_for_change(
        self: &Arc<Self>,
        user: &UserId,
        shown: &Shown,
        within: Duration,
    ) -> Vec<Lookup> {
        let watch = self.watch(user).await;
        let deadline = tokio::time::Instant::now() + within;
        let mut refreshed = RefreshedAhead::default();
        loop {
            // Registered before looking, so a change in between is not missed.
            let change = watch.notify().notified();
            tokio::pin!(change);
            change.as_mut().enable();
            // The user's widgets, in one store round trip: what changed, or
            // (refreshing what turned stale) when to look again.
            let poll = self.poll_page(user, shown, &mut refreshed).await;
            if !poll.changed.is_empty() {
                // Others may be landing with it: look once more, shortly.
                tokio::time::sleep(GATHER).await;
                let again = self.poll_page(user, shown, &mut refreshed).await;
                return if again.changed.len() >= poll.changed.len() {
                    again.changed
                } else {
                    poll.changed
                };
            }
            let next_stale = poll.next_stale;
            let stale_soon = async {
                match next_stale {
                    Some(at) => self.sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            // A change of this user's, the next widget turning stale, or the deadline.
            tokio::select! {
                _ = change => {}
                _ = stale_soon => {}
                _ = tokio::time::sleep_until(deadline) => return Vec::new(),
            }
        }
    }

    /// Sleeps until the cache's clock reads `at` (a mock clock's jump wakes it).
    pub async fn sleep_until(&self, at: Millis) {
        crate::clock::sleep_until(self.clock(), at).await;
    }
}
