//! No user ever sees another user's data.

use crate::helpers::{new_client, spawn_app, widget_with, StoreKind};

async fn a_second_user_never_sees_the_first_users_data(store: StoreKind) {
    // Arrange: alice's widgets are cached.
    let app = spawn_app(store).await;
    app.login("alice").await;
    app.wait_for_calls(5).await;
    for id in 1..=5u8 {
        app.wait_for_fresh_hit(id).await;
    }

    // Act: bob signs in with his own client, and also tries to ask for alice.
    let bob = new_client();
    app.login_with(&bob, "bob").await;
    let mut bodies = Vec::new();
    let mut refusals = Vec::new();
    for id in 1..=5u8 {
        bodies.push(widget_with(&bob, &app.url(&format!("/widgets/{id}"))).await.1);
        // Naming alice in the query is an undeclared parameter: refused.
        let resp = bob
            .get(app.url(&format!("/widgets/{id}?userId=alice")))
            .send()
            .await
            .unwrap();
        refusals.push((resp.status().as_u16(), resp.text().await.unwrap()));
    }
    let json: serde_json::Value = bob
        .get(app.url("/api/widgets/1"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let json_refusal = bob
        .get(app.url("/api/widgets/1?userId=alice"))
        .send()
        .await
        .unwrap();
    let json_refusal = (json_refusal.status().as_u16(), json_refusal.text().await.unwrap());
    let page = bob
        .get(app.url("/dashboard"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();

    // Assert
    assert_eq!(json["data"]["userId"], "bob");
    assert_eq!(json["data"]["name"], "bob");
    assert!(bodies[0].contains("<dd>bob</dd>"), "{}", bodies[0]);
    for body in &bodies {
        assert!(!body.contains("alice"), "bob saw alice's data: {body}");
    }
    for (status, body) in refusals.iter().chain([&json_refusal]) {
        assert_eq!(*status, 400, "?userId= is refused: {body}");
        assert!(body.contains("userId"), "the message names the parameter: {body}");
        assert!(!body.contains("alice"), "bob saw alice's data: {body}");
    }
    assert!(!page.contains("alice"));
    assert_eq!(app.mock.calls_for("bob", 1), 1, "bob's data was fetched for bob");
    assert_eq!(
        app.mock.calls_for("alice", 1),
        1,
        "alice's was never fetched again"
    );
}

crate::helpers::both_stores!(a_second_user_never_sees_the_first_users_data);

#[tokio::test]
async fn names_differing_only_in_case_are_different_users() {
    let app = spawn_app(StoreKind::Memory).await;
    app.login("Alice").await;
    app.wait_for_calls(5).await;
    let other = new_client();
    app.login_with(&other, "alice").await;
    let (_, body) = widget_with(&other, &app.url("/widgets/1")).await;
    assert!(body.contains("<dd>alice</dd>"), "{body}");
    assert_eq!(app.mock.calls_for("alice", 1), 1);
    assert_eq!(app.mock.calls_for("Alice", 1), 1);
}

#[tokio::test]
async fn usernames_are_escaped_on_the_page() {
    let app = spawn_app(StoreKind::Memory).await;
    app.login("<script>alert(1)</script>").await;
    let page = app.get("/dashboard").await.text().await.unwrap();
    assert!(!page.contains("<script>alert(1)"), "username must be escaped");
    assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    app.wait_for_calls(5).await;
    let (_, card) = app.wait_for_fresh_hit(1).await;
    assert!(
        !card.contains("<script>"),
        "upstream data must be escaped: {card}"
    );
}
