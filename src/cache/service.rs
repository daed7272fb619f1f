//! The cache's read policy over a [`Store`]: fresh → hit; stale → served at
//! once plus one background refresh; past ttl → the fetch, waited for at most
//! `--soft-timeout`; request directives (RFC 9111); stale-if-error.
//!
//! How a fetch runs (single flight, the fleet lock) is `cache::flight`;
//! invalidation is `cache::invalidation`; open pages are `cache::live`.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;

use crate::cache::directives::Directives;
use crate::cache::entry::{Entry, Freshness};
use crate::cache::fleet::changes::Changes;
use crate::cache::fleet::waiters::Watch;
use crate::cache::key::CacheKey;
use crate::cache::policy::CachePolicy;
use crate::cache::store::{Lease, Store};
use crate::clock::Clock;
use crate::upstream::{Fetch, FetchError};
use crate::user::UserId;
use crate::widget::{Instance, Registry};

use super::counters::CacheCounters;
use super::fetched::{seen, FetchResult, Fetched, Start};
use super::flight::{FlightParts, Flights};
use super::judge::Judge;
pub use super::outcome::{Lookup, Outcome};
use super::pages::OpenPages;
use super::settings::{wait_deadline, CacheSettings};
use super::slots::Slots;
use super::turns::Work;

/// What a cache is made of; its settings come apart ([`CacheSettings`]).
pub struct CacheParts {
    /// Where entries live (the store stack: L1, breaker, backend).
    pub store: Arc<dyn Store>,
    /// The fleet's fetch leases (the same backend, without the L1).
    pub lease: Arc<dyn Lease>,
    /// Where the cache's writes are announced, and other instances' heard.
    pub changes: Arc<Changes>,
    /// Where data comes from (the widgets API; a fake in unit tests).
    pub fetcher: Arc<dyn Fetch>,
    pub registry: Arc<Registry>,
    pub policy: CachePolicy,
    pub clock: Arc<dyn Clock>,
    /// The application's recorder, counted into wherever requests run;
    /// without it, the recorder of the thread counting.
    pub metrics: Option<crate::telemetry::Metrics>,
}

/// The per-user widget cache shared by all workers: the read policy, over
/// the parts it composes (the store, single flight, the judge).
pub struct WidgetCache {
    store: Arc<dyn Store>,
    changes: Arc<Changes>,
    registry: Arc<Registry>,
    clock: Arc<dyn Clock>,
    judge: Judge,
    /// Single flight, the upstream slots and the prewarm queue.
    flights: Arc<Flights>,
    /// Past ttl, how long a request waits before the old entry is served.
    soft_timeout: Duration,
    /// Fraction of the fresh window after which a read refreshes eagerly (0: off).
    eager: f64,
    /// Pages with a live connection on this instance, per user (`cache::live`).
    pages: OpenPages,
    /// `percache_cache_requests_total`.
    counters: Arc<CacheCounters>,
}

