//! Conditional refresh (SPEC §7, v3; issue 26): an entry keeps the
//! upstream's `ETag` and `Last-Modified`, a refresh asks whether the data
//! changed, and a `304` renews the entry without a body.

use std::time::Duration;

use crate::helpers::{cache_status, metric_sample, spawn_app, version_of, StoreKind};

async fn an_unchanged_widget_is_revalidated_with_a_304_and_a_changed_one_fetched(store: StoreKind) {
    // Arrange: widget 1 cached from an upstream that keeps ETags.
    let app = spawn_app(store).etags().without_prewarm().await;
    app.login("alice").await;
    let (first, card) = app.widget(1).await;
    assert_eq!(first, "percache; fwd=miss; stored");
    let fetched_at = testkit::html::attr::<String>(&card, "data-fetched-at");
    app.clock.advance(Duration::from_secs(10));

    // Act 1: a forced refresh of unchanged data.
    let again = app.post("/widgets/1/refresh").await;

    // Assert 1: a 304, no body transferred; the same data, fetched anew.
    assert_eq!(cache_status(&again), "percache; fwd=stale; fwd-status=304");
    let again = again.text().await.unwrap();
    assert_eq!(app.mock.calls_for("alice", 1), 2, "one 200, then one 304");
    assert_eq!(app.mock.not_modified(), 1);
    assert_eq!(version_of(&again), version_of(&card), "the same data");
    assert_ne!(
        testkit::html::attr::<String>(&again, "data-fetched-at"),
        fetched_at,
        "the entry was renewed"
    );
    let (hit, _) = app.widget(1).await;
    assert!(
        hit.starts_with("percache; hit; ttl="),
        "the renewed entry is fresh: {hit}"
    );

    // Act 2: the data changes upstream.
    assert_eq!(app.mock.bump("alice", 1), Some(2));
    let changed = app.post("/widgets/1/refresh").await;

    // Assert 2: a 200 with the new data.
    assert_eq!(cache_status(&changed), "percache; fwd=request; stored");
    assert_eq!(version_of(&changed.text().await.unwrap()), 2);
    assert_eq!(app.mock.not_modified(), 1, "no second 304");
}

/// A background refresh's 304 shows in the metrics only, as `revalidated`.
async fn a_background_304_is_counted_as_revalidated(store: StoreKind) {
    let app = spawn_app(store).etags().without_prewarm().await;
    app.login("alice").await;
    app.widget(2).await;
    app.clock.advance(Duration::from_secs(61));

    let (stale, _) = app.widget(2).await;
    assert!(stale.ends_with("detail=revalidating"), "{stale}");
    app.wait_for_metric("percache_refresh_total", &[("outcome", "revalidated")], 1.0)
        .await;

    let metrics = app.get("/metrics").await.text().await.unwrap();
    let revalidated = [("widget", "2"), ("outcome", "revalidated")];
    assert_eq!(
        metric_sample(&metrics, "percache_cache_requests_total", &revalidated),
        1.0
    );
    assert_eq!(app.mock.not_modified(), 1);
    let (hit, _) = app.wait_for_fresh_hit(2).await;
    assert!(hit.starts_with("percache; hit"), "{hit}");
}

/// Any invalidation drops the validators: the fetch after it is
/// unconditional (a `200`, even though nothing changed upstream).
async fn the_fetch_after_an_invalidation_is_unconditional(store: StoreKind) {
    let app = spawn_app(store).etags().without_prewarm().await;
    app.login("alice").await;
    app.widget(4).await;
    let body = r#"{"userId":"alice","widgets":[4],"soft":true}"#;
    let ts = (app.cache.now() / 1000).to_string();
    let signature = percache::routes::invalidate::sign(b"test-webhook-secret", &ts, body.as_bytes());
    let resp = app
        .client
        .post(app.url("/api/invalidate"))
        .header("content-type", "application/json")
        .header("x-percache-timestamp", ts)
        .header("x-percache-signature", signature)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    let refreshed = app.post("/widgets/4/refresh").await;

    assert_eq!(cache_status(&refreshed), "percache; fwd=request; stored");
    assert_eq!(app.mock.not_modified(), 0, "no If-None-Match was sent");
    assert_eq!(app.mock.calls_for("alice", 4), 2);
}

crate::helpers::all_stores!(
    an_unchanged_widget_is_revalidated_with_a_304_and_a_changed_one_fetched,
    a_background_304_is_counted_as_revalidated,
    the_fetch_after_an_invalidation_is_unconditional,
);
