//! The cache proper: policy decisions and single flight over a [`Store`].
//!
//! For one (user, widget) at most one upstream fetch runs in this process at
//! a time. The first request that needs data becomes the leader: it registers
//! a `watch` channel in the in-flight map and spawns the fetch as a task on
//! its worker (so the fetch finishes even if the client goes away, and
//! prewarm needs no client at all). Everyone else who needs the same key
//! joins that channel. The leader stores the entry *before* it publishes the
//! result and leaves the map, and a new leader re-reads the store before
//! calling the upstream, so a request that read "miss" just before a fetch
//! landed does not fetch a second time.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::future::join_all;
use tokio::sync::watch;
use tokio_util::task::TaskTracker;

use crate::cache::directives::Directives;
use crate::cache::entry::{Entry, Freshness};
use crate::cache::generations::{Kind, Verdict};
use crate::cache::key::CacheKey;
use crate::cache::policy::{store_ttl, CachePolicy};
use crate::cache::store::feed::Watch;
use crate::cache::store::near::NearCache;
use crate::cache::store::{LockState, Store, StoreError};
use crate::clock::Clock;
use crate::upstream::{Fetch, FetchError};
use crate::user::UserId;
use crate::widget::{Instance, Registry, Widget};

pub use super::outcome::{Lookup, Outcome};

/// A fetch's result as handed to every waiter.
#[derive(Debug, Clone)]
struct Fetched {
    entry: Arc<Entry>,
    /// The data came from another fetch (another instance's, or one that had
    /// just landed), not from this task's upstream call.
    remote: bool,
}

type FetchResult = Result<Fetched, FetchError>;

/// What a new fetch does before calling the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Start {
    /// Re-read the store and use a fresh entry newer than the one the caller
    /// saw (its `fetched_at`; `i64::MIN` for none): a fetch may have landed
    /// since. Respects a failure backoff.
    Recheck(i64),
    /// Fetch regardless (a forced refresh); may take over a failure backoff.
    Force,
}

/// The `fetched_at` of an entry the caller saw, for [`Start::Recheck`].
fn seen(entry: Option<&Arc<Entry>>) -> i64 {
    entry.map_or(i64::MIN, |e| e.fetched_at)
}
type Flight = watch::Receiver<Option<FetchResult>>;

/// The per-user widget cache shared by all workers.
pub struct WidgetCache {
    store: Arc<NearCache>,
    /// Where data comes from (the widgets API; a fake in unit tests).
    fetcher: Arc<dyn Fetch>,
    registry: Arc<Registry>,
    policy: CachePolicy,
    clock: Arc<dyn Clock>,
    /// How long a request waits for a fetch in flight.
    wait_deadline: Duration,
    /// How long the fleet-wide fetch lock lives if its owner dies.
    lock_ttl: Duration,
    /// How long a key is not fetched again after a failed fetch.
    failure_backoff: Duration,
    /// Most fetches in flight at which background ones still start.
    max_background: usize,
    /// Past ttl, how long a request waits before the old entry is served.
    soft_timeout: Duration,
    /// Slots for upstream calls in flight (`--max-upstream-calls`).
    upstream_slots: Arc<tokio::sync::Semaphore>,
    /// Fraction of the fresh window after which a read refreshes eagerly (0: off).
    eager: f64,
    inflight: Mutex<HashMap<CacheKey, Flight>>,
    /// The last fetch error of each key, for as long as its backoff lasts,
    /// so an error card says why ("TLS failed: unknown issuer"), not only
    /// that the key is in backoff.
    /// Each with when it ends by the cache's clock.
    last_errors: moka::sync::Cache<CacheKey, (Arc<str>, i64)>,
    /// Every fetch task, so that shutdown can wait for them to land.
    tasks: TaskTracker,
    /// Pages with a live connection on this instance (see `cache::live`).
    pub(crate) open_pages: std::sync::atomic::AtomicUsize,
}

