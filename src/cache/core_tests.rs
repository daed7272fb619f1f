//! Unit tests of the cache core, in the style of moka's: a mock clock, a
//! fake fetcher and the in-process store, no HTTP and no real waiting.
//!
//! The cache's decisions (fresh, stale, ttl, backoff, breaker) read the
//! injected [`MockClock`], which the tests move. Its waits (the soft timeout,
//! a slow fetch) are tokio timers on a runtime whose time is paused, so they
//! elapse as soon as everything else is idle: each test runs in
//! milliseconds of real time.

use std::future::Future;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::value::RawValue;

use crate::cache::entry::Entry;
use crate::cache::fleet::changes::Changes;
use crate::cache::fleet::generations::{Gen, Kind};
use crate::cache::key::CacheKey;
use crate::cache::policy::Lifetimes;
use crate::cache::store::breaker::Breaker;
use crate::cache::store::memory::MemoryStore;
use crate::cache::store::{Backoff, Lease, LockState, Store, StoreError};
use crate::cache::{CacheParts, CachePolicy, CacheSettings, Lookup, Outcome, WidgetCache};
use crate::clock::MockClock;
use crate::upstream::{Fetch, FetchError};
use crate::user::UserId;
use crate::widget::{Instance, Registry};

const FRESH: Duration = Duration::from_secs(60);
const TTL: Duration = Duration::from_secs(600);
const BACKOFF: Duration = Duration::from_secs(10);

/// An upstream that answers `{"n": <call number>}` after `delay`, or fails
/// with `failure` while one is set; it counts its calls.
#[derive(Default)]
struct FakeFetcher {
    calls: AtomicU32,
    delay: Mutex<Duration>,
    failure: Mutex<Option<FetchError>>,
}

impl FakeFetcher {
    fn calls(&self) -> u32 {
        self.calls.load(Ordering::SeqCst)
    }
    fn set_delay(&self, delay: Duration) {
        *self.delay.lock().unwrap_or_else(PoisonError::into_inner) = delay;
    }
    fn set_failure(&self, failure: Option<FetchError>) {
        *self.failure.lock().unwrap_or_else(PoisonError::into_inner) = failure;
    }
}

#[async_trait(?Send)]
impl Fetch for FakeFetcher {
    async fn fetch(&self, _user: &str, _instance: &Instance) -> Result<Box<RawValue>, FetchError> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        let delay = *self.delay.lock().unwrap_or_else(PoisonError::into_inner);
        tokio::time::sleep(delay).await;
        let failure = self
            .failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if let Some(failure) = failure {
            return Err(failure);
        }
        RawValue::from_string(format!(r#"{{"n":{n}}}"#)).map_err(|e| FetchError::Body(e.to_string()))
    }
}

/// A cache over `store` with the fake upstream and a mock clock.
struct Core {
    cache: Arc<WidgetCache>,
    fetcher: Arc<FakeFetcher>,
    clock: Arc<MockClock>,
    user: UserId,
    instance: Instance,
}

impl Core {
    fn new() -> Self {
        let clock = MockClock::new();
        let store = Arc::new(MemoryStore::new(1_000).with_clock(clock.clone()));
        Self::over(store.clone(), store, clock)
    }

    fn over(store: Arc<dyn Store>, lease: Arc<dyn Lease>, clock: Arc<MockClock>) -> Self {
        let registry = Arc::new(Registry::builtin());
        let lifetimes = Lifetimes {
            fresh: FRESH,
            ttl: TTL,
            grace: Duration::from_secs(3600),
        };
        let policy = CachePolicy::new(&registry, lifetimes, &[], &[]).unwrap();
        let fetcher = Arc::new(FakeFetcher::default());
        let instance = registry.all()[0].default_instance();
        let parts = CacheParts {
            store,
            lease,
            changes: Changes::local(),
            fetcher: fetcher.clone(),
            registry,
            policy,
            clock: clock.clone(),
            metrics: None,
        };
        let settings = CacheSettings {
            failure_backoff: BACKOFF,
            ..CacheSettings::default()
        };
        let cache = WidgetCache::new(parts, &settings, Duration::from_secs(5));
        Self {
            cache: Arc::new(cache),
            fetcher,
            clock,
            user: UserId::parse("alice").unwrap(),
            instance,
        }
    }

    async fn get(&self) -> Lookup {
        self.cache.get(&self.user, &self.instance).await
    }

    /// Lets the refresh in flight land, then asserts the next read is a hit
    /// on the `n`th call's data.
    async fn assert_refreshed_to(&self, n: u64) {
        self.settle().await;
        let after = self.get().await;
        assert_outcome(&after, "hit");
        assert_eq!(n_of(&after), n);
    }

