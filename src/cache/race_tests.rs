//! Races between fetches, invalidations and writes, against the public
//! [`WidgetCache`] API (issue 23). Written before the fixes, so that each
//! one compiled and failed on the code that had the race.
//!
//! The upstream here is a [`GatedFetcher`]: each call starts, is counted,
//! and answers only when the test releases it. So every test fixes the
//! order of events itself (a fetch begins, an invalidation is
//! acknowledged, a read begins, the fetch lands) instead of guessing it
//! with sleeps. Time is paused; the clock is a [`MockClock`].

use std::collections::HashSet;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::value::RawValue;
use tokio::sync::watch;

use crate::cache::core_tests::run;
use crate::cache::fleet::changes::Changes;
use crate::cache::fleet::generations::Kind;
use crate::cache::policy::Lifetimes;
use crate::cache::store::memory::MemoryStore;
use crate::cache::store::sqlite::SqliteStore;
use crate::cache::store::{Lease, Store};

/// A store that holds its keys' leases too (memory, SQLite): handed to both
/// sides of a cache.
pub(crate) trait Backend: Store + Lease {}

impl<T: Store + Lease> Backend for T {}
use crate::cache::store::Capacity;
use crate::cache::{CacheParts, CachePolicy, CacheSettings, Lookup, WidgetCache};
use crate::clock::MockClock;
use crate::upstream::{Fetch, FetchError};
use crate::user::UserId;
use crate::widget::{Instance, Registry};

const FRESH: Duration = Duration::from_secs(60);
const TTL: Duration = Duration::from_secs(600);

/// An upstream whose calls answer `{"n": <call number>}` only once the
/// test releases that call.
pub(crate) struct GatedFetcher {
    calls: AtomicU32,
    released: watch::Sender<HashSet<u32>>,
}

impl Default for GatedFetcher {
    fn default() -> Self {
        Self {
            calls: AtomicU32::new(0),
            released: watch::channel(HashSet::new()).0,
        }
    }
}

impl GatedFetcher {
    pub(crate) fn calls(&self) -> u32 {
        self.calls.load(Ordering::SeqCst)
    }

    /// Lets call `n` answer.
    pub(crate) fn release(&self, n: u32) {
        self.released.send_modify(|set| {
            set.insert(n);
        });
    }

