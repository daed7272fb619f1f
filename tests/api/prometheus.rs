//! The Prometheus and Grafana files of `deploy/` against the real server and
//! Debian's real `prometheus` and `promtool` (scripts/test.sh installs the
//! `prometheus` package, which holds both):
//!
//! - `promtool check metrics` passes on a live `/metrics` after traffic;
//! - `promtool check rules` and the unit tests of `alerts_test.yml` pass;
//! - every metric name the alert rules and the Grafana dashboard read is
//!   one the server exports;
//! - a real Prometheus scrapes a running server every second, answers a
//!   query about it, evaluates every dashboard query and loads the alerts.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::helpers::{free_port, spawn_app, until, Process, StoreKind, TestApp};
use testkit::exported_names;

/// `deploy/` in the repository.
fn deploy(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy").join(path)
}

/// Runs `promtool` with `args` (and `stdin`), returning (success, stdout + stderr).
fn promtool(args: &[&str], stdin: Option<&str>) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool must be installed (Debian package `prometheus`; scripts/test.sh installs it)");
    if let Some(mut input) = child.stdin.take() {
        if let Some(text) = stdin {
            input.write_all(text.as_bytes()).expect("writing to promtool");
        }
    }
    let out = child.wait_with_output().expect("promtool ran");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// An application that has served some traffic: a sign-in (prewarm: five
/// upstream calls), then a fresh hit on every widget.
async fn app_after_traffic(user: &str) -> TestApp {
    let app = spawn_app(StoreKind::Memory).await;
    let before = app.mock.total_calls();
    app.login(user).await;
    app.wait_for_calls(before + 5).await;
    for id in 1..=5 {
        app.wait_for_fresh_hit(id).await;
    }
    app
}

/// The metric names a PromQL expression reads: identifiers outside label
/// matchers, ranges and strings that are not functions, keywords, label
/// lists (`by (...)`, `on (...)`...) or Grafana variables (`$job`).
fn metric_names(expr: &str) -> BTreeSet<String> {
    const LABEL_LISTS: &[&str] = &["by", "without", "on", "ignoring", "group_left", "group_right"];
    // Aggregations may come before their `by (...)`: `sum by (le) (...)`.
    const KEYWORDS: &[&str] = &[
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "inf",
        "nan",
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
    ];
    let chars: Vec<char> = expr.chars().collect();
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    // The index just past the bracket that closes the one at `i`.
    let close = |i: usize, open: char, shut: char| -> usize {
        let (mut depth, mut j, mut quote) = (0, i, None);
        while j < chars.len() {
            let c = chars[j];
            match quote {
                Some(_) if c == '\\' => j += 1,
                Some(q) if c == q => quote = None,
                Some(_) => {}
                None if c == '"' || c == '\'' || c == '`' => quote = Some(c),
                None if c == open => depth += 1,
                None if c == shut => {
                    depth -= 1;
                    if depth == 0 {
                        return j + 1;
                    }
                }
                None => {}
            }
            j += 1;
        }
        j
    };
    let mut names = BTreeSet::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '{' {
            i = close(i, '{', '}');
        } else if c == '[' {
            i = close(i, '[', ']');
        } else if c == '"' || c == '\'' || c == '`' {
            i += 1;
            while i < chars.len() && chars[i] != c {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
        } else if c == '$' {
            i += 1;
            if chars.get(i) == Some(&'{') {
                i = close(i, '{', '}');
            }
            while i < chars.len() && ident(chars[i]) {
                i += 1;
            }
        } else if c.is_ascii_digit() || c == '.' {
            // Numbers and durations (0.95, 5m, 1e3).
            while i < chars.len() && (ident(chars[i]) || chars[i] == '.') {
                i += 1;
            }
        } else if ident(c) {
            let start = i;
            while i < chars.len() && ident(chars[i]) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let mut next = i;
            while next < chars.len() && chars[next].is_whitespace() {
                next += 1;
            }
            let call = chars.get(next) == Some(&'(');
            if LABEL_LISTS.contains(&word.as_str()) {
                if call {
                    i = close(next, '(', ')');
                }
            } else if !call && !KEYWORDS.contains(&word.to_ascii_lowercase().as_str()) {
                names.insert(word);
            }
        } else {
            i += 1;
        }
    }
    names
}