/// Most parameter combinations of one widget that an invalidation deletes.
/// Parameters are enumerations, so this covers every real widget; a file
/// with more combinations than this has its rarest ones expire by ttl.
pub const MAX_INSTANCES_INVALIDATED: usize = 256;

/// How often a request waiting on another instance's fetch looks at the
/// store when no change announcement arrives (a lost message).
const FLEET_WAIT_FALLBACK: Duration = Duration::from_millis(250);

/// How often every widget's invalidation generation is reloaded from Redis.
pub const GENERATION_RELOAD: Duration = Duration::from_secs(5);

/// Default `--max-upstream-calls`.
pub const DEFAULT_MAX_UPSTREAM_CALLS: usize = 256;

/// Default `--soft-timeout`.
pub const DEFAULT_SOFT_TIMEOUT: Duration = Duration::from_millis(300);
/// Default `--eager-refresh`.
pub const DEFAULT_EAGER: f64 = 0.8;

/// Default cap on fetches in flight for background work.
pub const DEFAULT_MAX_BACKGROUND: usize = 512;

impl WidgetCache {
    /// Caps the fetches in flight at which background refreshes and prewarm
    /// still start (`--max-background-fetches`).
    pub fn with_max_background(mut self, max: usize) -> Self {
        self.max_background = max;
        self
    }

    /// Caps the upstream calls in flight in this instance (`--max-upstream-calls`).
    pub fn with_max_upstream_calls(mut self, max: usize) -> Self {
        self.upstream_slots = Arc::new(tokio::sync::Semaphore::new(max.max(1)));
        self
    }

    /// Past ttl, how long a request waits for the upstream before the old
    /// entry is served as outdated (`--soft-timeout`).
    pub fn with_soft_timeout(mut self, soft_timeout: Duration) -> Self {
        self.soft_timeout = soft_timeout;
        self
    }

    /// The fraction of a fresh window after which a read starts a
    /// background refresh (`--eager-refresh`; 0 turns it off).
    pub fn with_eager_refresh(mut self, fraction: f64) -> Self {
        self.eager = fraction;
        self
    }

    /// A cache over `store`. A request waits for a fetch at most the
    /// upstream timeout plus a margin; the fleet-wide lock lives as long.
    pub fn new(
        store: Arc<NearCache>,
        fetcher: Arc<dyn Fetch>,
        registry: Arc<Registry>,
        policy: CachePolicy,
        clock: Arc<dyn Clock>,
        upstream_timeout: Duration,
        failure_backoff: Duration,
    ) -> Self {
        let wait_deadline = upstream_timeout + Duration::from_secs(1);
        Self {
            store,
            fetcher,
            registry,
            policy,
            clock,
            wait_deadline,
            lock_ttl: wait_deadline,
            failure_backoff,
            max_background: DEFAULT_MAX_BACKGROUND,
            soft_timeout: DEFAULT_SOFT_TIMEOUT,
            upstream_slots: Arc::new(tokio::sync::Semaphore::new(DEFAULT_MAX_UPSTREAM_CALLS)),
            eager: DEFAULT_EAGER,
            inflight: Mutex::new(HashMap::new()),
            last_errors: moka::sync::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(failure_backoff.max(Duration::from_millis(1)))
                .build(),
            open_pages: std::sync::atomic::AtomicUsize::new(0),
            tasks: TaskTracker::new(),
        }
    }

    /// The store behind the cache.
    pub fn store(&self) -> &Arc<NearCache> {
        &self.store
    }

    /// The widgets this cache serves.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// A registration for `user`'s changes, in this instance or (with
    /// Redis) any other: only that user's changes wake it. On a cluster it
    /// returns once this instance follows the user's sharded channel.
    pub async fn watch(&self, user: &UserId) -> Watch {
        let watch = self.store.feed().watch(user.tag().as_str());
        self.store.follow(user.tag().as_str()).await;
        watch
    }

    /// The clock the cache decides with.
    pub fn now(&self) -> i64 {
        self.clock.now_ms()
    }

    /// The clock itself (to sleep by it).
    pub(crate) fn clock(&self) -> &dyn Clock {
        &*self.clock
    }

