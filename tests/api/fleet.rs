//! Several instances sharing one Redis (or Redis Cluster): one upstream call
//! per key in the whole fleet, and a shared view of invalidations.

use std::time::Duration;

use futures_util::future::join_all;
use mock_upstream::Fault;

use crate::helpers::{eventually, spawn_app, until_ok, version_of, widget_with, StoreKind, TestApp};

/// 200 requests for `/widgets/1`, alternating between the two instances.
async fn burst(app: &TestApp, b: &str, n: usize) -> Vec<(String, String)> {
    let urls = [app.url("/widgets/1"), format!("{b}/widgets/1")];
    join_all((0..n).map(|i| widget_with(&app.client, &urls[i % 2]))).await
}

async fn two_instances_make_one_call_for_a_cold_key(store: StoreKind) {
    // Arrange: instances A and B on one Redis; a slow widget.
    let app = spawn_app(store).without_prewarm().await;
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
    let app = spawn_app(store).without_prewarm().await;
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
    let (client, b_widget) = (&app.client, &format!("{b}/widgets/1"));
    until_ok(
        Duration::from_secs(1),
        Duration::from_millis(20),
        move || async move {
            let (status, body) = widget_with(client, b_widget).await;
            if status.starts_with("percache; hit; ttl=") && !status.contains("revalidating") {
                assert_eq!(version_of(&body), 2, "B: {status}");
                return Ok(());
            }
            Err(format!("B never saw the refreshed entry: {status}"))
        },
    )
    .await;
    assert_eq!(
        app.mock.calls_for("alice", 1),
        2,
        "one background refresh for the fleet"
    );
}

async fn a_failure_in_one_instance_backs_off_the_fleet(store: StoreKind) {
    // Arrange
    let app = spawn_app(store).without_prewarm().await;
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

crate::helpers::cluster_stores!(
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
    let app = spawn_app(store).without_prewarm().await;
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
    // A deadline is the point of the feature. Without the feed, a waiter
    // looks again every FLEET_WAIT_FALLBACK (250 ms): begun with the burst,
    // it next looks about 200 ms after the 300 ms fetch lands. The feed
    // frees them within a Redis round trip or two. The bound sits between,
    // with room for a loaded machine and a debug build.
    assert!(
        lag <= Duration::from_millis(100),
        "the other instance's waiters lagged {lag:?}"
    );
}

crate::helpers::cluster_stores!(the_other_instances_waiters_are_freed_by_the_change_feed);

/// Whether the cluster node on `port` owns `key`'s slot (it answers, rather
/// than redirecting with MOVED).
fn owns(port: u16, key: &str) -> bool {
    let out = std::process::Command::new("redis-cli")
        .args(["-p", &port.to_string(), "exists", key])
        .output()
        .unwrap();
    !String::from_utf8_lossy(&out.stdout).contains("MOVED")
}

#[tokio::test]
async fn the_change_feed_survives_the_loss_of_the_first_cluster_node() {
    // Arrange: A and B on a three-node cluster, B with a long-lived L1, so only
    // the change feed tells B of A's writes; a user whose keys live on a
    // node that stays up.
    let mut app = spawn_app(StoreKind::Cluster)
        .without_prewarm()
        .settings(|s| s.store.l1_ttl = Duration::from_secs(60))
        .await;
    let b = app.spawn_instance().await;
    let first = app.cluster.as_ref().unwrap().nodes[0].port;
    let user = (0..100)
        .map(|i| format!("survivor-{i}"))
        .find(|u| {
            let key = percache::cache::key::UserTag::of(u).key(&crate::helpers::instance("1"));
            !owns(first, key.as_str())
        })
        .expect("a user away from the first node");
    let client = crate::helpers::new_client();
    app.login_with(&client, &user).await;
    let (_, on_a) = widget_with(&client, &app.url("/widgets/1")).await;
    let (_, on_b) = widget_with(&client, &format!("{b}/widgets/1")).await;
    assert_eq!(version_of(&on_a), version_of(&on_b), "B holds it in its L1");

    // Act: the first node dies; A refreshes the widget.
    app.cluster.as_mut().unwrap().nodes.remove(0);
    let (a_client, refresh) = (&client, &app.url("/widgets/1/refresh"));
    let fresh = until_ok(
        Duration::from_secs(10),
        Duration::from_millis(100),
        move || async move {
            let resp = a_client.post(refresh).send().await.unwrap();
            let status = crate::helpers::cache_status(&resp);
            let card = resp.text().await.unwrap();
            match status == "percache; fwd=request; stored" {
                true => Ok(version_of(&card)),
                false => Err(format!("A could not refresh: {status}")),
            }
        },
    )
    .await;

    // Assert: B hears of it through another node, well before its L1 expires.
    let b_widget = &format!("{b}/widgets/1");
    until_ok(
        Duration::from_secs(10),
        Duration::from_millis(100),
        move || async move {
            let (_, card) = widget_with(a_client, b_widget).await;
            let version = version_of(&card);
            let why =
                || format!("B never heard of A's refresh after the first node died (v{version} < v{fresh})");
            (version >= fresh).then_some(()).ok_or_else(why)
        },
    )
    .await;
}

#[tokio::test]
async fn on_a_cluster_an_instance_receives_only_the_changes_of_the_users_it_serves() {
    // Arrange: A and B on a cluster; 20 users, none of them served by B yet.
    let app = spawn_app(StoreKind::Cluster).without_prewarm().await;
    let (b, b_cache) = app.spawn_instance_with_cache().await;
    let users: Vec<(String, reqwest::Client)> = (0..20)
        .map(|i| (format!("sharded-{i}"), crate::helpers::new_client()))
        .collect();
    for (user, client) in &users {
        app.login_with(client, user).await;
    }

    // Act 1: every user's widget 1 changes on A, twice.
    for _ in 0..2 {
        for (_, client) in &users {
            let resp = client.post(app.url("/widgets/1/refresh")).send().await.unwrap();
            assert_eq!(resp.status(), 200);
        }
    }

    // Assert 1: B heard none of it (it serves none of them). Checked at
    // once here, and for good at the end, after B has heard a later change:
    // a late message of this act would be counted by then.
    assert_eq!(
        b_cache.changes().messages_received(),
        0,
        "B received changes of users it does not serve"
    );

    // Act 2: B serves the first user (its entry is now in B's L1), and that
    // user's widget changes on A, as do everyone else's.
    let (first, client) = &users[0];
    let (_, before) = widget_with(client, &format!("{b}/widgets/1")).await;
    // The cluster has confirmed B's subscription: changes from now on arrive.
    let followed = || b_cache.changes().users_followed() > 0 && b_cache.changes().follows_confirmed() > 0;
    eventually(Duration::from_secs(5), followed, || {
        format!("B never followed {first}")
    })
    .await;
    for (_, client) in &users {
        client.post(app.url("/widgets/1/refresh")).send().await.unwrap();
    }

    // Assert 2: B hears of its user's change (and serves it), and of no other.
    let (b_widget, before) = (&format!("{b}/widgets/1"), version_of(&before));
    until_ok(
        Duration::from_secs(5),
        Duration::from_millis(20),
        move || async move {
            let (_, card) = widget_with(client, b_widget).await;
            (version_of(&card) > before)
                .then_some(())
                .ok_or(format!("B never heard of {first}'s change"))
        },
    )
    .await;
    assert_eq!(
        b_cache.changes().messages_received(),
        1,
        "B received exactly its one user's change out of 20"
    );
}