impl WidgetCache {
    /// A cache of `parts`, by `settings`; a request waits for a fetch at
    /// most `upstream_timeout` (`--upstream-timeout`) plus a margin.
    pub fn new(parts: CacheParts, settings: &CacheSettings, upstream_timeout: Duration) -> Self {
        let CacheParts {
            store,
            lease,
            changes,
            fetcher,
            registry,
            policy,
            clock,
            metrics,
        } = parts;
        let counters = Arc::new(CacheCounters::new(
            &registry,
            metrics
                .as_ref()
                .map(|m| m.recorder() as &'static (dyn metrics::Recorder + Sync)),
        ));
        if let Some(metrics) = &metrics {
            let published = Arc::clone(&counters);
            metrics.publish_before_render(Arc::new(move || published.publish()));
        }
        let slots = Slots::new(
            settings.max_upstream_calls as usize,
            registry.all().len(),
            Arc::clone(&clock),
        )
        .on_feed(&changes);
        let judge = Judge::new(Arc::clone(&changes));
        let flights = Flights::new(
            FlightParts {
                store: Arc::clone(&store),
                lease,
                changes: Arc::clone(&changes),
                fetcher,
                judge: judge.clone(),
                policy: Arc::new(policy),
                clock: Arc::clone(&clock),
                counters: Arc::clone(&counters),
                slots,
            },
            settings,
            wait_deadline(upstream_timeout),
        );
        Self {
            store,
            changes,
            registry,
            clock,
            judge,
            flights: Arc::new(flights),
            soft_timeout: settings.soft_timeout,
            eager: settings.eager_refresh,
            pages: OpenPages::new(settings.max_open_pages_per_user),
            counters,
        }
    }

    /// Each widget whose upstream calls are paused now (its breaker is open,
    /// or the upstream asked to wait), with the seconds left, for
    /// `percache_upstream_paused{widget}` and operators.
    pub fn paused_widgets(&self) -> Vec<(Arc<str>, Option<u64>)> {
        self.registry
            .all()
            .iter()
            .map(|w| (w.id.label(), self.flights.paused(w.index)))
            .collect()
    }

    /// Number of fetches in flight in this process.
    pub fn fetches_in_flight(&self) -> usize {
        self.flights.fetches_in_flight()
    }

    /// Waits until every fetch task has ended, at most `bound` (graceful
    /// shutdown). Fetches started meanwhile are waited for too.
    pub async fn wait_idle(&self, bound: Duration) -> bool {
        self.flights.wait_idle(bound).await
    }

    /// How long the last prewarm to get its upstream slot had waited.
    pub fn last_prewarm_wait(&self) -> Option<Duration> {
        self.flights.last_prewarm_wait()
    }

    /// Prewarm fetches waiting for an upstream slot (`percache_prewarm_queue`).
    pub fn prewarm_queue(&self) -> usize {
        self.flights.prewarm_queue()
    }

    /// How long a request waits for a fetch in flight.
    pub(super) fn wait_deadline(&self) -> Duration {
        self.flights.wait_deadline()
    }

    /// Starts (or joins) a refresh nobody waits for (see [`Flights::start_background`]).
    pub(super) fn start_background(
        &self,
        key: &CacheKey,
        user: &UserId,
        instance: &Instance,
        seen: i64,
    ) -> bool {
        self.flights.start_background(key, user, instance, seen)
    }

    /// The open pages of this instance.
    pub(super) fn pages(&self) -> &OpenPages {
        &self.pages
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
    pub async fn get(&self, user: &UserId, instance: &Instance) -> Lookup {
        self.get_with(user, instance, Directives::default()).await
    }

    /// Serves one widget, honouring the request's own directives (RFC 9111).
    pub async fn get_with(&self, user: &UserId, instance: &Instance, directives: Directives) -> Lookup {
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
        let (flight, mut leader) = self.flights.join_or_start(
            &key,
            user,
            instance,
            Start::Recheck(seen(cached.as_ref())),
            Work::Request,
        );
        let mut result = match fallback {
            Some(old) => match tokio::time::timeout(self.soft_timeout, self.flights.wait(flight)).await {
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
            None => self.flights.wait(flight).await,
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
            let (flight, led) =
                self.flights
                    .join_or_start(&key, user, instance, Start::Recheck(old), Work::Request);
            leader = led;
            result = self.flights.wait(flight).await;
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
        &self,
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
    pub async fn refresh(&self, user: &UserId, instance: &Instance) -> Lookup {
        let key = user.tag().key(instance);
        let (cached, store_unavailable) = self.read(&key, instance).await;
        let (flight, leader) = self
            .flights
            .join_or_start(&key, user, instance, Start::Force, Work::Request);
        let result = self.flights.wait(flight).await;
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
    pub async fn peek_all(&self, user: &UserId) -> Vec<(Instance, Option<Lookup>)> {
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
                    .map(|(e, i)| e.and_then(|e| self.judge.judged(e, i)))
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
    pub async fn prewarm(&self, user: &UserId) -> usize {
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
            if self
                .flights
                .start_prewarm(&key, user, &instance, seen(cached.as_ref()))
            {
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
        &self,
        key: &CacheKey,
        entry: &Entry,
        user: &UserId,
        instance: &Instance,
        served: Outcome,
    ) -> Outcome {
        if let Some(status) = self.flights.backoff(key).await {
            return Outcome::StaleIfError { status };
        }
        // The upstream asked to wait: served as it is, claiming no refresh.
        if self.flights.paused(instance.widget.index).is_some() {
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
            Ok(entry) => (entry.and_then(|e| self.judge.judged(e, instance)), false),
            Err(e) => {
                tracing::warn!(error = %e, "store read failed; serving from the upstream");
                (None, true)
            }
        }
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
