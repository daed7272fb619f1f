//! What lands in Redis.

use std::time::Duration;

use percache::cache::key::UserTag;
use percache::cache::Store;

use crate::helpers::{instance, spawn_app, StoreKind};

#[tokio::test]
async fn entries_are_stored_under_hashed_keys_with_ttl_plus_grace() {
    // Arrange
    let app = spawn_app(StoreKind::Redis).await;

    // Act
    app.login("alice").await;
    app.wait_for_calls(5).await;
    app.wait_for_fresh_hit(3).await;

    // Assert
    let store = app.redis_store();
    let analytics = instance("3");
    let key = UserTag::of("alice").key(&analytics);
    let hash = analytics
        .hash
        .as_deref()
        .expect("the analytics widget has parameters");
    assert!(
        key.as_str().starts_with("percache:v1:{u:") && key.as_str().ends_with(&format!("}}:w:3:p:{hash}")),
        "{key:?}"
    );
    let entry = store.get(&key).await.unwrap().expect("the entry is in Redis");
    assert_eq!(entry.data["userId"], "alice");
    let pttl = Duration::from_millis(store.pttl(&key).await.unwrap() as u64);
    let expected = app.config.ttl + app.config.grace;
    assert!(
        pttl <= expected && pttl > expected - Duration::from_secs(10),
        "PTTL {pttl:?}, expected about {expected:?}"
    );
}
