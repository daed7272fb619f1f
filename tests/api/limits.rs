//! Bounded resources.

use std::time::Duration;

use crate::helpers::{spawn_app_with, StoreKind, TestConfig};

#[tokio::test]
async fn background_fetches_are_capped() {
    // Arrange: at most two fetches in flight for background work; slow widgets.
    let config = TestConfig {
        max_background: 2,
        delays_ms: [400, 400, 400, 400, 400],
        ..TestConfig::new(StoreKind::Memory)
    };
    let app = spawn_app_with(config).await;

    // Act: sign-in prewarms; the cap lets two of the five start.
    app.login("alice").await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    // Assert
    assert_eq!(app.mock.total_calls(), 2, "prewarm stopped at the cap");
    // A request that must wait still fetches: the cap is for background work only.
    let (status, _) = app.widget(5).await;
    assert!(status.starts_with("percache; fwd=miss"), "{status}");
}

#[tokio::test]
async fn oversized_bodies_are_refused_with_413() {
    let app = spawn_app_with(TestConfig::new(StoreKind::Memory)).await;
    let form = format!("username={}", "a".repeat(5 * 1024));
    let resp = app
        .client
        .post(app.url("/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    let resp = app
        .client
        .post(app.url("/api/invalidate"))
        .body(vec![b'x'; 64 * 1024])
        .send()
        .await
        .unwrap();
    assert!(resp.status() == 413 || resp.status() == 401, "{}", resp.status());
}
