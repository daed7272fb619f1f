//! In front of a real API: an HTTPS upstream that wants a bearer token, with
//! a certificate from a CA made at test time, and a Redis that speaks only
//! TLS (`redis-server --tls-port`), for the cache and the change feed.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose, SanType};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use percache::cache::key::UserTag;
use percache::cache::store::redis::RedisStore;
use percache::cache::Store;
use percache::widget::Registry;

use crate::helpers::{
    cache_status, eventually, spawn_app, until_ok, version_of, widget_with, RedisCluster, RedisServer,
    RedisTls, StoreKind,
};

/// The token the test API wants, given to percache through `${VAR}`.
const TOKEN: &str = "t0k3n-for-tests";
const TOKEN_VAR: &str = "PERCACHE_TLS_TEST_TOKEN";

/// A CA and a certificate for 127.0.0.1 signed by it, as PEM files.
struct TestPki {
    dir: PathBuf,
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    server: Arc<rustls::ServerConfig>,
}

impl TestPki {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("percache-pki-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "percache test CA");
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let leaf_key = KeyPair::generate().unwrap();
        let mut leaf_params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        leaf_params
            .subject_alt_names
            .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
        leaf_params
            .distinguished_name
            .push(DnType::CommonName, "127.0.0.1");
        let leaf = leaf_params.signed_by(&leaf_key, &ca, &ca_key).unwrap();

        let (ca_path, cert, key) = (dir.join("ca.pem"), dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&ca_path, ca.pem()).unwrap();
        std::fs::write(&cert, leaf.pem()).unwrap();
        std::fs::write(&key, leaf_key.serialize_pem()).unwrap();

        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![CertificateDer::from(leaf.der().to_vec())],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
            )
            .unwrap();
        Self {
            dir,
            ca: ca_path,
            cert,
            key,
            server: Arc::new(server),
        }
    }
}

impl Drop for TestPki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What the HTTPS API saw.
#[derive(Default)]
struct Seen {
    connections: AtomicUsize,
    authorized: AtomicUsize,
    refused: AtomicUsize,
    /// Calls that came over HTTP/2.
    http2: AtomicUsize,
    /// Calls that accepted a gzipped body.
    gzip: AtomicUsize,
}

/// An HTTPS JSON API on a free port that answers only requests with the
/// bearer token: `GET /v1/users/{user}/stats?range=` and `/account`.
struct HttpsApi {
    port: u16,
    seen: Arc<Seen>,
}

async fn api_handler(req: HttpRequest, seen: web::Data<Seen>) -> HttpResponse {
    let auth = req.headers().get("authorization").and_then(|v| v.to_str().ok());
    if auth != Some(&format!("Bearer {TOKEN}")) {
        seen.refused.fetch_add(1, Ordering::SeqCst);
        return HttpResponse::Unauthorized().json(serde_json::json!({"error": "token"}));
    }
    let n = seen.authorized.fetch_add(1, Ordering::SeqCst) + 1;
    if req.version() == actix_web::http::Version::HTTP_2 {
        seen.http2.fetch_add(1, Ordering::SeqCst);
    }
    let accepts = req.headers().get("accept-encoding").and_then(|v| v.to_str().ok());
    if accepts.is_some_and(|v| v.contains("gzip")) {
        seen.gzip.fetch_add(1, Ordering::SeqCst);
    }
    let user = req.match_info().get("user").unwrap_or("").to_owned();
    if req.match_info().get("what") == Some("bomb") {
        // 4 MiB once decoded, a few KiB gzipped: over the body limit.
        return HttpResponse::Ok().json(serde_json::json!({ "pad": " ".repeat(4 << 20) }));
    }
    let range = req
        .query_string()
        .strip_prefix("range=")
        .unwrap_or("none")
        .to_owned();
    HttpResponse::Ok().json(serde_json::json!({
        "user": user,
        "visits": n,
        "range": range,
        "plan": "<b>pro</b>",
        "version": n,
    }))
}

impl HttpsApi {
    fn start(pki: &TestPki) -> Self {
        // actix-web offers h2 and http/1.1 by ALPN whatever the config says.
        Self::start_with((*pki.server).clone())
    }

    fn start_with(config: rustls::ServerConfig) -> Self {
        let seen = Arc::new(Seen::default());
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let data = web::Data::from(Arc::clone(&seen));
        let counter = Arc::clone(&seen);
        let server = HttpServer::new(move || {
            App::new()
                .wrap(actix_web::middleware::Compress::default())
                .app_data(data.clone())
                .route("/v1/users/{user}/{what}", web::get().to(api_handler))
        })
        .on_connect(move |_, _| {
            counter.connections.fetch_add(1, Ordering::SeqCst);
        })
        .workers(1)
        .listen_rustls_0_23(listener, config)
        .unwrap()
        .run();
        tokio::spawn(server);
        Self { port, seen }
    }

