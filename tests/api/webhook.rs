//! The HMAC-signed invalidation webhook, seen through two instances.

use std::time::Duration;

use percache::routes::invalidate::sign;

use crate::helpers::{spawn_app, until_ok, widget_with, StoreKind, TestApp};

const SECRET: &str = "test-webhook-secret";

/// Posts `body` to `{base}/api/invalidate`, signed with `secret` at `timestamp`.
async fn invalidate(base: &str, body: &str, timestamp: i64, secret: &str) -> reqwest::Response {
    let ts = timestamp.to_string();
    reqwest::Client::new()
        .post(format!("{base}/api/invalidate"))
        .header("content-type", "application/json")
        .header("x-percache-timestamp", &ts)
        .header(
            "x-percache-signature",
            sign(secret.as_bytes(), &ts, body.as_bytes()),
        )
        .body(body.to_owned())
        .send()
        .await
        .unwrap()
}

fn now_secs(app: &TestApp) -> i64 {
    app.cache.now() / 1000
}

#[tokio::test]
async fn a_signed_invalidation_makes_the_next_request_a_miss_on_every_instance() {
    // Arrange: alice's widgets 1, 3 and 5 are cached, and held in the L1 of
    // both instances (B read each from Redis).
    let app = spawn_app(StoreKind::Redis).without_prewarm().await;
    let (b, b_cache) = app.spawn_instance_with_cache().await;
    app.login("alice").await;
    for id in [1, 3, 5] {
        app.widget(id).await;
        let (on_b, _) = widget_with(&app.client, &format!("{b}/widgets/{id}")).await;
        assert!(on_b.starts_with("percache; hit"), "B holds widget {id}: {on_b}");
    }
    let heard = b_cache.changes().messages_received();

    // Act: invalidate widgets 1 and 3 through instance A.
    let body = r#"{"userId":"alice","widgets":[1,3]}"#;
    let resp = invalidate(&app.address, body, now_secs(&app), SECRET).await;

    // Assert: once B has heard of it (SPEC §7: other instances are ordered
    // by the change message), B and A miss on the named widgets only.
    assert_eq!(resp.status(), 200);
    let arrived = || b_cache.changes().messages_received() > heard;
    crate::helpers::eventually(Duration::from_secs(5), arrived, || "B never heard of it").await;
    for id in [1, 3] {
        let (status, _) = widget_with(&app.client, &format!("{b}/widgets/{id}")).await;
        assert_eq!(
            status, "percache; fwd=miss; stored",
            "B misses widget {id} after A's invalidation"
        );
    }
    let (status, _) = app.widget(3).await;
    assert!(
        status.starts_with("percache; hit"),
        "A reads what B stored: {status}"
    );
    let (status, _) = widget_with(&app.client, &format!("{b}/widgets/5")).await;
    assert!(
        status.starts_with("percache; hit"),
        "widget 5 was not named: {status}"
    );
}

