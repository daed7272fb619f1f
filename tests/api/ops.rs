//! What an operator relies on: metrics that move, graceful shutdown.

use std::time::Duration;

use mock_upstream::{MockConfig, MockUpstream};

use crate::helpers::{
    binary_server, binary_server_with_env, eventually, instance, metric_sample, new_client, spawn_app,
    until_ok, HttpServer, StoreKind, SESSION_KEY,
};

/// How much the sample grew between two scrapes.
fn delta(before: &str, after: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    metric_sample(after, name, labels) - metric_sample(before, name, labels)
}

#[tokio::test]
async fn metrics_count_hits_misses_and_upstream_calls() {
    // Arrange: prewarm's 5 upstream calls have landed.
    let app = spawn_app(StoreKind::Memory).await;
    app.login("metrics-user").await;
    app.wait_for_calls(5).await;
    for id in 1..=5 {
        app.wait_for_fresh_hit(id).await;
    }
    let before = app.get("/metrics").await.text().await.unwrap();

    // Act: three hits on widget 2.
    for _ in 0..3 {
        app.widget(2).await;
    }
    let after = app.get("/metrics").await.text().await.unwrap();

    // Assert: the app has a recorder of its own, so the counts are exact.
    let delta = |name: &str, labels: &[(&str, &str)]| delta(&before, &after, name, labels);
    let count = |name: &str, labels: &[(&str, &str)]| metric_sample(&after, name, labels);
    let hits = [("widget", "2"), ("outcome", "hit")];
    assert_eq!(delta("percache_cache_requests_total", &hits), 3.0);
    let widget_200 = [("route", "/widgets/{id}"), ("status", "200")];
    assert_eq!(
        delta("percache_http_request_duration_seconds_count", &widget_200),
        3.0
    );
    assert_eq!(
        delta("percache_upstream_requests_total", &[]),
        0.0,
        "hits call nothing"
    );
    // Since start: prewarm's calls, one per widget, and nothing else.
    assert_eq!(count("percache_prewarm_total", &[]), 5.0);
    assert_eq!(count("percache_refresh_total", &[("outcome", "ok")]), 5.0);
    let widget_3 = [("widget", "3"), ("status", "200")];
    assert_eq!(count("percache_upstream_requests_total", &widget_3), 1.0);
    assert_eq!(count("percache_upstream_requests_total", &[]), 5.0);
    assert_eq!(
        count("percache_upstream_duration_seconds_count", &[("widget", "3")]),
        1.0
    );
    assert!(
        after.contains("# TYPE percache_upstream_duration_seconds histogram"),
        "a histogram"
    );
}

#[tokio::test]
async fn metrics_count_misses_and_upstream_errors() {
    // Arrange
    let app = spawn_app(StoreKind::Memory).without_prewarm().await;
    let client = new_client();
    app.login_with(&client, "metrics-errors").await;
    app.mock.set_fault(4, mock_upstream::Fault::Error(404));
    let before = app.get("/metrics").await.text().await.unwrap();

    // Act: one request, whose one upstream call fails (a 404 is not retried).
    client.get(app.url("/widgets/4")).send().await.unwrap();
    app.mock.set_fault(4, mock_upstream::Fault::Ok);
    let after = app.get("/metrics").await.text().await.unwrap();

    // Assert: exactly that call and that outcome.
    let delta = |name: &str, labels: &[(&str, &str)]| delta(&before, &after, name, labels);
    let failed = [("widget", "4"), ("status", "404")];
    assert_eq!(delta("percache_upstream_requests_total", &failed), 1.0);
    assert_eq!(delta("percache_upstream_requests_total", &[]), 1.0);
    let errors = [("widget", "4"), ("outcome", "error")];
    assert_eq!(delta("percache_cache_requests_total", &errors), 1.0);
    assert_eq!(delta("percache_cache_requests_total", &[]), 1.0);
}

