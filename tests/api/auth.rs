//! Sign-in, sign-out and what a signed-out client gets.

use crate::helpers::{spawn_app, StoreKind};

async fn sign_in_sets_a_private_cookie_and_redirects(store: StoreKind) {
    // Arrange
    let app = spawn_app(store).await;

    // Act
    let resp = app.login("alice").await;

    // Assert
    assert_eq!(resp.status(), 303);
    assert_eq!(resp.headers()["location"], "/dashboard");
    let cookie = resp.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(cookie.starts_with("percache_session="), "{cookie}");
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    assert!(cookie.contains("SameSite=Lax"), "{cookie}");
    assert!(!cookie.contains("alice"), "the cookie is encrypted: {cookie}");
    let dashboard = app.get("/dashboard").await;
    assert_eq!(dashboard.status(), 200);
    assert!(dashboard.text().await.unwrap().contains("alice"));
}

crate::helpers::both_stores!(sign_in_sets_a_private_cookie_and_redirects);

#[tokio::test]
async fn bad_usernames_get_422_with_the_form_and_a_message() {
    let app = spawn_app(StoreKind::Memory).await;
    let cases = [
        ("", "Please enter a username."),
        ("   \t ", "Please enter a username."),
        (&"a".repeat(65), "at most 64 characters"),
        ("ali\nce", "control characters"),
        ("ali\u{0}ce", "control characters"),
        ("\u{1b}[31mred", "control characters"),
    ];
    for (username, message) in cases {
        let resp = app.login(username).await;
        assert_eq!(resp.status(), 422, "{username:?}");
        assert!(
            resp.headers().get("set-cookie").is_none(),
            "{username:?} must not sign in"
        );
        let body = resp.text().await.unwrap();
        assert!(
            body.contains(r#"<form method="post" action="/login">"#),
            "{username:?}"
        );
        assert!(body.contains(message), "{username:?}: {body}");
    }
    assert_eq!(app.mock.total_calls(), 0, "refused sign-ins prewarm nothing");
}

#[tokio::test]
async fn usernames_are_trimmed_and_64_characters_are_fine() {
    let app = spawn_app(StoreKind::Memory).await;
    assert_eq!(app.login(&"é".repeat(64)).await.status(), 303);
    let app = spawn_app(StoreKind::Memory).await;
    assert_eq!(app.login("  bob  ").await.status(), 303);
    app.wait_for_calls(5).await;
    assert_eq!(app.mock.calls_for("bob", 1), 1, "the trimmed name is the user id");
}

#[tokio::test]
async fn a_form_without_username_is_422_not_400() {
    let app = spawn_app(StoreKind::Memory).await;
    let resp = app
        .client
        .post(app.url("/login"))
        .form(&[("name", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 422);
}

#[tokio::test]
async fn signed_out_clients_are_sent_to_sign_in() {
    let app = spawn_app(StoreKind::Memory).await;

    let root = app.get("/").await;
    assert_eq!(root.status(), 303);
    assert_eq!(root.headers()["location"], "/login");

    let dashboard = app.get("/dashboard").await;
    assert_eq!(dashboard.status(), 303);
    assert_eq!(dashboard.headers()["location"], "/login");

    let fragment = app.get("/widgets/1").await;
    assert_eq!(fragment.status(), 401);
    assert_eq!(fragment.headers()["hx-redirect"], "/login");

    assert_eq!(app.get("/api/widgets/1").await.status(), 401);
    assert_eq!(app.post("/widgets/1/refresh").await.status(), 401);
    assert_eq!(app.mock.total_calls(), 0);
}

#[tokio::test]
async fn logout_ends_the_session() {
    let app = spawn_app(StoreKind::Memory).await;
    app.login("alice").await;
    assert_eq!(app.get("/").await.headers()["location"], "/dashboard");

    let resp = app.post("/logout").await;

    assert_eq!(resp.status(), 303);
    assert_eq!(resp.headers()["location"], "/login");
    assert_eq!(app.get("/dashboard").await.headers()["location"], "/login");
    assert_eq!(app.get("/widgets/1").await.status(), 401);
}

#[tokio::test]
async fn the_login_page_is_a_plain_form() {
    let app = spawn_app(StoreKind::Memory).await;
    let resp = app.get("/login").await;
    assert_eq!(resp.status(), 200);
    let csp = resp.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    assert_eq!(resp.headers()["x-content-type-options"], "nosniff");
    let body = resp.text().await.unwrap();
    assert!(body.contains(r#"<form method="post" action="/login">"#));
    assert!(body.contains(r#"name="username""#));
    assert!(body.contains(r#"src="/assets/htmx.min.js"#));
}

#[tokio::test]
async fn assets_are_served_with_long_lived_cache_headers() {
    let app = spawn_app(StoreKind::Memory).await;
    let js = app.get("/assets/htmx.min.js").await;
    assert_eq!(js.status(), 200);
    assert!(js.headers()["cache-control"]
        .to_str()
        .unwrap()
        .contains("max-age=31536000"));
    assert!(js.text().await.unwrap().contains("htmx"));
    assert_eq!(app.get("/assets/app.css").await.status(), 200);
    assert_eq!(app.get("/assets/nope.js").await.status(), 404);
}
