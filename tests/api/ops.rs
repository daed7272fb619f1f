//! What an operator relies on: metrics that move, graceful shutdown.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mock_upstream::{MockConfig, MockUpstream};

use crate::helpers::{free_port, new_client, spawn_app, spawn_app_with, StoreKind, TestConfig, SESSION_KEY};

/// The value of the sample of `name` whose labels include every `labels` pair (0 if absent).
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter(|l| labels.iter().all(|(k, v)| l.contains(&format!("{k}=\"{v}\""))))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn metrics_count_hits_misses_and_upstream_calls() {
    // Arrange
    let app = spawn_app(StoreKind::Memory).await;
    let before = app.get("/metrics").await.text().await.unwrap();

    // Act: prewarm (5 upstream calls), then hits.
    app.login("metrics-user").await;
    app.wait_for_calls(5).await;
    for id in 1..=5 {
        app.wait_for_fresh_hit(id).await;
    }
    app.widget(2).await;
    let after = app.get("/metrics").await.text().await.unwrap();

    // Assert (other tests share the process-wide recorder: counters only grow)
    let delta =
        |name: &str, labels: &[(&str, &str)]| sample(&after, name, labels) - sample(&before, name, labels);
    assert!(
        delta(
            "percache_cache_requests_total",
            &[("widget", "2"), ("outcome", "hit")]
        ) >= 2.0
    );
    assert!(
        delta(
            "percache_upstream_requests_total",
            &[("widget", "3"), ("status", "200")]
        ) >= 1.0
    );
    assert!(delta("percache_prewarm_total", &[]) >= 5.0);
    assert!(delta("percache_refresh_total", &[("outcome", "ok")]) >= 5.0);
    assert!(delta("percache_upstream_duration_seconds_count", &[("widget", "3")]) >= 1.0);
    assert!(
        delta(
            "percache_http_request_duration_seconds_count",
            &[("route", "/widgets/{id}"), ("status", "200")]
        ) >= 6.0
    );
    assert!(
        after.contains("# TYPE percache_upstream_duration_seconds histogram"),
        "a histogram"
    );
}

#[tokio::test]
async fn metrics_count_misses_and_upstream_errors() {
    let app = spawn_app_with(TestConfig::new(StoreKind::Memory).without_prewarm()).await;
    let client = new_client();
    app.login_with(&client, "metrics-errors").await;
    app.mock.set_fault(4, mock_upstream::Fault::Error(404));
    let before = app.get("/metrics").await.text().await.unwrap();

    client.get(app.url("/widgets/4")).send().await.unwrap();
    app.mock.set_fault(4, mock_upstream::Fault::Ok);

    let after = app.get("/metrics").await.text().await.unwrap();
    let delta =
        |name: &str, labels: &[(&str, &str)]| sample(&after, name, labels) - sample(&before, name, labels);
    assert!(
        delta(
            "percache_upstream_requests_total",
            &[("widget", "4"), ("status", "404")]
        ) >= 1.0
    );
    assert!(
        delta(
            "percache_cache_requests_total",
            &[("widget", "4"), ("outcome", "error")]
        ) >= 1.0
    );
}

/// The real binary: SIGTERM while a slow request is in flight lets it finish.
#[tokio::test]
async fn sigterm_lets_a_slow_request_finish() {
    // Arrange: the binary, against a mock whose widget 3 takes 1.5 s.
    let mock = MockUpstream::start("127.0.0.1:0", MockConfig::with_delays_ms([10, 10, 1500, 10, 10]))
        .await
        .unwrap();
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_percache"))
        .args([
            "--bind",
            &format!("127.0.0.1:{port}"),
            "--upstream-url",
            &mock.url(),
            "--no-prewarm",
        ])
        .env("SESSION_KEY", SESSION_KEY)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let client = new_client();
    let deadline = Instant::now() + Duration::from_secs(20);
    while client.get(format!("{base}/healthz")).send().await.is_err() {
        assert!(Instant::now() < deadline, "the server did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    client
        .post(format!("{base}/login"))
        .form(&[("username", "alice")])
        .send()
        .await
        .unwrap();

    // Act: a slow request, and SIGTERM while it runs.
    let slow = tokio::spawn({
        let (client, base) = (client.clone(), base.clone());
        async move { client.get(format!("{base}/widgets/3")).send().await }
    });
    while mock.calls_for("alice", 3) == 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());

    // Assert: the request completed with its data, then the process exited cleanly.
    let resp = slow.await.unwrap().expect("the in-flight request was answered");
    assert_eq!(resp.status(), 200);
    assert!(resp.text().await.unwrap().contains(r#"data-state="ready""#));
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the server did not exit after SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "clean exit: {status}");
}

/// `LOG_FORMAT=json`: one JSON object per line, with the request id and the
/// cache outcome of each widget request.
#[tokio::test]
async fn json_logs_carry_the_request_id_and_the_cache_outcome() {
    // Arrange: the real binary, logging JSON to a file.
    let mock = MockUpstream::start("127.0.0.1:0", MockConfig::with_delays_ms([10, 10, 10, 10, 10]))
        .await
        .unwrap();
    let port = free_port();
    let log_path = std::env::temp_dir().join(format!("percache-json-log-{port}.log"));
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_percache"))
        .args([
            "--bind",
            &format!("127.0.0.1:{port}"),
            "--upstream-url",
            &mock.url(),
            "--no-prewarm",
        ])
        .env("SESSION_KEY", SESSION_KEY)
        .env("LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .stdout(log)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let client = new_client();
    let deadline = Instant::now() + Duration::from_secs(20);
    while client.get(format!("{base}/healthz")).send().await.is_err() {
        assert!(Instant::now() < deadline, "the server did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Act: a miss, then a hit.
    client
        .post(format!("{base}/login"))
        .form(&[("username", "alice")])
        .send()
        .await
        .unwrap();
    client.get(format!("{base}/widgets/2")).send().await.unwrap();
    client.get(format!("{base}/widgets/2")).send().await.unwrap();

    // Assert: both lines are there (written by a background thread: poll).
    let deadline = Instant::now() + Duration::from_secs(10);
    let served = loop {
        let text = std::fs::read_to_string(&log_path).unwrap();
        let served: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("every line is JSON"))
            .filter(|v| v["fields"]["message"] == "widget served")
            .collect();
        if served.len() >= 2 || Instant::now() > deadline {
            break served;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_file(&log_path);
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