    /// Waits (paused time: no real wait) until `n` calls have begun.
    pub(crate) async fn started(&self, n: u32) {
        for _ in 0..10_000 {
            if self.calls() >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        panic!("call {n} never began ({} did)", self.calls());
    }
}

#[async_trait(?Send)]
impl Fetch for GatedFetcher {
    async fn fetch(&self, _user: &str, _instance: &Instance) -> Result<Box<RawValue>, FetchError> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        let mut released = self.released.subscribe();
        let _ = released.wait_for(|set| set.contains(&n)).await;
        RawValue::from_string(format!(r#"{{"n":{n}}}"#)).map_err(|e| FetchError::Body(e.to_string()))
    }
}

/// A cache over `store` with the gated upstream, as one instance of a fleet.
pub(crate) fn cache_over(
    store: Arc<dyn Backend>,
    clock: Arc<MockClock>,
    fetcher: Arc<GatedFetcher>,
) -> Arc<WidgetCache> {
    let registry = Arc::new(Registry::builtin());
    let lifetimes = Lifetimes {
        fresh: FRESH,
        ttl: TTL,
        grace: Duration::from_secs(3600),
    };
    let policy = CachePolicy::new(&registry, lifetimes, &[], &[]).unwrap();
    let parts = CacheParts {
        store: store.clone(),
        lease: store,
        changes: Changes::local(),
        fetcher,
        registry,
        policy,
        clock,
        metrics: None,
    };
    let cache = WidgetCache::new(parts, &CacheSettings::default(), Duration::from_secs(30));
    Arc::new(cache)
}

fn alice() -> UserId {
    UserId::parse("alice").unwrap()
}

fn first_widget(cache: &WidgetCache) -> Instance {
    cache.registry().all()[0].default_instance()
}

/// The `n` of the data a lookup carries (0: none).
fn n_of(lookup: &Lookup) -> u64 {
    lookup.entry.as_ref().map_or(0, |entry| {
        let value: serde_json::Value = serde_json::from_str(entry.data.get()).unwrap();
        value["n"].as_u64().unwrap()
    })
}

/// Lets every fetch task run to its end.
async fn settle(cache: &WidgetCache) {
    for _ in 0..10_000 {
        if cache.fetches_in_flight() == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("fetches never ended");
}

/// A fetch begins; the key is invalidated (`invalidate`) and acknowledged;
/// a read begins; then the first fetch lands. The read must not get the
/// first fetch's data, and nothing may keep it as current afterwards.
/// Which invalidation a race test makes.
#[derive(Clone, Copy)]
enum Invalidation {
    /// One user's key (the webhook with a `userId`).
    User(Kind),
    /// The widget for every user (`allUsers`).
    AllUsers(Kind),
}

impl Invalidation {
    async fn apply(self, cache: &WidgetCache, user: &UserId, instance: &Instance) {
        let widgets = [Arc::clone(&instance.widget)];
        match self {
            Invalidation::User(kind) => cache.invalidate(user, &widgets, kind).await.unwrap(),
            Invalidation::AllUsers(kind) => cache.invalidate_all_users(&widgets, kind).await.unwrap(),
        }
    }
}

async fn a_fetch_across_an_invalidation(invalidation: Invalidation, store: Arc<dyn Backend>) {
    let (clock, fetcher) = (MockClock::new(), Arc::new(GatedFetcher::default()));
    let cache = cache_over(store, clock, Arc::clone(&fetcher));
    let (user, instance) = (alice(), first_widget(&cache));

    // A cold read starts fetch 1.
    let first = tokio::task::spawn_local({
        let (cache, user, instance) = (Arc::clone(&cache), user.clone(), instance.clone());
        async move { cache.get(&user, &instance).await }
    });
    fetcher.started(1).await;

    // The invalidation is acknowledged while fetch 1 is in flight.
    invalidation.apply(&cache, &user, &instance).await;

    // A read that begins after it.
    let second = tokio::task::spawn_local({
        let (cache, user, instance) = (Arc::clone(&cache), user.clone(), instance.clone());
        async move { cache.get(&user, &instance).await }
    });
    tokio::time::sleep(Duration::from_millis(5)).await;
    fetcher.release(1);
    let first = first.await.unwrap();
    assert_eq!(
        n_of(&first),
        1,
        "the read that began before the invalidation gets fetch 1"
    );

    // The second read needs a fetch that began after the invalidation.
    fetcher.started(2).await;
    fetcher.release(2);
    let second = second.await.unwrap();
    assert_eq!(
        n_of(&second),
        2,
        "a read that began after the invalidation got a fetch that began before it ({:?})",
        second.outcome
    );
    settle(&cache).await;

    // Nothing of fetch 1 is kept as current.
    let third = cache.get(&user, &instance).await;
    assert_ne!(
        (third.outcome.label(), n_of(&third)),
        ("hit", 1),
        "fetch 1's data was stored as current after the invalidation"
    );
}

fn memory(clock: &Arc<MockClock>) -> Arc<dyn Backend> {
    Arc::new(MemoryStore::new(1_000).with_clock(clock.clone()))
}

#[test]
fn a_read_after_an_invalidation_never_gets_a_fetch_that_began_before_it() {
    run(async {
        let store = memory(&MockClock::new());
        a_fetch_across_an_invalidation(Invalidation::User(Kind::Hard), store).await;
    });
}

#[test]
fn a_soft_invalidation_is_not_undone_by_a_fetch_that_began_before_it() {
    run(async {
        let store = memory(&MockClock::new());
        a_fetch_across_an_invalidation(Invalidation::User(Kind::Soft), store).await;
    });
}

#[test]
fn an_all_users_invalidation_is_not_undone_by_a_fetch_that_began_before_it() {
    run(async {
        let store = memory(&MockClock::new());
        a_fetch_across_an_invalidation(Invalidation::AllUsers(Kind::Hard), store).await;
    });
}

#[test]
fn on_sqlite_a_fetch_across_an_invalidation_is_not_stored_as_current() {
    run(async {
        let dir = std::env::temp_dir().join(format!("percache-race-{}", fastrand::u64(..)));
        let store: Arc<dyn Backend> = Arc::new(SqliteStore::open(&dir, Capacity::Entries(1_000)).unwrap());
        a_fetch_across_an_invalidation(Invalidation::User(Kind::Hard), store).await;
        let _ = std::fs::remove_dir_all(&dir);
    });
}

/// Two instances share one store; A's fetch begins first, B's second, B's
/// lands first. A's older data must not replace B's.
#[test]
fn a_write_never_replaces_an_entry_whose_fetch_began_later() {
    run(async {
        let clock = MockClock::new();
        let store = memory(&clock);
        let fetcher = Arc::new(GatedFetcher::default());
        let a = cache_over(Arc::clone(&store), Arc::clone(&clock), Arc::clone(&fetcher));
        let b = cache_over(store, clock, Arc::clone(&fetcher));
        let (user, instance) = (alice(), first_widget(&a));

        let on_a = tokio::task::spawn_local({
            let (a, user, instance) = (Arc::clone(&a), user.clone(), instance.clone());
            async move { a.refresh(&user, &instance).await }
        });
        fetcher.started(1).await;
        let on_b = tokio::task::spawn_local({
            let (b, user, instance) = (Arc::clone(&b), user.clone(), instance.clone());
            async move { b.refresh(&user, &instance).await }
        });
        fetcher.started(2).await;
        fetcher.release(2);
        assert_eq!(n_of(&on_b.await.unwrap()), 2);
        fetcher.release(1);
        on_a.await.unwrap();
        settle(&a).await;

        for cache in [&a, &b] {
            let read = cache.get(&user, &instance).await;
            assert_eq!(
                (read.outcome.label(), n_of(&read)),
                ("hit", 2),
                "the older fetch's write went over the newer one"
            );
        }
    });
}

/// An `allUsers` invalidation with `--data-dir` survives a restart.
#[test]
fn an_all_users_invalidation_survives_a_restart_with_a_data_dir() {
    run(async {
        let dir = std::env::temp_dir().join(format!("percache-gen-{}", fastrand::u64(..)));
        let clock = MockClock::new();
        let fetcher = Arc::new(GatedFetcher::default());
        let open = |clock: &Arc<MockClock>| -> Arc<dyn Backend> {
            Arc::new(
                SqliteStore::open(&dir, Capacity::Entries(1_000))
                    .unwrap()
                    .with_clock(clock.clone()),
            )
        };
        let before = cache_over(open(&clock), Arc::clone(&clock), Arc::clone(&fetcher));
        let (user, instance) = (alice(), first_widget(&before));
        fetcher.release(1);
        assert_eq!(n_of(&before.get(&user, &instance).await), 1);
        before
            .invalidate_all_users(&[Arc::clone(&instance.widget)], Kind::Hard)
            .await
            .unwrap();
        drop(before);

        let after = cache_over(open(&clock), Arc::clone(&clock), Arc::clone(&fetcher));
        after.reload_generations().await;
        fetcher.release(2);
        let read = after.get(&user, &instance).await;
        assert_eq!(
            (read.outcome.label(), n_of(&read)),
            ("miss", 2),
            "the restart undid the invalidation"
        );
        let _ = std::fs::remove_dir_all(&dir);
    });
}
