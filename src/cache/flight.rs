//! Single flight: for one (user, widget) at most one upstream fetch runs in
//! this process at a time, and (through the store's fetch lock) in the fleet.
//! [`Flights`] owns it: the in-flight map, the fetch tasks, the last errors,
//! the upstream slots and the prewarm queue's counts. It is handed the
//! store, the feed, the fetcher and the clock it shares with the read
//! policy, and asks the [`Judge`] (not the cache) whether a stored entry
//! counts, so it is tested on its own (`flight_tests`).
//!
//! The first request that needs data becomes the leader: it registers a
//! `watch` channel in the in-flight map and spawns the fetch as a task on
//! its worker (so the fetch finishes even if the client goes away, and
//! prewarm needs no client at all). Everyone else who needs the same key
//! joins that channel. The leader stores the entry *before* it publishes the
//! result and leaves the map, and a new leader re-reads the store before
//! calling the upstream, so a request that read "miss" just before a fetch
//! landed does not fetch a second time.
//!
//! Ordering (SPEC §7): a flight remembers the change feed's epoch it began
//! at. Once an invalidation of its key is acknowledged here (or heard of
//! from another instance), nobody joins it any more: a later request starts
//! a new flight. Its own write carries its lease's fencing token, which the
//! store refuses after the invalidation's tombstone.
//!
//! The fleet lock is a lease (`--fetch-lease`): taken only once an upstream
//! slot is held (waiting for a slot holds no lease), renewed while the call
//! runs, and lapsing within the lease if its holder dies, so that another
//! instance's waiter takes the fetch over.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::task::TaskTracker;

use super::counters::CacheCounters;
use super::entry::{Entry, Freshness};
use super::fleet::changes::Changes;
use super::fleet::lease::{self, Waited};
use super::judge::Judge;
use super::key::CacheKey;
use super::policy::{store_ttl, CachePolicy};
use super::settings::CacheSettings;
use super::slots::{Slot, Slots};
use super::store::{Lease, LockState, StampClock, Store};
use crate::clock::Clock;
use crate::upstream::{Answer, Fetch, FetchError};
use crate::user::UserId;
use crate::widget::Instance;

use super::fetched::{FetchResult, Fetched, Flight, InFlight, Start};
use super::turns::{Requester, Urgency, Work};

/// What single flight shares with the read policy: handed in whole.
pub(crate) struct FlightParts {
    /// Where entries live.
    pub(crate) store: Arc<dyn Store>,
    /// The fleet's fetch leases (their tokens fence the store's writes).
    pub(crate) lease: Arc<dyn Lease>,
    /// Where landings are announced, and invalidations heard (epochs).
    pub(crate) changes: Arc<Changes>,
    /// Where data comes from (the widgets API; a fake in unit tests).
    pub(crate) fetcher: Arc<dyn Fetch>,
    /// Whether a stored entry counts now.
    pub(crate) judge: Judge,
    /// How a fetched body becomes an entry (its lifetimes).
    pub(crate) policy: Arc<CachePolicy>,
    pub(crate) clock: Arc<dyn Clock>,
    /// `percache_cache_requests_total` (a background `304` counts there).
    pub(crate) counters: Arc<CacheCounters>,
    /// Slots for upstream calls in flight, with a bulkhead and a breaker per widget.
    pub(crate) slots: Arc<Slots>,
}

