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
    assert_eq!(entry.value()["userId"], "alice");
    let pttl = Duration::from_millis(store.pttl(&key).await.unwrap() as u64);
    let expected = app.settings.lifetimes.ttl + app.settings.lifetimes.grace;
    assert!(
        pttl <= expected && pttl > expected - Duration::from_secs(10),
        "PTTL {pttl:?}, expected about {expected:?}"
    );
}

/// `redis-cli INFO commandstats` as (command, calls), after `CONFIG RESETSTAT`.
fn commandstats(port: u16) -> Vec<(String, u64)> {
    let out = std::process::Command::new("redis-cli")
        .args(["-p", &port.to_string(), "info", "commandstats"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest.strip_prefix("calls=")?.split(',').next()?.parse().ok()?;
            Some((name.to_owned(), calls))
        })
        .collect()
}

#[tokio::test]
async fn a_warm_dashboard_with_the_l1_off_is_one_mget() {
    // Arrange: the near-cache off; alice's five widgets fresh in Redis.
    let app = spawn_app(StoreKind::Redis)
        .settings(|s| s.store.l1_ttl = Duration::ZERO)
        .await;
    app.login("alice").await;
    app.wait_for_calls(5).await;
    for id in 1..=5 {
        app.wait_for_fresh_hit(id).await;
    }
    let port = app.redis.as_ref().unwrap().port;
    let reset = std::process::Command::new("redis-cli")
        .args(["-p", &port.to_string(), "config", "resetstat"])
        .output()
        .unwrap();
    assert!(reset.status.success());

    // Act
    let page = app.get("/dashboard").await.text().await.unwrap();

    // Assert: five cards inline, from one MGET and nothing else.
    assert_eq!(crate::helpers::states(&page), vec!["ready"; 5]);
    // Not counted: the test's own CONFIG and INFO, and the generation
    // reload (HMGET) a background task runs every 5 s, whatever the pages do.
    let stats: Vec<_> = commandstats(port)
        .into_iter()
        .filter(|(name, _)| !(name.starts_with("config") || name == "info" || name == "hmget"))
        .collect();
    assert_eq!(
        stats,
        vec![("mget".to_owned(), 1)],
        "one round trip for the dashboard"
    );
}
