//! Live refresh in the real browser: a refresh that lands elsewhere updates
//! the open page in place, without a reload; and the phone-width layout.

use std::time::{Duration, Instant};

use anyhow::ensure;

use crate::driver::run;
use crate::helpers::{new_client, spawn_app_with};
use crate::page::config;

#[tokio::test]
async fn a_refresh_in_another_tab_updates_the_open_page_in_place() {
    run(
        "a_refresh_in_another_tab_updates_the_open_page_in_place",
        |tab| async move {
            // Arrange: a loaded dashboard, marked so a reload would be noticed.
            let app = spawn_app_with(config()).await;
            tab.sign_in(&app, "alice").await?;
            let before = tab.wait_until_loaded().await?;
            let version = |cards: &[crate::page::Card], id: u8| {
                cards.iter().find(|c| c.id == id).and_then(|c| c.version.clone())
            };
            let old = version(&before, 4);
            tab.client
                .execute("window.__notReloaded = true; return 1;", vec![])
                .await?;
            // Let the page's long-poll reach the server.
            tokio::time::sleep(Duration::from_millis(300)).await;

            // Act: "another tab" forces a refresh of widget 4.
            let other = new_client();
            app.login_with(&other, "alice").await;
            let resp = other.post(app.url("/widgets/4/refresh")).send().await?;
            ensure!(resp.status() == 200, "refresh answered {}", resp.status());

            // Assert: within a second or two the card shows the new version, in place.
            let deadline = Instant::now() + Duration::from_secs(3);
            loop {
                let cards = tab.cards().await?;
                if version(&cards, 4) != old {
                    ensure!(cards.iter().all(|c| c.state == "ready"), "all cards still ready");
                    break;
                }
                ensure!(
                    Instant::now() < deadline,
                    "card 4 was not updated live: still {old:?}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let kept = tab
                .client
                .execute("return window.__notReloaded === true;", vec![])
                .await?;
            ensure!(kept == true, "the page was reloaded");
            ensure!(
                app.mock.calls_for("alice", 4) == 2,
                "one refresh call, no polling of the upstream"
            );
            Ok(())
        },
    )
    .await;
}

#[tokio::test]
async fn the_dashboard_fits_a_phone_width_screen() {
    run("the_dashboard_fits_a_phone_width_screen", |tab| async move {
        let app = spawn_app_with(config()).await;
        tab.client.set_window_size(390, 844).await?;
        tab.sign_in(&app, "a-rather-long-username-for-a-phone@example.com")
            .await?;
        tab.wait_until_loaded().await?;
        let overflow = tab
            .client
            .execute(
                "return document.documentElement.scrollWidth - document.documentElement.clientWidth;",
                vec![],
            )
            .await?;
        tab.screenshot("dashboard-phone").await?;
        ensure!(
            overflow.as_i64() == Some(0),
            "no horizontal scrolling on a phone: {overflow}"
        );
        Ok(())
    })
    .await;
}
