//! The cache's read policy over a [`Store`]: fresh → hit; stale → served at
//! once plus one background refresh; past ttl → the fetch, waited for at most
//! `--soft-timeout`; request directives (RFC 9111); stale-if-error.
//!
//! How a fetch runs (single flight, the fleet lock) is `cache::flight`;
//! invalidation is `cache::invalidation`; open pages are `cache::live`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::join_all;
use tokio_util::task::TaskTracker;

use crate::cache::directives::Directives;
use crate::cache::entry::{Entry, Freshness};
use crate::cache::fleet::changes::Changes;
use crate::cache::fleet::generations::Verdict;
use crate::cache::fleet::waiters::Watch;
use crate::cache::key::CacheKey;
use crate::cache::policy::CachePolicy;
use crate::cache::store::{LockState, Store};
use crate::clock::Clock;
use crate::upstream::{Fetch, FetchError};
use crate::user::UserId;
use crate::widget::{Instance, Registry};

use super::counters::CacheCounters;
use super::fetched::{seen, FetchResult, Fetched, InFlight, Start};
pub use super::outcome::{Lookup, Outcome};
use super::turns::Work;

/// The per-user widget cache shared by all workers.
pub struct WidgetCache {
    /// Where entries live (the store stack: L1, breaker, backend).
    pub(super) store: Arc<dyn Store>,
    /// Where the cache's writes are announced, and other instances' heard.
    pub(super) changes: Arc<Changes>,
    /// Where data comes from (the widgets API; a fake in unit tests).
    pub(super) fetcher: Arc<dyn Fetch>,
    pub(super) registry: Arc<Registry>,
    pub(super) policy: CachePolicy,
    pub(super) clock: Arc<dyn Clock>,
    /// How long a request waits for a fetch in flight.
    pub(super) wait_deadline: Duration,
    /// The fleet-wide fetch lease (`--fetch-lease`): renewed while its
    /// fetch runs, it lapses this long after its owner dies.
    pub(super) lock_ttl: Duration,
    /// Stamps for fetches made without a lease (the store is down).
    pub(super) stamps: crate::cache::store::StampClock,
    /// How long a key is not fetched again after a failed fetch.
    pub(super) failure_backoff: Duration,
    /// Most fetches in flight at which background ones still start.
    pub(super) max_background: usize,
    /// Past ttl, how long a request waits before the old entry is served.
    pub(super) soft_timeout: Duration,
    /// Slots for upstream calls in flight (`--max-upstream-calls`), with a
    /// bulkhead and a breaker per widget.
    pub(super) slots: Arc<super::slots::Slots>,
    /// Fraction of the fresh window after which a read refreshes eagerly (0: off).
    pub(super) eager: f64,
    pub(super) inflight: Mutex<HashMap<CacheKey, InFlight>>,
    /// Prewarm fetches started and not ended (`--prewarm-queue` bounds them).
    pub(super) prewarms: Arc<std::sync::atomic::AtomicUsize>,
    /// Of those, the ones waiting for an upstream slot (`percache_prewarm_queue`).
    pub(super) prewarm_waiting: Arc<std::sync::atomic::AtomicUsize>,
    /// Most prewarm fetches queued at once (`--prewarm-queue`).
    pub(super) prewarm_queue: usize,
    /// How long the last prewarm to get its slot waited, in ms (`u64::MAX`: none yet).
    pub(super) last_prewarm_wait_ms: std::sync::atomic::AtomicU64,
    /// The last fetch error of each key (in plain words), for as long as its backoff lasts,
    /// so an error card says why ("TLS failed: unknown issuer"), not only
    /// that the key is in backoff.
    /// Each with when it ends by the cache's clock.
    pub(super) last_errors: moka::sync::Cache<CacheKey, (Arc<str>, i64)>,
    /// Every fetch task, so that shutdown can wait for them to land.
    pub(super) tasks: TaskTracker,
    /// Pages with a live connection on this instance, per user (by tag;
    /// only users with one open; see `cache::live`).
    pub(crate) pages_per_user: Mutex<HashMap<Box<str>, usize>>,
    /// `--max-open-pages-per-user`.
    pub(crate) max_pages_per_user: usize,
    /// `percache_cache_requests_total`.
    pub(super) counters: Arc<CacheCounters>,
}

/// Default `--max-upstream-calls`.
pub const DEFAULT_MAX_UPSTREAM_CALLS: usize = 256;

/// Default `--soft-timeout`.
pub const DEFAULT_SOFT_TIMEOUT: Duration = Duration::from_millis(300);
/// Default `--eager-refresh`.
pub const DEFAULT_EAGER: f64 = 0.8;

