//! The one test harness: `spawn_app()` starts a real mock upstream and the
//! application on port 0 (and, for the Redis flavour, a real `redis-server`
//! on a free port), and returns a [`TestApp`] with a cookie-keeping client
//! that does not follow redirects.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mock_upstream::{MockConfig, MockUpstream};
use percache::cache::store::redis::RedisStore;
use percache::cache::WidgetCache;
use percache::clock::MockClock;
use percache::config::{LogFormat, Settings};
use percache::defence::login_rate::LoginRate;
use percache::startup::Application;
use percache::telemetry;

/// Which store the application under test uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    Memory,
    Redis,
    /// A three-master Redis Cluster on loopback ports.
    Cluster,
}

/// The session key every test instance shares, so one cookie works on all of them.
pub const SESSION_KEY: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";

/// A last change to the settings of a test application.
pub type Tweak = Arc<dyn Fn(&mut Settings) + Send + Sync>;

/// Knobs of a test application; [`TestConfig::new`] gives fast defaults.
pub struct TestConfig {
    pub store: StoreKind,
    pub prewarm: bool,
    pub delays_ms: [u64; 5],
    pub fresh: Duration,
    pub ttl: Duration,
    pub grace: Duration,
    pub failure_backoff: Duration,
    pub invalidation_secret: Option<String>,
    /// The `--session-key`; [`SESSION_KEY`] unless a test needs an instance
    /// whose cookies the others refuse.
    pub session_key: String,
    pub l1_ttl: Duration,
    pub max_background: usize,
    /// Last changes to the settings (a widgets file, TLS flags...).
    pub tweak: Option<Tweak>,
}

impl TestConfig {
    pub fn new(store: StoreKind) -> Self {
        Self {
            store,
            prewarm: true,
            delays_ms: [20, 60, 200, 100, 20],
            fresh: Duration::from_secs(60),
            ttl: Duration::from_secs(600),
            grace: Duration::from_secs(3600),
            failure_backoff: Duration::from_millis(300),
            invalidation_secret: Some("test-webhook-secret".into()),
            l1_ttl: Duration::from_secs(1),
            max_background: 512,
            session_key: SESSION_KEY.into(),
            tweak: None,
        }
    }

    /// With a last change to the settings.
    pub fn tweak(mut self, f: impl Fn(&mut Settings) + Send + Sync + 'static) -> Self {
        self.tweak = Some(Arc::new(f));
        self
    }

    pub fn without_prewarm(mut self) -> Self {
        self.prewarm = false;
        self
    }
}

/// A `redis-server` child process on a free loopback port, killed on drop.
pub struct RedisServer {
    child: Child,
    pub port: u16,
}

impl RedisServer {
    pub fn start() -> Self {
        Self::start_on_any_port(|_| Vec::new())
    }

    /// Tries free ports until a server comes up: another test may take a
    /// port between `free_port()` and redis-server binding it.
    pub fn start_on_any_port(extra: impl Fn(u16) -> Vec<String>) -> Self {
        for _ in 0..5 {
            let port = free_port();
            if let Some(server) = Self::try_start(port, &extra(port)) {
                return server;
            }
        }
        panic!("redis-server did not start on any of 5 free ports");
    }

    /// On this exact port (a restart after a kill).
    pub fn start_on(port: u16) -> Self {
        Self::try_start(port, &[]).unwrap_or_else(|| panic!("redis-server did not start on port {port}"))
    }

    fn try_start(port: u16, extra: &[String]) -> Option<Self> {
        let mut child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (scripts/test.sh installs it)");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            // Exited (e.g. the port was taken): not ours to use.
            if !matches!(child.try_wait(), Ok(None)) {
                return None;
            }
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Some(Self { child, port });
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A three-master Redis Cluster on free loopback ports, stopped on drop.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
    dir: std::path::PathBuf,
    /// `redis` or `rediss` (TLS).
    scheme: &'static str,
}

/// The TLS files of a TLS-only Redis: server certificate, key, and the CA
/// that clients trust.
#[derive(Debug, Clone)]
pub struct RedisTls {
    pub cert: String,
    pub key: String,
    pub ca: String,
}

impl RedisTls {
    /// `redis-server` arguments: TLS only on `port`, no client certificates.
    pub fn server_args(&self, port: u16) -> Vec<String> {
        [
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
            "--tls-cert-file",
            &self.cert,
            "--tls-key-file",
            &self.key,
            "--tls-ca-cert-file",
            &self.ca,
            "--tls-auth-clients",
            "no",
            "--tls-cluster",
            "yes",
            "--tls-replication",
            "yes",
        ]
        .map(String::from)
        .to_vec()
    }

