//! Nobody waits for data the cache holds, in the real browser: a returning
//! user past ttl sees every card at once (outdated), and each turns current
//! on the open page by itself; "updated … ago" stays true.

use std::time::{Duration, Instant};

use anyhow::{bail, ensure};

use crate::driver::run;
use crate::helpers::until;
use crate::page::{dashboard_app, summary, DELAYS_MS, WAIT};

/// The slack a card gets after its upstream delay to reach the page.
const SLACK: Duration = Duration::from_millis(300);

#[tokio::test]
async fn a_reload_past_ttl_shows_every_card_at_once_and_each_turns_current_by_itself() {
    run(
        "a_reload_past_ttl_shows_every_card_at_once_and_each_turns_current_by_itself",
        |tab| async move {
            // Arrange: a signed-in user whose five widgets are cached, then
            // the cache's clock goes past ttl (10 min).
            let app = dashboard_app().await;
            tab.sign_in(&app, "alice").await?;
            let first = tab.wait_until_loaded().await?;
            app.clock.advance(Duration::from_secs(11 * 60));

            // Act: reload.
            tab.client.refresh().await?;
            let reloaded = Instant::now();
            let at_load = tab.cards().await?;

            // Assert: every card shows its data at load, marked outdated.
            ensure!(at_load.len() == 5, "five cards: {}", summary(&at_load));
            for card in &at_load {
                ensure!(
                    card.state == "outdated" && card.fetched_at.is_some() && !card.has_skeleton,
                    "card {} shows its data at load: {card:?}",
                    card.id
                );
                ensure!(
                    card.text.contains("updating"),
                    "card {} says it is updating: {card:?}",
                    card.id
                );
            }
            tab.screenshot("dashboard-outdated-at-load").await?;

            // ...and each turns current by itself, within its upstream delay
            // plus SLACK of the reload.
            let mut current_after: Vec<(u8, Duration)> = Vec::new();
            let deadline = reloaded + WAIT;
            while current_after.len() < 5 {
                for card in tab.cards().await? {
                    let old = first
                        .iter()
                        .find(|c| c.id == card.id)
                        .and_then(|c| c.version.clone());
                    if card.state == "ready"
                        && card.version != old
                        && !current_after.iter().any(|(id, _)| *id == card.id)
                    {
                        current_after.push((card.id, reloaded.elapsed()));
                    }
                }
                ensure!(
                    Instant::now() < deadline,
                    "cards not current after {WAIT:?}: {current_after:?}; console: {:?}",
                    tab.console().await
                );
                // A sleep is the point: the page is sampled every 10 ms to
                // record when each card turned current.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            eprintln!("current after the reload (ms): {current_after:?}");
            for (id, after) in &current_after {
                let bound = Duration::from_millis(DELAYS_MS[usize::from(*id) - 1]) + SLACK;
                ensure!(
                    after <= &bound,
                    "card {id} turned current after {after:?}, bound {bound:?}"
                );
            }
            ensure!(app.mock.total_calls() == 10, "one refresh per widget");

            // "updated … ago" advances on the open page.
            let age = || async {
                let v = tab
                    .client
                    .execute(
                        r#"return document.querySelector('[data-widget="1"] .age').textContent;"#,
                        vec![],
                    )
                    .await?;
                anyhow::Ok(v.as_str().unwrap_or_default().to_owned())
            };
            let before = age().await?;
            let (age, before_ref) = (&age, &before);
            let advanced = until(
                Duration::from_secs(5),
                Duration::from_millis(100),
                move || async move {
                    match age().await {
                        Ok(now) => (now != *before_ref).then_some(Ok(now)),
                        Err(e) => Some(Err(e)),
                    }
                },
            );
            let now = advanced
                .await
                .unwrap_or_else(|| bail!("\"{before}\" never advanced"))?;
            ensure!(now.starts_with("updated ") && now.ends_with(" ago"), "{now}");
            Ok(())
        },
    )
    .await;
}
