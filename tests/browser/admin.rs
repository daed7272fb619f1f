//! The operator page (`/admin`) in a real browser after a load run: signing
//! in through its form, every figure, the SVG charts drawn and styled from
//! the stylesheet (no console error, so no CSP violation), and a screenshot,
//! `target/browser-screenshots/admin-after-load.png`.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _};
use fantoccini::Locator;
use serde_json::Value;

use crate::driver::run;
use crate::helpers::{new_client, spawn_app, StoreKind, TestApp};

const TOKEN: &str = "browser-operator-token-0123456789abcdef";

/// Samples the charts should hold before the screenshot (one per 10 s).
const SAMPLES: u64 = 3;

/// The operator page's JSON.
async fn figures(app: &TestApp) -> anyhow::Result<Value> {
    Ok(new_client()
        .get(app.url("/admin.json"))
        .bearer_auth(TOKEN)
        .send()
        .await?
        .json()
        .await?)
}

/// A bounded load run: each round a new user signs in (prewarm: five
/// upstream calls) and every user so far reads their five widgets (hits,
/// stale entries refreshed in the background); widget 4 fails for a while.
/// Runs until the sampler holds [`SAMPLES`] samples (at most 60 s).
async fn load_run(app: &TestApp) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut users: Vec<reqwest::Client> = Vec::new();
    for round in 0.. {
        if figures(app).await?["samples"].as_u64().unwrap_or(0) >= SAMPLES {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "the sampler never held {SAMPLES} samples"
        );
        match round {
            20 => app.mock.set_fault(4, mock_upstream::Fault::Error(503)),
            45 => app.mock.set_fault(4, mock_upstream::Fault::Ok),
            _ => {}
        }
        let client = new_client();
        app.login_with(&client, &format!("load-{round}")).await;
        users.push(client);
        for client in users.iter().rev().take(12) {
            for id in 1..=5 {
                client.get(app.url(&format!("/widgets/{id}"))).send().await?;
            }
        }
        // A sleep is the point: pacing of the load generator (not a wait
        // for a condition).
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Ok(())
}

const TILES_JS: &str = r#"
return Array.from(document.querySelectorAll('.tile[data-figure]'))
  .map(e => [e.dataset.figure, e.innerText.replace(/\s+/g, ' ').trim()]);
"#;

const CHARTS_JS: &str = r#"
const lines = document.querySelectorAll('svg.timeline polyline, svg.timeline circle');
return {
  charts: document.querySelectorAll('figure[data-chart] svg.timeline').length,
  marks: lines.length,
  stroke: lines.length ? getComputedStyle(lines[0]).stroke : '',
  rows: document.querySelectorAll('table.widgets tbody tr').length,
};
"#;

#[tokio::test]
async fn the_operator_page_after_a_load_run() {
    run("the_operator_page_after_a_load_run", |tab| async move {
        // Arrange: a server with the operator page, through a load run, and
        // one dashboard left open (its live connection, held by this test).
        let app = spawn_app(StoreKind::Memory)
            .delays_ms([40, 120, 400, 200, 40])
            .settings(|s| {
                s.lifetimes.fresh = Duration::from_secs(3);
                s.lifetimes.ttl = Duration::from_secs(30);
                s.admin_token = Some(TOKEN.into());
            })
            .await;
        load_run(&app).await?;
        app.login("open-page").await;
        // It polls again each time an answer comes (a refreshed widget), as
        // the page's htmx does.
        let open_page = tokio::spawn({
            let (client, url) = (app.client.clone(), app.url("/updates"));
            async move {
                loop {
                    let _ = client.get(&url).send().await;
                }
            }
        });

        // Act: the page asks for the token; type it into its form.
        tab.client.goto(&app.url("/admin")).await?;
        // The form comes with a 401, which the browser logs: that one only.
        let console = tab.console().await;
        ensure!(
            console
                .iter()
                .all(|l| l.contains("/admin - Failed to load resource") && l.contains("401")),
            "only the 401 of the sign-in form in the console: {console:?}"
        );
        let input = tab
            .client
            .find(Locator::Css(r#"form[action="/admin/login"] input[name="token"]"#))
            .await
            .context("the token field of the operator sign-in form")?;
        input.send_keys(TOKEN).await?;
        tab.click(r#"form[action="/admin/login"] button[type="submit"]"#)
            .await?;
        tab.client
            .wait()
            .at_most(Duration::from_secs(15))
            .for_element(Locator::Css(r#".tile[data-figure="hit-ratio"]"#))
            .await
            .context("the operator page after the form")?;

        // Assert: every figure, the table and the charts.
        let tiles: Vec<(String, String)> =
            serde_json::from_value(tab.client.execute(TILES_JS, vec![]).await?)?;
        let tile = |name: &str| {
            tiles
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, text)| text.clone())
                .unwrap_or_default()
        };
        ensure!(tiles.len() == 8, "eight figures: {tiles:?}");
        ensure!(tile("prewarm-queue").starts_with("Prewarm queue 0"), "{tiles:?}");
        ensure!(tile("hit-ratio").contains('%'), "{tiles:?}");
        ensure!(tile("latency").contains("p95"), "{tiles:?}");
        ensure!(tile("store").contains("memory · ok"), "{tiles:?}");
        ensure!(tile("open-pages").starts_with("Open pages"), "{tiles:?}");
        let charts = tab.client.execute(CHARTS_JS, vec![]).await?;
        ensure!(charts["charts"] == 5, "five charts: {charts}");
        ensure!(charts["rows"] == 5, "one row per widget: {charts}");
        ensure!(charts["marks"].as_u64() >= Some(5), "lines are drawn: {charts}");
        let stroke = charts["stroke"].as_str().unwrap_or_default();
        ensure!(
            stroke.starts_with("rgb("),
            "lines are coloured by the stylesheet: {charts}"
        );
        // The whole page, charts included.
        tab.client.set_window_size(1280, 1800).await?;
        tab.screenshot("admin-after-load").await?;

        open_page.abort();
        Ok(())
    })
    .await;
}
