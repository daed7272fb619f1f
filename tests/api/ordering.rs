//! Ordering under races and faults (SPEC §7 "Ordering", issue 23): a
//! seeded history checker over the memory store, SQLite and one real Redis
//! shared by two instances; and the fetch lease taken over after `kill -9`.
//!
//! The checker runs random operations against real caches: reads, forced
//! refreshes, fetches whose completion it controls (each upstream call
//! waits until the history releases it), the three invalidations, restarts
//! and (on Redis) the loss of the generation keys. Every event gets a tick
//! of one logical clock, and the history is checked against the model:
//!
//! - (a) no read that begins after an acknowledged invalidation of its key
//!   returns data from a fetch that began before the invalidation (as
//!   current, for a soft one);
//! - (b) a key's stored fetch stamp never decreases;
//! - (c) every change reaches an open page of its user (a page that polls
//!   `seen` ends the history showing what the store holds).
//!
//! `PERCACHE_HISTORY_SEEDS=N` runs N more seeds; `PERCACHE_HISTORY_SEED=S`
//! replays one. A failure prints its seed and the history.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use percache::cache::fleet::generations::{Kind, Verdict};
use percache::cache::policy::Lifetimes;
use percache::cache::store::Lease;
use percache::cache::{CacheParts, CachePolicy, CacheSettings, Lookup, Shown, Store, WidgetCache};
use percache::clock::{Clock, MockClock};
use percache::config::Settings;
use percache::upstream::{Fetch, FetchError};
use percache::user::UserId;
use percache::widget::{Instance, Registry};
use serde_json::value::RawValue;
use tokio::sync::watch;

use crate::helpers::{binary_server, login_cookie, until, RedisServer};

/// The logical clock every event is stamped with.
#[derive(Default)]
struct Ticks(AtomicU64);

impl Ticks {
    fn next(&self) -> u64 {
        self.0.fetch_add(1, Ordering::SeqCst) + 1
    }
}

/// One upstream call as the history saw it.
#[derive(Debug, Clone)]
struct Call {
    user: String,
    widget: String,
    began: u64,
}

/// The upstream of every instance of one history: call `n` answers
/// `{"n": n, "version": n}` once the history releases it.
struct Upstream {
    ticks: Arc<Ticks>,
    calls: Mutex<Vec<Call>>,
    released: watch::Sender<Vec<bool>>,
}

impl Upstream {
    fn new(ticks: Arc<Ticks>) -> Arc<Self> {
        Arc::new(Self {
            ticks,
            calls: Mutex::new(Vec::new()),
            released: watch::channel(Vec::new()).0,
        })
    }

    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    /// Calls begun and not yet released.
    fn pending(&self) -> Vec<usize> {
        let released = self.released.borrow();
        (1..=self.calls.lock().unwrap().len())
            .filter(|n| !released.get(*n).copied().unwrap_or(false))
            .collect()
    }

    fn release(&self, n: usize) {
        self.released.send_modify(|r| {
            if r.len() <= n {
                r.resize(n + 1, false);
            }
            r[n] = true;
        });
    }
}

/// The upstream as one instance calls it.
struct Gate(Arc<Upstream>);

