//! Single flight on its own: [`Flights`] over the in-process store, a mock
//! clock, paused tokio time, and an upstream whose calls end only when the
//! test lets them (a gate), so every order below is made, not guessed. No
//! `WidgetCache`: joining, the deadline, the failure backoff, the slot cap
//! and a failing leader are single flight's own.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::value::RawValue;
use tokio::sync::Semaphore;

use super::core_tests::run;
use super::counters::CacheCounters;
use super::fetched::{FetchResult, Flight, Start};
use super::fleet::changes::Changes;
use super::flight::{FlightParts, Flights};
use super::judge::Judge;
use super::key::CacheKey;
use super::policy::{CachePolicy, Lifetimes};
use super::settings::CacheSettings;
use super::slots::Slots;
use super::store::memory::MemoryStore;
use super::turns::Work;
use crate::clock::MockClock;
use crate::upstream::{Fetch, FetchError};
use crate::user::UserId;
use crate::widget::{Instance, Registry};

const WAIT: Duration = Duration::from_secs(5);
const BACKOFF: Duration = Duration::from_secs(10);

/// An upstream whose calls each wait for one permit of `gate`, then answer
/// `{"n": <call number>}`, or fail with `failure` while one is set.
struct Gated {
    gate: Semaphore,
    started: AtomicUsize,
    running: AtomicUsize,
    peak: AtomicUsize,
    failure: Mutex<Option<FetchError>>,
}

impl Default for Gated {
    fn default() -> Self {
        Self {
            gate: Semaphore::new(0),
            started: AtomicUsize::default(),
            running: AtomicUsize::default(),
            peak: AtomicUsize::default(),
            failure: Mutex::default(),
        }
    }
}

