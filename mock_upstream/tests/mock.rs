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
