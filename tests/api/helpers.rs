//! The one test harness: `spawn_app(store)` starts a real mock upstream and
//! the application on port 0 (and, for the Redis flavours, a real
//! `redis-server` or cluster on free ports), and returns a [`TestApp`] with a
//! cookie-keeping client that does not follow redirects. What a test changes
//! is said on percache's own [`Settings`], over the test defaults of
//! [`test_settings`]; the generic harnesses (processes, waits, ports,
//! Prometheus text, `/proc`) live in the `testkit` crate.

use std::future::{Future, IntoFuture};
use std::path::Path;
use std::pin::Pin;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mock_upstream::{MockConfig, MockUpstream};
use percache::cache::store::redis::RedisStore;
use percache::cache::WidgetCache;
use percache::clock::MockClock;
use percache::config::{LogFormat, Settings};
use percache::defence::login_rate::LoginRate;
use percache::startup::Application;
use percache::telemetry;
pub use testkit::{
    all_stores, both_stores, cluster_stores, eventually, free_port, login_cookie, metric_sample, new_client,
    until, until_ok, HttpServer, InProcess, ProcStats, Process, RedisCluster, RedisServer, RedisTls, Site,
    StoreKind,
};

/// The session key every test instance shares, so one cookie works on all of them.
pub const SESSION_KEY: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";

/// The mock's delays per widget unless a test sets its own.
const DELAYS_MS: [u64; 5] = [20, 60, 200, 100, 20];

/// How long a test waits for a fresh hit or for upstream calls.
const WAIT: Duration = Duration::from_secs(10);

/// The settings every test application starts from: fast, lenient for a
/// busy 2-core machine, with the test's upstream and store filled in.
pub fn test_settings(mock: String, redis: Option<&RedisServer>, cluster: Option<&RedisCluster>) -> Settings {
    let mut s = Settings::defaults();
    s.bind = "127.0.0.1:0".into();
    s.upstream_url = Some(mock);
    s.store.redis_url = redis.map(RedisServer::url);
    s.store.redis_cluster = cluster.map(RedisCluster::nodes);
    s.session_key = Some(SESSION_KEY.into());
    s.lifetimes.fresh = Duration::from_secs(60);
    s.lifetimes.ttl = Duration::from_secs(600);
    s.lifetimes.grace = Duration::from_secs(3600);
    s.cache.failure_backoff = Duration::from_millis(300);
    s.invalidation_secret = Some("test-webhook-secret".into());
    s.store.l1_ttl = Duration::from_secs(1);
    s.cache.max_background_fetches = 512;
    s.prewarm = true;
    s.upstream_timeout = Duration::from_secs(5);
    // Tests run in parallel on a small machine: a lenient bound keeps a busy
    // CPU from looking like a Redis outage (outages are tested by killing Redis).
    s.store.store_timeout = Duration::from_secs(1);
    s.workers = 2;
    // Every test client is 127.0.0.1: no sign-in limit unless a test sets one.
    s.login_rate = LoginRate::Off;
    s
}

/// A change a test makes to [`test_settings`].
type Change = Box<dyn FnOnce(&mut Settings) + Send>;

/// A test application to start: await it (or call [`AppBuilder::spawn`]).
pub struct AppBuilder {
    store: StoreKind,
    delays_ms: [u64; 5],
    etags: bool,
    changes: Vec<Change>,
}

/// The one entry point: `spawn_app(store).await`, or with changes first,
/// e.g. `spawn_app(store).without_prewarm().settings(|s| s.lifetimes.fresh = ZERO).await`.
pub fn spawn_app(store: StoreKind) -> AppBuilder {
    AppBuilder {
        store,
        delays_ms: DELAYS_MS,
        etags: false,
        changes: Vec::new(),
    }
}

impl AppBuilder {
    /// The mock upstream's delay for each of the five widgets.
    pub fn delays_ms(mut self, delays_ms: [u64; 5]) -> Self {
        self.delays_ms = delays_ms;
        self
    }

    /// Changes the settings (applied in order, after the test defaults).
    pub fn settings(mut self, change: impl FnOnce(&mut Settings) + Send + 'static) -> Self {
        self.changes.push(Box::new(change));
        self
    }

    /// The mock keeps bodies with `ETag`s and answers `304` (`--etags`).
    pub fn etags(mut self) -> Self {
        self.etags = true;
        self
    }

    /// No prewarm at sign-in: the test counts every upstream call itself.
    pub fn without_prewarm(self) -> Self {
        self.settings(|s| s.prewarm = false)
    }