/// Default `--upstream-timeout`.
pub const DEFAULT_UPSTREAM_TIMEOUT: Duration = Duration::from_secs(20);
/// Default `--max-open-pages-per-user`.
pub const DEFAULT_MAX_OPEN_PAGES_PER_USER: usize = 8;

/// Default `--fetch-lease`.
pub const DEFAULT_FETCH_LEASE: Duration = Duration::from_secs(5);

/// Default `--failure-backoff`.
pub const DEFAULT_FAILURE_BACKOFF: Duration = Duration::from_secs(5);

/// How long a request waits for a fetch: the upstream's timeout plus a margin.
fn wait_deadline(upstream_timeout: Duration) -> Duration {
    upstream_timeout + Duration::from_secs(1)
}

/// The last errors' table: kept a little longer than a backoff lasts (the
/// clock decides), since the failure marker the cause goes with is written
/// a moment after it: a request in between would lose the cause.
fn last_errors(failure_backoff: Duration) -> moka::sync::Cache<CacheKey, (Arc<str>, i64)> {
    moka::sync::Cache::builder()
        .max_capacity(10_000)
        .time_to_live(failure_backoff + CAUSE_MARGIN)
        .build()
}

/// How much longer a failure's cause is kept than its backoff.
pub(super) const CAUSE_MARGIN: Duration = Duration::from_secs(1);

/// Default cap on prewarm fetches waiting for a slot (`--prewarm-queue`).
pub const DEFAULT_PREWARM_QUEUE: usize = 100_000;

/// Default cap on fetches in flight for background work.
pub const DEFAULT_MAX_BACKGROUND: usize = 512;

impl WidgetCache {
    /// Caps the fetches in flight at which background refreshes and prewarm
    /// still start (`--max-background-fetches`).
    pub fn with_max_background(mut self, max: usize) -> Self {
        self.max_background = max;
        self
    }

    /// Caps the prewarm fetches waiting for an upstream slot (`--prewarm-queue`).
    pub fn with_prewarm_queue(mut self, max: usize) -> Self {
        self.prewarm_queue = max;
        self
    }

