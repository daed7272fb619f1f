//! Several instances sharing one Redis (or Redis Cluster): one upstream call
//! per key in the whole fleet, and a shared view of invalidations.

use std::time::Duration;

use futures_util::future::join_all;
use mock_upstream::Fault;

use crate::helpers::{spawn_app_with, version_of, widget_with, StoreKind, TestApp, TestConfig};

/// 200 requests for `/widgets/1`, alternating between the two instances.
async fn burst(app: &TestApp, b: &str, n: usize) -> Vec<(String, String)> {
    let urls = [app.url("/widgets/1"), format!("{b}/widgets/1")];
    join_all((0..n).map(|i| widget_with(&app.client, &urls[i % 2]))).await
}

async fn two_instances_make_one_call_for_a_cold_key(store: StoreKind) {
    // Arrange: instances A and B on one Redis; a slow widget.
    let app = spawn_app_with(TestConfig::new(store).without_prewarm()).await;
    let b = app.spawn_instance().await;
    app.login("alice").await;
    app.mock.set_delay(1, Duration::from_millis(500));

    // Act
    let responses = burst(&app, &b, 200).await;

    // Assert
    assert_eq!(
        app.mock.calls_for("alice", 1),
        1,
        "one upstream call in the whole fleet"
    );
    let leaders = responses
        .iter()
        .filter(|(s, _)| s == "percache; fwd=miss; stored")
        .count();
    assert_eq!(leaders, 1, "one request led");
    let collapsed_on = |instance: usize| {
        responses
            .iter()
            .skip(instance)
            .step_by(2)
            .filter(|(s, _)| s.ends_with("; collapsed"))
            .count()
    };
    assert!(
        collapsed_on(0) > 0 && collapsed_on(1) > 0,
        "both instances' requests waited for the one fetch"
    );
    for (status, body) in &responses {
        assert!(
            status.starts_with("percache; fwd=miss; stored") || status.starts_with("percache; hit; ttl="),
            "{status}"
        );
        assert_eq!(version_of(body), 1);
    }
}

async fn a_stale_key_is_refreshed_once_in_the_fleet(store: StoreKind) {
    // Arrange: the entry is cached, then goes stale (the clock is shared).
    let app = spawn_app_with(TestConfig::new(store).without_prewarm()).await;
    let b = app.spawn_instance().await;
    app.login("alice").await;
    app.widget(1).await;
    app.clock.advance(Duration::from_secs(61));
    // Slow enough that the whole burst arrives while the refresh runs.
    app.mock.set_delay(1, Duration::from_secs(3));

    // Act
    let responses = burst(&app, &b, 200).await;

    // Assert: everyone got the stale entry at once; one refresh ran.
    let mut odd: Vec<&String> = responses
        .iter()
        .map(|(s, _)| s)
        .filter(|s| !s.ends_with("detail=revalidating"))
        .collect();
    odd.dedup();
    assert!(odd.is_empty(), "{odd:?}");
    assert!(responses.iter().all(|(_, body)| version_of(body) == 1));
    let (_, body) = app.wait_for_fresh_hit(1).await;
    assert_eq!(version_of(&body), 2);
    // B sees it too, within the near-cache's bound (the eviction message
    // normally arrives in milliseconds; the L1 ttl here is 1 s).
    let deadline = std::time::Instant::now() + Duration::from_secs(1);
    loop {
        let (status, body) = widget_with(&app.client, &format!("{b}/widgets/1")).await;
        if status.starts_with("percache; hit; ttl=") && !status.contains("revalidating") {
            assert_eq!(version_of(&body), 2, "B: {status}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "B never saw the refreshed entry: {status}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        app.mock.calls_for("alice", 1),
        2,
        "one background refresh for the fleet"
    );
}

async fn a_failure_in_one_instance_backs_off_the_fleet(store: StoreKind) {
    // Arrange
    let app = spawn_app_with(TestConfig::new(store).without_prewarm()).await;
    let b = app.spawn_instance().await;
    app.login("alice").await;
    app.mock.set_fault(2, Fault::Error(503));

    // Act: A fails (with its retries), then B asks during the backoff.
    let (status_a, _) = app.widget(2).await;
    let calls_after_a = app.mock.calls_for("alice", 2);
    let (status_b, body_b) = widget_with(&app.client, &format!("{b}/widgets/2")).await;

    // Assert
    assert_eq!(status_a, "percache; fwd=miss; fwd-status=503");
    assert_eq!(calls_after_a, 3, "503 is retried: three attempts");
    assert_eq!(status_b, "percache; fwd=miss; fwd-status=503");
    assert!(body_b.contains(r#"data-state="error""#));
    assert_eq!(
        app.mock.calls_for("alice", 2),
        3,
        "B did not call during the backoff"
    );
}

crate::cluster_stores!(
    two_instances_make_one_call_for_a_cold_key,
    a_stale_key_is_refreshed_once_in_the_fleet,
    a_failure_in_one_instance_backs_off_the_fleet,
);

/// When each response of `n` requests for a cold `/widgets/1` on two
/// instances (alternating) arrived, after the burst started.
async fn timed_burst(app: &TestApp, b: &str, n: usize) -> Vec<(usize, String, Duration)> {
    let urls = [app.url("/widgets/1"), format!("{b}/widgets/1")];
    let start = std::time::Instant::now();
    join_all((0..n).map(|i| {
        let url = urls[i % 2].clone();
        async move {
            let (status, _) = widget_with(&app.client, &url).await;
            (i % 2, status, start.elapsed())
        }
    }))
    .await
}

async fn the_other_instances_waiters_are_freed_by_the_change_feed(store: StoreKind) {
    // Arrange: A and B on one Redis; a cold key whose upstream takes 300 ms.
    let app = spawn_app_with(TestConfig::new(store).without_prewarm()).await;
    let b = app.spawn_instance().await;
    app.login("alice").await;
    app.mock.set_delay(1, Duration::from_millis(300));

    // Act
    let responses = timed_burst(&app, &b, 100).await;

    // Assert: one call; the instance without the fetch hears of it at once.
    assert_eq!(
        app.mock.calls_for("alice", 1),
        1,
        "one upstream call in the fleet"
    );
    let leader = responses
        .iter()
        .find(|(_, s, _)| s == "percache; fwd=miss; stored")
        .map(|(i, _, _)| *i)
        .expect("one request led");
    let median = |instance: usize| {
        let mut times: Vec<Duration> = responses
            .iter()
            .filter(|(i, s, _)| *i == instance && s.ends_with("collapsed"))
            .map(|(_, _, t)| *t)
            .collect();
        times.sort();
        times[times.len() / 2]
    };
    let (fetching, other) = (median(leader), median(1 - leader));
    let lag = other.saturating_sub(fetching);
    eprintln!(
        "fleet: waiters freed at {fetching:?} on the fetching instance, {other:?} on the other (+{lag:?})"
    );
    // Polling Redis (10 ms doubling to 100 ms) freed them about 58 ms later;
    // the change feed frees them within a Redis round trip or two. The bound
    // leaves room for a loaded machine and a debug build.
    assert!(
        lag <= Duration::from_millis(25),
        "the other instance's waiters lagged {lag:?}"
    );
}

crate::cluster_stores!(the_other_instances_waiters_are_freed_by_the_change_feed);
