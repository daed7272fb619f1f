//! Cache semantics (SPEC §7) through the HTTP API, with the injectable clock.

use std::time::Duration;

use futures_util::future::join_all;
use mock_upstream::Fault;

use crate::helpers::{cache_status, eventually, spawn_app, until, version_of, StoreKind, TestApp};

async fn concurrent_requests_for_a_cold_key_make_one_upstream_call(store: StoreKind) {
    // Arrange: no prewarm, and a slow widget so all requests overlap.
    let app = spawn_app(store).without_prewarm().await;
    app.login("alice").await;
    app.mock.set_delay(1, Duration::from_millis(500));

    // Act
    let requests = (0..100).map(|_| app.widget(1));
    let responses = join_all(requests).await;

    // Assert
    assert_eq!(app.mock.calls_for("alice", 1), 1);
    assert_eq!(app.mock.total_calls(), 1);
    let leaders = responses
        .iter()
        .filter(|(s, _)| s == "percache; fwd=miss; stored")
        .count();
    let joined = responses
        .iter()
        .filter(|(s, _)| s == "percache; fwd=miss; stored; collapsed")
        .count();
    let hits = responses
        .iter()
        .filter(|(s, _)| s.starts_with("percache; hit; ttl="))
        .count();
    assert_eq!(leaders, 1, "exactly one request led the fetch");
    assert_eq!(
        leaders + joined + hits,
        100,
        "every request was a miss, a join or a hit"
    );
    assert!(joined > 0, "concurrent requests joined the fetch");
    for (_, body) in &responses {
        assert!(body.contains(r#"data-state="ready""#));
        assert_eq!(version_of(body), 1, "everyone got the one fetch's data");
    }
}

async fn fresh_stale_and_expired_follow_the_policy(store: StoreKind) {
    // Arrange: fresh 60 s, ttl 10 min (the test defaults of helpers::test_settings).
    let app = spawn_app(store).without_prewarm().await;
    app.login("alice").await;

    // A miss fetches and stores.
    let (status, body) = app.widget(1).await;
    assert_eq!(status, "percache; fwd=miss; stored");
    assert_eq!(version_of(&body), 1);

    // Fresh: served with no upstream call, ttl counts down from 60 (less
    // up to 10% of jitter on the fresh window).
    let (status, body) = app.widget(1).await;
    let ttl: i64 = status
        .strip_prefix("percache; hit; ttl=")
        .expect(&status)
        .parse()
        .unwrap();
    assert!((53..=60).contains(&ttl), "{status}");
    assert_eq!(version_of(&body), 1);
    assert_eq!(app.mock.calls_for("alice", 1), 1);

    // Stale: 20 concurrent requests are all served the old data at once, and
    // exactly one background refresh runs.
    app.clock.advance(Duration::from_secs(61));
    app.mock.set_delay(1, Duration::from_millis(300));
    let stale = join_all((0..20).map(|_| app.widget(1))).await;
    for (status, body) in &stale {
        assert!(status.ends_with("; detail=revalidating"), "{status}");
        assert!(status.contains("ttl=-"), "stale ttl is negative: {status}");
        assert!(body.contains(r#"data-state="stale""#));
        assert!(body.contains("refreshing"));
        assert_eq!(version_of(body), 1, "stale data is served, not waited for");
    }
    let (_, body) = app.wait_for_fresh_hit(1).await;
    assert_eq!(version_of(&body), 2, "the refresh landed");
    assert_eq!(
        app.mock.calls_for("alice", 1),
        2,
        "one refresh for 20 stale requests"
    );

    // Past ttl: a miss again, when the upstream answers within the soft
    // timeout. (It may join a background refresh that a late stale read
    // started just before the jump, hence `starts_with`.)
    app.mock.set_delay(1, Duration::from_millis(20));
    app.clock.advance(Duration::from_secs(11 * 60));
    let (status, body) = app.widget(1).await;
    assert!(status.starts_with("percache; fwd=miss; stored"), "{status}");
    assert_eq!(version_of(&body), 3);
    assert_eq!(app.mock.calls_for("alice", 1), 3);
}

async fn an_expired_entry_is_served_when_the_upstream_fails(store: StoreKind) {
    // Arrange: a cached widget, past its ttl but within grace; the upstream fails.
    let app = spawn_app(store).without_prewarm().await;
    app.login("alice").await;
    let (_, before) = app.widget(4).await;
    app.clock.advance(Duration::from_secs(11 * 60));
    app.mock.set_fault(4, Fault::Error(500));

    // Act
    let (status, body) = app.widget(4).await;
    let json = app.get("/api/widgets/4").await;

    // Assert
    assert_eq!(
        status,
        "percache; fwd=miss; fwd-status=500; detail=stale-if-error"
    );
    assert!(body.contains(r#"data-state="stale-if-error""#), "{body}");
    assert!(body.contains("source unavailable"));
    assert_eq!(version_of(&body), version_of(&before));
    assert_eq!(json.status(), 200);
    let json: serde_json::Value = json.json().await.unwrap();
    assert_eq!(json["stale"], true);
    assert_eq!(json["data"]["version"], 1);
    let (_, other) = app.widget(1).await;
    assert!(
        other.contains(r#"data-state="ready""#),
        "other widgets are unaffected"
    );

    // The upstream recovers: after the backoff the next request replaces the entry.
    app.mock.set_fault(4, Fault::Ok);
    let (status, body) = after_backoff(&app, 4, |s| s == "percache; fwd=miss; stored").await;
    assert_eq!(status, "percache; fwd=miss; stored");
    assert!(body.contains(r#"data-state="ready""#));
    assert!(
        version_of(&body) > version_of(&before),
        "new data replaced the old"
    );
}

async fn a_stale_entry_whose_refresh_failed_is_served_as_stale_if_error(store: StoreKind) {
    // Arrange: widget 4 cached, then stale; the upstream starts failing.
    let app = spawn_app(store).without_prewarm().await;
    app.login("alice").await;
    app.widget(4).await;
    app.widget(1).await;
    app.clock.advance(Duration::from_secs(61));
    app.mock.set_fault(4, Fault::Error(503));

    // Act: the first request starts the refresh, which fails (503, retried).
    let (status, _) = app.widget(4).await;
    assert!(status.ends_with("detail=revalidating"), "{status}");
    app.wait_for_calls(1 + 1 + 3).await;
    // The failure is recorded before the flight leaves the map.
    let idle = || app.cache.fetches_in_flight() == 0;
    eventually(WAIT, idle, || "the refresh never ended").await;
    let (status, body) = app.widget(4).await;
    let json = app.get("/api/widgets/4").await;

    // Assert: the old data, marked stale-if-error, in the fragment and the JSON.
    assert_eq!(
        status,
        "percache; fwd=miss; fwd-status=503; detail=stale-if-error"
    );
    assert!(body.contains(r#"data-state="stale-if-error""#));
    assert!(body.contains("source unavailable"));
    assert_eq!(version_of(&body), 1);
    assert_eq!(cache_status(&json), status);
    let json: serde_json::Value = json.json().await.unwrap();
    assert_eq!(
        (json["stale"].as_bool(), json["data"]["version"].as_u64()),
        (Some(true), Some(1))
    );
    assert_eq!(
        app.mock.calls_for("alice", 4),
        4,
        "no new attempt during the backoff"
    );
    let (other, _) = app.widget(1).await;
    assert!(
        other.contains("detail=revalidating"),
        "widget 1 is just stale: {other}"
    );

    // Recovery: after the backoff the next request refreshes, and new data replaces the old.
    app.mock.set_fault(4, Fault::Ok);
    let (status, _) = after_backoff(&app, 4, |s| s.ends_with("detail=revalidating")).await;
    assert!(status.ends_with("detail=revalidating"), "{status}");
    let (_, body) = app.wait_for_fresh_hit(4).await;
    assert_eq!(version_of(&body), 5);
}

async fn a_failure_with_nothing_cached_is_an_error_card_with_retry(store: StoreKind) {
    let app = spawn_app(store).without_prewarm().await;
    app.login("alice").await;
    app.mock.set_fault(2, Fault::Error(404));

    let (status, body) = app.widget(2).await;
    let json = app.get("/api/widgets/2").await;

    assert_eq!(status, "percache; fwd=miss; fwd-status=404");
    assert!(body.contains(r#"data-state="error""#));
    assert!(body.contains(r#"data-action="retry""#));
    assert_eq!(json.status(), 502);
    assert_eq!(
        app.mock.calls_for("alice", 2),
        1,
        "a 404 is not retried, and the JSON request fell in the backoff"
    );

    // Recovered, but the key is in backoff: not retried at once...
    app.mock.set_fault(2, Fault::Ok);
    let (status, body) = app.widget(2).await;
    assert_eq!(status, "percache; fwd=miss; fwd-status=404");
    assert!(body.contains(r#"data-state="error""#));
    assert_eq!(app.mock.calls_for("alice", 2), 1, "no call during the backoff");

    // ...then it is.
    let (status, body) = after_backoff(&app, 2, |s| s == "percache; fwd=miss; stored").await;
    assert_eq!(status, "percache; fwd=miss; stored");
    assert!(body.contains(r#"data-state="ready""#));
}

async fn forced_refresh_bypasses_freshness(store: StoreKind) {
    let app = spawn_app(store).without_prewarm().await;
    app.login("alice").await;
    app.widget(5).await;

    let resp = app.post("/widgets/5/refresh").await;

    assert_eq!(resp.status(), 200);
    assert_eq!(cache_status(&resp), "percache; fwd=request; stored");
    assert_eq!(version_of(&resp.text().await.unwrap()), 2);
    let (status, body) = app.widget(5).await;
    assert!(status.starts_with("percache; hit"), "{status}");
    assert_eq!(version_of(&body), 2, "the refreshed entry was stored");
}

crate::helpers::all_stores!(
    concurrent_requests_for_a_cold_key_make_one_upstream_call,
    a_stale_entry_whose_refresh_failed_is_served_as_stale_if_error,
    fresh_stale_and_expired_follow_the_policy,
    an_expired_entry_is_served_when_the_upstream_fails,
    a_failure_with_nothing_cached_is_an_error_card_with_retry,
    forced_refresh_bypasses_freshness,
);

#[tokio::test]
async fn a_forced_refresh_joins_a_fetch_in_flight() {
    let app = spawn_app(StoreKind::Memory).without_prewarm().await;
    app.login("alice").await;
    app.mock.set_delay(3, Duration::from_millis(400));

    let (get, refresh) = tokio::join!(app.widget(3), async {
        // The GET's fetch has reached the upstream.
        app.wait_for_in_flight(1).await;
        app.post("/widgets/3/refresh").await
    });

    assert_eq!(get.0, "percache; fwd=miss; stored");
    assert_eq!(cache_status(&refresh), "percache; fwd=request; stored; collapsed");
    assert_eq!(app.mock.calls_for("alice", 3), 1);
}

#[tokio::test]
async fn the_json_api_matches_the_spec() {
    let app = spawn_app(StoreKind::Memory).without_prewarm().await;
    app.login("alice").await;

    let first = app.get("/api/widgets/3").await;
    assert_eq!(cache_status(&first), "percache; fwd=miss; stored");
    let first: serde_json::Value = first.json().await.unwrap();
    let second = app.get("/api/widgets/3").await;
    assert!(cache_status(&second).starts_with("percache; hit; ttl="));
    let second: serde_json::Value = second.json().await.unwrap();

    assert_eq!(first["id"], 3);
    assert_eq!(first["cached"], false);
    assert_eq!(second["cached"], true);
    assert_eq!(second["stale"], false);
    assert_eq!(second["data"]["series"].as_array().unwrap().len(), 14);
    for field in ["fetchedAt", "freshUntil", "expiresAt"] {
        let value = second[field].as_str().unwrap();
        assert!(
            time::OffsetDateTime::parse(value, &time::format_description::well_known::Rfc3339).is_ok(),
            "{field}: {value}"
        );
    }
}

#[tokio::test]
async fn with_no_fresh_window_every_request_fetches_exactly_once() {
    let app = spawn_app(StoreKind::Memory)
        .without_prewarm()
        .settings(|s| s.lifetimes.fresh = Duration::ZERO)
        .await;
    app.login("alice").await;

    let (first, _) = app.widget(1).await;
    let (second, _) = app.widget(1).await;

    assert_eq!(first, "percache; fwd=miss; stored");
    assert!(second.ends_with("detail=revalidating"), "{second}");
    app.wait_for_calls(2).await;
    // Once no fetch is in flight and the mock holds no call, no other call
    // can come from these two requests.
    let idle = || app.cache.fetches_in_flight() == 0 && app.mock.in_flight() == 0;
    eventually(WAIT, idle, || "the refresh never ended").await;
    assert_eq!(
        app.mock.calls_for("alice", 1),
        2,
        "one call per request, never two"
    );
}

/// How long a test waits for the failure backoff to end.
const WAIT: Duration = Duration::from_secs(10);

/// Reads widget `id` until its `Cache-Status` satisfies `done`: the failure
/// backoff's marker lapses by the store's own ttl, on the wall clock, and a
/// read during it makes no upstream call (each test checks the counts).
async fn after_backoff(app: &TestApp, id: u8, done: impl Fn(&str) -> bool) -> (String, String) {
    let last = std::sync::Mutex::new(String::new());
    let (done, last) = (&done, &last);
    let answer = until(WAIT, Duration::from_millis(50), || async move {
        let (status, body) = app.widget(id).await;
        *last.lock().unwrap() = status.clone();
        done(&status).then_some((status, body))
    })
    .await;
    let last = last.lock().unwrap().clone();
    answer.unwrap_or_else(|| panic!("widget {id} still in backoff (last: {last})"))
}

/// `--widget-fresh` reaches the cache at start-up: widget 1's fresh window
/// is 5 s while the others keep the default 60 s.
#[tokio::test]
async fn widget_fresh_is_wired_into_the_cache_at_start_up() {
    let app = spawn_app(StoreKind::Memory)
        .without_prewarm()
        .settings(|s| {
            s.lifetimes.widget_fresh = Some(percache::config::parse_widget_durations("1=5s").unwrap());
        })
        .await;
    app.login("alice").await;
    app.widget(1).await;
    app.widget(5).await;

    app.clock.advance(Duration::from_secs(6));

    let (one, _) = app.widget(1).await;
    let (five, _) = app.widget(5).await;
    assert!(
        one.ends_with("detail=revalidating"),
        "widget 1 is stale after 6 s: {one}"
    );
    assert!(five.starts_with("percache; hit; ttl="), "{five}");
    assert!(!five.contains("detail="), "widget 5 is still fresh: {five}");
}

/// An unknown widget in `--widget-fresh` stops the binary at start-up.
#[test]
fn an_unknown_widget_in_widget_fresh_stops_start_up() {
    let (code, stderr) = crate::helpers::start_and_fail(&["--widget-fresh", "9=1s"], &[]);
    assert_ne!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("--widget-fresh") && stderr.contains('9'),
        "{stderr}"
    );
}

/// A hanging upstream with a short `--upstream-timeout`: the request gets an
/// error card within the timeout's attempts, not a hang; nothing is stored.
#[tokio::test]
async fn a_hanging_upstream_gives_an_error_card_after_the_timeout() {
    let app = spawn_app(StoreKind::Memory)
        .without_prewarm()
        .settings(|s| s.upstream_timeout = Duration::from_millis(300))
        .await;
    app.login("alice").await;
    app.mock.set_fault(2, Fault::Hang);

    let started = std::time::Instant::now();
    let (status, body) = app.widget(2).await;
    let json = app.get("/api/widgets/2").await;
    let took = started.elapsed();

    // Assert: a 504 outcome, said in plain words; one call (a timeout is
    // not retried, and the JSON request fell in the failure backoff). The
    // bound is the point of the feature (the mock hangs for an hour), with
    // a wide margin over the 300 ms timeout.
    assert_eq!(status, "percache; fwd=miss; fwd-status=504");
    assert!(body.contains(r#"data-state="error""#), "{body}");
    assert!(body.contains("did not answer in time"), "{body}");
    assert_eq!(json.status(), 502);
    assert_eq!(app.mock.calls_for("alice", 2), 1);
    assert!(took < Duration::from_secs(5), "answered after {took:?}");
}