    /// Serves one widget by the server's policy: fresh → hit; stale →
    /// served at once plus one background refresh; past ttl → the fetch,
    /// waited for at most `--soft-timeout` before the old entry is served.
    pub async fn get(self: &Arc<Self>, user: &UserId, instance: &Instance) -> Lookup {
        self.get_with(user, instance, Directives::default()).await
    }

    /// Serves one widget, honouring the request's own directives (RFC 9111).
    pub async fn get_with(
        self: &Arc<Self>,
        user: &UserId,
        instance: &Instance,
        directives: Directives,
    ) -> Lookup {
        if directives.no_cache && !directives.only_if_cached {
            return self.refresh(user, instance).await;
        }
        let key = user.tag().key(instance);
        let (cached, store_unavailable) = self.read(&key, instance).await;
        let now = self.clock.now_ms();
        if let Some(entry) = &cached {
            let served = self
                .serve_cached(&key, entry, now, user, instance, directives)
                .await;
            if let Some(outcome) = served {
                return self.lookup(instance, cached, outcome, None, store_unavailable, now);
            }
        }
        if directives.only_if_cached {
            return self.lookup(
                instance,
                None,
                Outcome::OnlyIfCached,
                None,
                store_unavailable,
                now,
            );
        }
        // Past ttl but within grace, and the request asks nothing fresher:
        // nobody waits longer than the soft timeout for data the cache holds.
        let fallback = cached
            .as_ref()
            .filter(|e| e.freshness(now) == Freshness::Expired && !directives.demands_fresher());
        let (flight, mut leader) =
            self.join_or_start(&key, user, instance, Start::Recheck(seen(cached.as_ref())));
        let mut result = match fallback {
            Some(old) => match tokio::time::timeout(self.soft_timeout, self.wait(flight)).await {
                Ok(result) => result,
                Err(_slow) => {
                    // The fetch goes on (its task owns it) and lands in the
                    // cache and, through the change feed, on the page.
                    let now = self.clock.now_ms();
                    let outcome = Outcome::Outdated {
                        ttl: old.ttl_secs(now),
                    };
                    return self.lookup(instance, cached.clone(), outcome, None, store_unavailable, now);
                }
            },
            None => self.wait(flight).await,
        };
        // The flight we joined may have started before our read, or been a
        // recheck that found an entry fresh under an older reading of the
        // clock: if its entry is already past ttl for us, fetch for real, once.
        // (Past ttl, not merely stale: with `--fresh 0` every entry is stale.)
        let now = self.clock.now_ms();
        let too_old = match &result {
            Ok(f) if matches!(f.entry.freshness(now), Freshness::Expired | Freshness::Dead) => {
                Some(f.entry.fetched_at)
            }
            _ => None,
        };
        if let Some(old) = too_old {
            let (flight, led) = self.join_or_start(&key, user, instance, Start::Recheck(old));
            leader = led;
            result = self.wait(flight).await;
        }
        self.settle(
            instance,
            cached,
            result,
            Outcome::Miss { collapsed: !leader },
            store_unavailable,
        )
    }

    /// The outcome of serving a cached entry at once, if `directives` let
    /// it be served; starts the refresh it calls for (eager, stale or
    /// outdated) unless the request forbids upstream calls.
    #[allow(clippy::too_many_arguments)]
    async fn serve_cached(
        self: &Arc<Self>,
        key: &CacheKey,
        entry: &Entry,
        now: i64,
        user: &UserId,
        instance: &Instance,
        directives: Directives,
    ) -> Option<Outcome> {
        let ttl = entry.ttl_secs(now);
        let refresh = !directives.only_if_cached;
        match entry.freshness(now) {
            Freshness::Fresh if directives.accepts(entry, now) => {
                if refresh && self.eager_due(entry, now) {
                    self.start_background(key, user, instance, entry.fetched_at);
                    Some(Outcome::Eager { ttl })
                } else {
                    Some(Outcome::Hit { ttl })
                }
            }
            Freshness::Stale if directives.accepts(entry, now) && directives.min_fresh.is_none() => {
                if refresh {
                    Some(
                        self.serve_and_refresh(key, entry, user, instance, Outcome::Stale { ttl })
                            .await,
                    )
                } else {
                    Some(Outcome::Stale { ttl })
                }
            }
            Freshness::Expired if directives.allows_past_ttl(entry, now) => {
                if refresh {
                    Some(
                        self.serve_and_refresh(key, entry, user, instance, Outcome::Outdated { ttl })
                            .await,
                    )
                } else {
                    Some(Outcome::Outdated { ttl })
                }
            }
            _ => None,
        }
    }

