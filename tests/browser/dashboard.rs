//! Signing in, widgets arriving one by one, a warm reload, a refresh,
//! signing out.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _};

use crate::driver::run;
use crate::page::{dashboard_app, summary, WAIT};

#[tokio::test]
async fn sign_in_shows_skeletons_then_each_widget_as_it_arrives() {
    run(
        "sign_in_shows_skeletons_then_each_widget_as_it_arrives",
        |tab| async move {
            let app = dashboard_app().await;

            tab.sign_in(&app, "alice").await?;
            let landed = Instant::now();
            let first = tab.cards().await?;

            // Skeletons: the slow widgets are still loading when the page lands.
            ensure!(first.len() == 5, "five cards: {}", summary(&first));
            let slow = first.iter().find(|c| c.id == 3).context("card 3")?;
            ensure!(
                slow.is_loading(),
                "the slow widget is loading at first: {}",
                summary(&first)
            );
            for card in first.iter().filter(|c| c.is_loading()) {
                ensure!(
                    card.aria_busy.as_deref() == Some("true") && card.has_skeleton,
                    "a loading card is aria-busy with a skeleton: {card:?}"
                );
            }
            let skeletons = tab
                .client
                .find_all(fantoccini::Locator::Css(
                    r#"[data-state="loading"][aria-busy="true"]"#,
                ))
                .await?;
            ensure!(!skeletons.is_empty(), "no [data-state=loading][aria-busy=true]");
            tab.screenshot("dashboard-loading").await?;

            // Record the order in which cards leave `loading` (cards already
            // inline when the page landed count as first, at 0 ms).
            let mut arrived: Vec<(u8, Duration)> = first
                .iter()
                .filter(|c| !c.is_loading())
                .map(|c| (c.id, Duration::ZERO))
                .collect();
            let deadline = landed + WAIT;
            while arrived.len() < 5 {
                let cards = tab.cards().await?;
                for card in cards.iter().filter(|c| !c.is_loading()) {
                    if !arrived.iter().any(|(id, _)| *id == card.id) {
                        arrived.push((card.id, landed.elapsed()));
                    }
                }
                ensure!(
                    Instant::now() < deadline,
                    "widgets still loading after {WAIT:?}: {}; console: {:?}",
                    summary(&cards),
                    tab.console().await
                );
                // A sleep is the point: the page is sampled every 20 ms to
                // record when each card arrived.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            eprintln!("arrival order (ms after landing): {arrived:?}");
            let position = |id: u8| arrived.iter().position(|(w, _)| *w == id).unwrap();
            ensure!(
                position(1) < position(3) && position(5) < position(3),
                "widgets 1 and 5 arrive before widget 3: {arrived:?}"
            );

            // Every card is now ready, with its data, and htmx did the swaps.
            tab.ensure_htmx().await?;
            let cards = tab.cards().await?;
            for card in &cards {
                ensure!(card.state == "ready", "card {} is ready: {card:?}", card.id);
                ensure!(card.aria_busy.is_none(), "not busy once ready: {card:?}");
                ensure!(card.fetched_at.is_some(), "has data-fetched-at: {card:?}");
                ensure!(card.has_refresh, "has a refresh button: {card:?}");
                ensure!(card.text.contains("updated"), "shows its age: {card:?}");
            }
            ensure!(
                cards.iter().map(|c| c.id).collect::<Vec<_>>() == [1, 2, 3, 4, 5],
                "cards stay in order: {}",
                summary(&cards)
            );
            tab.screenshot("dashboard-ready").await?;
            ensure!(app.mock.total_calls() == 5, "one upstream call per widget");
            Ok(())
        },
    )
    .await;
}

#[tokio::test]
async fn a_reload_shows_every_widget_at_once_without_upstream_calls() {
    run(
        "a_reload_shows_every_widget_at_once_without_upstream_calls",
        |tab| async move {
            let app = dashboard_app().await;
            tab.sign_in(&app, "alice").await?;
            let before = tab.wait_until_loaded().await?;
            let calls = app.mock.total_calls();

            tab.client.refresh().await?;

            let cards = tab.cards().await?;
            ensure!(
                cards.len() == 5 && cards.iter().all(|c| c.state == "ready"),
                "all five ready at once after a reload: {}",
                summary(&cards)
            );
            let source = tab.client.source().await?;
            ensure!(
                !source.contains(r#"data-state="loading""#) && !source.contains(r#"hx-trigger="load""#),
                "no loading card in the page source"
            );
            let fragment_requests = tab
                .client
                .execute(
                    "return performance.getEntriesByType('resource')\
                     .map(e => e.name).filter(n => n.includes('/widgets/'));",
                    vec![],
                )
                .await?;
            ensure!(
                fragment_requests.as_array().is_some_and(Vec::is_empty),
                "the reloaded page fetched no widget fragment: {fragment_requests}"
            );
            for (old, new) in before.iter().zip(&cards) {
                ensure!(
                    old.version == new.version && old.fetched_at == new.fetched_at,
                    "same data after the reload: {old:?} vs {new:?}"
                );
            }
            // A stray upstream call would start within the reload's own
            // requests: registered in flight before the page had loaded.
            ensure!(
                app.cache.fetches_in_flight() == 0,
                "the reload started {} fetches",
                app.cache.fetches_in_flight()
            );
            ensure!(
                app.mock.total_calls() == calls,
                "the reload made no upstream call ({calls} before, {} after)",
                app.mock.total_calls()
            );
            Ok(())
        },
    )
    .await;
}

#[tokio::test]
async fn the_refresh_button_fetches_that_widget_again() {
    run("the_refresh_button_fetches_that_widget_again", |tab| async move {
        let app = dashboard_app().await;
        tab.sign_in(&app, "alice").await?;
        tab.wait_until_loaded().await?;
        let before = tab.card(1).await?;
        ensure!(before.state == "ready", "card 1 ready: {before:?}");
        let calls = app.mock.calls_for("alice", 1);
        let total = app.mock.total_calls();

        tab.click(r#"[data-widget="1"] [data-action="refresh"]"#).await?;

        let cards = tab
            .wait_for_cards("card 1 to show new data", |cards| {
                cards
                    .iter()
                    .any(|c| c.id == 1 && c.state == "ready" && c.version != before.version)
            })
            .await?;
        let after = cards.iter().find(|c| c.id == 1).unwrap();
        ensure!(
            after.fetched_at.is_some() && after.fetched_at != before.fetched_at,
            "data-fetched-at changed: {:?} -> {:?}",
            before.fetched_at,
            after.fetched_at
        );
        ensure!(
            app.mock.calls_for("alice", 1) == calls + 1,
            "one more upstream call for widget 1 ({calls} -> {})",
            app.mock.calls_for("alice", 1)
        );
        ensure!(app.mock.total_calls() == total + 1, "no other widget was fetched");
        ensure!(
            cards.iter().all(|c| c.state == "ready"),
            "the other cards are untouched: {}",
            summary(&cards)
        );
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn signing_out_returns_to_the_sign_in_page() {
    run("signing_out_returns_to_the_sign_in_page", |tab| async move {
        let app = dashboard_app().await;
        tab.sign_in(&app, "alice").await?;

        tab.click(r#"form[method="post"][action="/logout"] button[type="submit"]"#)
            .await?;

        tab.wait_for_path("/login").await?;
        tab.client
            .find(fantoccini::Locator::Css(r#"input[name="username"]"#))
            .await
            .context("the sign-in form after signing out")?;
        // The session is gone: the dashboard sends us back.
        tab.client.goto(&app.url("/dashboard")).await?;
        tab.wait_for_path("/login").await?;
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn once_the_sign_out_form_is_sent_the_page_sends_no_more_requests() {
    run(
        "once_the_sign_out_form_is_sent_the_page_sends_no_more_requests",
        |tab| async move {
            let app = dashboard_app().await;
            tab.sign_in(&app, "alice").await?;
            tab.wait_until_loaded().await?;
            // Whether htmx cancels a request to /widgets/1 made now (its
            // htmx:beforeRequest is seen after the page's own listeners).
            let try_request = r#"
                let cancelled = null;
                document.addEventListener('htmx:beforeRequest',
                    (e) => { cancelled = e.defaultPrevented; }, { once: true });
                htmx.ajax('GET', '/widgets/1', { target: '#widget-1', swap: 'outerHTML' });
                return cancelled;"#;

            // Arrange: the page polls as usual before signing out.
            let before = tab.client.execute(try_request, vec![]).await?;
            // Act: the sign-out form is submitted (and held on the page, so
            // that the moment between the post and the navigation, when the
            // cookie is already gone, lasts for the test).
            tab.client
                .execute(
                    r#"const form = document.querySelector('form[action="/logout"]');
                       form.addEventListener('submit', (e) => e.preventDefault(), { once: true });
                       form.requestSubmit();"#,
                    vec![],
                )
                .await?;
            let after = tab.client.execute(try_request, vec![]).await?;

            // Assert
            ensure!(
                before == serde_json::json!(false),
                "before signing out, a request goes out: {before}"
            );
            ensure!(
                after == serde_json::json!(true),
                "after the sign-out form, htmx sends nothing: {after}"
            );
            Ok(())
        },
    )
    .await;
}

#[tokio::test]
async fn a_parameter_control_reloads_just_its_card() {
    run("a_parameter_control_reloads_just_its_card", |tab| async move {
        let app = dashboard_app().await;
        tab.sign_in(&app, "alice").await?;
        let before = tab.wait_until_loaded().await?;
        let points = || async {
            let n = tab
                .client
                .execute(
                    r#"const p = document.querySelector('[data-widget="3"] svg polyline');
                       return p ? p.getAttribute('points').split(' ').length : 0;"#,
                    vec![],
                )
                .await?;
            anyhow::Ok(n.as_u64().unwrap_or(0))
        };
        ensure!(points().await? == 14, "the analytics card opens on 14 days");
        let calls = app.mock.total_calls();

        // Act: choose 30 days in the analytics card's control.
        tab.client
            .find(fantoccini::Locator::Css(
                r#"[data-widget="3"] select[name="days"]"#,
            ))
            .await
            .context("the analytics card's days control")?
            .select_by_value("30")
            .await?;

        // Assert: that card shows 30 days; no other card was touched.
        let cards = tab
            .wait_for_cards("card 3 to show 30 days", |cards| {
                cards
                    .iter()
                    .any(|c| c.id == 3 && c.state == "ready" && c.text.contains("30 days"))
            })
            .await?;
        ensure!(points().await? == 30, "the chart has 30 points");
        ensure!(
            app.mock.total_calls() == calls + 1,
            "one upstream call, for the new parameters ({calls} -> {})",
            app.mock.total_calls()
        );
        for (old, new) in before.iter().zip(&cards).filter(|(c, _)| c.id != 3) {
            ensure!(
                old.version == new.version && new.state == "ready",
                "card {} untouched: {old:?} -> {new:?}",
                old.id
            );
        }
        let refresh = tab
            .client
            .find(fantoccini::Locator::Css(
                r#"[data-widget="3"] [data-action="refresh"]"#,
            ))
            .await?
            .attr("hx-post")
            .await?;
        ensure!(
            refresh.as_deref() == Some("/widgets/3/refresh?days=30"),
            "the refresh button keeps the parameters: {refresh:?}"
        );
        tab.screenshot("dashboard-days-30").await?;
        Ok(())
    })
    .await;
}