    /// `redis-cli` arguments to talk TLS.
    pub fn cli_args(&self) -> Vec<String> {
        vec!["--tls".into(), "--cacert".into(), self.ca.clone()]
    }
}

impl RedisCluster {
    pub fn start() -> Self {
        Self::start_with(None)
    }

    /// A cluster whose nodes speak only TLS, with these files.
    pub fn start_with(tls: Option<&RedisTls>) -> Self {
        let dir =
            std::env::temp_dir().join(format!("percache-cluster-{}-{}", std::process::id(), free_port()));
        std::fs::create_dir_all(&dir).unwrap();
        let nodes: Vec<RedisServer> = (0..3)
            .map(|_| {
                RedisServer::start_on_any_port(|port| {
                    let mut args: Vec<String> = [
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        &format!("nodes-{port}.conf"),
                        "--dir",
                        dir.to_str().unwrap(),
                    ]
                    .map(String::from)
                    .to_vec();
                    args.extend(tls.map(|t| t.server_args(port)).unwrap_or_default());
                    args
                })
            })
            .collect();
        let cli_tls = tls.map(RedisTls::cli_args).unwrap_or_default();
        let mut create = Command::new("redis-cli");
        create.args(&cli_tls).arg("--cluster").arg("create");
        for node in &nodes {
            create.arg(format!("127.0.0.1:{}", node.port));
        }
        let out = create
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("redis-cli must be installed (scripts/test.sh installs redis-tools)");
        assert!(
            out.status.success(),
            "cluster create failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        for node in &nodes {
            loop {
                let info = Command::new("redis-cli")
                    .args(&cli_tls)
                    .args(["-p", &node.port.to_string(), "cluster", "info"])
                    .output()
                    .unwrap();
                if String::from_utf8_lossy(&info.stdout).contains("cluster_state:ok") {
                    break;
                }
                assert!(Instant::now() < deadline, "cluster never became ok");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Self {
            nodes,
            dir,
            scheme: if tls.is_some() { "rediss" } else { "redis" },
        }
    }

    /// The node URLs, comma-separated, as `--redis-cluster` takes them.
    pub fn nodes(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("{}://127.0.0.1:{}", self.scheme, n.port))
            .collect::<Vec<_>>()
            .join(",")
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        self.nodes.clear();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A free loopback port (bound then released).
/// Waits until `done()` holds, checking every 5 ms; past `within` the test
/// fails with `why()` (computed then, so it tells the state at the deadline).
/// Every wait of the suite has a deadline.
pub async fn eventually<M: std::fmt::Display>(
    within: Duration,
    mut done: impl FnMut() -> bool,
    why: impl Fn() -> M,
) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "{} (after {within:?})", why());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running application with its mock upstream, clock and (maybe) Redis.
pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    pub mock: MockUpstream,
    pub clock: Arc<MockClock>,
    #[allow(dead_code)]
    pub cache: Arc<WidgetCache>,
    pub redis: Option<RedisServer>,
    pub cluster: Option<RedisCluster>,
    pub config: TestConfig,
    /// The settings the app was built with; further instances reuse them.
    pub settings: Settings,
}

pub async fn spawn_app(store: StoreKind) -> TestApp {
    spawn_app_with(TestConfig::new(store)).await
}

pub async fn spawn_app_with(config: TestConfig) -> TestApp {
    if std::env::var_os("TEST_LOG").is_some() {
        telemetry::init(LogFormat::Pretty);
    }
    let mock = MockUpstream::start("127.0.0.1:0", MockConfig::with_delays_ms(config.delays_ms))
        .await
        .expect("mock upstream starts");
    let redis = (config.store == StoreKind::Redis).then(RedisServer::start);
    let cluster = (config.store == StoreKind::Cluster).then(RedisCluster::start);

    let mut settings = Settings::defaults();
    settings.bind = "127.0.0.1:0".into();
    settings.upstream_url = Some(mock.url());
    settings.redis_url = redis.as_ref().map(RedisServer::url);
    settings.redis_cluster = cluster.as_ref().map(RedisCluster::nodes);
    settings.session_key = Some(config.session_key.clone());
    settings.fresh = config.fresh;
    settings.ttl = config.ttl;
    settings.grace = config.grace;
    settings.failure_backoff = config.failure_backoff;
    settings.invalidation_secret = config.invalidation_secret.clone();
    settings.l1_ttl = config.l1_ttl;
    settings.max_background_fetches = config.max_background;
    settings.prewarm = config.prewarm;
    settings.upstream_timeout = Duration::from_secs(5);
    // Tests run in parallel on a small machine: a lenient bound keeps a busy
    // CPU from looking like a Redis outage (outages are tested by killing Redis).
    settings.store_timeout = Duration::from_secs(1);
    settings.workers = 2;
    // Every test client is 127.0.0.1: no sign-in limit unless a test sets one.
    settings.login_rate = LoginRate::Off;
    if let Some(tweak) = &config.tweak {
        tweak(&mut settings);
    }

    let clock = MockClock::new();
    let app = Application::build_with_clock(settings.clone(), clock.clone())
        .await
        .expect("app builds");
    let address = format!("http://{}", app.address());
    let cache = app.cache();
    tokio::spawn(app.run_until_stopped());

    TestApp {
        address,
        client: new_client(),
        mock,
        clock,
        cache,
        redis,
        cluster,
        config,
        settings,
    }
}

/// A multi-threaded runtime and an app with 5 ms mock delays on it, for
/// property tests (proptest runners are synchronous).
pub fn app_on_runtime(store: StoreKind) -> (tokio::runtime::Runtime, TestApp) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let app = rt.block_on(spawn_app_with(TestConfig {
        delays_ms: [5; 5],
        ..TestConfig::new(store)
    }));
    (rt, app)
}

/// A client with its own cookie jar that never follows redirects.
pub fn new_client() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

impl TestApp {
    /// Starts another instance with the same settings (same store, upstream,
    /// session key and clock), as a second server of a fleet. Returns its base URL.
    pub async fn spawn_instance(&self) -> String {
        self.spawn_instance_with_cache().await.0
    }