    /// Whether a fresh entry is late enough in its window to refresh eagerly.
    fn eager_due(&self, entry: &Entry, now: i64) -> bool {
        if self.eager <= 0.0 {
            return false;
        }
        let window = (entry.fresh_until - entry.fetched_at).max(0) as f64;
        now >= entry.fetched_at + (window * self.eager) as i64
    }

    /// Forced refresh: bypasses freshness, but joins a fetch already in flight.
    pub async fn refresh(self: &Arc<Self>, user: &UserId, instance: &Instance) -> Lookup {
        let key = user.tag().key(instance);
        let (cached, store_unavailable) = self.read(&key, instance).await;
        let (flight, leader) = self.join_or_start(&key, user, instance, Start::Force);
        let result = self.wait(flight).await;
        self.settle(
            instance,
            cached,
            result,
            Outcome::Forced { collapsed: !leader },
            store_unavailable,
        )
    }

    /// What the dashboard renders inline: for every widget at its defaults,
    /// the entry within grace, if any (`None`: a placeholder). Stale and
    /// outdated ones start their refresh, which the open page swaps in when
    /// it lands. One store round trip for all of them (MGET).
    pub async fn peek_all(self: &Arc<Self>, user: &UserId) -> Vec<(Instance, Option<Lookup>)> {
        let (instances, keys) = self.dashboard_keys(user);
        let (entries, store_unavailable) = self.read_many(&keys, &instances).await;
        let now = self.clock.now_ms();
        let mut out = Vec::with_capacity(instances.len());
        for ((instance, key), cached) in instances.into_iter().zip(&keys).zip(entries) {
            let lookup = match &cached {
                Some(entry) => self
                    .serve_cached(key, entry, now, user, &instance, Directives::inline())
                    .await
                    .map(|outcome| {
                        self.lookup(&instance, cached.clone(), outcome, None, store_unavailable, now)
                    }),
                None => None,
            };
            out.push((instance, lookup));
        }
        out
    }

    /// The user's dashboard: every widget at its defaults, and their keys.
    pub(crate) fn dashboard_keys(&self, user: &UserId) -> (Vec<Instance>, Vec<CacheKey>) {
        let instances: Vec<Instance> = self.registry.all().iter().map(|w| w.default_instance()).collect();
        let keys = instances.iter().map(|i| user.tag().key(i)).collect();
        (instances, keys)
    }

    /// Reads one user's keys in one round trip, judged like [`WidgetCache::read`].
    pub(crate) async fn read_many(
        &self,
        keys: &[CacheKey],
        instances: &[Instance],
    ) -> (Vec<Option<Arc<Entry>>>, bool) {
        match self.store.get_many(keys).await {
            Ok(entries) => (
                entries
                    .into_iter()
                    .zip(instances)
                    .map(|(e, i)| e.and_then(|e| self.judged(e, i)))
                    .collect(),
                false,
            ),
            Err(e) => {
                tracing::warn!(error = %e, "store read failed; serving from the upstream");
                (vec![None; keys.len()], true)
            }
        }
    }