    pub async fn spawn(self) -> TestApp {
        if std::env::var_os("TEST_LOG").is_some() {
            telemetry::init(LogFormat::Pretty);
        }
        let mut config = MockConfig::with_delays_ms(self.delays_ms);
        config.etags = self.etags;
        let mock = MockUpstream::start("127.0.0.1:0", config).await;
        let mock = mock.expect("the mock upstream starts");
        let (redis, cluster) = self.store.start();
        let mut settings = test_settings(mock.url(), redis.as_ref(), cluster.as_ref());
        self.changes.into_iter().for_each(|change| change(&mut settings));
        let clock = MockClock::new();
        let (address, cache, stopper) = run(&settings, &clock).await;
        let site = Site::new(address);
        TestApp {
            site,
            mock,
            clock,
            cache,
            redis,
            cluster,
            settings,
            stopper,
        }
    }
}

impl IntoFuture for AppBuilder {
    type Output = TestApp;
    type IntoFuture = Pin<Box<dyn Future<Output = TestApp> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.spawn())
    }
}

/// A running application with its mock upstream, clock and (maybe) Redis;
/// it derefs to its [`Site`] (`address`, `client`, `get`, `login`...).
pub struct TestApp {
    pub site: Site,
    pub mock: MockUpstream,
    pub clock: Arc<MockClock>,
    #[allow(dead_code)]
    pub cache: Arc<WidgetCache>,
    pub redis: Option<RedisServer>,
    pub cluster: Option<RedisCluster>,
    /// The settings the app was built with; further instances reuse them.
    pub settings: Settings,
    /// Stops the server in-process, as SIGTERM stops the binary.
    stopper: InProcess,
}

/// Builds and runs an application until the test stops it; returns its
/// base URL, its cache and its stop.
async fn run(settings: &Settings, clock: &Arc<MockClock>) -> (String, Arc<WidgetCache>, InProcess) {
    let app = Application::build_with_clock(settings.clone(), clock.clone()).await;
    let app = app.expect("the test application builds");
    let address = format!("http://{}", app.address());
    let cache = app.cache();
    (address, cache, InProcess::spawn(|stop| app.run_until(stop)))
}

impl TestApp {
    /// Stops the server gracefully (`Application::run_until`), as SIGTERM
    /// stops the binary, and waits until it has stopped.
    #[allow(dead_code)]
    pub async fn stop(&self) {
        self.stopper.stop(Duration::from_secs(20)).await;
    }
}

impl std::ops::Deref for TestApp {
    type Target = Site;

    fn deref(&self) -> &Site {
        &self.site
    }
}

/// A multi-threaded runtime and an app with 5 ms mock delays on it, for
/// property tests (proptest runners are synchronous).
pub fn app_on_runtime(store: StoreKind) -> (tokio::runtime::Runtime, TestApp) {
    let rt = testkit::runtime();
    let app = rt.block_on(spawn_app(store).delays_ms([5; 5]).spawn());
    (rt, app)
}

impl TestApp {
    /// Starts another instance with the same settings (same store, upstream,
    /// session key and clock), as a second server of a fleet. Returns its base URL.
    pub async fn spawn_instance(&self) -> String {
        self.spawn_instance_with_cache().await.0
    }

    /// As [`TestApp::spawn_instance`], with the instance's cache.
    pub async fn spawn_instance_with_cache(&self) -> (String, Arc<WidgetCache>) {
        let (address, cache, _stopper) = run(&self.settings, &self.clock).await;
        (address, cache)
    }

    /// `GET /widgets/{id}` → (Cache-Status, body).
    pub async fn widget(&self, id: u8) -> (String, String) {
        widget_with(&self.client, &self.url(&format!("/widgets/{id}"))).await
    }

    /// Waits until the mock has received `n` calls in all (panics after 10 s).
    pub async fn wait_for_calls(&self, n: u64) {
        let calls = || self.mock.total_calls();
        let why = || format!("mock saw {} calls, expected {n}", calls());
        eventually(WAIT, || calls() >= n, why).await;
    }

    /// Waits until the mock holds `n` calls unanswered at once (panics after 10 s).
    pub async fn wait_for_in_flight(&self, n: u64) {
        let held = || self.mock.in_flight();
        let why = || format!("mock holds {} calls, expected {n}", held());
        eventually(WAIT, || held() >= n, why).await;
    }