/// The fetches in flight of one process, and what they need.
pub struct Flights {
    store: Arc<dyn Store>,
    lease: Arc<dyn Lease>,
    changes: Arc<Changes>,
    fetcher: Arc<dyn Fetch>,
    judge: Judge,
    policy: Arc<CachePolicy>,
    clock: Arc<dyn Clock>,
    counters: Arc<CacheCounters>,
    slots: Arc<Slots>,
    /// How long a request waits for a fetch in flight.
    wait_deadline: Duration,
    /// The fleet-wide fetch lease's length (`--fetch-lease`): renewed
    /// while its fetch runs, it lapses this long after its owner dies.
    lease_for: Duration,
    /// How long a key is not fetched again after a failed fetch.
    failure_backoff: Duration,
    /// Most fetches in flight at which background ones still start.
    max_background: usize,
    /// Most prewarm fetches queued at once (`--prewarm-queue`).
    prewarm_queue: usize,
    /// Stamps for fetches made without a lease (the store is down).
    stamps: StampClock,
    inflight: Mutex<HashMap<CacheKey, InFlight>>,
    /// Prewarm fetches started and not ended (`--prewarm-queue` bounds them).
    prewarms: Arc<AtomicUsize>,
    /// Of those, the ones waiting for an upstream slot (`percache_prewarm_queue`).
    prewarm_waiting: Arc<AtomicUsize>,
    /// How long the last prewarm to get its slot waited, in ms (`u64::MAX`: none yet).
    last_prewarm_wait_ms: AtomicU64,
    /// The last fetch error of each key (in plain words), for as long as its
    /// backoff lasts, so an error card says why ("TLS failed: unknown
    /// issuer"), not only that the key is in backoff. Each with when it
    /// ends by the cache's clock.
    last_errors: moka::sync::Cache<CacheKey, (Arc<str>, i64)>,
    /// Every fetch task, so that shutdown can wait for them to land.
    tasks: TaskTracker,
}

/// How much longer a failure's cause is kept than its backoff.
const CAUSE_MARGIN: Duration = Duration::from_secs(1);

/// The last errors' table: kept a little longer than a backoff lasts (the
/// clock decides), since the failure marker the cause goes with is written
/// a moment after it: a request in between would lose the cause.
fn last_errors(failure_backoff: Duration) -> moka::sync::Cache<CacheKey, (Arc<str>, i64)> {
    moka::sync::Cache::builder()
        .max_capacity(10_000)
        .time_to_live(failure_backoff + CAUSE_MARGIN)
        .build()
}

impl Flights {
    /// Single flight over `parts`, by `settings`; a request waits for a
    /// fetch at most `wait_deadline`.
    pub(crate) fn new(parts: FlightParts, settings: &CacheSettings, wait_deadline: Duration) -> Self {
        Self {
            store: parts.store,
            lease: parts.lease,
            changes: parts.changes,
            fetcher: parts.fetcher,
            judge: parts.judge,
            policy: parts.policy,
            clock: parts.clock,
            counters: parts.counters,
            slots: parts.slots,
            wait_deadline,
            lease_for: settings.lease(),
            failure_backoff: settings.failure_backoff,
            max_background: settings.max_background_fetches,
            prewarm_queue: settings.prewarm_queue,
            stamps: StampClock::default(),
            inflight: Mutex::new(HashMap::new()),
            prewarms: Arc::default(),
            prewarm_waiting: Arc::default(),
            last_prewarm_wait_ms: AtomicU64::new(u64::MAX),
            last_errors: last_errors(settings.failure_backoff),
            tasks: TaskTracker::new(),
        }
    }

    /// The status of the key's last fetch if it failed and the key is in
    /// its backoff (no instance retries it meanwhile).
    pub(crate) async fn backoff(&self, key: &CacheKey) -> Option<u16> {
        match self.lease.lock_state(key).await {
            Ok(LockState::Failed(status)) => Some(status),
            _ => None,
        }
    }

    /// How long a request waits for a fetch in flight.
    pub(crate) fn wait_deadline(&self) -> Duration {
        self.wait_deadline
    }

    /// Seconds left of a pause of `widget`'s upstream calls (its breaker is
    /// open, or the upstream asked to wait), if paused.
    pub(crate) fn paused(&self, widget: usize) -> Option<u64> {
        self.slots.paused(widget)
    }