#[tokio::test]
async fn without_widgets_every_widget_of_the_user_is_invalidated() {
    let app = spawn_app(StoreKind::Memory).without_prewarm().await;
    app.login("alice").await;
    for id in 1..=5 {
        app.widget(id).await;
    }

    let resp = invalidate(&app.address, r#"{"userId":"alice"}"#, now_secs(&app), SECRET).await;

    assert_eq!(resp.status(), 200);
    for id in 1..=5 {
        assert_eq!(
            app.widget(id).await.0,
            "percache; fwd=miss; stored",
            "widget {id}"
        );
    }
}

#[tokio::test]
async fn wrong_signatures_and_old_timestamps_are_refused() {
    // Arrange
    let app = spawn_app(StoreKind::Memory).without_prewarm().await;
    app.login("alice").await;
    app.widget(1).await;
    let body = r#"{"userId":"alice","widgets":[1]}"#;
    let now = now_secs(&app);

    // Act + Assert
    assert_eq!(
        invalidate(&app.address, body, now, "not-the-secret")
            .await
            .status(),
        401
    );
    assert_eq!(
        invalidate(&app.address, body, now - 301, SECRET).await.status(),
        401,
        "replayed"
    );
    assert_eq!(
        invalidate(&app.address, body, now + 301, SECRET).await.status(),
        401,
        "future"
    );
    let unsigned = reqwest::Client::new()
        .post(app.url("/api/invalidate"))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(unsigned.status(), 401);
    let ts = now.to_string();
    let tampered = reqwest::Client::new()
        .post(app.url("/api/invalidate"))
        .header("x-percache-timestamp", &ts)
        .header(
            "x-percache-signature",
            sign(SECRET.as_bytes(), &ts, body.as_bytes()),
        )
        .body(r#"{"userId":"bob","widgets":[1]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(tampered.status(), 401, "a signature covers the body");
    assert!(
        app.widget(1).await.0.starts_with("percache; hit"),
        "nothing was invalidated"
    );

    // A request replayed after the clock moved on is refused too.
    app.clock.advance(std::time::Duration::from_secs(301));
    assert_eq!(invalidate(&app.address, body, now, SECRET).await.status(), 401);
}

/// The window's edges (SPEC §6: refused when "more than 300 s away"):
/// exactly 300 s behind or ahead is accepted, 301 s is not.
#[tokio::test]
async fn timestamps_exactly_300_s_away_are_accepted_and_301_s_are_not() {
    let app = spawn_app(StoreKind::Memory).without_prewarm().await;
    let now = now_secs(&app);
    // A different body each time, so that none is a replay of another.
    let cases = [(-300, 200), (300, 200), (-301, 401), (301, 401)];
    for (i, (skew, expected)) in cases.into_iter().enumerate() {
        let body = format!(r#"{{"userId":"edge-{i}","widgets":[1]}}"#);
        let resp = invalidate(&app.address, &body, now + skew, SECRET).await;
        assert_eq!(resp.status(), expected, "a timestamp {skew:+} s away");
    }
}

#[tokio::test]
async fn the_webhook_is_off_without_a_secret() {
    let app = spawn_app(StoreKind::Memory)
        .settings(|s| s.invalidation_secret = None)
        .await;
    let resp = invalidate(&app.address, r#"{"userId":"alice"}"#, now_secs(&app), SECRET).await;
    assert_eq!(resp.status(), 404);
}

/// Sends exactly these signature headers and body (a captured request, replayed).
async fn send_signed(base: &str, body: &str, ts: &str, signature: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{base}/api/invalidate"))
        .header("content-type", "application/json")
        .header("x-percache-timestamp", ts)
        .header("x-percache-signature", signature)
        .body(body.to_owned())
        .send()
        .await
        .unwrap()
}

async fn a_signature_is_accepted_once(store: StoreKind) {
    // Arrange: one signed request, as a captured one would be.
    let app = spawn_app(store).without_prewarm().await;
    let body = r#"{"userId":"alice","widgets":[1]}"#;
    let ts = now_secs(&app).to_string();
    let signature = sign(SECRET.as_bytes(), &ts, body.as_bytes());

    // Act
    let first = send_signed(&app.address, body, &ts, &signature).await;
    let replay = send_signed(&app.address, body, &ts, &signature).await;
    let upper_hex = format!("sha256={}", signature["sha256=".len()..].to_uppercase());
    let replay_in_upper_case = send_signed(&app.address, body, &ts, &upper_hex).await;
    // The same body signed again a second later is a new request.
    let fresh = invalidate(&app.address, body, now_secs(&app) + 1, SECRET).await;

    // Assert
    assert_eq!(first.status(), 200);
    assert_eq!(replay.status(), 409, "the same signed request again");
    let message = replay.text().await.unwrap();
    assert!(message.contains("replay"), "{message}");
    assert_eq!(
        replay_in_upper_case.status(),
        409,
        "the same HMAC in upper-case hex"
    );
    assert_eq!(fresh.status(), 200, "a fresh signature works");
}

crate::helpers::both_stores!(a_signature_is_accepted_once);

#[tokio::test]
async fn a_replay_to_another_instance_sharing_redis_is_refused() {
    // Arrange: two instances on one Redis; alice's widget 1 cached.
    let app = spawn_app(StoreKind::Redis).without_prewarm().await;
    let b = app.spawn_instance().await;
    app.login("alice").await;
    app.widget(1).await;
    let body = r#"{"userId":"alice","widgets":[1]}"#;
    let ts = now_secs(&app).to_string();
    let signature = sign(SECRET.as_bytes(), &ts, body.as_bytes());

    // Act: accepted by A, then the same request sent to B.
    let on_a = send_signed(&app.address, body, &ts, &signature).await;
    app.widget(1).await; // cached again after the invalidation
    let on_b = send_signed(&b, body, &ts, &signature).await;

    // Assert
    assert_eq!(on_a.status(), 200);
    assert_eq!(on_b.status(), 409, "B knows A accepted it");
    assert!(
        app.widget(1).await.0.starts_with("percache; hit"),
        "the replay invalidated nothing"
    );
    // The marker is one Redis key that expires by itself within the window.
    let mac = hex::decode(&signature["sha256=".len()..]).unwrap();
    let key = percache::defence::replay::redis_key_of(&mac);
    let port = app.redis.as_ref().unwrap().port.to_string();
    let out = std::process::Command::new("redis-cli")
        .args(["-p", &port, "PTTL", &key])
        .output()
        .expect("redis-cli");
    let pttl: i64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    assert!(
        (1..=600_000).contains(&pttl),
        "{key} expires within 600 s: PTTL {pttl}"
    );
}

#[tokio::test]
async fn a_request_that_was_not_carried_out_can_be_sent_again() {
    // Arrange: a well-signed request for a widget that does not exist.
    let app = spawn_app(StoreKind::Memory).without_prewarm().await;
    let body = r#"{"userId":"alice","widgets":[9]}"#;
    let now = now_secs(&app);

    // Act
    let first = invalidate(&app.address, body, now, SECRET).await;
    let again = invalidate(&app.address, body, now, SECRET).await;

    // Assert: a 409 only ever means "already carried out".
    assert_eq!(first.status(), 422);
    assert_eq!(again.status(), 422);
}

/// Widget 3 of alice and bob cached, and widget 1 of alice; a second instance
/// where the store is shared (Redis or the cluster).
async fn two_users_cached(store: StoreKind) -> (TestApp, Option<String>, reqwest::Client) {
    let app = spawn_app(store).without_prewarm().await;
    let b = (store != StoreKind::Memory).then_some(app.spawn_instance().await);
    let bob = crate::helpers::new_client();
    app.login("alice").await;
    app.login_with(&bob, "bob").await;
    app.widget(1).await;
    app.widget(3).await;
    widget_with(&bob, &app.url("/widgets/3")).await;
    (app, b, bob)
}

async fn all_users_invalidation_makes_every_users_entries_misses_in_o1(store: StoreKind) {
    // Arrange
    let (app, b, bob) = two_users_cached(store).await;
    let calls = app.mock.total_calls();

    // Act: widget 3, for every user.
    let body = r#"{"widgets":["3"],"allUsers":true}"#;
    let resp = invalidate(&app.address, body, now_secs(&app), SECRET).await;

    // Assert: 200; alice's and bob's widget 3 are misses (on the other
    // instance too, once it has heard); alice's widget 1 is untouched.
    assert_eq!(resp.status(), 200);
    let json: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(json["allUsers"], true);
    let (status, _) = app.widget(3).await;
    assert_eq!(status, "percache; fwd=miss; stored");
    let bob_on = b.clone().unwrap_or_else(|| app.address.clone());
    let (bob_ref, bob_widget) = (&bob, &format!("{bob_on}/widgets/3"));
    until_ok(
        Duration::from_secs(3),
        Duration::from_millis(20),
        move || async move {
            let (status, _) = widget_with(bob_ref, bob_widget).await;
            let missed = status.starts_with("percache; fwd=miss");
            missed
                .then_some(())
                .ok_or(format!("bob's widget 3 was still served: {status}"))
        },
    )
    .await;
    let (status, _) = app.widget(1).await;
    assert!(
        status.starts_with("percache; hit"),
        "widget 1 was not named: {status}"
    );
    assert_eq!(
        app.mock.total_calls(),
        calls + 2,
        "one new call per user, for widget 3 only"
    );
    // O(1): no key was scanned or listed.
    for port in redis_ports(&app) {
        let stats = std::process::Command::new("redis-cli")
            .args(["-p", &port.to_string(), "info", "commandstats"])
            .output()
            .unwrap();
        let stats = String::from_utf8_lossy(&stats.stdout);
        assert!(
            !stats.contains("cmdstat_scan:") && !stats.contains("cmdstat_keys:"),
            "{stats}"
        );
    }
}

/// The ports of the app's Redis servers (none for the memory store).
fn redis_ports(app: &TestApp) -> Vec<u16> {
    match (&app.redis, &app.cluster) {
        (Some(r), _) => vec![r.port],
        (_, Some(c)) => c.nodes.iter().map(|n| n.port).collect(),
        _ => Vec::new(),
    }
}

async fn soft_invalidation_serves_entries_stale_while_they_refresh(store: StoreKind) {
    // Arrange
    let (app, _b, bob) = two_users_cached(store).await;

    // Act 1: alice's widget 3 only, softly.
    let body = r#"{"userId":"alice","widgets":[3],"soft":true}"#;
    let resp = invalidate(&app.address, body, now_secs(&app), SECRET).await;
    assert_eq!(resp.status(), 200);

    // Assert 1: served at once, stale, and refreshed; bob's is still fresh.
    let (status, card) = app.widget(3).await;
    assert!(status.ends_with("detail=revalidating"), "{status}");
    assert_eq!(crate::helpers::version_of(&card), 1, "the old data, at once");
    let (_, fresh) = app.wait_for_fresh_hit(3).await;
    assert_eq!(crate::helpers::version_of(&fresh), 2);
    let (status, _) = widget_with(&bob, &app.url("/widgets/3")).await;
    assert!(
        status.starts_with("percache; hit") && !status.contains("detail"),
        "{status}"
    );

    // Act 2: widget 3 for every user, softly.
    let body = r#"{"widgets":[3],"allUsers":true,"soft":true}"#;
    let resp = invalidate(&app.address, body, now_secs(&app) + 1, SECRET).await;
    assert_eq!(resp.status(), 200);

    // Assert 2: bob's entry too is stale now, served at once and refreshed.
    let (status, card) = widget_with(&bob, &app.url("/widgets/3")).await;
    assert!(status.ends_with("detail=revalidating"), "{status}");
    assert_eq!(crate::helpers::version_of(&card), 1);
    let (bob_ref, bob_widget) = (&bob, &app.url("/widgets/3"));
    until_ok(
        Duration::from_secs(5),
        Duration::from_millis(20),
        move || async move {
            let (status, card) = widget_with(bob_ref, bob_widget).await;
            let refreshed = !status.contains("detail") && crate::helpers::version_of(&card) == 2;
            refreshed
                .then_some(())
                .ok_or(format!("bob's widget never refreshed: {status}"))
        },
    )
    .await;
}

#[tokio::test]
async fn all_users_and_user_id_together_is_a_422() {
    let app = spawn_app(StoreKind::Memory).await;
    for body in [
        r#"{"userId":"alice","widgets":[3],"allUsers":true}"#,
        r#"{"widgets":[3]}"#,
    ] {
        let resp = invalidate(&app.address, body, now_secs(&app), SECRET).await;
        assert_eq!(resp.status(), 422, "{body}");
    }
}

crate::helpers::all_stores!(
    all_users_invalidation_makes_every_users_entries_misses_in_o1,
    soft_invalidation_serves_entries_stale_while_they_refresh,
);