    fn widgets_file(&self, dir: &Path) -> PathBuf {
        let path = dir.join("widgets.toml");
        std::fs::write(
            &path,
            format!(
                r#"[upstream]
base_url = "https://127.0.0.1:{port}"
headers = {{ Authorization = "Bearer ${{{TOKEN_VAR}}}" }}

[[widget]]
id = "stats"
title = "Stats"
path = "/v1/users/{{user}}/stats"
params = {{ range = {{ values = ["day", "week"], default = "day" }} }}
view = {{ kind = "stat", value = "/visits", caption = "visits this {{range}}" }}

[[widget]]
id = "account"
title = "Account"
path = "/v1/users/{{user}}/account"
view = {{ kind = "fields", fields = [ {{ label = "Plan", value = "/plan" }} ] }}

[[widget]]
id = "bomb"
title = "Bomb"
path = "/v1/users/{{user}}/bomb"
"#,
                port = self.port
            ),
        )
        .unwrap();
        path
    }
}

/// An app in front of `api`, trusting `ca` when given.
async fn app_in_front_of(api: &HttpsApi, pki: &TestPki, ca: Option<PathBuf>) -> crate::helpers::TestApp {
    // Every test sets the same value: no race between tests.
    std::env::set_var(TOKEN_VAR, TOKEN);
    let file = api.widgets_file(&pki.dir);
    spawn_app(StoreKind::Memory)
        .settings(move |s| {
            s.widgets = Some(file);
            s.upstream_url = None;
            s.upstream_ca = ca;
        })
        .await
}

/// The client side's open TCP connections to `port` (established or
/// waiting to close), from `ss`.
fn open_connections_to(port: u16) -> usize {
    let out = std::process::Command::new("ss")
        .args(["-Htn", "state", "established", "state", "close-wait"])
        .arg(format!("( dport = :{port} )"))
        .output()
        .expect("ss (iproute2) is installed");
    String::from_utf8_lossy(&out.stdout).lines().count()
}

#[tokio::test]
async fn an_https_upstream_with_a_bearer_token_is_served_and_its_connections_reused() {
    // Arrange
    let pki = TestPki::new("https-ok");
    let api = HttpsApi::start(&pki);
    let app = app_in_front_of(&api, &pki, Some(pki.ca.clone())).await;

    // Act: sign in (prewarm: both widgets), read them, then 20 forced refreshes.
    app.login("alice").await;
    let json: serde_json::Value = app.get("/api/widgets/account").await.json().await.unwrap();
    let (_, card) = widget_with(&app.client, &app.url("/widgets/account")).await;
    let week: serde_json::Value = app
        .get("/api/widgets/stats?range=week")
        .await
        .json()
        .await
        .unwrap();
    for _ in 0..20 {
        let resp = app.post("/widgets/stats/refresh").await;
        assert_eq!(cache_status(&resp), "percache; fwd=request; stored");
    }
    let calls = api.seen.authorized.load(Ordering::SeqCst);
    let connections = api.seen.connections.load(Ordering::SeqCst);

    // Assert: the data is alice's, escaped, and every call carried the token.
    assert_eq!(json["id"], "account");
    assert_eq!(json["data"]["user"], "alice");
    assert!(card.contains("&lt;b&gt;pro&lt;/b&gt;"), "escaped: {card}");
    assert_eq!(week["data"]["range"], "week", "the parameter reached the API");
    assert_eq!(
        api.seen.refused.load(Ordering::SeqCst),
        0,
        "every call had the token"
    );
    assert_eq!(calls, 3 + 1 + 20, "prewarm (3), ?range=week (1), 20 refreshes");
    // HTTP/2 by ALPN, and gzip accepted (and decoded: the JSON above).
    assert_eq!(
        api.seen.http2.load(Ordering::SeqCst),
        calls,
        "every call over HTTP/2"
    );
    assert_eq!(
        api.seen.gzip.load(Ordering::SeqCst),
        calls,
        "every call accepts gzip"
    );
    // The body limit applies to the decoded bytes: 4 MiB gzipped small is refused.
    let bomb = app.get("/api/widgets/bomb").await;
    assert_eq!(bomb.status(), 502, "a body over the limit once decoded");
    eprintln!(
        "https upstream: {calls} calls over {connections} connections \
         ({:.1} calls per connection)",
        calls as f64 / connections.max(1) as f64
    );
    // Prewarm's three concurrent calls may open a connection each on each
    // of the two workers; everything after reuses them.
    assert!(
        connections <= 6,
        "keep-alive: {calls} calls need at most 4 connections, made {connections}"
    );

    // And once idle, the connections are closed by percache itself.
    eventually(
        percache::upstream::IDLE_LIMIT + Duration::from_secs(4),
        || open_connections_to(api.port) == 0,
        || {
            format!(
                "idle upstream connections still open: {}",
                open_connections_to(api.port)
            )
        },
    )
    .await;
}

