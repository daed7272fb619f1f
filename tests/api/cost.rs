//! What "always current" costs: upstream calls per active user-hour, with
//! and without eager refresh and refresh-ahead (an open page's live
//! connection). A measurement, not a check: it is `#[ignore]`d and prints a
//! table. Run it with
//! `cargo test --test api -- --ignored upstream_calls_per_active_user_hour --nocapture`.
//!
//! The simulated user opens the dashboard every 5 minutes and keeps it open
//! for 1 minute, for an hour, with the default windows (fresh 60 s, ttl
//! 10 min). The clock runs 60 times faster than real time (3 s every 50 ms),
//! and the mock's usual delays (1, 3, 15, 6, 1 s) are run at the same speed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::helpers::{eventually, spawn_app, StoreKind, TestApp};

/// One simulated second every this much real time.
const TICK: Duration = Duration::from_millis(50);
/// Simulated seconds per tick (60× real time).
const STEP: Duration = Duration::from_secs(3);

/// Moves the clock forward by `span`, one step per tick.
async fn run_clock(app: &TestApp, span: Duration) {
    let steps = (span.as_secs() / STEP.as_secs()).max(1);
    for _ in 0..steps {
        // A sleep is the point: simulated time runs at a steady pace against
        // the mock's real delays, as a user's hour would.
        tokio::time::sleep(TICK).await;
        app.clock.advance(STEP);
    }
}

/// Upstream calls in one simulated hour of one user.
async fn one_hour(eager: f64, live: bool) -> u64 {
    let app = spawn_app(StoreKind::Memory)
        .delays_ms([1000 / 60, 3000 / 60, 15000 / 60, 6000 / 60, 1000 / 60])
        .settings(move |s| s.cache.eager_refresh = eager)
        .await;
    app.login("hourly").await;
    for _visit in 0..12 {
        let page = app.get("/dashboard").await.text().await.unwrap();
        assert!(page.contains("data-widget"), "the dashboard rendered");
        // The page's live connection, re-polled as htmx does, while it is open.
        let open = Arc::new(AtomicBool::new(live));
        let poller = {
            let (client, base, open, clock) = (
                app.client.clone(),
                app.address.clone(),
                open.clone(),
                app.cache.clone(),
            );
            tokio::spawn(async move {
                while open.load(Ordering::SeqCst) {
                    let url = format!("{base}/updates?since={}", clock.now());
                    let _ = client.get(url).timeout(Duration::from_millis(500)).send().await;
                }
            })
        };
        run_clock(&app, Duration::from_secs(60)).await;
        open.store(false, Ordering::SeqCst);
        poller.await.unwrap();
        // Closed: a dropped poll ends its handler.
        let closed = || app.cache.open_pages() == 0;
        eventually(Duration::from_secs(5), closed, || "the page never closed").await;
        run_clock(&app, Duration::from_secs(4 * 60)).await;
    }
    // Let fetches in flight land before counting.
    let idle = || app.cache.fetches_in_flight() == 0;
    eventually(Duration::from_secs(10), idle, || "fetches never landed").await;
    app.mock.total_calls()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement (about a minute), run by hand"]
async fn upstream_calls_per_active_user_hour() {
    let (plain, eager, live, both) = tokio::join!(
        one_hour(0.0, false),
        one_hour(0.8, false),
        one_hour(0.0, true),
        one_hour(0.8, true),
    );
    println!("| eager refresh | refresh-ahead (page open 1 min of 5) | upstream calls per user-hour |");
    println!("|---|---|---|");
    println!("| off | off | {plain} |");
    println!("| 0.8 | off | {eager} |");
    println!("| off | on | {live} |");
    println!("| 0.8 | on | {both} |");
    assert!(plain > 0 && both >= plain);
}