    /// One sample of this app's `/metrics` (0 when the series is absent).
    pub async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let text = self.get("/metrics").await.text().await.unwrap_or_default();
        metric_sample(&text, name, labels)
    }

    /// Waits until a sample of `/metrics` reaches `at_least` (panics after
    /// 10 s with the last value): the event a "nothing else happened" check
    /// is made after.
    pub async fn wait_for_metric(&self, name: &str, labels: &[(&str, &str)], at_least: f64) -> f64 {
        let last = &Mutex::new(0.0);
        let got = until(WAIT, Duration::from_millis(10), move || async move {
            let value = self.metric(name, labels).await;
            *last.lock().unwrap() = value;
            (value >= at_least).then_some(value)
        })
        .await;
        let last = *last.lock().unwrap();
        got.unwrap_or_else(|| panic!("{name}{labels:?} stayed at {last}, expected {at_least}"))
    }

    /// Polls `GET /widgets/{id}` until it is a fresh hit (not a stale one).
    pub async fn wait_for_fresh_hit(&self, id: u8) -> (String, String) {
        let last = &Mutex::new(String::new());
        let hit = until(WAIT, Duration::from_millis(20), move || async move {
            let (status, body) = self.widget(id).await;
            // A hit with no detail: not revalidating, not outdated.
            let fresh = status.starts_with("percache; hit; ttl=") && !status.contains("detail=");
            *last.lock().unwrap() = status.clone();
            fresh.then_some((status, body))
        })
        .await;
        let last = last.lock().unwrap().clone();
        hit.unwrap_or_else(|| panic!("widget {id} never became a fresh hit (last: {last})"))
    }

    /// A Redis store handle on the test's Redis (panics for the memory flavour).
    pub fn redis_store(&self) -> RedisStore {
        if let Some(cluster) = &self.cluster {
            let urls = cluster.nodes.iter().map(RedisServer::url).collect();
            return RedisStore::cluster(urls, Duration::from_secs(2)).expect("a cluster store handle");
        }
        let redis = self.redis.as_ref().expect("a Redis test app");
        RedisStore::new(&redis.url(), Duration::from_secs(2)).expect("a Redis store handle")
    }
}

pub async fn widget_with(client: &reqwest::Client, url: &str) -> (String, String) {
    let resp = client.get(url).send().await;
    let resp = resp.unwrap_or_else(|e| panic!("GET {url}: {e}"));
    assert_eq!(resp.status(), 200, "GET {url}");
    let status = cache_status(&resp);
    let body = resp
        .text()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: body: {e}"));
    (status, body)
}

/// The `Cache-Status` header of a response.
pub fn cache_status(resp: &reqwest::Response) -> String {
    testkit::http::header(resp, "cache-status")
}

/// The `data-version` of a rendered card.
pub fn version_of(card: &str) -> u64 {
    testkit::html::attr(card, "data-version")
}

/// The `data-state` values of the cards in a page, in order.
pub fn states(html: &str) -> Vec<String> {
    testkit::html::attr_values(html, "data-state")
}

/// Serialises the heavy tests (soak, chaos) so they never run at the same
/// time as each other on a small machine.
pub static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The real `percache` binary on a free loopback port (`--bind`), with
/// `args`, env [`SESSION_KEY`] and `RUST_LOG=warn`, once `/healthz` answers.
pub async fn binary_server(name: &str, args: &[&str]) -> HttpServer {
    let env = [("SESSION_KEY", Some(SESSION_KEY)), ("RUST_LOG", Some("warn"))];
    binary_server_with_env(name, args, &env).await
}

/// As [`binary_server`], with these environment variables set (`Some`) or
/// removed (`None`). `LOGIN_RATE=0` unless `env` says otherwise: every test
/// client is 127.0.0.1.
pub async fn binary_server_with_env(name: &str, args: &[&str], env: &[(&str, Option<&str>)]) -> HttpServer {
    let logs = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let env = [&[("LOGIN_RATE", Some("0"))][..], env].concat();
    HttpServer::start(&format!("percache-{name}"), logs, "/healthz", |port| {
        let bind = format!("127.0.0.1:{port}");
        let mut command = testkit::process::command(env!("CARGO_BIN_EXE_percache"), &["--bind", &bind], &env);
        command.args(args);
        command
    })
    .await
}

/// The default instance of a built-in widget (`"1"` to `"5"`).
pub fn instance(id: &str) -> percache::widget::Instance {
    let registry = percache::widget::Registry::builtin();
    registry
        .default_instance(id)
        .unwrap_or_else(|| panic!("no built-in widget {id}"))
}

/// The default instances of the five built-in widgets, in page order.
pub fn all_instances() -> Vec<percache::widget::Instance> {
    let registry = percache::widget::Registry::builtin();
    registry.all().iter().map(|w| w.default_instance()).collect()
}

/// Runs the binary with `args` and `env` and returns (exit code, stderr);
/// fails the test if it is still running after 10 s.
pub fn start_and_fail(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_percache"));
    command
        .args(["--bind", "127.0.0.1:0"])
        .args(args)
        .envs(env.iter().copied());
    let name = format!("percache {args:?} {env:?}");
    let (status, stderr) = Process::run_to_exit(&name, &mut command, Duration::from_secs(10));
    (status.code(), stderr)
}