    /// Lets every spawned fetch run to its end (paused time: no real wait).
    async fn settle(&self) {
        while self.cache.fetches_in_flight() > 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

/// Asserts a lookup's outcome by its metric label (`hit`, `stale`...).
fn assert_outcome(lookup: &Lookup, label: &str) {
    assert_eq!(lookup.outcome.label(), label, "{:?}", lookup.outcome);
}

/// The `n` of an entry the fake upstream made.
fn n_of(lookup: &Lookup) -> u64 {
    let entry = lookup.entry.as_ref().expect("an entry");
    let value: serde_json::Value = serde_json::from_str(entry.data.get()).unwrap();
    value["n"].as_u64().unwrap()
}

/// Runs a test on a current-thread runtime with paused time, inside a
/// local task set (fetches run as local tasks, as on an actix worker).
pub(super) fn run<F: Future>(test: F) -> F::Output {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    tokio::task::LocalSet::new().block_on(&rt, test)
}

#[test]
fn concurrent_misses_of_one_key_make_one_upstream_call() {
    run(async {
        // Arrange
        let core = Core::new();
        core.fetcher.set_delay(Duration::from_secs(2));

        // Act
        let lookups = futures_util::future::join_all((0..10).map(|_| core.get())).await;

        // Assert
        assert_eq!(core.fetcher.calls(), 1);
        let leaders = lookups
            .iter()
            .filter(|l| l.outcome == Outcome::Miss { collapsed: false })
            .count();
        let joiners = lookups
            .iter()
            .filter(|l| l.outcome == Outcome::Miss { collapsed: true })
            .count();
        assert_eq!((leaders, joiners), (1, 9));
        assert!(
            lookups.iter().all(|l| n_of(l) == 1),
            "everyone gets the one fetch's data"
        );
    });
}

#[test]
fn a_fresh_entry_is_a_hit_with_no_upstream_call() {
    run(async {
        let core = Core::new();
        core.get().await;

        // Within the fresh window (which has up to 10% jitter) and before
        // eager refresh (at 0.8 of it).
        core.clock.advance(FRESH / 2);
        let lookup = core.get().await;

        assert_outcome(&lookup, "hit");
        assert_eq!(core.fetcher.calls(), 1);
    });
}

#[test]
fn a_stale_entry_is_served_at_once_and_refreshed_once_in_the_background() {
    run(async {
        // Arrange: an entry past its fresh window, a slow upstream.
        let core = Core::new();
        core.get().await;
        core.clock.advance(FRESH + Duration::from_secs(1));
        core.fetcher.set_delay(Duration::from_secs(3));

        // Act: three reads while the refresh runs.
        let reads = [core.get().await, core.get().await, core.get().await];

        // Assert: the old data at once, one refresh, then the new data.
        for read in &reads {
            assert_outcome(read, "stale");
            assert_eq!(n_of(read), 1);
        }
        core.settle().await;
        assert_eq!(
            core.fetcher.calls(),
            2,
            "one background refresh for three stale reads"
        );
        let after = core.get().await;
        assert_outcome(&after, "hit");
        assert_eq!(n_of(&after), 2);
    });
}

#[test]
fn past_ttl_a_slow_upstream_gets_the_old_entry_as_outdated_after_the_soft_timeout() {
    run(async {
        // Arrange
        let core = Core::new();
        core.get().await;
        core.clock.advance(TTL + Duration::from_secs(1));
        core.fetcher.set_delay(Duration::from_secs(4));

        // Act
        let started = tokio::time::Instant::now();
        let lookup = core.get().await;
        let waited = started.elapsed();

        // Assert: served within the soft timeout (300 ms by default), and
        // the fetch goes on to land.
        assert_outcome(&lookup, "outdated");
        assert_eq!(n_of(&lookup), 1);
        assert!(waited < Duration::from_secs(1), "waited {waited:?} (tokio time)");
        core.assert_refreshed_to(2).await;
    });
}

#[test]
fn past_ttl_a_failing_upstream_gets_the_entry_still_in_grace_as_stale_if_error() {
    run(async {
        let core = Core::new();
        core.get().await;
        core.clock.advance(TTL + Duration::from_secs(1));
        core.fetcher.set_failure(Some(FetchError::Status(503)));

        let lookup = core.get().await;

        assert_eq!(lookup.outcome, Outcome::StaleIfError { status: 503 });
        assert_eq!(n_of(&lookup), 1);
    });
}

/// Past ttl and grace, an entry is dead: a failing upstream gives an error,
/// not the dead entry as stale-if-error (issue 28: an edge with no test).
#[test]
fn past_grace_a_failing_upstream_gives_an_error_not_the_dead_entry() {
    run(async {
        let core = Core::new();
        core.get().await;
        // The grace of the test's lifetimes (1 h) past the ttl, and a second.
        core.clock
            .advance(TTL + Duration::from_secs(3600) + Duration::from_secs(1));
        core.fetcher.set_failure(Some(FetchError::Status(503)));

        let lookup = core.get().await;

        assert_eq!(lookup.outcome, Outcome::Error { status: 503 });
        assert!(lookup.entry.is_none(), "the dead entry is not served");
        assert_eq!(core.fetcher.calls(), 2);
    });
}

#[test]
fn a_failed_fetch_is_not_retried_until_the_clock_passes_the_backoff() {
    run(async {
        // Arrange: a failure.
        let core = Core::new();
        core.fetcher.set_failure(Some(FetchError::Status(503)));
        let first = core.get().await;
        assert_eq!(first.outcome, Outcome::Error { status: 503 });

        // Act + Assert: within the backoff no call, and the cause is kept.
        core.clock.advance(BACKOFF - Duration::from_secs(1));
        let within = core.get().await;
        assert_eq!(within.outcome, Outcome::Error { status: 503 });
        assert_eq!(core.fetcher.calls(), 1, "no call within the backoff");
        // The cause as this instance saw it, in plain words (SPEC §8).
        let message = within.error.expect("an error").plain();
        assert!(message.contains("answered with an error (HTTP 503)"), "{message}");

        // Past it (by the clock alone: no real time passes), one new call.
        core.fetcher.set_failure(None);
        core.clock.advance(Duration::from_secs(2));
        let after = core.get().await;
        assert_eq!(core.fetcher.calls(), 2);
        assert_eq!(after.outcome, Outcome::Miss { collapsed: false });
    });
}

/// A store that fails every call, counting them.
#[derive(Default)]
struct DownStore {
    calls: AtomicUsize,
}

#[async_trait]
impl Store for DownStore {
    async fn get(&self, _: &CacheKey) -> Result<Option<Arc<Entry>>, StoreError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Err(StoreError::Timeout)
    }
    async fn put(
        &self,
        _: &CacheKey,
        _: Arc<Entry>,
        _: Duration,
        _: Option<u64>,
    ) -> Result<bool, StoreError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Err(StoreError::Timeout)
    }
    async fn invalidate(&self, _: &[CacheKey], _: Duration) -> Result<(), StoreError> {
        Err(StoreError::Timeout)
    }
    async fn stamp(&self, _: &CacheKey) -> Result<u64, StoreError> {
        Err(StoreError::Timeout)
    }
    async fn bump_generation(&self, _: &str, _: Kind, _: Gen) -> Result<Gen, StoreError> {
        Err(StoreError::Timeout)
    }
    async fn load_generation(&self, _: &str, _: Gen) -> Result<Gen, StoreError> {
        Err(StoreError::Timeout)
    }
    async fn ping(&self) -> Result<(), StoreError> {
        Err(StoreError::Timeout)
    }
    fn kind(&self) -> &'static str {
        "down"
    }
}