    /// Number of fetches in flight in this process.
    pub fn fetches_in_flight(&self) -> usize {
        self.inflight.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    /// Waits until every fetch task has ended, at most `bound` (graceful
    /// shutdown). Fetches started meanwhile are waited for too.
    pub async fn wait_idle(&self, bound: Duration) -> bool {
        self.tasks.close();
        let done = tokio::time::timeout(bound, self.tasks.wait()).await.is_ok();
        // Still usable if the server keeps running (tests stop and go on).
        self.tasks.reopen();
        done
    }

    /// Starts (or joins) a fetch nobody waits for: a stale entry's refresh
    /// (prewarm has its queue: [`Flights::start_prewarm`]). Skipped when `--max-background-fetches` fetches are
    /// already in flight, so a burst of stale reads cannot pile up unbounded
    /// upstream calls; the stale entry is served and refreshed on a later read.
    pub(crate) fn start_background(
        self: &Arc<Self>,
        key: &CacheKey,
        user: &UserId,
        instance: &Instance,
        seen: i64,
    ) -> bool {
        if self.fetches_in_flight() >= self.max_background {
            return skipped(None);
        }
        if self.slots.available() == 0 {
            return skipped(Some("background_skipped"));
        }
        self.join_or_start(key, user, instance, Start::Recheck(seen), Work::Refresh);
        true
    }

    /// Starts (or joins) a sign-in's prewarm fetch. Unlike other background
    /// work it is not skipped when every slot is busy: it waits for one in
    /// the prewarm queue (fair across addresses and users, behind every
    /// request), holding no fleet lease meanwhile. Skipped, and counted,
    /// only when `--prewarm-queue` prewarms are already waiting.
    pub(crate) fn start_prewarm(
        self: &Arc<Self>,
        key: &CacheKey,
        user: &UserId,
        instance: &Instance,
        seen: i64,
    ) -> bool {
        if self.prewarms.load(Ordering::SeqCst) >= self.prewarm_queue {
            return skipped(Some("prewarm_skipped"));
        }
        self.join_or_start(key, user, instance, Start::Recheck(seen), Work::Prewarm);
        true
    }

    /// How long the last prewarm to get its upstream slot had waited.
    pub fn last_prewarm_wait(&self) -> Option<Duration> {
        match self.last_prewarm_wait_ms.load(Ordering::SeqCst) {
            u64::MAX => None,
            ms => Some(Duration::from_millis(ms)),
        }
    }

    /// Prewarm fetches waiting for an upstream slot (`percache_prewarm_queue`).
    pub fn prewarm_queue(&self) -> usize {
        self.prewarm_waiting.load(Ordering::SeqCst)
    }

    /// Joins the fetch in flight for `key`, or starts one. Returns the
    /// channel its result arrives on and whether this call started it. A
    /// fetch started here waits for its upstream slot in the turn of the
    /// request being served (its client address) and of `user`, in the
    /// class of its `work`; a request that joins a background fetch still
    /// waiting for its slot makes it wait as a request.
    pub(crate) fn join_or_start(
        self: &Arc<Self>,
        key: &CacheKey,
        user: &UserId,
        instance: &Instance,
        start: Start,
        work: Work,
    ) -> (Flight, bool) {
        let mut map = self.inflight.lock().unwrap_or_else(PoisonError::into_inner);
        // A flight that already has its result is leaving the map: its data
        // may be older than what the caller needs, so start a new one. One
        // that began before an invalidation of its key is not for anyone
        // who came after it.
        if let Some(running) = map
            .get(key)
            .filter(|f| f.flight.borrow().is_none() && !self.changes.superseded(key, f.epoch))
        {
            if work == Work::Request {
                running.urgency.raise();
            }
            return (running.flight.clone(), false);
        }
        let (tx, rx) = watch::channel(None);
        let epoch = self.changes.epoch();
        let urgency = Arc::new(Urgency::default());
        map.insert(
            key.clone(),
            InFlight {
                flight: rx.clone(),
                epoch,
                urgency: Arc::clone(&urgency),
            },
        );
        drop(map);
        // A prewarm counts against the queue's bound until its fetch ends.
        let prewarm = (work == Work::Prewarm).then(|| Counted::new(&self.prewarms));

        let guard = InflightGuard {
            flights: Arc::clone(self),
            key: key.clone(),
            flight: rx.clone(),
        };
        let who = Requester {
            work,
            address: super::turns::client(),
            user: Arc::from(user.tag().as_str()),
            urgency: Some(urgency),
        };
        let user = user.clone();
        let instance = instance.clone();
        actix_web::rt::spawn(self.tasks.track_future(async move {
            let result = guard
                .flights
                .fetch_and_store(&guard.key, &user, &instance, start, &who)
                .await;
            let outcome = match &result {
                Ok(Fetched { remote: true, .. }) => "collapsed",
                Ok(Fetched {
                    revalidated: true, ..
                }) => "revalidated",
                Ok(_) => "ok",
                Err(_) => "error",
            };
            metrics::counter!("percache_refresh_total", "outcome" => outcome).increment(1);
            // A background fetch's 304 has no request to count it.
            if work != Work::Request && outcome == "revalidated" {
                let revalidated = super::outcome::Outcome::Revalidated { collapsed: false };
                guard.flights.counters.count(&instance.widget, revalidated);
            }
            // Publish first, then leave the map (the guard's drop): a request
            // arriving in between joins a channel that already holds the result.
            let _ = tx.send(Some(result));
            drop(guard);
            drop(prewarm);
        }));
        (rx, true)
    }

    /// The leader's work: (re)check the store, take the fleet-wide lock, fetch,
    /// store, release. If another instance holds the lock, wait for its
    /// result instead of calling the upstream.
    async fn fetch_and_store(
        &self,
        key: &CacheKey,
        user: &UserId,
        instance: &Instance,
        start: Start,
        who: &Requester,
    ) -> FetchResult {
        // An entry of another definition of the widget is not data for us.
        // Entries as they count now (fingerprint, invalidations).
        let judge = |e: Option<Arc<Entry>>| e.and_then(|e| self.judge.judged(e, instance));
        // What another fetch's landing must be to be handed on as ours:
        // current (not made stale by an invalidation since), and written by
        // a fetch itself (not a soft invalidation's stale copy of old data).
        let landed = |e: Option<Arc<Entry>>| {
            e.filter(|e| e.started == e.generation)
                .and_then(|e| self.judge.current(e, instance))
        };
        let (seen, known) = match self.store.get(key).await.map(judge) {
            // A fetch may have landed between our caller's read and our start.
            Ok(Some(entry))
                if matches!(start, Start::Recheck(seen) if entry.fetched_at > seen)
                    && entry.freshness(self.clock.now_ms()) == Freshness::Fresh =>
            {
                return Ok(Fetched::remote(entry));
            }
            // The entry a conditional refresh may renew: one a fetch wrote,
            // untouched by any invalidation since (which drops validators).
            Ok(entry) => (
                entry.as_ref().map_or(i64::MIN, |e| e.fetched_at),
                landed(entry).filter(|e| e.validators.is_some()),
            ),
            Err(_) => return self.fetch_unlocked(key, user, instance, who).await,
        };
        let deadline = tokio::time::Instant::now() + self.wait_deadline;
        loop {
            // A slot first: a fetch waiting for one holds no lease, so it
            // cannot lapse before the call is even made.
            let slot = match self.upstream_slot(instance, who).await {
                Ok(slot) => slot,
                Err(e) => return Err(self.remember_failure(key, e)),
            };
            match self
                .lease
                .acquire(key, self.lease_for, start == Start::Force)
                .await
            {
                // The call's part boxed (here and below): a fetch that
                // waits for its slot (a queued prewarm) holds only the
                // waiting part, not room for the call it has yet to make.
                Ok(LockState::Acquired(token)) => {
                    return Box::pin(self.fetch_leased(key, user, instance, slot, Some(token), known)).await;
                }
                Ok(LockState::Free) | Err(_) => {
                    return Box::pin(self.fetch_leased(key, user, instance, slot, None, known)).await
                }
                Ok(LockState::Failed(status)) => return Err(self.recent_failure(key, status)),
                Ok(LockState::Busy) => drop(slot),
            }
            // Another instance is fetching: wait for its entry or its failure.
            let tag = user.tag().as_str();
            match lease::wait_for_other_fetch(
                &*self.store,
                &*self.lease,
                &self.changes,
                tag,
                key,
                seen,
                deadline,
                landed,
            )
            .await
            {
                Waited::Landed(entry) => return Ok(Fetched::remote(entry)),
                Waited::Failed(status) => return Err(self.recent_failure(key, status)),
                Waited::Released => {}
                Waited::StoreDown => return self.fetch_unlocked(key, user, instance, who).await,
                Waited::Timeout => return Err(FetchError::Timeout),
            }
        }
    }

    /// Fetches without the fleet's lease (the store is down): still single
    /// flight in this process.
    async fn fetch_unlocked(
        &self,
        key: &CacheKey,
        user: &UserId,
        instance: &Instance,
        who: &Requester,
    ) -> FetchResult {
        match self.upstream_slot(instance, who).await {
            Ok(slot) => Box::pin(self.fetch_leased(key, user, instance, slot, None, None)).await,
            Err(e) => Err(self.remember_failure(key, e)),
        }
    }

    /// Calls the upstream in `slot` under the lease `token` (if held, renewed
    /// while the call runs), stores the entry (the token is its fencing
    /// stamp, checked by the store's write) and releases the lease, leaving
    /// a failure marker for the backoff when the call failed. With `known`
    /// (the stored entry and its validators), the call is conditional, and
    /// a `304` renews that entry: new fetch time, same data.
    async fn fetch_leased(
        &self,
        key: &CacheKey,
        user: &UserId,
        instance: &Instance,
        slot: Slot,
        token: Option<u64>,
        known: Option<Arc<Entry>>,
    ) -> FetchResult {
        // Stamped before the call: data fetched across an invalidation is
        // older than it. Without a lease (the store is down), from our own
        // stamp clock: such an entry cannot be stored anyway.
        let stamp = token.unwrap_or_else(|| self.stamps.next(self.clock.now_ms()));
        let validators = known
            .as_ref()
            .and_then(|k| k.validators.as_deref().cloned())
            .unwrap_or_default();
        let call = self
            .fetcher
            .fetch_conditional(user.as_str(), instance, &validators);
        let result = match token {
            Some(token) => {
                let renew = self.renew_lease(key, token);
                tokio::select! {
                    result = call => result,
                    never = renew => match never {},
                }
            }
            None => call.await,
        };
        drop(slot);
        self.slots.record(instance.widget.index, &result);
        let now = self.clock.now_ms();
        let widget = &instance.widget;
        let mut revalidated = false;
        let result = result.and_then(|answer| {
            let (data, validators) = match (answer, &known) {
                (Answer::Body(data, validators), _) => (data, validators),
                (Answer::NotModified(validators), Some(known)) => {
                    revalidated = true;
                    (known.data.clone(), validators)
                }
                // Not asked: a 304 then says nothing of our data.
                (Answer::NotModified(_), None) => return Err(FetchError::Status(304)),
            };
            let mut entry = self.policy.entry(widget.index, widget.fingerprint, data, now);
            entry.generation = stamp;
            entry.started = stamp;
            entry.validators = validators.boxed();
            Ok(Arc::new(entry))
        });
        if let Ok(entry) = &result {
            let stored = self
                .store
                .put(key, Arc::clone(entry), store_ttl(entry, now), None)
                .await;
            match &stored {
                Ok(true) => {}
                Ok(false) => {
                    tracing::debug!(widget = %widget.id, "fetch superseded (an invalidation, or a newer fetch): not stored");
                    metrics::counter!("percache_refresh_total", "outcome" => "superseded").increment(1);
                }
                Err(e) => {
                    tracing::warn!(error = %e, widget = %widget.id, "store write failed; entry served but not cached")
                }
            }
            // Other instances can only see the new entry if it reached the store.
            if !matches!(stored, Ok(false)) {
                self.changes.announce(key, stored.is_ok()).await;
            }
        }
        if let Err(e) = &result {
            self.remember_failure(key, e.clone());
        }
        if let Some(token) = token {
            let failed = result.as_ref().err().map(|e| (e.status(), self.failure_backoff));
            let released = self.lease.release(key, token, failed).await;
            if let Err(e) = &released {
                tracing::warn!(error = %e, widget = %widget.id, "could not release the fetch lease; it lapses by itself");
            }
            // A failure leaves no entry to announce: announce the key anyway,
            // so that other instances' requests waiting on this fetch learn
            // of the failure marker at once.
            if failed.is_some() {
                self.changes.announce(key, released.is_ok()).await;
            }
        }
        result.map(|entry| Fetched {
            entry,
            remote: false,
            revalidated,
        })
    }

    /// Renews the lease `token` of `key` every third of its life, for as long
    /// as it is polled (the call it guards runs). Never ends: a lease that
    /// is lost (an invalidation dropped it, or a stall let it lapse) is only
    /// logged, since the store's write checks the token anyway.
    async fn renew_lease(&self, key: &CacheKey, token: u64) -> std::convert::Infallible {
        let every = (self.lease_for / 3).max(Duration::from_millis(10));
        loop {
            tokio::time::sleep(every).await;
            match self.lease.renew(key, token, self.lease_for).await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::debug!(key = key.as_str(), "fetch lease lost; its write will be fenced");
                    return std::future::pending().await;
                }
                Err(e) => tracing::debug!(error = %e, "could not renew a fetch lease"),
            }
        }
    }

    /// Keeps `error` as the key's last one for the backoff's length.
    fn remember_failure(&self, key: &CacheKey, error: FetchError) -> FetchError {
        let until = self
            .clock
            .now_ms()
            .saturating_add(self.failure_backoff.as_millis() as i64);
        self.last_errors
            .insert(key.clone(), (Arc::from(error.plain()), until));
        error
    }

    /// The error of a key in failure backoff, with the cause this instance
    /// saw (another instance's failure has only its status).
    fn recent_failure(&self, key: &CacheKey, status: u16) -> FetchError {
        let now = self.clock.now_ms();
        // The marker says the key is in backoff; its cause was recorded a
        // moment before it (kept a little past its own end for that).
        let margin = CAUSE_MARGIN.as_millis() as i64;
        let cause = self
            .last_errors
            .get(key)
            .filter(|(_, until)| now < until + margin);
        FetchError::RecentFailure(status, cause.map(|(cause, _)| cause))
    }

    /// A slot for one upstream call of `instance`'s widget (its share of
    /// `--max-upstream-calls`, then one of all), waited for within the
    /// deadline every waiter on this fetch has; at once an error while the
    /// widget's breaker is open.
    async fn upstream_slot(&self, instance: &Instance, who: &Requester) -> Result<Slot, FetchError> {
        let widget = instance.widget.index;
        let urgency = who.urgency.as_deref();
        if who.work == Work::Request || urgency.is_some_and(Urgency::is_raised) {
            return self
                .slots
                .acquire(widget, self.wait_deadline, &who.as_request())
                .await;
        }
        // Background work waits behind every request: a queued prewarm as
        // long as the queue takes (it is bounded by `--prewarm-queue`, not
        // by a deadline), a refresh no longer than a request would.
        let prewarm = who.work == Work::Prewarm;
        let queued = prewarm.then(|| Counted::new(&self.prewarm_waiting));
        let since = tokio::time::Instant::now();
        let within = if prewarm { PREWARM_WAIT } else { self.wait_deadline };
        let raised = async {
            match urgency {
                Some(u) => u.raised().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            slot = self.slots.acquire(widget, within, who) => {
                if prewarm && slot.is_ok() {
                    let waited = since.elapsed().as_millis().min(u128::from(u64::MAX)) as u64;
                    self.last_prewarm_wait_ms.store(waited, Ordering::SeqCst);
                }
                slot
            }
            () = raised => {
                drop(queued);
                self.slots.acquire(widget, self.wait_deadline, &who.as_request()).await
            }
        }
    }

    /// Waits for a fetch's result, at most `wait_deadline`.
    pub(crate) async fn wait(&self, mut flight: Flight) -> FetchResult {
        let waited = tokio::time::timeout(self.wait_deadline, flight.wait_for(Option::is_some)).await;
        match waited {
            Ok(Ok(result)) => result.clone().unwrap_or(Err(FetchError::Abandoned)),
            Ok(Err(_closed)) => Err(FetchError::Abandoned),
            Err(_elapsed) => Err(FetchError::Timeout),
        }
    }
}

/// Removes a key from the in-flight map when its fetch task ends, however it
/// ends (a panic included), so a key can never stay stuck "in flight".
struct InflightGuard {
    flights: Arc<Flights>,
    key: CacheKey,
    /// Our own flight: the map entry is removed only if it is still ours.
    flight: Flight,
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        let mut map = self
            .flights
            .inflight
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if map
            .get(&self.key)
            .is_some_and(|f| f.flight.same_channel(&self.flight))
        {
            map.remove(&self.key);
        }
    }
}

/// Counts a background fetch that was not started, and the cap of the
/// upstream's slots it met (`percache_upstream_capped_total{kind}`), if it
/// was one; `false`, for the caller to return.
fn skipped(capped: Option<&'static str>) -> bool {
    if let Some(kind) = capped {
        metrics::counter!("percache_upstream_capped_total", "kind" => kind).increment(1);
    }
    metrics::counter!("percache_refresh_total", "outcome" => "skipped").increment(1);
    false
}

/// Longest a queued prewarm waits for its upstream slot.
const PREWARM_WAIT: Duration = Duration::from_secs(600);

/// One unit of a count, given back when dropped.
struct Counted(Arc<AtomicUsize>);

impl Counted {
    fn new(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        Self(Arc::clone(count))
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}