impl Gated {
    /// Lets `n` calls (waiting or still to come) end.
    fn release(&self, n: usize) {
        self.gate.add_permits(n);
    }
    fn started(&self) -> usize {
        self.started.load(Ordering::SeqCst)
    }
    fn fail_with(&self, failure: Option<FetchError>) {
        *self.failure.lock().unwrap_or_else(PoisonError::into_inner) = failure;
    }
    /// Waits (in paused time: at once) until `n` calls have begun.
    /// Panics after a minute of (virtual) time rather than spinning.
    async fn until_started(&self, n: usize) {
        let give_up = tokio::time::Instant::now() + Duration::from_secs(60);
        while self.started() < n {
            assert!(tokio::time::Instant::now() < give_up, "{n} calls never began");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

#[async_trait(?Send)]
impl Fetch for Gated {
    async fn fetch(&self, _user: &str, _instance: &Instance) -> Result<Box<RawValue>, FetchError> {
        let n = self.started.fetch_add(1, Ordering::SeqCst) + 1;
        let running = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(running, Ordering::SeqCst);
        let permit = self.gate.acquire().await;
        self.running.fetch_sub(1, Ordering::SeqCst);
        permit.map_err(|_| FetchError::Abandoned)?.forget();
        let failure = self
            .failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        match failure {
            Some(failure) => Err(failure),
            None => {
                RawValue::from_string(format!(r#"{{"n":{n}}}"#)).map_err(|e| FetchError::Body(e.to_string()))
            }
        }
    }
}

/// Single flight alone, with what it was built over.
struct Alone {
    flights: Arc<Flights>,
    upstream: Arc<Gated>,
    clock: Arc<MockClock>,
    /// The feed single flight reads its epochs from.
    changes: Arc<Changes>,
    instance: Instance,
}

impl Alone {
    fn new(max_upstream_calls: u32) -> Self {
        let clock = MockClock::new();
        let store = Arc::new(MemoryStore::new(1_000).with_clock(clock.clone()));
        let registry = Registry::builtin();
        let lifetimes = Lifetimes {
            fresh: Duration::from_secs(60),
            ttl: Duration::from_secs(600),
            grace: Duration::from_secs(3600),
        };
        let policy = CachePolicy::new(&registry, lifetimes, &[], &[]).unwrap();
        let changes = Changes::local();
        let upstream = Arc::new(Gated::default());
        let settings = CacheSettings {
            failure_backoff: BACKOFF,
            max_upstream_calls,
            ..CacheSettings::default()
        };
        let slots =
            Slots::new(max_upstream_calls as usize, registry.all().len(), clock.clone()).on_feed(&changes);
        let parts = FlightParts {
            store: store.clone(),
            lease: store,
            changes: Arc::clone(&changes),
            fetcher: upstream.clone(),
            judge: Judge::new(Arc::clone(&changes)),
            policy: Arc::new(policy),
            clock: clock.clone(),
            counters: Arc::new(CacheCounters::new(&registry, None)),
            slots,
        };
        // The deadline is the upstream's timeout plus the margin (1 s).
        let flights = Flights::new(parts, &settings, WAIT + Duration::from_secs(1));
        Self {
            flights: Arc::new(flights),
            upstream,
            clock,
            changes,
            instance: registry.all()[0].default_instance(),
        }
    }

    fn key(&self, user: &UserId) -> CacheKey {
        user.tag().key(&self.instance)
    }

    /// Joins or starts `user`'s fetch as a request: (its flight, leader?).
    fn ask(&self, user: &UserId) -> (Flight, bool) {
        let key = self.key(user);
        self.flights.join_or_start(
            &key,
            user,
            &self.instance,
            Start::Recheck(i64::MIN),
            Work::Request,
        )
    }

    async fn wait(&self, flight: Flight) -> FetchResult {
        self.flights.wait(flight).await
    }

    /// Lets every fetch task end (paused time: no real wait); panics after
    /// a minute of virtual time rather than spinning.
    async fn settle(&self) {
        let give_up = tokio::time::Instant::now() + Duration::from_secs(60);
        while self.flights.fetches_in_flight() > 0 {
            assert!(tokio::time::Instant::now() < give_up, "a fetch never ended");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

fn user(name: &str) -> UserId {
    UserId::parse(name).unwrap()
}

fn n_of(result: &FetchResult) -> u64 {
    let fetched = result.as_ref().expect("a fetched entry");
    let value: serde_json::Value = serde_json::from_str(fetched.entry.data.get()).unwrap();
    value["n"].as_u64().unwrap()
}

#[test]
fn askers_of_one_key_join_the_leader_and_share_its_one_call() {
    run(async {
        let alone = Alone::new(8);
        let alice = user("alice");

        let (first, led) = alone.ask(&alice);
        alone.upstream.until_started(1).await;
        let joined: Vec<(Flight, bool)> = (0..4).map(|_| alone.ask(&alice)).collect();
        assert!(led, "the first asker leads");
        assert!(joined.iter().all(|(_, led)| !led), "later askers join");
        assert_eq!(alone.flights.fetches_in_flight(), 1);

        alone.upstream.release(1);
        let results = futures_util::future::join_all(
            std::iter::once(first)
                .chain(joined.into_iter().map(|(f, _)| f))
                .map(|f| alone.wait(f)),
        )
        .await;

        assert_eq!(alone.upstream.started(), 1, "one upstream call");
        assert!(results.iter().all(|r| n_of(r) == 1), "everyone has its data");
        assert!(
            results[0].as_ref().is_ok_and(|f| !f.remote),
            "the leader's own call"
        );
        alone.settle().await;
        assert_eq!(alone.flights.fetches_in_flight(), 0, "the key left the map");
    });
}

#[test]
fn a_waiter_gives_up_at_the_deadline_and_the_fetch_still_lands() {
    run(async {
        let alone = Alone::new(8);
        let alice = user("alice");
        let (flight, _) = alone.ask(&alice);
        alone.upstream.until_started(1).await;

        let began = tokio::time::Instant::now();
        let result = alone.wait(flight.clone()).await;

        assert!(matches!(result, Err(FetchError::Timeout)), "{result:?}");
        assert_eq!(
            began.elapsed(),
            WAIT + Duration::from_secs(1),
            "exactly the deadline"
        );
        assert_eq!(
            alone.flights.fetches_in_flight(),
            1,
            "the fetch goes on without its waiter"
        );
        alone.upstream.release(1);
        alone.settle().await;
        assert_eq!(n_of(&alone.wait(flight).await), 1, "and lands");
    });
}

#[test]
fn a_failing_leader_fails_every_joiner_and_leaves_the_map() {
    run(async {
        let alone = Alone::new(8);
        let alice = user("alice");
        alone.upstream.fail_with(Some(FetchError::Status(502)));
        let (first, _) = alone.ask(&alice);
        alone.upstream.until_started(1).await;
        let (second, led) = alone.ask(&alice);
        assert!(!led);

        alone.upstream.release(1);
        let (a, b) = futures_util::join!(alone.wait(first), alone.wait(second));

        assert!(matches!(a, Err(FetchError::Status(502))), "{a:?}");
        assert!(matches!(b, Err(FetchError::Status(502))), "{b:?}");
        alone.settle().await;
        assert_eq!(
            alone.flights.fetches_in_flight(),
            0,
            "no key stays stuck in flight"
        );
    });
}

#[test]
fn after_a_failure_the_key_is_not_called_again_until_the_backoff_ends() {
    run(async {
        let alone = Alone::new(8);
        let alice = user("alice");
        alone.upstream.fail_with(Some(FetchError::Status(503)));
        alone.upstream.release(1);
        let (flight, _) = alone.ask(&alice);
        assert!(alone.wait(flight).await.is_err());
        alone.settle().await;

        // Within the backoff: the failure, with its cause, and no call.
        alone.clock.advance(BACKOFF - Duration::from_secs(1));
        let (flight, led) = alone.ask(&alice);
        let within = alone.wait(flight).await;
        assert!(led, "a new flight (the old one left the map)");
        match &within {
            Err(FetchError::RecentFailure(503, Some(cause))) => assert!(!cause.is_empty()),
            other => panic!("expected the recent failure with its cause, got {other:?}"),
        }
        assert_eq!(alone.upstream.started(), 1, "no upstream call within the backoff");
        alone.settle().await;

        // After it: called again.
        alone.clock.advance(Duration::from_secs(2));
        alone.upstream.fail_with(None);
        alone.upstream.release(1);
        let (flight, _) = alone.ask(&alice);
        let after = alone.wait(flight).await;
        assert_eq!(alone.upstream.started(), 2);
        assert_eq!(n_of(&after), 2);
    });
}

#[test]
fn at_the_slot_cap_a_third_call_waits_for_a_slot_then_runs() {
    run(async {
        // Two slots; three widgets (each may hold half the slots: one).
        let alone = Alone::new(2);
        let alice = user("alice");
        let widgets: Vec<Instance> = Registry::builtin().all()[..3]
            .iter()
            .map(|w| w.default_instance())
            .collect();
        let flights: Vec<Flight> = widgets
            .iter()
            .map(|i| {
                let key = alice.tag().key(i);
                let (flight, _) =
                    alone
                        .flights
                        .join_or_start(&key, &alice, i, Start::Recheck(i64::MIN), Work::Request);
                flight
            })
            .collect();

        alone.upstream.until_started(2).await;
        // Whatever else runs meanwhile, the third call has no slot.
        for _ in 0..50 {
            tokio::task::yield_now().await;
        }
        assert_eq!(alone.upstream.started(), 2, "two slots, two calls");
        assert_eq!(alone.flights.fetches_in_flight(), 3, "the third waits in flight");

        alone.upstream.release(1);
        alone.upstream.until_started(3).await;
        alone.upstream.release(2);
        let results = futures_util::future::join_all(flights.into_iter().map(|f| alone.wait(f))).await;

        assert!(results.iter().all(Result::is_ok), "{results:?}");
        assert_eq!(
            alone.upstream.peak.load(Ordering::SeqCst),
            2,
            "never more than the cap at once"
        );
    });
}

#[test]
fn a_flight_begun_before_an_invalidation_is_not_joined() {
    run(async {
        let alone = Alone::new(8);
        let alice = user("alice");
        let (_old, _) = alone.ask(&alice);
        alone.upstream.until_started(1).await;

        // The feed acknowledges an invalidation of the key.
        alone
            .changes
            .announce_invalidation(&alone.key(&alice), true)
            .await;
        let (_new, led) = alone.ask(&alice);

        assert!(led, "a later asker starts its own flight");
        alone.upstream.until_started(2).await;
        alone.upstream.release(2);
        alone.settle().await;
    });
}