    /// Caps the upstream calls in flight in this instance (`--max-upstream-calls`).
    pub fn with_max_upstream_calls(mut self, max: usize) -> Self {
        self.slots = super::slots::Slots::new(max, self.registry.all().len(), Arc::clone(&self.clock))
            .on_feed(&self.changes);
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

    /// How long a request waits for a fetch: at most the upstream's timeout
    /// (`--upstream-timeout`) plus a margin.
    pub fn with_upstream_timeout(mut self, upstream_timeout: Duration) -> Self {
        self.wait_deadline = wait_deadline(upstream_timeout);
        self
    }

    /// Most live connections one user holds on this instance
    /// (`--max-open-pages-per-user`); the newest beyond is answered at once.
    pub fn with_max_open_pages_per_user(mut self, max: usize) -> Self {
        self.max_pages_per_user = max.max(1);
        self
    }

    /// The fleet fetch lease (`--fetch-lease`): renewed every third of it
    /// while the fetch runs; another instance takes over this long after
    /// its holder dies.
    pub fn with_fetch_lease(mut self, lease: Duration) -> Self {
        self.lock_ttl = lease.max(Duration::from_millis(30));
        self
    }

    /// How long a key is not fetched again after a failed fetch (`--failure-backoff`).
    pub fn with_failure_backoff(mut self, failure_backoff: Duration) -> Self {
        self.failure_backoff = failure_backoff;
        self.last_errors = last_errors(failure_backoff);
        self
    }

    /// A cache of `registry`'s widgets over `store`, fetching through
    /// `fetcher`, deciding by `policy` and `clock`; its writes are announced
    /// on `changes`. The defaults of the `with_` settings are the flags'.
    pub fn new(
        store: Arc<dyn Store>,
        changes: Arc<Changes>,
        fetcher: Arc<dyn Fetch>,
        registry: Arc<Registry>,
        policy: CachePolicy,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let wait_deadline = wait_deadline(DEFAULT_UPSTREAM_TIMEOUT);
        let failure_backoff = DEFAULT_FAILURE_BACKOFF;
        let counters = Arc::new(CacheCounters::new(&registry, None));
        let slots = super::slots::Slots::new(
            DEFAULT_MAX_UPSTREAM_CALLS,
            registry.all().len(),
            Arc::clone(&clock),
        )
        .on_feed(&changes);
        Self {
            store,
            changes,
            fetcher,
            registry,
            policy,
            clock,
            wait_deadline,
            lock_ttl: DEFAULT_FETCH_LEASE,
            stamps: crate::cache::store::StampClock::default(),
            failure_backoff,
            max_background: DEFAULT_MAX_BACKGROUND,
            soft_timeout: DEFAULT_SOFT_TIMEOUT,
            slots,
            eager: DEFAULT_EAGER,
            inflight: Mutex::new(HashMap::new()),
            prewarms: Arc::default(),
            prewarm_waiting: Arc::default(),
            prewarm_queue: DEFAULT_PREWARM_QUEUE,
            last_prewarm_wait_ms: std::sync::atomic::AtomicU64::new(u64::MAX),
            last_errors: last_errors(failure_backoff),
            pages_per_user: Mutex::new(HashMap::new()),
            max_pages_per_user: DEFAULT_MAX_OPEN_PAGES_PER_USER,
            tasks: TaskTracker::new(),
            counters,
        }
    }

    /// Counts requests into `metrics` (the application's own), wherever
    /// they run; without it, into the recorder of the thread counting.
    pub fn with_metrics(mut self, metrics: &crate::telemetry::Metrics) -> Self {
        let counters = Arc::new(CacheCounters::new(&self.registry, Some(metrics.recorder())));
        let published = Arc::clone(&counters);
        metrics.publish_before_render(Arc::new(move || published.publish()));
        self.counters = counters;
        self
    }

    /// The store behind the cache.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The change feed the cache's writes are announced on.
    pub fn changes(&self) -> &Arc<Changes> {
        &self.changes
    }

    /// The widgets this cache serves.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// A registration for `user`'s changes, in this instance or (with
    /// Redis) any other: only that user's changes wake it. On a cluster it
    /// returns once this instance follows the user's sharded channel.
    pub async fn watch(&self, user: &UserId) -> Watch {
        self.changes.watch(user.tag().as_str()).await
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
        let (flight, mut leader) = self.join_or_start(
            &key,
            user,
            instance,
            Start::Recheck(seen(cached.as_ref())),
            Work::Request,
        );
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
            let (flight, led) = self.join_or_start(&key, user, instance, Start::Recheck(old), Work::Request);
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
    pub(super) async fn serve_cached(
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
    pub(super) fn eager_due(&self, entry: &Entry, now: i64) -> bool {
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
        let (flight, leader) = self.join_or_start(&key, user, instance, Start::Force, Work::Request);
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
        let instances: Vec<Instance> = self.registry.defaults().to_vec();
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
            if self.start_prewarm(&key, user, &instance, seen(cached.as_ref())) {
                started += 1;
            }
        }
        metrics::counter!("percache_prewarm_total").increment(started as u64);
        started
    }

    /// The outcome of serving an entry that needs a refresh (stale or
    /// outdated): normally `served`, with one background refresh started (or
    /// joined); but if the last refresh failed and the key is in backoff,
    /// "stale-if-error" and no new attempt.
    pub(super) async fn serve_and_refresh(
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
        // The upstream asked to wait: served as it is, claiming no refresh.
        if self.slots.paused(instance.widget.index).is_some() {
            return Outcome::StaleIfError { status: 503 };
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
    pub(super) fn judged(&self, entry: Arc<Entry>, instance: &Instance) -> Option<Arc<Entry>> {
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
    pub(super) fn current(&self, entry: Arc<Entry>, instance: &Instance) -> Option<Arc<Entry>> {
        let gen = self.changes.generations().get(instance.id().as_str());
        (entry.fingerprint == instance.widget.fingerprint && gen.verdict(entry.generation) == Verdict::Valid)
            .then_some(entry)
    }

    /// Turns a fetch result into a lookup, falling back to an entry still in
    /// grace when the fetch failed (stale-if-error).
    pub(super) fn settle(
        &self,
        instance: &Instance,
        cached: Option<Arc<Entry>>,
        result: FetchResult,
        success: Outcome,
        store_unavailable: bool,
    ) -> Lookup {
        let now = self.clock.now_ms();
        match result {
            Ok(Fetched {
                entry,
                remote,
                revalidated,
            }) => {
                // Data from another fetch counts as collapsed too; a fetch
                // the upstream answered `304` renewed the entry.
                let outcome = match success {
                    Outcome::Miss { collapsed } | Outcome::Forced { collapsed } if revalidated => {
                        Outcome::Revalidated { collapsed }
                    }
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

    pub(super) fn lookup(
        &self,
        instance: &Instance,
        entry: Option<Arc<Entry>>,
        outcome: Outcome,
        error: Option<FetchError>,
        store_unavailable: bool,
        now: i64,
    ) -> Lookup {
        self.counters.count(&instance.widget, outcome);
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
