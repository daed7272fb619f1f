//! One failing widget: an error card with a retry button while the others
//! work; an old entry shown as stale-if-error when the source is down.

use std::time::Duration;

use anyhow::ensure;
use mock_upstream::Fault;

use crate::driver::run;
use crate::page::{dashboard_app, summary};

#[tokio::test]
async fn a_failing_widget_shows_an_error_with_retry_and_recovers() {
    run(
        "a_failing_widget_shows_an_error_with_retry_and_recovers",
        |tab| async move {
            let app = dashboard_app().await;
            // Nothing cached for this user, and widget 2's source is down.
            app.mock.set_fault(2, Fault::Error(503));

            tab.sign_in(&app, "bob").await?;
            let cards = tab.wait_until_loaded().await?;

            for card in &cards {
                if card.id == 2 {
                    ensure!(card.state == "error", "card 2 is an error: {card:?}");
                    ensure!(card.has_retry, "card 2 has a retry button: {card:?}");
                    ensure!(card.fetched_at.is_none(), "no data, no data-fetched-at");
                    ensure!(
                        card.text.contains("Could not load"),
                        "card 2 says it failed: {card:?}"
                    );
                } else {
                    ensure!(card.state == "ready", "card {} is ready: {card:?}", card.id);
                }
            }
            tab.screenshot("dashboard-widget-error").await?;

            // The source is back: retry fills the card.
            app.mock.set_fault(2, Fault::Ok);
            let calls = app.mock.calls_for("bob", 2);
            tab.click(r#"[data-widget="2"] [data-action="retry"]"#).await?;
            let cards = tab
                .wait_for_cards("card 2 to become ready after retry", |cards| {
                    cards.iter().any(|c| c.id == 2 && c.state == "ready")
                })
                .await?;
            ensure!(
                cards.iter().all(|c| c.state == "ready"),
                "all five ready: {}",
                summary(&cards)
            );
            ensure!(
                app.mock.calls_for("bob", 2) > calls,
                "the retry asked the upstream"
            );
            Ok(())
        },
    )
    .await;
}

#[tokio::test]
async fn refreshing_an_expired_widget_while_its_source_fails_shows_stale_if_error() {
    run(
        "refreshing_an_expired_widget_while_its_source_fails_shows_stale_if_error",
        |tab| async move {
            let app = dashboard_app().await;
            tab.sign_in(&app, "carol").await?;
            tab.wait_until_loaded().await?;
            let before = tab.card(4).await?;
            ensure!(before.state == "ready", "card 4 ready: {before:?}");

            // Past ttl (10 min), within grace; the source now fails.
            app.clock.advance(Duration::from_secs(11 * 60));
            app.mock.set_fault(4, Fault::Error(503));
            tab.click(r#"[data-widget="4"] [data-action="refresh"]"#).await?;

            let cards = tab
                .wait_for_cards("card 4 to show stale-if-error", |cards| {
                    cards.iter().any(|c| c.id == 4 && c.state == "stale-if-error")
                })
                .await?;
            let card = cards.iter().find(|c| c.id == 4).unwrap();
            ensure!(
                card.text.contains("source unavailable"),
                "card 4 says its source is unavailable: {card:?}"
            );
            ensure!(
                card.fetched_at == before.fetched_at && card.version == before.version,
                "card 4 still shows the old data: {before:?} -> {card:?}"
            );
            ensure!(card.has_refresh, "card 4 can be refreshed again: {card:?}");
            tab.screenshot("dashboard-stale-if-error").await?;
            Ok(())
        },
    )
    .await;
}