#[async_trait::async_trait(?Send)]
impl Fetch for Gate {
    async fn fetch(&self, user: &str, instance: &Instance) -> Result<Box<RawValue>, FetchError> {
        let n = {
            let mut calls = self.0.calls.lock().unwrap();
            calls.push(Call {
                user: user.to_owned(),
                widget: instance.id().as_str().to_owned(),
                began: self.0.ticks.next(),
            });
            calls.len()
        };
        let mut released = self.0.released.subscribe();
        let _ = released.wait_for(|r| r.get(n).copied().unwrap_or(false)).await;
        RawValue::from_string(format!(r#"{{"n":{n},"version":{n}}}"#))
            .map_err(|e| FetchError::Body(e.to_string()))
    }
}

/// Which store the history runs on.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Backend {
    Memory,
    Sqlite,
    Redis,
}

/// What an instance is built on: its store and change feed (shared with
/// the other instance, or its own and the same store for memory/SQLite).
struct World {
    backend: Backend,
    redis: Option<RedisServer>,
    dir: Option<std::path::PathBuf>,
    /// The memory store both instances share (one process).
    memory: Option<Arc<percache::cache::store::memory::MemoryStore>>,
    clock: Arc<MockClock>,
}

impl World {
    fn new(backend: Backend, seed: u64) -> Self {
        let redis = (backend == Backend::Redis).then(RedisServer::start);
        let dir = (backend == Backend::Sqlite)
            .then(|| std::env::temp_dir().join(format!("percache-history-{}-{seed}", std::process::id())));
        if let Some(dir) = &dir {
            let _ = std::fs::remove_dir_all(dir);
        }
        let clock = MockClock::new();
        let memory = (backend == Backend::Memory).then(|| {
            Arc::new(percache::cache::store::memory::MemoryStore::new(10_000).with_clock(clock.clone()))
        });
        Self {
            backend,
            redis,
            dir,
            memory,
            clock,
        }
    }

    /// A new instance (a start, or a restart) over the world's store.
    async fn instance(&self, upstream: &Arc<Upstream>) -> Arc<WidgetCache> {
        let registry = Arc::new(Registry::builtin());
        let lifetimes = Lifetimes {
            fresh: Duration::from_secs(60),
            ttl: Duration::from_secs(600),
            grace: Duration::from_secs(3600),
        };
        let policy = CachePolicy::new(&registry, lifetimes, &[], &[]).unwrap();
        let (store, lease, changes): (Arc<dyn Store>, Arc<dyn Lease>, _) = match self.backend {
            Backend::Memory => {
                let memory = Arc::clone(self.memory.as_ref().unwrap());
                (
                    memory.clone(),
                    memory,
                    percache::cache::fleet::changes::Changes::local(),
                )
            }
            Backend::Sqlite | Backend::Redis => {
                let mut settings = Settings::defaults();
                settings.store.data_dir = self.dir.clone();
                settings.store.redis_url = self.redis.as_ref().map(RedisServer::url);
                settings.store.store_timeout = Duration::from_secs(2);
                let stack = percache::cache::store_from_settings(&settings.store, self.clock.clone())
                    .await
                    .unwrap();
                (stack.store, stack.lease, stack.changes)
            }
        };
        let parts = CacheParts {
            store,
            lease,
            changes,
            fetcher: Arc::new(Gate(Arc::clone(upstream))),
            registry,
            policy,
            clock: self.clock.clone(),
            metrics: None,
        };
        let settings = CacheSettings {
            fetch_lease: Duration::from_secs(30),
            ..CacheSettings::default()
        };
        let cache = WidgetCache::new(parts, &settings, Duration::from_secs(60));
        let cache = Arc::new(cache);
        cache.reload_generations().await;
        cache
    }

    /// A new, empty in-process store (a restart of the one process).
    fn renew_memory(&mut self) {
        self.memory = Some(Arc::new(
            percache::cache::store::memory::MemoryStore::new(10_000).with_clock(self.clock.clone()),
        ));
    }