    /// Starts fetches of every widget of `user` that is not fresh, without
    /// waiting for them. Returns how many were started or joined.
    pub async fn prewarm(self: &Arc<Self>, user: &UserId) -> usize {
        let reads = self.registry.all().iter().map(|w| {
            let instance = w.default_instance();
            let key = user.tag().key(&instance);
            async move {
                let (cached, _) = self.read(&key, &instance).await;
                (instance, key, cached)
            }
        });
        let now = self.clock.now_ms();
        let mut started = 0;
        for (instance, key, cached) in join_all(reads).await {
            if cached
                .as_ref()
                .is_some_and(|e| e.freshness(now) == Freshness::Fresh)
            {
                continue;
            }
            if self.start_background(&key, user, &instance, seen(cached.as_ref())) {
                started += 1;
            }
        }
        metrics::counter!("percache_prewarm_total").increment(started as u64);
        started
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

    /// Deletes a user's entries for `widgets`, every parameter combination
    /// of each (the invalidation webhook).
    pub async fn invalidate(
        &self,
        user: &UserId,
        widgets: &[Arc<Widget>],
        kind: Kind,
    ) -> Result<(), StoreError> {
        let keys: Vec<CacheKey> = widgets
            .iter()
            .flat_map(|w| w.instances(MAX_INSTANCES_INVALIDATED))
            .map(|i| user.tag().key(&i))
            .collect();
        match kind {
            Kind::Hard => self.store.delete(&keys).await,
            Kind::Soft => self.soften(&keys).await,
        }
    }

    /// Makes entries stale (still served at once, and refreshed), keeping
    /// their ttl and grace. Written back, so every instance sees it.
    async fn soften(&self, keys: &[CacheKey]) -> Result<(), StoreError> {
        let now = self.clock.now_ms();
        for key in keys {
            let Some(entry) = self.store.get(key).await? else {
                continue;
            };
            if entry.freshness(now) != Freshness::Fresh {
                continue;
            }
            let mut stale = (*entry).clone();
            stale.fresh_until = now;
            self.store
                .put(key, Arc::new(stale), store_ttl(&entry, now))
                .await?;
        }
        Ok(())
    }

    /// Invalidates `widgets` for every user at once (the webhook's
    /// `allUsers`): one generation bump per widget, no key scanned.
    pub async fn invalidate_all_users(&self, widgets: &[Arc<Widget>], kind: Kind) -> Result<(), StoreError> {
        for widget in widgets {
            let gen = self.store.bump_generation(widget.id.as_str(), kind).await?;
            tracing::info!(widget = %widget.id, generation = gen.current, ?kind, "widget invalidated for all users");
        }
        Ok(())
    }

    /// Reloads the widgets' generations from the shared store (start-up,
    /// and periodically in case an invalidation announcement was lost).
    pub async fn reload_generations(&self) {
        let ids: Vec<&str> = self.registry.all().iter().map(|w| w.id.as_str()).collect();
        self.store.reload_generations(&ids).await;
    }

    /// Reloads the generations every [`GENERATION_RELOAD`] for as long as
    /// the cache lives: the longest an instance that missed an `allUsers`
    /// announcement serves what it invalidated.
    pub fn spawn_generation_reloads(self: &Arc<Self>) {
        let cache = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(GENERATION_RELOAD);
            loop {
                tick.tick().await;
                let Some(cache) = cache.upgrade() else { return };
                cache.reload_generations().await;
            }
        });
    }

    /// The outcome of serving an entry that needs a refresh (stale or
    /// outdated): normally `served`, with one background refresh started (or
    /// joined); but if the last refresh failed and the key is in backoff,
    /// "stale-if-error" and no new attempt.
    async fn serve_and_refresh(
        self: &Arc<Self>,
        key: &CacheKey,
        entry: &Entry,
        user: &UserId,
        instance: &Instance,
        served: Outcome,
    ) -> Outcome {
        if let Ok(LockState::Failed(status)) = self.store.lock_state(key).await {
            return Outcome::StaleIfError { status };
        }
        self.start_background(key, user, instance, entry.fetched_at);
        served
    }

    /// Reads the store; a store error is logged and reported as a miss with
    /// `store_unavailable` set (fail-open). An entry stored for another
    /// definition of the widget (another fingerprint) is a miss.
    async fn read(&self, key: &CacheKey, instance: &Instance) -> (Option<Arc<Entry>>, bool) {
        match self.store.get(key).await {
            Ok(entry) => (entry.and_then(|e| self.judged(e, instance)), false),
            Err(e) => {
                tracing::warn!(error = %e, "store read failed; serving from the upstream");
                (None, true)
            }
        }
    }

    /// A stored entry as it counts now: none if it was made for another
    /// definition of the widget (fingerprint) or before a hard invalidation
    /// of it for all users; stale if before a soft one.
    fn judged(&self, entry: Arc<Entry>, instance: &Instance) -> Option<Arc<Entry>> {
        if entry.fingerprint != instance.widget.fingerprint {
            return None;
        }
        let gen = self.store.generations().get(instance.id().as_str());
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

    /// Starts (or joins) a fetch nobody waits for: a stale entry's refresh or
    /// prewarm. Skipped when [`WidgetCache::max_background`] fetches are
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
            metrics::counter!("percache_refresh_total", "outcome" => "skipped").increment(1);
            return false;
        }
        if self.upstream_slots.available_permits() == 0 {
            metrics::counter!("percache_upstream_capped_total", "kind" => "background_skipped").increment(1);
            metrics::counter!("percache_refresh_total", "outcome" => "skipped").increment(1);
            return false;
        }
        self.join_or_start(key, user, instance, Start::Recheck(seen));
        true
    }

    /// Joins the fetch in flight for `key`, or starts one. Returns the
    /// channel its result arrives on and whether this call started it.
    fn join_or_start(
        self: &Arc<Self>,
        key: &CacheKey,
        user: &UserId,
        instance: &Instance,
        start: Start,
    ) -> (Flight, bool) {
        let mut map = self.inflight.lock().unwrap_or_else(PoisonError::into_inner);
        // A flight that already has its result is leaving the map: its data
        // may be older than what the caller needs, so start a new one.
        if let Some(flight) = map.get(key).filter(|f| f.borrow().is_none()) {
            return (flight.clone(), false);
        }
        let (tx, rx) = watch::channel(None);
        map.insert(key.clone(), rx.clone());
        drop(map);

        let guard = InflightGuard {
            cache: Arc::clone(self),
            key: key.clone(),
            flight: rx.clone(),
        };
        let user = user.clone();
        let instance = instance.clone();
        actix_web::rt::spawn(self.tasks.track_future(async move {
            let result = guard
                .cache
                .fetch_and_store(&guard.key, &user, &instance, start)
                .await;
            let outcome = match &result {
                Ok(Fetched { remote: true, .. }) => "collapsed",
                Ok(_) => "ok",
                Err(_) => "error",
            };
            metrics::counter!("percache_refresh_total", "outcome" => outcome).increment(1);
            // Publish first, then leave the map (the guard's drop): a request
            // arriving in between joins a channel that already holds the result.
            let _ = tx.send(Some(result));
            drop(guard);
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
    ) -> FetchResult {
        // An entry of another definition of the widget is not data for us.
        // Entries as they count now (fingerprint, invalidations).
        let judge = |e: Option<Arc<Entry>>| e.and_then(|e| self.judged(e, instance));
        let seen = match self.store.get(key).await.map(judge) {
            // A fetch may have landed between our caller's read and our start.
            Ok(Some(entry))
                if matches!(start, Start::Recheck(seen) if entry.fetched_at > seen)
                    && entry.freshness(self.clock.now_ms()) == Freshness::Fresh =>
            {
                return Ok(Fetched { entry, remote: true });
            }
            Ok(entry) => entry.map_or(i64::MIN, |e| e.fetched_at),
            Err(_) => return self.fetch_unlocked(key, user, instance, None).await,
        };
        let token = lock_token(self.clock.now_ms());
        let deadline = tokio::time::Instant::now() + self.wait_deadline;
        loop {
            match self
                .store
                .acquire(key, &token, self.lock_ttl, start == Start::Force)
                .await
            {
                Ok(LockState::Acquired) | Ok(LockState::Free) => {
                    return self.fetch_unlocked(key, user, instance, Some(&token)).await;
                }
                Err(_) => return self.fetch_unlocked(key, user, instance, None).await,
                Ok(LockState::Failed(status)) => return Err(self.recent_failure(key, status)),
                Ok(LockState::Busy) => {}
            }
            // Another instance is fetching: wait for its entry (or its
            // failure), which the change feed announces; polling the store
            // is only a fallback, in case an announcement is lost.
            let watch = self.watch(user).await;
            loop {
                if tokio::time::Instant::now() >= deadline {
                    return Err(FetchError::Timeout);
                }
                // Registered before looking, so an announcement in between
                // is not missed.
                let change = watch.notify().notified();
                tokio::pin!(change);
                change.as_mut().enable();
                match self.store.get(key).await.map(judge) {
                    Ok(Some(entry)) if entry.fetched_at > seen => return Ok(Fetched { entry, remote: true }),
                    Ok(_) => {}
                    Err(_) => return self.fetch_unlocked(key, user, instance, None).await,
                }
                match self.store.lock_state(key).await {
                    Ok(LockState::Busy) => {}
                    Ok(LockState::Failed(status)) => return Err(self.recent_failure(key, status)),
                    // Released: its entry may have landed just before; look once more, then try to lead.
                    Ok(_) => match self.store.get(key).await.map(judge) {
                        Ok(Some(entry)) if entry.fetched_at > seen => {
                            return Ok(Fetched { entry, remote: true })
                        }
                        _ => break,
                    },
                    Err(_) => return self.fetch_unlocked(key, user, instance, None).await,
                }
                tokio::select! {
                    _ = change => {}
                    _ = tokio::time::sleep(FLEET_WAIT_FALLBACK) => {}
                }
            }
        }
    }

    /// Calls the upstream, stores the entry and releases the lock (if held),
    /// leaving a failure marker for the backoff when the call failed.
    async fn fetch_unlocked(
        &self,
        key: &CacheKey,
        user: &UserId,
        instance: &Instance,
        token: Option<&str>,
    ) -> FetchResult {
        // Stamped before the call: data fetched across an invalidation is
        // already older than it.
        let generation = self.store.generations().get(instance.id().as_str()).current;
        let result = match self.upstream_slot().await {
            Ok(slot) => {
                let result = self.fetcher.fetch(user.as_str(), instance).await;
                drop(slot);
                result
            }
            Err(e) => Err(e),
        };
        let now = self.clock.now_ms();
        let widget = &instance.widget;
        let result = result.map(|data| {
            let mut entry = self.policy.entry(widget.index, widget.fingerprint, data, now);
            entry.generation = generation;
            Arc::new(entry)
        });
        if let Ok(entry) = &result {
            if let Err(e) = self
                .store
                .put(key, Arc::clone(entry), store_ttl(entry, now))
                .await
            {
                tracing::warn!(error = %e, widget = %widget.id, "store write failed; entry served but not cached");
            }
        }
        if let Err(e) = &result {
            let until = now.saturating_add(self.failure_backoff.as_millis() as i64);
            self.last_errors
                .insert(key.clone(), (Arc::from(e.to_string()), until));
        }
        if let Some(token) = token {
            let failed = result.as_ref().err().map(|e| (e.status(), self.failure_backoff));
            if let Err(e) = self.store.release(key, token, failed).await {
                tracing::warn!(error = %e, widget = %widget.id, "could not release the fetch lock; it expires by itself");
            }
        }
        result.map(|entry| Fetched { entry, remote: false })
    }

    /// The error of a key in failure backoff, with the cause this instance
    /// saw (another instance's failure has only its status).
    fn recent_failure(&self, key: &CacheKey, status: u16) -> FetchError {
        let now = self.clock.now_ms();
        let cause = self.last_errors.get(key).filter(|(_, until)| now < *until);
        FetchError::RecentFailure(status, cause.map(|(cause, _)| cause))
    }

    /// A slot for one upstream call. At the cap (`--max-upstream-calls`),
    /// waits for one, within the deadline every waiter on this fetch has.
    async fn upstream_slot(&self) -> Result<tokio::sync::OwnedSemaphorePermit, FetchError> {
        if let Ok(slot) = Arc::clone(&self.upstream_slots).try_acquire_owned() {
            return Ok(slot);
        }
        metrics::counter!("percache_upstream_capped_total", "kind" => "foreground_waited").increment(1);
        let waited = tokio::time::timeout(
            self.wait_deadline,
            Arc::clone(&self.upstream_slots).acquire_owned(),
        )
        .await;
        match waited {
            Ok(Ok(slot)) => Ok(slot),
            Ok(Err(_closed)) => Err(FetchError::Abandoned),
            Err(_elapsed) => Err(FetchError::Timeout),
        }
    }

    /// Waits for a fetch's result, at most `wait_deadline`.
    async fn wait(&self, mut flight: Flight) -> FetchResult {
        let waited = tokio::time::timeout(self.wait_deadline, flight.wait_for(Option::is_some)).await;
        match waited {
            Ok(Ok(result)) => result.clone().unwrap_or(Err(FetchError::Abandoned)),
            Ok(Err(_closed)) => Err(FetchError::Abandoned),
            Err(_elapsed) => Err(FetchError::Timeout),
        }
    }

    /// Turns a fetch result into a lookup, falling back to an entry still in
    /// grace when the fetch failed (stale-if-error).
    fn settle(
        &self,
        instance: &Instance,
        cached: Option<Arc<Entry>>,
        result: FetchResult,
        success: Outcome,
        store_unavailable: bool,
    ) -> Lookup {
        let now = self.clock.now_ms();
        match result {
            Ok(Fetched { entry, remote }) => {
                // Data from another fetch counts as collapsed too.
                let outcome = match success {
                    Outcome::Miss { collapsed } => Outcome::Miss {
                        collapsed: collapsed || remote,
                    },
                    Outcome::Forced { collapsed } => Outcome::Forced {
                        collapsed: collapsed || remote,
                    },
                    other => other,
                };
                self.lookup(instance, Some(entry), outcome, None, store_unavailable, now)
            }
            Err(error) => {
                let usable = cached.filter(|e| e.freshness(now) != Freshness::Dead);
                let outcome = match usable {
                    Some(_) => Outcome::StaleIfError {
                        status: error.status(),
                    },
                    None => Outcome::Error {
                        status: error.status(),
                    },
                };
                tracing::warn!(widget = %instance.id(), %error, outcome = outcome.label(), "upstream fetch failed");
                self.lookup(instance, usable, outcome, Some(error), store_unavailable, now)
            }
        }
    }

    fn lookup(
        &self,
        instance: &Instance,
        entry: Option<Arc<Entry>>,
        outcome: Outcome,
        error: Option<FetchError>,
        store_unavailable: bool,
        now: i64,
    ) -> Lookup {
        metrics::counter!(
            "percache_cache_requests_total",
            "widget" => instance.id().label(),
            "outcome" => outcome.label(),
        )
        .increment(1);
        Lookup {
            instance: instance.clone(),
            entry,
            outcome,
            error,
            store_unavailable,
            now,
        }
    }
}

/// Removes a key from the in-flight map when its fetch task ends, however it
/// ends (a panic included), so a key can never stay stuck "in flight".
struct InflightGuard {
    cache: Arc<WidgetCache>,
    key: CacheKey,
    /// Our own flight: the map entry is removed only if it is still ours.
    flight: Flight,
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        let mut map = self.cache.inflight.lock().unwrap_or_else(PoisonError::into_inner);
        if map.get(&self.key).is_some_and(|f| f.same_channel(&self.flight)) {
            map.remove(&self.key);
        }
    }
}

/// A token unique to one fetch in the fleet: pid, a counter and the time.
fn lock_token(now: i64) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        now
    )
}
