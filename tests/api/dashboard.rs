//! Prewarm and the dashboard page.

use crate::helpers::{spawn_app, states, StoreKind};

async fn prewarm_makes_five_calls_and_the_page_then_makes_none(store: StoreKind) {
    // Arrange
    let app = spawn_app(store).await;

    // Act: sign in; wait for prewarm to land.
    let resp = app.login("alice").await;
    assert_eq!(resp.status(), 303);
    app.wait_for_calls(5).await;
    for id in 1..=5u8 {
        app.wait_for_fresh_hit(id).await;
    }
    let page = app.get("/dashboard").await.text().await.unwrap();
    for id in 1..=5u8 {
        let (status, _) = app.widget(id).await;
        assert!(status.starts_with("percache; hit; ttl="), "widget {id}: {status}");
    }

    // Assert
    assert_eq!(app.mock.total_calls(), 5);
    for id in 1..=5u8 {
        assert_eq!(app.mock.calls_for("alice", id), 1, "widget {id}");
    }
    assert_eq!(
        states(&page),
        vec!["ready"; 5],
        "a warm dashboard renders every widget inline"
    );
    assert!(
        !page.contains(r#"hx-trigger="load""#),
        "no placeholder on a warm dashboard"
    );
    assert!(page.contains("<svg"), "the analytics widget has its chart");
}

async fn a_dashboard_opened_during_prewarm_joins_its_fetches(store: StoreKind) {
    // Arrange: the slow widget takes a while.
    let app = spawn_app(store).await;
    app.mock.set_delay(3, std::time::Duration::from_millis(800));

    // Act: open the page and every fragment at once, like htmx does.
    app.login("alice").await;
    let page = app.get("/dashboard").await.text().await.unwrap();
    let fragments = futures_util::future::join_all((1..=5u8).map(|id| app.widget(id))).await;

    // Assert
    let placeholders = states(&page).iter().filter(|s| *s == "loading").count();
    assert!(placeholders >= 1, "the slow widget was still loading");
    assert!(page.contains(r#"hx-get="/widgets/3" hx-trigger="load" hx-swap="outerHTML""#));
    assert!(page.contains(r#"aria-busy="true""#));
    let (status, _) = &fragments[2];
    assert_eq!(
        status, "percache; fwd=miss; stored; collapsed",
        "widget 3 joined prewarm"
    );
    assert_eq!(app.mock.total_calls(), 5, "nothing was fetched twice");
}

crate::helpers::both_stores!(
    prewarm_makes_five_calls_and_the_page_then_makes_none,
    a_dashboard_opened_during_prewarm_joins_its_fetches,
);

#[tokio::test]
async fn the_page_has_the_user_a_logout_button_and_five_cards() {
    let app = spawn_app(StoreKind::Memory).await;
    app.login("alice").await;
    let page = app.get("/dashboard").await.text().await.unwrap();
    assert!(page.contains("alice"));
    assert!(page.contains(r#"<form method="post" action="/logout">"#));
    for id in 1..=5 {
        assert!(page.contains(&format!(r#"data-widget="{id}""#)), "card {id}");
    }
}