    /// Loses the widgets' generation keys (Redis only).
    fn lose_generations(&self) {
        if let Some(redis) = &self.redis {
            let mut cli = std::process::Command::new("redis-cli");
            cli.args(["-p", &redis.port.to_string()]).args([
                "DEL",
                "percache:v1:gen:w:1",
                "percache:v1:gen:w:2",
            ]);
            let out = cli.output().expect("redis-cli runs");
            assert!(out.status.success(), "redis-cli DEL failed");
        }
    }
}

impl Drop for World {
    fn drop(&mut self) {
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// An acknowledged invalidation.
#[derive(Debug, Clone)]
struct Invalidation {
    /// `None`: every user.
    user: Option<String>,
    widget: String,
    soft: bool,
    began: u64,
    acked: u64,
}

/// A read that completed.
#[derive(Debug, Clone)]
struct Read {
    on: usize,
    user: String,
    widget: String,
    forced: bool,
    began: u64,
    /// The call whose data it got, if any, and how it was served.
    n: Option<usize>,
    outcome: &'static str,
}

#[derive(Default)]
struct History {
    lines: Vec<String>,
    invalidations: Vec<Invalidation>,
    reads: Vec<Read>,
}

const USERS: [&str; 2] = ["ann", "bob"];
const WIDGETS: [&str; 2] = ["1", "2"];

fn n_of(lookup: &Lookup) -> Option<usize> {
    let entry = lookup.entry.as_ref()?;
    let value: serde_json::Value = serde_json::from_str(entry.data.get()).ok()?;
    value["n"].as_u64().map(|n| n as usize)
}

/// Runs one history; returns it, with the first violation found.
fn run_history(backend: Backend, seed: u64, steps: usize) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let local = tokio::task::LocalSet::new();
    let history = Rc::new(RefCell::new(History::default()));
    let outcome = local.block_on(&rt, one_history(backend, seed, steps, Rc::clone(&history)));
    outcome.map_err(|violation| {
        let lines = history.borrow().lines.join("\n  ");
        format!(
            "{backend:?} seed {seed}: {violation}\n  replay: PERCACHE_HISTORY_SEED={seed} cargo test --test api ordering::\n  history:\n  {lines}"
        )
    })
}

async fn one_history(
    backend: Backend,
    seed: u64,
    steps: usize,
    history: Rc<RefCell<History>>,
) -> Result<(), String> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut world = World::new(backend, seed);
    let ticks = Arc::new(Ticks::default());
    let upstream = Upstream::new(Arc::clone(&ticks));
    // One instance on an in-process store or SQLite (one process), two
    // sharing Redis (a fleet).
    let mut instances = vec![world.instance(&upstream).await];
    if backend == Backend::Redis {
        instances.push(world.instance(&upstream).await);
        feed_up(&instances).await;
    }
    let registry = Registry::builtin();
    let instance_of = |w: &str| registry.default_instance(w).unwrap();
    let mut reads: Vec<tokio::task::JoinHandle<()>> = Vec::new();
    // (b): the greatest stamp seen stored per key.
    let mut stored: HashMap<(String, String), u64> = HashMap::new();
    let log = |line: String| history.borrow_mut().lines.push(line);