/// The real binary: SIGTERM while a slow request is in flight lets it finish.
#[tokio::test]
async fn sigterm_lets_a_slow_request_finish() {
    // Arrange: the binary, against a mock whose widget 3 takes 1.5 s.
    let mock = MockUpstream::start("127.0.0.1:0", MockConfig::with_delays_ms([10, 10, 1500, 10, 10]))
        .await
        .unwrap();
    let mut server = binary_server("sigterm", &["--upstream-url", &mock.url(), "--no-prewarm"]).await;
    let client = new_client();
    client
        .post(server.url("/login"))
        .form(&[("username", "alice")])
        .send()
        .await
        .unwrap();

    // Act: a slow request, and SIGTERM while it runs.
    let slow = tokio::spawn({
        let (client, url) = (client.clone(), server.url("/widgets/3"));
        async move { client.get(url).send().await }
    });
    eventually(
        Duration::from_secs(10),
        || mock.calls_for("alice", 3) > 0,
        || "the slow call never reached the mock",
    )
    .await;
    let exit = tokio::spawn(async move { (server.terminate(Duration::from_secs(15)).await, server) });

    // Assert: the request completed with its data, then the process exited cleanly.
    let resp = slow.await.unwrap().expect("the in-flight request was answered");
    assert_eq!(resp.status(), 200);
    assert!(resp.text().await.unwrap().contains(r#"data-state="ready""#));
    let (status, _server) = exit.await.unwrap();
    assert!(status.success(), "clean exit: {status}");
}

/// The real binary logging JSON at `rust_log`, with alice signed in.
async fn json_logging_server(name: &str, rust_log: &str) -> (MockUpstream, HttpServer, reqwest::Client) {
    let mock = MockUpstream::start("127.0.0.1:0", MockConfig::with_delays_ms([10, 10, 10, 10, 10]))
        .await
        .unwrap();
    let env = [
        ("SESSION_KEY", Some(SESSION_KEY)),
        ("LOG_FORMAT", Some("json")),
        ("RUST_LOG", Some(rust_log)),
    ];
    let server = binary_server_with_env(name, &["--upstream-url", &mock.url(), "--no-prewarm"], &env).await;
    let client = new_client();
    let login = client
        .post(server.url("/login"))
        .form(&[("username", "alice")])
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 303);
    (mock, server, client)
}

/// The `widget served` lines of `server`, once `enough` says they are all
/// there (a background thread writes them: poll).
async fn served_lines(
    server: &HttpServer,
    enough: impl Fn(&[serde_json::Value]) -> bool,
) -> Vec<serde_json::Value> {
    let enough = &enough;
    until_ok(
        Duration::from_secs(10),
        Duration::from_millis(50),
        move || async move {
            let served: Vec<serde_json::Value> = server
                .stdout()
                .lines()
                .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("every line is JSON"))
                .filter(|v| v["fields"]["message"] == "widget served")
                .collect();
            match enough(&served) {
                true => Ok(served),
                false => Err(format!("not all `widget served` lines yet: {served:?}")),
            }
        },
    )
    .await
}

/// `LOG_FORMAT=json`: one JSON object per line, with the request id and the
/// cache outcome of each widget request.
#[tokio::test]
async fn json_logs_carry_the_request_id_and_the_cache_outcome() {
    // Arrange: fresh hits are logged at debug (misses and the rest at info).
    let (_mock, server, client) = json_logging_server("json-logs", "info,percache=debug").await;

    // Act: a miss, then a hit.
    client.get(server.url("/widgets/2")).send().await.unwrap();
    client.get(server.url("/widgets/2")).send().await.unwrap();

    // Assert
    let served = served_lines(&server, |lines| lines.len() >= 2).await;
    assert_eq!(served.len(), 2, "{served:?}");
    assert_eq!(served[0]["fields"]["outcome"], "miss");
    assert_eq!(served[1]["fields"]["outcome"], "hit");
    for line in &served {
        let id = line["span"]["request_id"].as_str().unwrap_or_default();
        assert_eq!(id.len(), 36, "a request id (UUID) on every line: {line}");
        assert_eq!(line["span"]["route"], "/widgets/{id}");
    }
    assert_ne!(served[0]["span"]["request_id"], served[1]["span"]["request_id"]);
}

