//! Usernames and upstream data are text, never markup: the mock upstream
//! echoes the user id as the profile `name`, so a username made of HTML is
//! also upstream data made of HTML.

use mock_upstream::Fault;

use crate::helpers::{new_client, spawn_app, StoreKind};

/// Hostile usernames and how maud writes them in HTML.
const HOSTILE: [(&str, &str); 2] = [
    (
        "<img src=x onerror=alert(1)>",
        "&lt;img src=x onerror=alert(1)&gt;",
    ),
    (
        r#""><script>alert(1)</script>"#,
        "&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;",
    ),
];

/// Markup that must never appear as such in an HTML response.
fn raw_markup(html: &str) -> Option<&'static str> {
    ["<img", "<script>alert", "onerror=alert(1)>"]
        .into_iter()
        .find(|m| html.contains(m))
}

fn assert_escaped(what: &str, html: &str, escaped: &str) {
    if let Some(m) = raw_markup(html) {
        panic!("{what}: raw {m:?} in {html}");
    }
    assert!(html.contains(escaped), "{what}: {escaped:?} missing in {html}");
}

async fn hostile_names_are_text_everywhere(name: &str, escaped: &str) {
    // Arrange: widget 2's upstream fails, so one card is an error card.
    let app = spawn_app(StoreKind::Memory).delays_ms([5; 5]).await;
    app.mock.set_fault(2, Fault::Error(503));
    let client = new_client();
    assert_eq!(
        app.login_with(&client, name).await.status(),
        303,
        "{name} is a valid name"
    );
    let get = |path: &str| client.get(app.url(path)).send();

    // Fragments: the profile shows the name; no card shows markup.
    let profile = get("/widgets/1").await.unwrap().text().await.unwrap();
    assert_escaped("profile card", &profile, &format!("<dd>{escaped}</dd>"));
    for id in 2..=5 {
        let card = get(&format!("/widgets/{id}"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(raw_markup(&card).is_none(), "card {id}: {card}");
        if id == 2 {
            assert!(card.contains(r#"data-state="error""#), "{card}");
        }
    }
    let refreshed = client
        .post(app.url("/widgets/1/refresh"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_escaped("refreshed card", &refreshed, &format!("<dd>{escaped}</dd>"));

    // The page, now with the cached cards inline.
    let page = get("/dashboard").await.unwrap().text().await.unwrap();
    assert_escaped(
        "dashboard",
        &page,
        &format!("<strong class=\"username\">{escaped}</strong>"),
    );
    assert!(
        page.contains(&format!("<dd>{escaped}</dd>")),
        "the profile is inline: {page}"
    );

    // The JSON is data: the exact string, served as JSON that no browser sniffs as HTML.
    let resp = get("/api/widgets/1").await.unwrap();
    assert_eq!(resp.headers()["content-type"], "application/json");
    assert_eq!(resp.headers()["x-content-type-options"], "nosniff");
    assert!(resp.headers().contains_key("content-security-policy"));
    let json: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(json["data"]["name"], name);
    assert_eq!(json["data"]["userId"], name);
}

#[tokio::test]
async fn an_img_onerror_username_is_text_everywhere() {
    hostile_names_are_text_everywhere(HOSTILE[0].0, HOSTILE[0].1).await;
}

#[tokio::test]
async fn a_script_breaking_out_of_an_attribute_is_text_everywhere() {
    hostile_names_are_text_everywhere(HOSTILE[1].0, HOSTILE[1].1).await;
}

#[tokio::test]
async fn the_refused_username_echoed_by_the_login_form_is_escaped() {
    let app = spawn_app(StoreKind::Memory).without_prewarm().await;
    for (name, escaped) in HOSTILE {
        // Refused for a control character and for length: the form comes back with the value.
        for (attempt, message) in [
            (format!("{name}\u{7}"), "control characters"),
            (format!("{name}{}", "x".repeat(64)), "at most 64 characters"),
        ] {
            let resp = app.login(&attempt).await;
            assert_eq!(resp.status(), 422, "{attempt:?}");
            assert!(resp.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/html"));
            let body = resp.text().await.unwrap();
            assert_escaped("422 page", &body, escaped);
            assert!(body.contains(message), "{body}");
            assert!(
                body.contains(&format!(r#"value="{escaped}"#)),
                "the value stays inside its attribute: {body}"
            );
        }
    }
    // Error fragments never echo what was asked for.
    let resp = app.get("/widgets/%3Cimg%20src=x%20onerror=alert(1)%3E").await;
    assert_eq!(resp.status(), 404);
    let body = resp.text().await.unwrap();
    assert!(raw_markup(&body).is_none() && !body.contains("onerror"), "{body}");
}