    for step in 0..steps {
        let on = rng.usize(0..instances.len());
        let user = USERS[rng.usize(0..USERS.len())];
        let widget = WIDGETS[rng.usize(0..WIDGETS.len())];
        match rng.u8(0..100) {
            0..=34 => {
                let forced = rng.u8(0..5) == 0;
                let (cache, history, ticks) = (
                    Arc::clone(&instances[on]),
                    Rc::clone(&history),
                    Arc::clone(&ticks),
                );
                let (user, widget) = (user.to_owned(), widget.to_owned());
                let instance = instance_of(&widget);
                log(format!(
                    "{step}: {} {user}/{widget} on {on}",
                    if forced { "refresh" } else { "read" }
                ));
                reads.push(tokio::task::spawn_local(async move {
                    let id = UserId::parse(&user).unwrap();
                    let began = ticks.next();
                    let lookup = if forced {
                        cache.refresh(&id, &instance).await
                    } else {
                        cache.get(&id, &instance).await
                    };
                    let read = Read {
                        on,
                        user,
                        widget,
                        forced,
                        began,
                        n: n_of(&lookup),
                        outcome: lookup.outcome.label(),
                    };
                    let mut h = history.borrow_mut();
                    h.lines.push(format!(
                        "   read {}/{} on {} (began at {began}) -> {:?} {}",
                        read.user, read.widget, read.on, read.n, read.outcome
                    ));
                    h.reads.push(read);
                }));
            }
            35..=69 => {
                let pending = upstream.pending();
                if !pending.is_empty() {
                    let n = pending[rng.usize(0..pending.len())];
                    log(format!("{step}: release call {n}"));
                    upstream.release(n);
                }
            }
            70..=87 => {
                let all = rng.u8(0..3) == 0;
                let soft = rng.bool();
                let cache = &instances[on];
                let w = cache.registry().get(widget).cloned().unwrap();
                let heard_before =
                    (backend == Backend::Redis).then(|| instances[1 - on].changes().messages_received());
                let began = ticks.next();
                let done = if all {
                    cache
                        .invalidate_all_users(&[w], if soft { Kind::Soft } else { Kind::Hard })
                        .await
                } else {
                    let id = UserId::parse(user).unwrap();
                    cache
                        .invalidate(&id, &[w], if soft { Kind::Soft } else { Kind::Hard })
                        .await
                };
                done.map_err(|e| format!("invalidation failed: {e}"))?;
                // Ordered on other instances once the change message arrives.
                if let Some(before) = heard_before {
                    let other = &instances[1 - on];
                    let arrived = || async { (other.changes().messages_received() != before).then_some(()) };
                    if until(Duration::from_secs(5), Duration::from_millis(2), arrived)
                        .await
                        .is_none()
                    {
                        return Err("the invalidation message never arrived".into());
                    }
                }
                let acked = ticks.next();
                log(format!(
                    "{step}: {}{} invalidation of {}/{widget} on {on} (began {began}, acked {acked})",
                    if soft { "soft " } else { "" },
                    if all { "allUsers" } else { "per-user" },
                    if all { "*" } else { user }
                ));
                history.borrow_mut().invalidations.push(Invalidation {
                    user: (!all).then(|| user.to_owned()),
                    widget: widget.to_owned(),
                    soft,
                    began,
                    acked,
                });
            }
            88..=93 => {
                // A restart of an idle instance (nothing of its in flight).
                if instances[on].fetches_in_flight() == 0 && reads.iter().all(|r| r.is_finished()) {
                    log(format!("{step}: restart instance {on}"));
                    if backend == Backend::Memory {
                        // A restart loses an in-process store with the process.
                        world.renew_memory();
                        stored.clear();
                    }
                    instances[on] = world.instance(&upstream).await;
                    if backend == Backend::Redis {
                        feed_up(&instances).await;
                    }
                }
            }
            _ => {
                if backend == Backend::Redis {
                    log(format!("{step}: Redis loses the generation keys"));
                    world.lose_generations();
                    // The running instances' periodic reload (every 5 s)
                    // writes back what they knew; an instance that starts
                    // before it does is the documented gap.
                    for cache in &instances {
                        cache.reload_generations().await;
                    }
                }
            }
        }
        // Let what can run, run.
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
        if backend != Backend::Memory {
            // A sleep is the point: Redis replies arrive on sockets, which
            // yielding alone does not wait for. The checks below hold at any
            // moment; this only lets more of the history happen per step.
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        check_stored(&instances[0], &mut stored).await?;
        check_reads(&history.borrow(), &upstream.calls())?;
    }

    // Drain: release everything until every read has its answer.
    let drained = || async {
        for n in upstream.pending() {
            upstream.release(n);
        }
        let done =
            reads.iter().all(|r| r.is_finished()) && instances.iter().all(|c| c.fetches_in_flight() == 0);
        done.then_some(())
    };
    if until(Duration::from_secs(30), Duration::from_millis(2), drained)
        .await
        .is_none()
    {
        return Err("the history never drained".into());
    }
    log("drained".into());
    check_stored(&instances[0], &mut stored).await?;
    check_reads(&history.borrow(), &upstream.calls())?;
    check_pages(&instances, &world.clock).await
}

/// Waits until each instance hears the others' change messages (a new
/// instance's subscription takes a moment to be up).
async fn feed_up(instances: &[Arc<WidgetCache>]) {
    let key = UserId::parse("nobody")
        .unwrap()
        .tag()
        .key(&Registry::builtin().default_instance("1").unwrap());
    for (i, from) in instances.iter().enumerate() {
        for (j, to) in instances.iter().enumerate() {
            if i == j {
                continue;
            }
            let before = to.changes().messages_received();
            let heard = || async {
                if to.changes().messages_received() != before {
                    return Some(());
                }
                from.changes().announce(&key, true).await;
                None
            };
            let heard = until(Duration::from_secs(10), Duration::from_millis(20), heard).await;
            assert!(heard.is_some(), "the change feed never came up");
        }
    }
}

/// (a) over the reads completed so far.
fn check_reads(history: &History, calls: &[Call]) -> Result<(), String> {
    for read in &history.reads {
        let Some(n) = read.n else { continue };
        let call = &calls[n - 1];
        if call.user != read.user || call.widget != read.widget {
            return Err(format!(
                "a read of {}/{} got call {n} of {}/{}",
                read.user, read.widget, call.user, call.widget
            ));
        }
        for inv in &history.invalidations {
            let of_key = inv.widget == read.widget && inv.user.as_ref().is_none_or(|u| *u == read.user);
            // A soft invalidation lets old data be served stale, never as current.
            let as_current = matches!(read.outcome, "hit" | "miss" | "collapsed" | "eager");
            if of_key && inv.acked < read.began && call.began < inv.began && (!inv.soft || as_current) {
                return Err(format!(
                    "(a) a {} of {}/{} that began at {} got call {n} (began at {}) as {}, across the {}invalidation acknowledged at {}",
                    if read.forced { "refresh" } else { "read" },
                    read.user,
                    read.widget,
                    read.began,
                    call.began,
                    read.outcome,
                    if inv.soft { "soft " } else { "" },
                    inv.acked
                ));
            }
        }
    }
    Ok(())
}

/// (b): every key's stored stamp only grows.
async fn check_stored(cache: &WidgetCache, seen: &mut HashMap<(String, String), u64>) -> Result<(), String> {
    let registry = Registry::builtin();
    for user in USERS {
        for widget in WIDGETS {
            let key = UserId::parse(user)
                .unwrap()
                .tag()
                .key(&registry.default_instance(widget).unwrap());
            let Ok(Some(entry)) = cache.store().get(&key).await else {
                continue;
            };
            let last = seen.entry((user.to_owned(), widget.to_owned())).or_default();
            if entry.started < *last {
                return Err(format!(
                    "(b) {user}/{widget}'s stored stamp went back from {} to {}",
                    *last, entry.started
                ));
            }
            *last = entry.started;
        }
    }
    Ok(())
}

/// (c): a page of each user, polling with what it shows, ends showing
/// exactly what the store holds for each of its widgets.
async fn check_pages(instances: &[Arc<WidgetCache>], clock: &MockClock) -> Result<(), String> {
    for (i, cache) in instances.iter().enumerate() {
        for user in USERS {
            let id = UserId::parse(user).unwrap();
            let mut shown: BTreeMap<String, u64> = BTreeMap::new();
            // Each answer is applied to the page; the page then polls again.
            for _ in 0..4 {
                let seen = Shown::Seen(shown.iter().map(|(w, v)| (w.clone(), Some(*v))).collect());
                let changed = cache
                    .wait_for_change(&id, &seen, Duration::from_millis(200))
                    .await;
                if changed.is_empty() {
                    break;
                }
                for lookup in changed {
                    if let Some(entry) = &lookup.entry {
                        shown.insert(lookup.instance.id().as_str().to_owned(), entry.version());
                    }
                }
            }
            for widget in Registry::builtin().all() {
                let instance = widget.default_instance();
                let key = id.tag().key(&instance);
                let held = cache.store().get(&key).await.ok().flatten();
                let now = clock.now_ms();
                // As the cache judges it: not gone by an allUsers threshold,
                // fresh or stale (a page is sent those).
                let gen = cache.changes().generations().get(instance.id().as_str());
                let expected = held
                    .filter(|e| gen.verdict(e.generation) != Verdict::Gone && e.stale_until > now)
                    .map(|e| e.version());
                let page = shown.get(instance.id().as_str()).copied();
                if expected.is_some() && page != expected {
                    return Err(format!(
                        "(c) {user}'s page on instance {i} shows {:?} of widget {}, the store holds {expected:?}",
                        page,
                        instance.id()
                    ));
                }
            }
        }
    }
    Ok(())
}

/// The fixed seeds the suite runs, and how many steps each.
const SEEDS: [u64; 6] = [1, 2, 3, 5, 8, 13];
const STEPS: usize = 120;

fn seeds() -> Vec<u64> {
    if let Some(seed) = std::env::var("PERCACHE_HISTORY_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        return vec![seed];
    }
    let more: u64 = std::env::var("PERCACHE_HISTORY_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut seeds = SEEDS.to_vec();
    seeds.extend((0..more).map(|i| 1_000 + i));
    seeds
}

fn check_backend(backend: Backend) {
    for seed in seeds() {
        if let Err(failure) = run_history(backend, seed, STEPS) {
            panic!("{failure}");
        }
    }
}

#[test]
fn histories_on_the_memory_store_keep_the_order() {
    check_backend(Backend::Memory);
}

#[test]
fn histories_on_sqlite_keep_the_order() {
    check_backend(Backend::Sqlite);
}

#[test]
fn histories_on_one_redis_shared_by_two_instances_keep_the_order() {
    check_backend(Backend::Redis);
}

/// `kill -9` the instance that holds a key's fetch lease: the other
/// instance's waiter takes the fetch over and answers within the lease
/// plus the upstream's delay plus 2 s. That deadline is the point of the
/// lease (before it, the lock lived the upstream timeout plus 1 s, and the
/// waiter got a 502 after 21 s), so it is asserted, with that margin.
#[tokio::test]
async fn a_killed_lease_holder_is_taken_over_within_the_lease() {
    const LEASE: Duration = Duration::from_secs(1);
    const DELAY: Duration = Duration::from_secs(3);
    let mock = mock_upstream::MockUpstream::start(
        "127.0.0.1:0",
        mock_upstream::MockConfig::with_delays_ms([5, 5, DELAY.as_millis() as u64, 5, 5]),
    )
    .await
    .unwrap();
    let redis = RedisServer::start();
    let args = [
        "--upstream-url",
        &mock.url(),
        "--redis-url",
        &redis.url(),
        "--no-prewarm",
        "--fetch-lease",
        "1s",
    ];
    let mut a = binary_server("lease-a", &args).await;
    let b = binary_server("lease-b", &args).await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let cookie = login_cookie(&client, &a.base, "alice").await.unwrap();

    // A starts the fetch and holds the lease.
    let on_a = tokio::spawn({
        let (client, url, cookie) = (client.clone(), a.url("/api/widgets/3"), cookie.clone());
        async move { client.get(url).header("cookie", cookie).send().await }
    });
    let store = percache::cache::store::redis::RedisStore::new(&redis.url(), Duration::from_secs(2)).unwrap();
    let key = UserId::parse("alice")
        .unwrap()
        .tag()
        .key(&crate::helpers::instance("3"));
    crate::helpers::eventually(
        Duration::from_secs(10),
        || mock.calls_for("alice", 3) == 1,
        || "A never called the upstream",
    )
    .await;
    let held = store.lock_state(&key).await.unwrap();
    assert_eq!(held, percache::cache::store::LockState::Busy, "A holds the lease");

    // B's request waits on A's fetch; then A dies mid-fetch.
    let on_b = tokio::spawn({
        let (client, url, cookie) = (client.clone(), b.url("/api/widgets/3"), cookie.clone());
        async move {
            let resp = client.get(url).header("cookie", cookie).send().await?;
            Ok::<_, reqwest::Error>((resp.status(), resp.text().await?))
        }
    });
    let killed = Instant::now();
    a.child_mut().kill().unwrap();
    let _ = a.child_mut().wait();
    let _ = on_a.await;

    let (status, body) = on_b.await.unwrap().unwrap();
    let took = killed.elapsed();
    assert_eq!(status, 200, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(json["data"]["version"].as_u64().is_some(), "{body}");
    assert_eq!(
        mock.calls_for("alice", 3),
        2,
        "B took the fetch over: one more call"
    );
    assert!(
        took <= LEASE + DELAY + Duration::from_secs(2),
        "B answered {took:?} after the kill, past the lease + the upstream delay + 2 s"
    );
}