/// At `info`, a fresh hit writes no line (it is counted in
/// `percache_cache_requests_total`); a miss does.
#[tokio::test]
async fn at_info_a_fresh_hit_writes_no_log_line() {
    // Arrange
    let (_mock, server, client) = json_logging_server("info-logs", "info").await;

    // Act: a miss, a hit, then another miss; each response comes after its
    // line was queued, so the last miss's line comes after any line of the hit.
    for path in ["/widgets/2", "/widgets/2", "/widgets/4"] {
        let res = client.get(server.url(path)).send().await.unwrap();
        assert_eq!(res.status(), 200);
    }

    // Assert
    let served = served_lines(&server, |lines| {
        lines.iter().any(|l| l["fields"]["widget"] == "4")
    })
    .await;
    let outcomes: Vec<String> = served
        .iter()
        .map(|v| format!("{}:{}", v["fields"]["widget"], v["fields"]["outcome"]))
        .collect();
    assert_eq!(outcomes, [r#""2":"miss""#, r#""4":"miss""#], "{outcomes:?}");
}

/// Without `SESSION_KEY` the server starts with a random key, and says so.
#[tokio::test]
async fn the_random_session_key_fallback_logs_a_warning() {
    let mock = MockUpstream::start("127.0.0.1:0", MockConfig::with_delays_ms([10, 10, 10, 10, 10]))
        .await
        .unwrap();
    let env = [
        ("SESSION_KEY", None),
        ("RUST_LOG", Some("warn")),
        ("LOG_FORMAT", Some("json")),
    ];
    let server = binary_server_with_env("random-key", &["--upstream-url", &mock.url()], &env).await;

    let logs = server.stdout();
    let warning = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| {
            v["level"] == "WARN"
                && v["fields"]["message"]
                    .as_str()
                    .unwrap_or("")
                    .contains("SESSION_KEY")
        });
    assert!(warning.is_some(), "a warning about the random key: {logs}");
    let resp = new_client()
        .post(server.url("/login"))
        .form(&[("username", "alice")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303, "and it works");
}

#[tokio::test]
async fn the_in_process_store_reports_its_entries_and_bytes() {
    // Arrange: one user's five widgets in the in-process store.
    let app = spawn_app(StoreKind::Memory).await;
    app.login("gauge-user").await;
    app.wait_for_calls(5).await;
    for id in 1..=5 {
        app.wait_for_fresh_hit(id).await;
    }

    // Act
    let usage = app.cache.store().usage().await.expect("an in-process store");
    let metrics = app.get("/metrics").await.text().await.unwrap();

    // Assert: five entries of the mock's size (0.3 to 1.5 KB each), and the
    // gauges say the same (each application has its own recorder).
    assert_eq!(usage.entries, 5, "{usage:?}");
    assert!((5 * 300..5 * 1_500).contains(&usage.bytes), "{usage:?}");
    assert!(
        metrics.contains("# TYPE percache_cache_entries gauge"),
        "{metrics}"
    );
    assert!(metrics.contains("# TYPE percache_cache_bytes gauge"), "{metrics}");
    let gauge = |name| crate::helpers::metric_sample(&metrics, name, &[]);
    assert_eq!(gauge("percache_cache_entries"), usage.entries as f64, "{metrics}");
    assert_eq!(gauge("percache_cache_bytes"), usage.bytes as f64, "{metrics}");
}

/// In-process graceful stop (`Application::run_until`, what SIGTERM
/// triggers in the binary): the fetches in flight land in the store before
/// the server ends.
#[tokio::test]
async fn a_graceful_stop_lets_the_fetches_in_flight_land() {
    // Arrange: sign-in starts five fetches; widget 3's takes 1.5 s.
    let app = spawn_app(StoreKind::Memory)
        .delays_ms([500, 500, 1500, 500, 500])
        .await;
    app.login("stopping").await;
    // Every prewarm call has reached the upstream: all five are in flight.
    app.wait_for_in_flight(5).await;
    assert_eq!(app.cache.fetches_in_flight(), 5, "prewarm is under way");

    // Act
    app.stop().await;

    // Assert: every prewarmed widget is in the store, the slow one included,
    // and the server no longer answers.
    let user = percache::user::UserId::parse("stopping").unwrap();
    for id in ["1", "2", "3", "4", "5"] {
        let key = user.tag().key(&instance(id));
        let stored = app.cache.store().get(&key).await.unwrap();
        assert!(stored.is_some(), "widget {id} landed before the stop ended");
    }
    assert_eq!(app.cache.fetches_in_flight(), 0);
    assert!(
        app.client.get(app.url("/healthz")).send().await.is_err(),
        "stopped"
    );
}

/// `percache healthcheck URL` (the image's HEALTHCHECK, no curl): exit 0
/// while the server answers 200, 1 when nothing listens.
#[tokio::test]
async fn the_binary_probes_a_server_for_the_containers_healthcheck() {
    let app = spawn_app(StoreKind::Memory).without_prewarm().await;
    let probe = |url: String| {
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_percache"))
                .args(["healthcheck", &url])
                .output()
                .unwrap()
        })
    };
    let up = probe(app.url("/healthz")).await.unwrap();
    assert!(up.status.success(), "{}", String::from_utf8_lossy(&up.stderr));
    let closed = crate::helpers::free_port();
    let down = probe(format!("http://127.0.0.1:{closed}/healthz")).await.unwrap();
    assert_eq!(down.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&down.stderr).contains("unhealthy"));
    let missing = probe(app.url("/nothing-here")).await.unwrap();
    assert_eq!(missing.status.code(), Some(1), "a 404 is not healthy");
}