#[tokio::test]
async fn an_untrusted_certificate_gives_an_error_card_and_a_502_not_a_hang() {
    // Arrange: no --upstream-ca, so the test CA is not trusted.
    let pki = TestPki::new("https-untrusted");
    let api = HttpsApi::start(&pki);
    let app = app_in_front_of(&api, &pki, None).await;
    app.login("alice").await;

    // Act
    let start = Instant::now();
    let resp = app.get("/api/widgets/account").await;
    let status = resp.status();
    let json: serde_json::Value = resp.json().await.unwrap();
    let (_, card) = widget_with(&app.client, &app.url("/widgets/stats")).await;
    let elapsed = start.elapsed();

    // Assert
    assert_eq!(status, 502);
    let error = json["error"].as_str().unwrap_or_default();
    assert!(error.contains("TLS") && error.contains("certificate"), "{json}");
    assert!(card.contains(r#"data-state="error""#), "{card}");
    assert!(card.contains("TLS"), "the card says why: {card}");
    assert_eq!(
        api.seen.authorized.load(Ordering::SeqCst),
        0,
        "no request got through"
    );
    assert!(
        elapsed < app.settings.upstream_timeout,
        "a certificate error is not retried until the timeout ({elapsed:?})"
    );
}

impl TestPki {
    fn redis(&self) -> RedisTls {
        RedisTls {
            cert: self.cert.display().to_string(),
            key: self.key.display().to_string(),
            ca: self.ca.display().to_string(),
        }
    }
}

/// A `redis-server` that speaks only TLS, with the test PKI.
fn tls_redis(pki: &TestPki) -> RedisServer {
    let tls = pki.redis();
    let cli = tls.cli_args();
    RedisServer::start_on_any_port(move |port| tls.server_args(port), &cli)
}

/// Where the TLS Redis is: one server or a cluster (kept alive by the test).
enum TlsStore {
    Single(#[allow(dead_code)] RedisServer, String),
    Cluster(RedisCluster),
}

async fn tls_redis_holds_the_cache_and_carries_the_change_feed(cluster: bool) {
    // Arrange: two instances on a TLS-only Redis, each with a long-lived L1,
    // so only the change feed can tell B that A refreshed a widget.
    let pki = TestPki::new(if cluster { "rediss-cluster" } else { "rediss" });
    let redis = if cluster {
        TlsStore::Cluster(RedisCluster::start_with(Some(&pki.redis())))
    } else {
        let server = tls_redis(&pki);
        let url = format!("rediss://127.0.0.1:{}", server.port);
        TlsStore::Single(server, url)
    };
    let (single, nodes) = match &redis {
        TlsStore::Single(_, url) => (Some(url.clone()), None),
        TlsStore::Cluster(c) => (None, Some(c.nodes())),
    };
    let (s1, n1, ca) = (single.clone(), nodes.clone(), pki.ca.clone());
    let app = spawn_app(StoreKind::Memory)
        .settings(move |s| {
            s.store.redis_url = s1;
            s.store.redis_cluster = n1;
            s.store.redis_ca = Some(ca);
            s.store.l1_ttl = Duration::from_secs(60);
        })
        .await;
    let b = app.spawn_instance().await;
    app.login("alice").await;
    app.wait_for_calls(5).await;
    let (_, first) = app.wait_for_fresh_hit(1).await;

    // Act 1: B reads widget 1 (from Redis, now in its L1).
    let (status, on_b) = widget_with(&app.client, &format!("{b}/widgets/1")).await;

    // Assert 1: the entry is in the TLS Redis, and B served it as a hit.
    let bundle = percache::tls::pem_bundle(&pki.ca).unwrap();
    let store = match (&single, &nodes) {
        (Some(url), _) => RedisStore::with_ca(url, Some(&bundle), Duration::from_secs(2)).unwrap(),
        (_, Some(nodes)) => {
            let urls = nodes.split(',').map(str::to_owned).collect();
            RedisStore::cluster_with_ca(urls, Some(&bundle), Duration::from_secs(2)).unwrap()
        }
        _ => unreachable!(),
    };
    let key = UserTag::of("alice").key(&Registry::builtin().default_instance("1").unwrap());
    let entry = store.get(&key).await.unwrap().expect("the entry is in Redis");
    assert_eq!(entry.value()["userId"], "alice");
    assert!(status.starts_with("percache; hit"), "{status}");
    assert_eq!(version_of(&on_b), version_of(&first));

    // Act 2: A refreshes widget 1.
    let resp = app.post("/widgets/1/refresh").await;
    let fresh = version_of(&resp.text().await.unwrap());
    assert!(fresh > version_of(&first));

    // Assert 2: B serves the new version well before its L1 would expire.
    let (client, b_widget) = (&app.client, &format!("{b}/widgets/1"));
    until_ok(
        Duration::from_secs(3),
        Duration::from_millis(20),
        move || async move {
            let (_, card) = widget_with(client, b_widget).await;
            let heard = version_of(&card) == fresh;
            heard
                .then_some(())
                .ok_or("B never heard of A's refresh over the TLS change feed")
        },
    )
    .await;
    drop(redis);
}

#[tokio::test]
async fn a_tls_redis_holds_the_cache_and_carries_the_change_feed() {
    tls_redis_holds_the_cache_and_carries_the_change_feed(false).await;
}

#[tokio::test]
async fn a_tls_redis_cluster_holds_the_cache_and_carries_the_change_feed() {
    tls_redis_holds_the_cache_and_carries_the_change_feed(true).await;
}

/// Transport figures: 500 concurrent cold fetches of one widget each (500
/// users, prewarm off) against an HTTPS upstream that offers HTTP/2 and
/// gzip, through a relay that counts the bytes on the wire each way (TLS
/// records, headers and bodies). A measurement, run by hand:
/// `cargo test --test api -- --ignored tls::transport --nocapture`.
/// (The figures with HTTP/1.1 alone: pin `tls.rs`'s ALPN to `http/1.1`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, run by hand"]
async fn transport_figures_for_500_concurrent_cold_fetches() {
    let pki = TestPki::new("transport");
    let api = HttpsApi::start(&pki);
    let wire = Relay::start(api.port).await;
    std::env::set_var(TOKEN_VAR, TOKEN);
    let file = HttpsApi {
        port: wire.port,
        seen: Arc::clone(&api.seen),
    }
    .widgets_file(&pki.dir);
    let ca = pki.ca.clone();
    let app = spawn_app(StoreKind::Memory)
        .without_prewarm()
        .settings(move |s| {
            s.widgets = Some(file);
            s.upstream_url = None;
            s.upstream_ca = Some(ca);
        })
        .await;
    let mut cookies = Vec::new();
    for i in 0..500 {
        cookies.push(
            crate::helpers::login_cookie(&app.client, &app.address, &format!("t{i}"))
                .await
                .unwrap(),
        );
    }
    let started = std::time::Instant::now();
    let answers = futures_util::future::join_all(cookies.iter().map(|cookie| {
        let (client, url) = (app.client.clone(), app.url("/api/widgets/stats"));
        async move {
            client
                .get(url)
                .header("cookie", cookie)
                .send()
                .await
                .map(|r| r.status().as_u16())
        }
    }))
    .await;
    let took = started.elapsed();
    let ok = answers.iter().filter(|a| matches!(a, Ok(200))).count();
    assert_eq!(ok, 500, "a run with any failed call is void");
    let calls = api.seen.authorized.load(Ordering::SeqCst);
    let (up, down) = (wire.up.load(Ordering::SeqCst), wire.down.load(Ordering::SeqCst));
    eprintln!(
        "transport: {calls} calls in {took:?} over {} connections (TLS handshakes); \
         {} over HTTP/2, {} accepting gzip; on the wire {up} B sent ({} B a call), \
         {down} B received ({} B a call)",
        api.seen.connections.load(Ordering::SeqCst),
        api.seen.http2.load(Ordering::SeqCst),
        api.seen.gzip.load(Ordering::SeqCst),
        up / calls.max(1),
        down / calls.max(1),
    );
}

/// A TCP relay on a free port in front of `target`, counting the bytes
/// each way: what percache sends (`up`) and receives (`down`).
struct Relay {
    port: u16,
    up: Arc<AtomicUsize>,
    down: Arc<AtomicUsize>,
}

impl Relay {
    async fn start(target: u16) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (up, down) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (u, d) = (Arc::clone(&up), Arc::clone(&down));
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (u, d) = (Arc::clone(&u), Arc::clone(&d));
                tokio::spawn(async move {
                    let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", target)).await else {
                        return;
                    };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    // Counted as the bytes pass: pooled connections stay open.
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    tokio::join!(
                        pipe(client_read, server_write, u),
                        pipe(server_read, client_write, d)
                    );
                });
            }
        });
        Self { port, up, down }
    }
}

/// Copies `from` to `to` until either side closes, counting into `count`.
async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    count: Arc<AtomicUsize>,
) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut buf = vec![0u8; 16 * 1024];
    while let Ok(n) = from.read(&mut buf).await {
        if n == 0 || to.write_all(&buf[..n]).await.is_err() {
            break;
        }
        count.fetch_add(n, Ordering::SeqCst);
    }
    let _ = to.shutdown().await;
}
