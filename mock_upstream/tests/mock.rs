//! End-to-end tests of the mock upstream over real HTTP on a loopback port.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mock_upstream::{Fault, MockConfig, MockUpstream};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A minimal HTTP/1.1 client: one request per connection, returns (status, body).
async fn http(addr: SocketAddr, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let body = body.unwrap_or("");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(req.as_bytes()).await.expect("write");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.expect("read");
    let text = String::from_utf8(raw).expect("utf-8 response");
    let (head, rest) = text.split_once("\r\n\r\n").expect("header end");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    let chunked = head.to_ascii_lowercase().contains("transfer-encoding: chunked");
    let body = if chunked { dechunk(rest) } else { rest.to_string() };
    (status, body)
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
    out
}

async fn get_json(addr: SocketAddr, path: &str) -> (u16, Value) {
    let (status, body) = http(addr, "GET", path, None).await;
    let v = serde_json::from_str(&body).unwrap_or(Value::Null);
    (status, v)
}

async fn start_fast() -> MockUpstream {
    MockUpstream::start("127.0.0.1:0", MockConfig::with_delays_ms([5, 10, 30, 20, 5]))
        .await
        .expect("start mock")
}

#[test]
fn handle_is_send_sync() {
    fn check<T: Send + Sync>() {}
    check::<MockUpstream>();
}

