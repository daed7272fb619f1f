//! The HMAC-signed invalidation webhook, seen through two instances.

use percache::routes::invalidate::sign;

use crate::both_stores;
use crate::helpers::{spawn_app_with, widget_with, StoreKind, TestApp, TestConfig};

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
    // Arrange: alice's widgets 1 and 3 are cached; a second instance shares Redis.
    let app = spawn_app_with(TestConfig::new(StoreKind::Redis).without_prewarm()).await;
    let b = app.spawn_instance().await;
    app.login("alice").await;
    app.widget(1).await;
    app.widget(3).await;
    app.widget(5).await;

    // Act: invalidate widgets 1 and 3 through instance A.
    let body = r#"{"userId":"alice","widgets":[1,3]}"#;
    let resp = invalidate(&app.address, body, now_secs(&app), SECRET).await;

    // Assert
    assert_eq!(resp.status(), 200);
    let (status, _) = widget_with(&app.client, &format!("{b}/widgets/1")).await;
    assert_eq!(
        status, "percache; fwd=miss; stored",
        "B misses after A's invalidation"
    );
    let (status, _) = app.widget(3).await;
    assert_eq!(status, "percache; fwd=miss; stored");
    let (status, _) = app.widget(5).await;
    assert!(
        status.starts_with("percache; hit"),
        "widget 5 was not named: {status}"
    );
}

#[tokio::test]
async fn without_widgets_every_widget_of_the_user_is_invalidated() {
    let app = spawn_app_with(TestConfig::new(StoreKind::Memory).without_prewarm()).await;
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
    let app = spawn_app_with(TestConfig::new(StoreKind::Memory).without_prewarm()).await;
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

#[tokio::test]
async fn well_signed_but_bad_bodies_are_422() {
    let app = spawn_app_with(TestConfig::new(StoreKind::Memory)).await;
    let now = now_secs(&app);
    for body in [
        r#"{"userId":"alice","widgets":[9]}"#,
        r#"{"userId":"","widgets":[1]}"#,
        r#"{"widgets":[1]}"#,
        r#"not json"#,
        r#"{"userId":"alice","widgets":"all"}"#,
    ] {
        assert_eq!(
            invalidate(&app.address, body, now, SECRET).await.status(),
            422,
            "{body}"
        );
    }
}

#[tokio::test]
async fn the_webhook_is_off_without_a_secret() {
    let config = TestConfig {
        invalidation_secret: None,
        ..TestConfig::new(StoreKind::Memory)
    };
    let app = spawn_app_with(config).await;
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
    let app = spawn_app_with(TestConfig::new(store).without_prewarm()).await;
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

both_stores!(a_signature_is_accepted_once);

#[tokio::test]
async fn a_replay_to_another_instance_sharing_redis_is_refused() {
    // Arrange: two instances on one Redis; alice's widget 1 cached.
    let app = spawn_app_with(TestConfig::new(StoreKind::Redis).without_prewarm()).await;
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
    let app = spawn_app_with(TestConfig::new(StoreKind::Memory).without_prewarm()).await;
    let body = r#"{"userId":"alice","widgets":[9]}"#;
    let now = now_secs(&app);

    // Act
    let first = invalidate(&app.address, body, now, SECRET).await;
    let again = invalidate(&app.address, body, now, SECRET).await;

    // Assert: a 409 only ever means "already carried out".
    assert_eq!(first.status(), 422);
    assert_eq!(again.status(), 422);
}