#[async_trait]
impl Lease for DownStore {
    async fn acquire(&self, _: &CacheKey, _: Duration, _: bool) -> Result<LockState, StoreError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Err(StoreError::Timeout)
    }
    async fn renew(&self, _: &CacheKey, _: u64, _: Duration) -> Result<bool, StoreError> {
        Err(StoreError::Timeout)
    }
    async fn release(&self, _: &CacheKey, _: u64, _: Option<Backoff>) -> Result<(), StoreError> {
        Err(StoreError::Timeout)
    }
    async fn lock_state(&self, _: &CacheKey) -> Result<LockState, StoreError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Err(StoreError::Timeout)
    }
}

#[test]
fn a_failing_store_is_skipped_by_the_breaker_until_its_cool_down_passes_by_the_clock() {
    run(async {
        // Arrange: the cache over a store that is down, behind the breaker.
        let clock = MockClock::new();
        let down = Arc::new(DownStore::default());
        let breaker = Arc::new(Breaker::new(
            down.clone(),
            down.clone(),
            Duration::from_millis(500),
            clock.clone(),
        ));
        let core = Core::over(breaker.clone(), breaker, clock.clone());

        // Act: requests fail open (served from the upstream) until the breaker opens.
        let first = core.get().await;
        assert!(first.store_unavailable);
        assert_eq!(n_of(&first), 1, "served from the upstream");
        while down.calls.load(Ordering::SeqCst) < 3 {
            core.get().await;
        }
        let tried = down.calls.load(Ordering::SeqCst);
        let skipped = core.get().await;

        // Assert: while open, the store is not called at all...
        assert!(skipped.store_unavailable);
        assert_eq!(
            down.calls.load(Ordering::SeqCst),
            tried,
            "the open breaker skips the store"
        );
        // ...and after the cool-down (the mock clock's), it is tried again.
        clock.advance(Duration::from_millis(501));
        core.get().await;
        assert!(
            down.calls.load(Ordering::SeqCst) > tried,
            "half-open: tried again"
        );
    });
}

#[test]
fn the_mock_clock_is_the_one_time_source_of_the_policy() {
    run(async {
        // Real time does not move an entry along: only the clock does.
        let core = Core::new();
        core.get().await;
        tokio::time::sleep(FRESH * 2).await; // paused time: instant
        assert!(matches!(core.get().await.outcome, Outcome::Hit { .. }));
        core.clock.advance(FRESH);
        assert!(matches!(core.get().await.outcome, Outcome::Stale { .. }));
    });
}