#[test]
fn default_config() {
    let c = MockConfig::default();
    let ms: Vec<u128> = c.delays.iter().map(Duration::as_millis).collect();
    assert_eq!(ms, [1000, 3000, 15000, 6000, 1000]);
    assert_eq!(c.jitter_pct, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn widget_data_versions_and_stats() {
    let mock = start_fast().await;
    let addr = mock.addr();
    assert_eq!(mock.url(), format!("http://{addr}"));

    let (s, _) = http(addr, "GET", "/healthz", None).await;
    assert_eq!(s, 200);

    let (s, a1) = get_json(addr, "/api/widgets/1?userId=alice").await;
    assert_eq!(s, 200);
    assert_eq!(a1["userId"], "alice");
    assert_eq!(a1["widget"], 1);
    assert_eq!(a1["version"], 1);
    assert_eq!(a1["name"], "alice");
    assert_eq!(a1["email"], "alice@example.com");
    assert!(a1["generatedAt"].as_str().is_some_and(|t| t.ends_with('Z')));

    let (_, a2) = get_json(addr, "/api/widgets/1?userId=alice").await;
    assert_eq!(a2["version"], 2);
    // Same content apart from version/generatedAt.
    for k in ["name", "email", "plan", "memberSince", "location"] {
        assert_eq!(a1[k], a2[k], "field {k}");
    }

    let (_, b) = get_json(addr, "/api/widgets/1?userId=bob").await;
    assert_eq!(b["version"], 1);
    assert_eq!(b["name"], "bob");

    // Percent-encoded user ids are decoded.
    let (s, c) = get_json(addr, "/api/widgets/3?userId=carol%40example.org").await;
    assert_eq!(s, 200);
    assert_eq!(c["userId"], "carol@example.org");
    assert_eq!(c["series"].as_array().map(Vec::len), Some(14));

    for w in [2, 4, 5] {
        let (s, v) = get_json(addr, &format!("/api/widgets/{w}?userId=alice")).await;
        assert_eq!(s, 200, "widget {w}");
        assert_eq!(v["widget"], w);
    }

    assert_eq!(mock.total_calls(), 7);
    assert_eq!(mock.calls_for("alice", 1), 2);
    assert_eq!(mock.calls_for("bob", 1), 1);
    assert_eq!(mock.calls_for("carol@example.org", 3), 1);
    assert_eq!(mock.calls_for("alice", 3), 0);

    let (s, stats) = get_json(addr, "/stats").await;
    assert_eq!(s, 200);
    assert_eq!(stats["total"], 7);
    assert_eq!(stats["byKey"]["alice/1"], 2);
    assert_eq!(stats["byKey"]["bob/1"], 1);

    // Reset zeroes counts but versions keep growing.
    let (s, _) = http(addr, "POST", "/stats/reset", None).await;
    assert!(s == 200 || s == 204);
    assert_eq!(mock.total_calls(), 0);
    let (_, a3) = get_json(addr, "/api/widgets/1?userId=alice").await;
    assert_eq!(a3["version"], 3);
    assert_eq!(mock.calls_for("alice", 1), 1);
    mock.reset_stats();
    assert_eq!(mock.total_calls(), 0);

    mock.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests() {
    let mock = start_fast().await;
    let addr = mock.addr();
    for path in [
        "/api/widgets/0?userId=alice",
        "/api/widgets/6?userId=alice",
        "/api/widgets/abc?userId=alice",
        "/api/widgets/300?userId=alice",
    ] {
        let (s, v) = get_json(addr, path).await;
        assert_eq!(s, 404, "{path}");
        assert_eq!(v["error"], "unknown widget");
    }
    for path in [
        "/api/widgets/1",
        "/api/widgets/1?userId=",
        "/api/widgets/1?user=x",
    ] {
        let (s, v) = get_json(addr, path).await;
        assert_eq!(s, 400, "{path}");
        assert!(v["error"].is_string());
    }
    for body in [
        r#"{"widget":9,"mode":"ok"}"#,
        r#"{"widget":2,"mode":"explode"}"#,
        r#"{"widget":2,"mode":"error","status":200}"#,
        "not json",
    ] {
        let (s, _) = http(addr, "POST", "/faults", Some(body)).await;
        assert_eq!(s, 400, "{body}");
    }
    assert_eq!(mock.total_calls(), 0);
    mock.stop().await;
}

/// The analytics series of a widget-3 body as `(day, value)` points, checking `total` is their
/// sum.
fn series(v: &Value) -> Vec<(String, u64)> {
    let pts: Vec<(String, u64)> = v["series"]
        .as_array()
        .expect("series array")
        .iter()
        .map(|p| {
            let day = p["day"].as_str().expect("day").to_string();
            (day, p["value"].as_u64().expect("value"))
        })
        .collect();
    let sum: u64 = pts.iter().map(|p| p.1).sum();
    assert_eq!(v["total"].as_u64(), Some(sum), "total is the sum of the series");
    pts
}

/// A body without the fields that change on every call.
fn stable(mut v: Value) -> Value {
    if let Some(o) = v.as_object_mut() {
        o.remove("version");
        o.remove("generatedAt");
    }
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analytics_days() {
    let mock = start_fast().await;
    let addr = mock.addr();

    // Default is 14 points ending on the anchor day; days=14 is the same content.
    let (s, d) = get_json(addr, "/api/widgets/3?userId=alice").await;
    assert_eq!(s, 200);
    let pts = series(&d);
    assert_eq!(pts.len(), 14);
    assert_eq!(pts[0].0, "2025-06-17");
    assert_eq!(pts[13].0, "2025-06-30");
    let (s, d14) = get_json(addr, "/api/widgets/3?userId=alice&days=14").await;
    assert_eq!(s, 200);
    assert_eq!(d14["version"], 2);
    assert_eq!(stable(d.clone()), stable(d14));

    // days=30: 30 consecutive days ending on the anchor day; deterministic.
    let (s, d30) = get_json(addr, "/api/widgets/3?days=30&userId=alice").await;
    assert_eq!(s, 200);
    assert_eq!(d30["userId"], "alice");
    assert_eq!(d30["widget"], 3);
    assert_eq!(d30["metric"], "Page views");
    let pts30 = series(&d30);
    assert_eq!(pts30.len(), 30);
    assert_eq!(pts30[0].0, "2025-06-01");
    assert_eq!(pts30[29].0, "2025-06-30");
    let (_, again) = get_json(addr, "/api/widgets/3?userId=alice&days=30&x=1").await;
    assert_eq!(stable(d30.clone()), stable(again));
    // Different users still differ.
    let (_, bob30) = get_json(addr, "/api/widgets/3?userId=bob&days=30").await;
    assert_ne!(series(&bob30), pts30);

    for (q, n, first) in [("days=1", 1, "2025-06-30"), ("days=90", 90, "2025-04-02")] {
        let (s, v) = get_json(addr, &format!("/api/widgets/3?userId=alice&{q}")).await;
        assert_eq!(s, 200, "{q}");
        let pts = series(&v);
        assert_eq!(pts.len(), n, "{q}");
        assert_eq!(pts[0].0, first, "{q}");
        assert_eq!(pts[n - 1].0, "2025-06-30", "{q}");
    }

    // Counts stay per (user, widget), whatever `days` is; versions too.
    assert_eq!(mock.calls_for("alice", 3), 6);
    assert_eq!(mock.calls_for("bob", 3), 1);
    assert_eq!(mock.total_calls(), 7);
    let keys: Vec<String> = mock.calls_by_key().into_keys().collect();
    assert_eq!(keys, ["alice/3", "bob/3"]);
    let (_, st) = get_json(addr, "/stats").await;
    assert_eq!(st["byKey"]["alice/3"], 6);

    // Bad `days` is a 400, not counted.
    for q in ["days=0", "days=91", "days=abc", "days=", "days=-3", "days=7.5"] {
        let (s, v) = get_json(addr, &format!("/api/widgets/3?userId=alice&{q}")).await;
        assert_eq!(s, 400, "{q}");
        assert!(v["error"].as_str().is_some_and(|e| e.contains("days")), "{q}");
    }
    assert_eq!(mock.total_calls(), 7);
    // Missing userId is still reported as such.
    let (s, v) = get_json(addr, "/api/widgets/3?days=30").await;
    assert_eq!(s, 400);
    assert_eq!(v["error"], "missing userId");

    // Other widgets ignore `days` (valid or not) and other unknown parameters.
    for w in [1, 2, 4, 5] {
        let (s, plain) = get_json(addr, &format!("/api/widgets/{w}?userId=alice")).await;
        assert_eq!(s, 200, "widget {w}");
        for q in ["days=30", "days=0", "days=abc", "foo=bar&days=91"] {
            let (s, v) = get_json(addr, &format!("/api/widgets/{w}?userId=alice&{q}")).await;
            assert_eq!(s, 200, "widget {w}, {q}");
            assert_eq!(stable(v), stable(plain.clone()), "widget {w}, {q}");
        }
        assert_eq!(mock.calls_for("alice", w), 5, "widget {w}");
    }

    mock.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_over_http_and_api() {
    let mock = start_fast().await;
    let addr = mock.addr();

    let (s, _) = http(
        addr,
        "POST",
        "/faults",
        Some(r#"{"widget":4,"mode":"error","status":503}"#),
    )
    .await;
    assert_eq!(s, 200);
    let (s, v) = get_json(addr, "/api/widgets/4?userId=alice").await;
    assert_eq!(s, 503);
    assert!(v["error"].is_string());
    // Errors are counted too.
    assert_eq!(mock.calls_for("alice", 4), 1);

    let (s, _) = http(addr, "POST", "/faults", Some(r#"{"widget":4,"mode":"ok"}"#)).await;
    assert_eq!(s, 200);
    let (s, v) = get_json(addr, "/api/widgets/4?userId=alice").await;
    assert_eq!(s, 200);
    assert_eq!(v["version"], 2);

    mock.set_fault(2, Fault::Error(500));
    let (s, _) = get_json(addr, "/api/widgets/2?userId=alice").await;
    assert_eq!(s, 500);

    // Hang: the call is counted but never answered.
    mock.set_fault(2, Fault::Hang);
    let hung = tokio::time::timeout(
        Duration::from_millis(300),
        http(addr, "GET", "/api/widgets/2?userId=alice", None),
    )
    .await;
    assert!(hung.is_err(), "hang fault answered");
    assert_eq!(mock.calls_for("alice", 2), 2);

    let (s, _) = http(addr, "POST", "/faults", Some(r#"{"widget":2,"mode":"ok"}"#)).await;
    assert_eq!(s, 200);
    let (s, _) = get_json(addr, "/api/widgets/2?userId=alice").await;
    assert_eq!(s, 200);

    mock.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delays_apply_and_can_change() {
    let mock = start_fast().await;
    let addr = mock.addr();
    mock.set_delay(3, Duration::from_millis(50));
    let t = Instant::now();
    let (s, _) = get_json(addr, "/api/widgets/3?userId=alice").await;
    assert_eq!(s, 200);
    assert!(t.elapsed() >= Duration::from_millis(50));

    // Calls are counted at receipt, before the delay.
    mock.set_delay(3, Duration::from_millis(300));
    let pending = tokio::spawn(async move { get_json(addr, "/api/widgets/3?userId=dave").await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(mock.calls_for("dave", 3), 1);
    let (s, _) = pending.await.expect("join");
    assert_eq!(s, 200);
    mock.stop().await;
}

#[actix_web::test]
async fn runs_under_actix_runtime() {
    let mock = start_fast().await;
    let (s, v) = get_json(mock.addr(), "/api/widgets/5?userId=erin").await;
    assert_eq!(s, 200);
    let n = v["items"].as_array().map(Vec::len).unwrap_or(0);
    assert!((4..=6).contains(&n));
    mock.stop().await;
}

#[tokio::test]
async fn runs_under_current_thread_runtime_and_drop_stops() {
    let mock = start_fast().await;
    let addr = mock.addr();
    let (s, _) = get_json(addr, "/api/widgets/1?userId=frank").await;
    assert_eq!(s, 200);
    drop(mock);
    // After drop the server stops accepting shortly.
    let mut refused = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if TcpStream::connect(addr).await.is_err() {
            refused = true;
            break;
        }
    }
    assert!(refused, "server still accepting after drop");
}

/// A raw GET with extra header lines; returns the status and the whole head.
async fn get_with(addr: SocketAddr, path: &str, headers: &str) -> (u16, String, String) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{headers}\r\n");
    stream.write_all(req.as_bytes()).await.expect("write");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.expect("read");
    let text = String::from_utf8(raw).expect("utf-8 response");
    let (head, body) = text.split_once("\r\n\r\n").expect("header end");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    (status, head.to_ascii_lowercase(), body.to_owned())
}

fn header_of(head: &str, name: &str) -> String {
    head.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etags_keep_the_body_until_a_bump_and_answer_304() {
    let mut config = MockConfig::with_delays_ms([5; 5]);
    config.etags = true;
    let mock = MockUpstream::start("127.0.0.1:0", config).await.unwrap();
    let addr = mock.addr();
    let path = "/api/widgets/1?userId=alice";

    let (s1, head1, body1) = get_with(addr, path, "").await;
    let (s2, _, body2) = get_with(addr, path, "").await;
    assert_eq!((s1, s2), (200, 200));
    assert_eq!(body1, body2, "byte-identical until a bump, generatedAt included");
    let etag = header_of(&head1, "etag");
    assert!(etag.starts_with('"'), "{head1}");
    assert!(!header_of(&head1, "last-modified").is_empty(), "{head1}");

    let (s3, head3, body3) = get_with(addr, path, &format!("If-None-Match: {etag}\r\n")).await;
    assert_eq!(s3, 304);
    assert!(body3.is_empty(), "no body: {body3}");
    assert_eq!(header_of(&head3, "etag"), etag);
    let (_, stats) = get_json(addr, "/stats").await;
    assert_eq!(stats["notModified"], 1);
    assert_eq!(stats["total"], 3, "a 304 is a call too");

    // Faults win over 304s.
    mock.set_fault(1, Fault::Error(503));
    let (s4, _, _) = get_with(addr, path, &format!("If-None-Match: {etag}\r\n")).await;
    assert_eq!(s4, 503);
    mock.set_fault(1, Fault::Ok);

    let (status, bumped) = http(addr, "POST", "/bump", Some(r#"{"userId":"alice","widget":1}"#)).await;
    assert_eq!(status, 200);
    assert_eq!(serde_json::from_str::<Value>(&bumped).unwrap()["version"], 2);
    let (s5, head5, body5) = get_with(addr, path, &format!("If-None-Match: {etag}\r\n")).await;
    assert_eq!(s5, 200, "the old ETag no longer matches");
    assert_ne!(header_of(&head5, "etag"), etag);
    assert_eq!(serde_json::from_str::<Value>(&body5).unwrap()["version"], 2);
    assert_eq!(mock.not_modified(), 1);
    assert_eq!(mock.bump("alice", 1), Some(3));
    mock.stop().await;

    let plain = start_fast().await;
    let (status, _) = http(
        plain.addr(),
        "POST",
        "/bump",
        Some(r#"{"userId":"alice","widget":1}"#),
    )
    .await;
    assert_eq!(status, 404, "no /bump without --etags");
    let (s, head, _) = get_with(plain.addr(), path, "If-None-Match: *\r\n").await;
    assert_eq!(s, 200, "without --etags the mock behaves as before");
    assert!(header_of(&head, "etag").is_empty());
    plain.stop().await;
}