    /// As [`TestApp::spawn_instance`], with the instance's cache.
    pub async fn spawn_instance_with_cache(&self) -> (String, Arc<WidgetCache>) {
        let app = Application::build_with_clock(self.settings.clone(), self.clock.clone())
            .await
            .expect("second instance builds");
        let address = format!("http://{}", app.address());
        let cache = app.cache();
        tokio::spawn(app.run_until_stopped());
        (address, cache)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    /// Signs in through the form with the app's own client.
    pub async fn login(&self, username: &str) -> reqwest::Response {
        self.login_with(&self.client, username).await
    }

    pub async fn login_with(&self, client: &reqwest::Client, username: &str) -> reqwest::Response {
        client
            .post(self.url("/login"))
            .form(&[("username", username)])
            .send()
            .await
            .unwrap()
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).send().await.unwrap()
    }

    pub async fn post(&self, path: &str) -> reqwest::Response {
        self.client.post(self.url(path)).send().await.unwrap()
    }

    /// `GET /widgets/{id}` → (Cache-Status, body).
    pub async fn widget(&self, id: u8) -> (String, String) {
        widget_with(&self.client, &self.url(&format!("/widgets/{id}"))).await
    }

    /// Waits until the mock has received `n` calls in all (panics after 10 s).
    pub async fn wait_for_calls(&self, n: u64) {
        eventually(
            Duration::from_secs(10),
            || self.mock.total_calls() >= n,
            || format!("mock saw {} calls, expected {n}", self.mock.total_calls()),
        )
        .await;
    }

