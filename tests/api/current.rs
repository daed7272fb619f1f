//! Nobody waits for data the cache holds, and open pages stay current:
//! outdated entries inline and after the soft timeout, eager refresh, the
//! request's own cache directives, refresh-ahead for open pages, and a cache
//! that survives a restart. Time-dependent parts move the mock clock.

use std::time::{Duration, Instant};

use futures_util::future::join_all;
use mock_upstream::Fault;

use crate::helpers::{
    binary_server, cache_status, eventually, login_cookie, metric_sample, spawn_app, states, until_ok,
    version_of, StoreKind,
};

/// Polls until the mock has seen `n` calls for `user`'s `widget`.
async fn wait_for_widget_calls(app: &crate::helpers::TestApp, user: &str, widget: u8, n: u64) {
    eventually(
        Duration::from_secs(10),
        || app.mock.calls_for(user, widget) >= n,
        || {
            format!(
                "widget {widget}: {} calls, expected {n}",
                app.mock.calls_for(user, widget)
            )
        },
    )
    .await;
}

async fn outdated_entries_are_rendered_inline_and_refreshed(store: StoreKind) {
    // Arrange: alice's five widgets are cached, then time passes beyond ttl.
    let app = spawn_app(store).await;
    app.login("alice").await;
    app.wait_for_calls(5).await;
    for id in 1..=5 {
        app.wait_for_fresh_hit(id).await;
    }
    app.clock.advance(Duration::from_secs(11 * 60));

    // Act
    let page = app.get("/dashboard").await.text().await.unwrap();

    // Assert: every card is there at once, outdated, saying how old it is...
    assert_eq!(states(&page), vec!["outdated"; 5], "{page}");
    assert_eq!(page.matches("from 11 min ago · updating…").count(), 5, "{page}");
    assert!(!page.contains(r#"aria-busy="true""#), "no skeleton");
    // ...and their refreshes started, and land.
    app.wait_for_calls(10).await;
    for id in 1..=5 {
        let (_, card) = app.wait_for_fresh_hit(id).await;
        assert_eq!(version_of(&card), 2);
    }
}

async fn a_slow_upstream_past_ttl_serves_the_outdated_entry_after_the_soft_timeout(store: StoreKind) {
    // Arrange: a cached analytics widget, past ttl; its upstream now takes 3 s
    // (the soft timeout is 300 ms).
    let app = spawn_app(store).without_prewarm().await;
    app.login("alice").await;
    let (_, first) = app.widget(3).await;
    app.clock.advance(Duration::from_secs(11 * 60));
    app.mock.set_delay(3, Duration::from_secs(3));

    // Act
    let start = Instant::now();
    let (status, card) = app.widget(3).await;
    let waited = start.elapsed();
    let json = app.get("/api/widgets/3").await;
    let json_status = cache_status(&json);
    let body: serde_json::Value = json.json().await.unwrap();

    // Assert: the old entry, marked outdated, without waiting for the upstream...
    assert!(status.starts_with("percache; hit; ttl=-"), "{status}");
    assert!(status.ends_with("; detail=outdated"), "{status}");
    assert!(card.contains(r#"data-state="outdated""#), "{card}");
    assert_eq!(version_of(&card), version_of(&first));
    assert!(
        waited < Duration::from_secs(3),
        "waited {waited:?}: not for the upstream"
    );
    assert!(json_status.ends_with("; detail=outdated"), "{json_status}");
    assert_eq!(body["stale"], true);
    assert_eq!(body["cached"], true);
    // ...while the one fetch goes on and lands in the cache.
    let (_, fresh) = app.wait_for_fresh_hit(3).await;
    assert_eq!(version_of(&fresh), version_of(&first) + 1);
    assert_eq!(app.mock.calls_for("alice", 3), 2, "one fetch for both requests");
}

async fn eager_refresh_starts_late_in_the_fresh_window(store: StoreKind) {
    // Arrange: fresh 60 s (less up to 10% of jitter), eager at 0.8.
    let app = spawn_app(store).without_prewarm().await;
    app.login("alice").await;
    app.widget(1).await;
    let before = app.get("/metrics").await.text().await.unwrap();

    // Act 1: at 40 s, below 0.8 of even the shortest window (0.8 × 54 s).
    app.clock.advance(Duration::from_secs(40));
    let (early, _) = app.widget(1).await;
    // Act 2: at 50 s, past 0.8 of even the longest window (0.8 × 60 s).
    app.clock.advance(Duration::from_secs(10));
    let (late, card) = app.widget(1).await;

    // Assert: both are hits; only the late one refreshed, once.
    assert!(early.starts_with("percache; hit; ttl="), "{early}");
    assert!(late.starts_with("percache; hit; ttl="), "{late}");
    assert_eq!(version_of(&card), 1, "the eager hit serves the entry it has");
    wait_for_widget_calls(&app, "alice", 1, 2).await;
    let app = &app;
    until_ok(
        Duration::from_secs(10),
        Duration::from_millis(10),
        move || async move {
            let version = version_of(&app.widget(1).await.1);
            (version == 2)
                .then_some(())
                .ok_or(format!("the eager refresh never landed (version {version})"))
        },
    )
    .await;
    let after = app.get("/metrics").await.text().await.unwrap();
    let eager = |t: &str| {
        metric_sample(
            t,
            "percache_cache_requests_total",
            &[("widget", "1"), ("outcome", "eager")],
        )
    };
    assert!(eager(&after) - eager(&before) >= 1.0, "counted as eager");
    assert_eq!(app.mock.calls_for("alice", 1), 2);
}

crate::helpers::all_stores!(
    outdated_entries_are_rendered_inline_and_refreshed,
    a_slow_upstream_past_ttl_serves_the_outdated_entry_after_the_soft_timeout,
    eager_refresh_starts_late_in_the_fresh_window,
);

/// `GET /api/widgets/{id}` with a `Cache-Control` request header.
async fn json_with(app: &crate::helpers::TestApp, id: u8, cc: &str) -> (u16, String, serde_json::Value) {
    let resp = app
        .client
        .get(app.url(&format!("/api/widgets/{id}")))
        .header("cache-control", cc)
        .send()
        .await
        .unwrap();
    let (code, status) = (resp.status().as_u16(), cache_status(&resp));
    (code, status, resp.json().await.unwrap_or_default())
}

#[tokio::test]
async fn the_json_api_honours_the_requests_cache_directives() {
    // Arrange
    let app = spawn_app(StoreKind::Memory).without_prewarm().await;
    app.login("alice").await;

    // only-if-cached with nothing cached: 504, and no upstream call.
    let (code, status, _) = json_with(&app, 1, "only-if-cached").await;
    assert_eq!(
        (code, status.as_str()),
        (504, "percache; fwd=miss; detail=only-if-cached")
    );
    assert_eq!(app.mock.total_calls(), 0);

    // Cache widget 1; only-if-cached now serves it.
    app.widget(1).await;
    let (code, status, _) = json_with(&app, 1, "only-if-cached").await;
    assert_eq!(code, 200);
    assert!(status.starts_with("percache; hit"), "{status}");

    // no-cache: fetched, though fresh.
    let (_, status, body) = json_with(&app, 1, "no-cache").await;
    assert_eq!(status, "percache; fwd=request; stored");
    assert_eq!(body["data"]["version"], 2);

    // max-age: at 10 s old, max-age=60 is a hit and max-age=5 fetches.
    app.clock.advance(Duration::from_secs(10));
    let (_, status, _) = json_with(&app, 1, "max-age=60").await;
    assert!(status.starts_with("percache; hit"), "{status}");
    let (_, status, body) = json_with(&app, 1, "max-age=5").await;
    assert_eq!(status, "percache; fwd=miss; stored");
    assert_eq!(body["data"]["version"], 3);

    // min-fresh: 30 s later (at most 30 s of freshness left), min-fresh=5
    // is a hit and min-fresh=45 fetches.
    app.clock.advance(Duration::from_secs(30));
    let (_, status, _) = json_with(&app, 1, "min-fresh=5").await;
    assert!(status.starts_with("percache; hit"), "{status}");
    let (_, status, body) = json_with(&app, 1, "min-fresh=45").await;
    assert_eq!(status, "percache; fwd=miss; stored");
    assert_eq!(body["data"]["version"], 4);

    // max-stale: 30 s past ttl, max-stale=60 serves the entry at once (and
    // refreshes it); max-stale=10 does not allow it, so the request fetches.
    app.clock.advance(Duration::from_secs(630));
    let (_, status, body) = json_with(&app, 1, "max-stale=60").await;
    assert!(status.ends_with("; detail=outdated"), "{status}");
    assert_eq!(body["data"]["version"], 4);
    wait_for_widget_calls(&app, "alice", 1, 5).await;
    app.clock.advance(Duration::from_secs(11 * 60 + 30));
    let (_, status, _) = json_with(&app, 1, "max-stale=10").await;
    assert!(status.starts_with("percache; fwd=miss; stored"), "{status}");

    // A bad value is a 400 that says why, with no upstream call.
    let calls = app.mock.total_calls();
    let (code, _, body) = json_with(&app, 1, "max-age=soon").await;
    assert_eq!(code, 400);
    assert!(
        body["error"].as_str().unwrap_or_default().contains("max-age"),
        "{body}"
    );
    assert_eq!(app.mock.total_calls(), calls);
}

/// Holds `/updates` open like a page would, with `since`, until it answers.
async fn poll(app: &crate::helpers::TestApp, since: i64) -> String {
    app.get(&format!("/updates?since={since}"))
        .await
        .text()
        .await
        .unwrap()
}

#[tokio::test]
async fn an_open_page_refreshes_its_widgets_once_per_fresh_window_and_not_after_closing() {
    // Arrange: alice's five widgets are fresh.
    let app = spawn_app(StoreKind::Memory).await;
    app.login("alice").await;
    app.wait_for_calls(5).await;
    for id in 1..=5 {
        app.wait_for_fresh_hit(id).await;
    }
    let since = app.cache.now();

    // Act 1: a page is open (its long-poll waits) when the widgets turn stale.
    let page = {
        let app_url = app.url(&format!("/updates?since={since}"));
        let client = app.client.clone();
        tokio::spawn(async move { client.get(app_url).send().await.unwrap().text().await.unwrap() })
    };
    eventually(
        Duration::from_secs(5),
        || app.cache.open_pages() > 0,
        || "the poll never arrived",
    )
    .await;
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metric_sample(&metrics, "percache_open_pages", &[]) >= 1.0,
        "the gauge counts it"
    );
    app.clock.advance(Duration::from_secs(61));

    // Assert 1: each widget is refreshed once, and the page hears of it.
    let answer = page.await.unwrap();
    assert!(answer.contains(r#"hx-swap-oob="true""#), "{answer}");
    app.wait_for_calls(10).await;
    // The page keeps polling while everything is fresh: no more calls.
    for id in 1..=5 {
        app.wait_for_fresh_hit(id).await;
    }
    let mut since = app.cache.now();
    let quiet = tokio::time::timeout(Duration::from_millis(300), poll(&app, since)).await;
    assert!(quiet.is_err(), "nothing changed, the poll is still open");
    assert_eq!(
        app.mock.total_calls(),
        10,
        "one refresh per widget per fresh window"
    );
    for id in 1..=5 {
        assert_eq!(app.mock.calls_for("alice", id), 2, "widget {id}");
    }

    // Act 2: the next fresh window ends while the page polls again.
    since = app.cache.now();
    let page = {
        let app_url = app.url(&format!("/updates?since={since}"));
        let client = app.client.clone();
        tokio::spawn(async move { client.get(app_url).send().await.unwrap().text().await.unwrap() })
    };
    eventually(
        Duration::from_secs(5),
        || app.cache.open_pages() > 0,
        || "the poll never arrived",
    )
    .await;
    app.clock.advance(Duration::from_secs(61));
    page.await.unwrap();
    app.wait_for_calls(15).await;
    for id in 1..=5 {
        app.wait_for_fresh_hit(id).await;
    }

    // Act 3: the page closes; time goes on past another fresh window.
    eventually(
        Duration::from_secs(5),
        || app.cache.open_pages() == 0,
        || "the page never closed",
    )
    .await;
    app.clock.advance(Duration::from_secs(61));
    // A control after the advance: one stale read refreshes widget 1, and
    // its landing is the event after which a refresh-ahead for the closed
    // page would have been counted (it would share that flight or add one).
    let (status, _) = app.widget(1).await;
    assert!(status.ends_with("detail=revalidating"), "{status}");
    app.wait_for_calls(16).await;
    app.wait_for_fresh_hit(1).await;

    // Assert 3: nothing is refreshed for a page that is gone.
    assert_eq!(app.mock.total_calls(), 16, "no refresh after the page closed");
    for id in 2..=5 {
        assert_eq!(app.mock.calls_for("alice", id), 3, "widget {id} was left stale");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_with_a_data_dir_keeps_every_users_data_even_with_the_upstream_down() {
    // Arrange: the real binary keeps its cache on disk; a user's five
    // widgets are cached (fresh 1 s, ttl 2 s, so they are past ttl soon).
    let _heavy = crate::helpers::HEAVY.lock().await;
    let mock =
        mock_upstream::MockUpstream::start("127.0.0.1:0", mock_upstream::MockConfig::with_delays_ms([5; 5]))
            .await
            .unwrap();
    let dir =
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("data-dir-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let url = mock.url();
    let data_dir = dir.display().to_string();
    let args = [
        "--upstream-url",
        &url,
        "--data-dir",
        &data_dir,
        "--fresh",
        "1s",
        "--ttl",
        "2s",
    ];
    let mut server = binary_server("data-dir-1", &args).await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let cookie = login_cookie(&client, &server.base, "restart-user").await.unwrap();
    eventually(
        Duration::from_secs(10),
        || mock.total_calls() >= 5,
        || "prewarm never ran",
    )
    .await;
    // Let prewarm's entries reach the disk (each card is then inline).
    let (client_ref, server_ref, cookie_ref) = (&client, &server, &cookie);
    until_ok(
        Duration::from_secs(10),
        Duration::from_millis(20),
        move || async move {
            let page = client_ref
                .get(server_ref.url("/dashboard"))
                .header("cookie", cookie_ref)
                .send()
                .await;
            let page = page.unwrap().text().await.unwrap();
            let states = states(&page);
            (!states.contains(&"loading".to_owned()))
                .then_some(())
                .ok_or(format!("the cache never filled: {states:?}"))
        },
    )
    .await;

    // Act: SIGTERM; the upstream fails from now on; restart on the same disk,
    // once every entry is past its ttl.
    let status = server.terminate(Duration::from_secs(20)).await;
    assert!(status.success(), "a clean exit: {status:?}");
    for id in 1..=5 {
        mock.set_fault(id, Fault::Error(503));
    }
    // A sleep is the point: the real binary reads the wall clock, and the
    // entries must be past their 2 s ttl when it starts again.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let server = binary_server("data-dir-2", &args).await;
    let page = client
        .get(server.url("/dashboard"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let cards = join_all((1..=5).map(|id| {
        let (client, url, cookie) = (
            client.clone(),
            server.url(&format!("/widgets/{id}")),
            cookie.clone(),
        );
        async move {
            let resp = client.get(url).header("cookie", cookie).send().await.unwrap();
            (cache_status(&resp), resp.text().await.unwrap())
        }
    }))
    .await;

    // Assert: every card shows the user's data, none is loading or in error.
    let page_states = states(&page);
    assert_eq!(page_states.len(), 5, "{page}");
    for state in &page_states {
        assert!(
            ["outdated", "stale-if-error"].contains(&state.as_str()),
            "card in {state} after the restart: {page_states:?}"
        );
    }
    assert!(
        page.contains("<dd>restart-user</dd>"),
        "the user's own data: {page}"
    );
    for (status, card) in &cards {
        assert!(
            status.contains("detail=stale-if-error") || status.contains("detail=outdated"),
            "{status}"
        );
        assert!(
            card.contains(r#"data-state="stale-if-error""#) || card.contains(r#"data-state="outdated""#),
            "{card}"
        );
    }
    assert!(dir.join("percache.sqlite3").exists());
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
