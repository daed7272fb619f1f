//! Bad days: Redis going away and coming back, while requests keep flowing.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use percache::cache::key::UserTag;
use percache::cache::Store;

use crate::helpers::{cache_status, eventually, instance, spawn_app, until_ok, RedisServer, StoreKind};

#[tokio::test]
async fn requests_keep_being_answered_while_redis_is_down_and_it_reconnects() {
    // Arrange: a warm cache in Redis, and a steady stream of requests.
    let mut app = spawn_app(StoreKind::Redis).await;
    app.login("alice").await;
    app.wait_for_calls(5).await;
    for id in 1..=5 {
        app.wait_for_fresh_hit(id).await;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicUsize::new(0));
    let load = {
        let (client, base, stop) = (app.client.clone(), app.address.clone(), stop.clone());
        let served = Arc::clone(&served);
        tokio::spawn(async move {
            let mut statuses = Vec::new();
            let mut i = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let path = if i % 6 == 5 {
                    "/api/widgets/2".to_owned()
                } else {
                    format!("/widgets/{}", i % 5 + 1)
                };
                let resp = client.get(format!("{base}{path}")).send().await.unwrap();
                statuses.push((path, resp.status().as_u16()));
                served.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
            statuses
        })
    };
    // The load has begun, and goes on, when it has been answered 20 more times.
    let twenty_more = || {
        let from = served.load(Ordering::Relaxed);
        let served = &served;
        eventually(
            Duration::from_secs(10),
            move || served.load(Ordering::Relaxed) >= from + 20,
            || "the load stalled",
        )
    };
    twenty_more().await;

    // Act 1: kill Redis.
    let port = app.redis.as_ref().unwrap().port;
    drop(app.redis.take());

    // Assert 1: degraded, and said so.
    let app_ref = &app;
    let _degraded: String = until_ok(
        Duration::from_secs(10),
        Duration::from_millis(50),
        move || async move {
            let resp = app_ref.get("/widgets/1").await;
            assert_eq!(resp.status(), 200);
            let status = cache_status(&resp);
            match status.contains("detail=store-unavailable") {
                true => Ok(status),
                false => Err(format!("never degraded: {status}")),
            }
        },
    )
    .await;
    let ready = app.get("/readyz").await;
    assert_eq!(
        ready.status(),
        200,
        "a down store degrades readiness, it does not fail it"
    );
    let ready: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(ready["status"], "degraded");
    assert_eq!(ready["store"]["ok"], false);
    // Requests keep flowing through the outage.
    twenty_more().await;

    // Act 2: Redis comes back (empty) on the same port.
    app.redis = Some(RedisServer::start_on(port));

    // Assert 2: entries land in Redis again within seconds, no restart.
    let store = app.redis_store();
    let key = UserTag::of("alice").key(&instance("1"));
    let (store, key) = (&store, &key);
    until_ok(
        Duration::from_secs(10),
        Duration::from_millis(100),
        move || async move {
            let entry = store.get(key).await.ok().flatten();
            entry
                .map(drop)
                .ok_or("the cache never wrote to the restarted Redis")
        },
    )
    .await;
    let ready: serde_json::Value = app.get("/readyz").await.json().await.unwrap();
    assert_eq!(ready["status"], "ok");

    stop.store(true, Ordering::Relaxed);
    let statuses = load.await.unwrap();
    assert!(statuses.len() > 20, "the load ran ({} requests)", statuses.len());
    let failed: Vec<_> = statuses.iter().filter(|(_, s)| !(200..300).contains(s)).collect();
    assert!(failed.is_empty(), "every request got a 2xx: {failed:?}");
}