    /// Polls `GET /widgets/{id}` until it is a fresh hit (not a stale one).
    pub async fn wait_for_fresh_hit(&self, id: u8) -> (String, String) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (status, body) = self.widget(id).await;
            // A hit with no detail: not revalidating, not outdated.
            if status.starts_with("percache; hit; ttl=") && !status.contains("detail=") {
                return (status, body);
            }
            assert!(
                Instant::now() < deadline,
                "widget {id} never became a fresh hit (last: {status})"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A Redis store handle on the test's Redis (panics for the memory flavour).
    pub fn redis_store(&self) -> RedisStore {
        if let Some(cluster) = &self.cluster {
            let urls = cluster.nodes.iter().map(RedisServer::url).collect();
            return RedisStore::cluster(urls, Duration::from_secs(2)).unwrap();
        }
        let redis = self.redis.as_ref().expect("a Redis test app");
        RedisStore::new(&redis.url(), Duration::from_secs(2)).unwrap()
    }
}

pub async fn widget_with(client: &reqwest::Client, url: &str) -> (String, String) {
    let resp = client.get(url).send().await.unwrap();
    assert_eq!(resp.status(), 200, "GET {url}");
    let status = cache_status(&resp);
    (status, resp.text().await.unwrap())
}

pub fn cache_status(resp: &reqwest::Response) -> String {
    resp.headers()
        .get("cache-status")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

/// The `data-version` of a rendered card.
pub fn version_of(card: &str) -> u64 {
    let start = card.find("data-version=\"").expect("card has a version") + "data-version=\"".len();
    card[start..].split('"').next().unwrap().parse().unwrap()
}

/// The `data-state` values of the cards in a page, in order.
pub fn states(html: &str) -> Vec<String> {
    html.split("data-state=\"")
        .skip(1)
        .map(|s| s.split('"').next().unwrap().to_owned())
        .collect()
}

/// One test module per async fn taking a [`StoreKind`], with one test per
/// listed store, e.g. `store_tests!(name: memory => Memory, redis => Redis)`.
#[macro_export]
macro_rules! store_tests {
    ($name:ident: $($test:ident => $kind:ident),+) => {
        mod $name {
            $(
                #[tokio::test]
                async fn $test() { super::$name($crate::helpers::StoreKind::$kind).await }
            )+
        }
    };
}

/// A `memory`, a `redis` and a `cluster` test for each fn.
#[macro_export]
macro_rules! all_stores {
    ($($name:ident),* $(,)?) => {$(
        $crate::store_tests!($name: memory => Memory, redis => Redis, cluster => Cluster);
    )*};
}

/// A `redis` and a `cluster` test for each fn.
#[macro_export]
macro_rules! cluster_stores {
    ($($name:ident),* $(,)?) => {$( $crate::store_tests!($name: redis => Redis, cluster => Cluster); )*};
}

/// A `memory` and a `redis` test for each fn.
#[macro_export]
macro_rules! both_stores {
    ($($name:ident),* $(,)?) => {$( $crate::store_tests!($name: memory => Memory, redis => Redis); )*};
}

/// Serialises the heavy tests (soak, chaos) so they never run at the same
/// time as each other on a small machine.
pub static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The real `percache` binary as a child process on a free loopback port,
/// its stdout (the logs) and stderr captured to files; killed on drop.
pub struct BinaryServer {
    child: Child,
    pub base: String,
    pub stdout_path: std::path::PathBuf,
    pub stderr_path: std::path::PathBuf,
}

impl BinaryServer {
    /// Starts the binary with `--bind 127.0.0.1:<free port>` and `args`
    /// (env: [`SESSION_KEY`], `RUST_LOG=warn`), and waits for `/healthz`.
    pub async fn start(name: &str, args: &[&str]) -> Self {
        Self::start_with_env(
            name,
            args,
            &[("SESSION_KEY", Some(SESSION_KEY)), ("RUST_LOG", Some("warn"))],
        )
        .await
    }

    /// As [`BinaryServer::start`], with these environment variables set
    /// (`Some`) or removed (`None`). `LOGIN_RATE=0` unless `env` says
    /// otherwise: every test client is 127.0.0.1.
    pub async fn start_with_env(name: &str, args: &[&str], env: &[(&str, Option<&str>)]) -> Self {
        let port = free_port();
        let file = |ext: &str| {
            std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
                .join(format!("percache-{name}-{}-{port}.{ext}", std::process::id()))
        };
        let (stdout_path, stderr_path) = (file("stdout"), file("stderr"));
        let mut command = Command::new(env!("CARGO_BIN_EXE_percache"));
        command
            .args(["--bind", &format!("127.0.0.1:{port}")])
            .args(args)
            .stdout(std::fs::File::create(&stdout_path).unwrap())
            .stderr(std::fs::File::create(&stderr_path).unwrap())
            .env("LOGIN_RATE", "0");
        for (key, value) in env {
            match value {
                Some(value) => command.env(key, value),
                None => command.env_remove(key),
            };
        }
        let mut server = Self {
            child: command.spawn().unwrap(),
            base: format!("http://127.0.0.1:{port}"),
            stdout_path,
            stderr_path,
        };
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(resp) = client.get(server.url("/healthz")).send().await {
                if resp.status() == 200 {
                    break;
                }
            }
            assert!(server.is_alive(), "the server exited: {}", server.stderr());
            assert!(Instant::now() < deadline, "the server did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        server
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn is_alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends SIGTERM and waits (at most `bound`) for the process to exit.
    pub async fn terminate(&mut self, bound: Duration) -> std::process::ExitStatus {
        let kill = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(kill.success());
        let deadline = Instant::now() + bound;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "the server did not exit after SIGTERM");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// What the process wrote to stdout (its logs) so far.
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout_path).unwrap_or_default()
    }

    /// What the process wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }
}

impl Drop for BinaryServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.stdout_path);
        let _ = std::fs::remove_file(&self.stderr_path);
    }
}