/// Every `expr` of the alert rules file (inline, or a `|` block).
fn alert_exprs(yaml: &str) -> Vec<String> {
    let lines: Vec<&str> = yaml.lines().collect();
    let mut exprs = Vec::new();
    for (n, line) in lines.iter().enumerate() {
        let Some(rest) = line.trim_start().strip_prefix("expr:") else {
            continue;
        };
        let indent = line.len() - line.trim_start().len();
        let rest = rest.trim();
        if rest.starts_with('|') || rest.starts_with('>') {
            let block: Vec<&str> = lines[n + 1..]
                .iter()
                .take_while(|l| l.trim().is_empty() || l.len() - l.trim_start().len() > indent)
                .map(|l| l.trim())
                .collect();
            exprs.push(block.join(" "));
        } else {
            exprs.push(rest.trim_matches(['"', '\'']).to_owned());
        }
    }
    exprs
}

/// Every query of the dashboard: the targets' `expr`, and the metric of
/// `label_values(<metric>, <label>)` template variables.
fn dashboard_queries(dashboard: &Value) -> Vec<String> {
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(map) => {
                for (key, value) in map {
                    match (key.as_str(), value) {
                        ("expr", Value::String(expr)) => out.push(expr.clone()),
                        ("query" | "definition", Value::String(q)) if q.starts_with("label_values(") => {
                            let inner = q.trim_start_matches("label_values(").trim_end_matches(')');
                            let metric = inner.rsplit_once(',').map_or(inner, |(m, _)| m);
                            out.push(metric.to_owned());
                        }
                        _ => walk(value, out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|item| walk(item, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(dashboard, &mut out);
    out
}

/// The names of the alerts of `alerts.yml`.
fn alert_names() -> Vec<String> {
    std::fs::read_to_string(deploy("prometheus/alerts.yml"))
        .expect("deploy/prometheus/alerts.yml")
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: ").map(str::to_owned))
        .collect()
}

fn load_dashboard() -> Value {
    let text =
        std::fs::read_to_string(deploy("grafana/percache.json")).expect("deploy/grafana/percache.json");
    serde_json::from_str(&text).expect("the dashboard is JSON")
}

#[test]
fn the_extractor_finds_metric_names_and_nothing_else() {
    let expr = r#"histogram_quantile(0.95, sum by (le, widget) (rate(a_bucket{job=~"$job",x="}{"}[$__rate_interval])))
        / on (job) group_left(z) b offset 5m and bool c:rule unless sum(d) without (w) > 1e3"#;
    assert_eq!(
        metric_names(expr),
        ["a_bucket", "b", "c:rule", "d"].map(String::from).into()
    );
    assert_eq!(
        exported_names("# TYPE h histogram\nh_bucket{le=\"1\"} 1\nc_total 2\n"),
        ["h", "h_bucket", "h_sum", "h_count", "c_total"]
            .map(String::from)
            .into()
    );
}

#[test]
fn alert_rules_pass_promtool_check_and_their_unit_tests() {
    // Arrange
    let rules = deploy("prometheus/alerts.yml");
    let tests = deploy("prometheus/alerts_test.yml");

    // Act
    let (checked, check_out) = promtool(&["check", "rules", rules.to_str().unwrap()], None);
    let (tested, test_out) = promtool(&["test", "rules", tests.to_str().unwrap()], None);

    // Assert
    assert!(checked, "promtool check rules:\n{check_out}");
    let alerts = alert_names();
    assert!(alerts.len() >= 5, "{alerts:?}");
    assert!(
        check_out.contains(&format!("SUCCESS: {} rules found", alerts.len())),
        "{check_out}"
    );
    assert!(tested, "promtool test rules:\n{test_out}");
    // Every alert has unit tests that make it fire.
    let test_yaml = std::fs::read_to_string(&tests).unwrap();
    for alert in alerts {
        assert!(
            test_yaml.contains(&format!("alertname: {alert}")),
            "{alert} has no unit test in alerts_test.yml"
        );
    }
}

#[tokio::test]
async fn live_metrics_pass_promtool_check_metrics() {
    // Arrange: sign-in, prewarm and hits.
    let app = app_after_traffic("promtool-user").await;

    // Act
    let text = app.get("/metrics").await.text().await.unwrap();
    let (ok, out) = promtool(&["check", "metrics"], Some(&text));

    // Assert: no error and no lint (a problem makes promtool exit non-zero).
    assert!(ok, "promtool check metrics:\n{out}\n--- /metrics:\n{text}");
    assert!(out.trim().is_empty(), "{out}");
    for series in [
        "percache_cache_requests_total",
        "percache_upstream_requests_total",
        "percache_upstream_duration_seconds_bucket",
        "percache_http_request_duration_seconds_bucket",
        "percache_store_errors_total",
    ] {
        assert!(text.contains(series), "{series} in /metrics");
    }
}

#[tokio::test]
async fn alerts_and_dashboard_read_only_exported_series() {
    // Arrange
    let app = app_after_traffic("grafana-user").await;
    let exported = exported_names(&app.get("/metrics").await.text().await.unwrap());
    let rules = std::fs::read_to_string(deploy("prometheus/alerts.yml")).unwrap();
    let dashboard = load_dashboard();

    // Act
    let alert_exprs = alert_exprs(&rules);
    let queries = dashboard_queries(&dashboard);

    // Assert
    assert_eq!(
        alert_exprs.len(),
        alert_names().len(),
        "one expr per alert: {alert_exprs:#?}"
    );
    assert!(queries.len() >= 15, "the dashboard's queries: {queries:#?}");
    let mut used = BTreeSet::new();
    for expr in alert_exprs.iter().chain(&queries) {
        let names = metric_names(expr);
        assert!(!names.is_empty(), "no metric in `{expr}`");
        for name in names {
            assert!(
                exported.contains(&name),
                "`{name}` (in `{expr}`) is not exported by /metrics: {exported:#?}"
            );
            used.insert(name);
        }
    }
    // The panels the dashboard promises.
    let titles: Vec<&str> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["title"].as_str())
        .collect();
    for title in [
        "Widget requests by outcome",
        "Hit ratio per widget",
        "Upstream calls by status",
        "Upstream latency",
        "Fetches in flight and skipped",
        "Store errors",
        "HTTP p95 duration by route",
    ] {
        assert!(titles.contains(&title), "panel `{title}` in {titles:?}");
    }
    assert!(
        queries
            .iter()
            .any(|q| q.contains("histogram_quantile")
                && q.contains("percache_upstream_duration_seconds_bucket")),
        "upstream latency quantiles"
    );
    for name in [
        "percache_cache_requests_total",
        "percache_upstream_requests_total",
        "percache_upstream_duration_seconds_bucket",
        "percache_fetches_in_flight",
        "percache_store_errors_total",
        "percache_http_request_duration_seconds_bucket",
    ] {
        assert!(used.contains(name), "{name} is used");
    }
}

/// A `prometheus` server on a free loopback port with its own data folder;
/// killed (and the folder removed) on drop.
struct PrometheusServer {
    process: Process,
    base: String,
}

impl PrometheusServer {
    /// Starts Prometheus scraping `target` (`host:port`) every second, with
    /// the alert rules loaded; waits (30 s at most) until it is ready.
    async fn start(target: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "percache-prometheus-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - {rules}\n\
             scrape_configs:\n  - job_name: percache\n    scrape_interval: 1s\n    scrape_timeout: 1s\n    \
             static_configs:\n      - targets: ['{target}']\n",
            rules = deploy("prometheus/alerts.yml").display(),
        );
        std::fs::write(dir.join("prometheus.yml"), config).unwrap();
        let mut last_error = String::new();
        // Another process may take the free port first: try another.
        for attempt in 0..5 {
            let port = free_port();
            let mut command = Command::new("prometheus");
            command
                .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
                .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"));
            let process =
                Process::spawn_logged("prometheus", &mut command, &dir, &format!("prometheus-{attempt}"));
            let mut process = process.expect(
                "prometheus must be installed (Debian package `prometheus`; scripts/test.sh installs it)",
            );
            let (client, base) = (reqwest::Client::new(), format!("http://127.0.0.1:{port}"));
            let ready_url = format!("{base}/-/ready");
            let ready = process.ready(Duration::from_secs(30), || {
                let probe = client.get(&ready_url).send();
                async move { probe.await.is_ok_and(|r| r.status() == 200) }
            });
            match ready.await {
                Ok(()) => {
                    let process = process.owns(dir);
                    return Self { process, base };
                }
                Err(e) => last_error = e,
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
        panic!("prometheus did not start on any of 5 ports: {last_error}");
    }

    /// `GET /api/v1/<path>` as JSON.
    async fn api(&self, path: &str, query: &[(&str, &str)]) -> Value {
        reqwest::Client::new()
            .get(format!("{}/api/v1/{path}", self.base))
            .query(query)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Polls `query` until it returns at least one series (panics after 30 s).
    async fn wait_for_series(&self, query: &str) -> Vec<Value> {
        let last = &std::sync::Mutex::new(Value::Null);
        let series = until(
            Duration::from_secs(30),
            Duration::from_millis(200),
            move || async move {
                let answer = self.api("query", &[("query", query)]).await;
                let result = answer["data"]["result"]
                    .as_array()
                    .filter(|r| !r.is_empty())
                    .cloned();
                *last.lock().unwrap() = answer;
                result
            },
        )
        .await;
        let last = last.lock().unwrap().clone();
        series.unwrap_or_else(|| panic!("Prometheus never had `{query}`: {last}\n{}", self.log()))
    }

    /// What Prometheus logged (it logs to stderr).
    fn log(&self) -> String {
        self.process.stderr()
    }
}

#[tokio::test]
async fn a_real_prometheus_scrapes_the_server_and_answers() {
    // Arrange: a server that has served traffic, and Prometheus scraping it.
    let app = app_after_traffic("prometheus-user").await;
    let target = app.address.trim_start_matches("http://").to_owned();
    let prometheus = PrometheusServer::start(&target).await;

    // Act: wait until a scrape has landed, then ask.
    let up = prometheus.wait_for_series(r#"up{job="percache"}"#).await;
    let requests = prometheus
        .wait_for_series(r#"percache_cache_requests_total{job="percache",outcome="hit"}"#)
        .await;

    // Assert: the target is up, and the answer is the server's counters.
    assert_eq!(
        up[0]["value"][1],
        "1",
        "the target is up: {up:?}\n{}",
        prometheus.log()
    );
    assert_eq!(requests[0]["metric"]["instance"], target.as_str());
    let widgets: BTreeSet<&str> = requests
        .iter()
        .filter_map(|s| s["metric"]["widget"].as_str())
        .collect();
    assert!(widgets.len() >= 5, "hits of every widget: {requests:?}");
    let hits: f64 = requests
        .iter()
        .filter_map(|s| s["value"][1].as_str()?.parse::<f64>().ok())
        .sum();
    assert!(hits >= 5.0, "{requests:?}");

    // Every dashboard query is valid PromQL that Prometheus evaluates.
    for query in dashboard_queries(&load_dashboard()) {
        let query = query.replace("$__rate_interval", "1m").replace("$job", ".*");
        let answer = prometheus.api("query", &[("query", &query)]).await;
        assert_eq!(answer["status"], "success", "`{query}`: {answer}");
    }
    // The upstream latency quantile has a value from the prewarm's calls.
    let p95 = prometheus
        .wait_for_series(
            r#"histogram_quantile(0.95, sum by (le) (percache_upstream_duration_seconds_bucket{job="percache"}))"#,
        )
        .await;
    let seconds: f64 = p95[0]["value"][1].as_str().unwrap().parse().unwrap();
    assert!(seconds > 0.0 && seconds <= 20.0, "p95 {seconds}");

    // The alert rules load and evaluate cleanly against the live series.
    let last = &std::sync::Mutex::new(Value::Null);
    let prometheus = &prometheus;
    let evaluated = until(
        Duration::from_secs(30),
        Duration::from_millis(200),
        move || async move {
            let rules = prometheus.api("rules", &[]).await;
            let all: Vec<Value> = rules["data"]["groups"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|g| g["rules"].as_array().into_iter().flatten())
                .cloned()
                .collect();
            let healthy = all.iter().filter(|r| r["health"] == "ok").count();
            let expected = alert_names().len();
            *last.lock().unwrap() = rules;
            (all.len() == expected && healthy == expected).then_some(all)
        },
    )
    .await;
    let rules = last.lock().unwrap().clone();
    let all = evaluated.unwrap_or_else(|| panic!("rules never all evaluated: {rules}"));
    // Nothing fires: every alert waits minutes (`for:`) before it does.
    assert!(all.iter().all(|r| r["state"] != "firing"), "{rules}");
}