/// Signs in `user` with a cookie-less client and returns the session cookie
/// (`name=value`) to send back in a `Cookie` header.
pub async fn login_cookie(client: &reqwest::Client, base: &str, user: &str) -> Result<String, String> {
    let resp = client
        .post(format!("{base}/login"))
        .form(&[("username", user)])
        .send()
        .await
        .map_err(|e| format!("POST /login: {e}"))?;
    if resp.status() != 303 {
        return Err(format!("POST /login: {}", resp.status()));
    }
    let cookie = resp
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .ok_or("POST /login: no set-cookie")?;
    Ok(cookie.to_owned())
}

/// One process's figures from `/proc/<pid>`: (VmRSS kB, VmHWM kB, threads, open fds).
#[derive(Debug, Clone, Copy)]
pub struct ProcStats {
    pub rss_kb: u64,
    pub hwm_kb: u64,
    pub threads: u64,
    pub fds: usize,
}

impl ProcStats {
    pub fn of(pid: u32) -> Self {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let field = |name: &str| -> u64 {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("{name} in /proc/{pid}/status"))
        };
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count();
        Self {
            rss_kb: field("VmRSS:"),
            hwm_kb: field("VmHWM:"),
            threads: field("Threads:"),
            fds,
        }
    }
}

/// The value of the sample of `name` whose labels include every `labels` pair
/// in a Prometheus text page (summed; 0 if absent).
pub fn metric_sample(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter(|l| labels.iter().all(|(k, v)| l.contains(&format!("{k}=\"{v}\""))))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The default instance of a built-in widget (`"1"` to `"5"`).
pub fn instance(id: &str) -> percache::widget::Instance {
    percache::widget::Registry::builtin()
        .default_instance(id)
        .unwrap_or_else(|| panic!("no built-in widget {id}"))
}

/// The default instances of the five built-in widgets, in page order.
pub fn all_instances() -> Vec<percache::widget::Instance> {
    percache::widget::Registry::builtin()
        .all()
        .iter()
        .map(|w| w.default_instance())
        .collect()
}

/// Runs the binary with `args` and `env` and returns (exit code, stderr);
/// fails the test if it is still running after 10 s.
pub fn start_and_fail(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_percache"))
        .args(["--bind", "127.0.0.1:0"])
        .args(args)
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut stderr = String::new();
            std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
            return (status.code(), stderr);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("percache kept running with {args:?} {env:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
