//! The defences of SPEC §4/§5: cross-site refusal on the browser's POST
//! routes, the sign-in rate per client address (`--login-rate`,
//! `--trust-forwarded`), and 405 with `Allow` for every route of the table.

use percache::defence::login_rate::parse_login_rate;
use percache::routes::fallback::ROUTES;
use percache::routes::invalidate::sign;
use reqwest::header::HeaderMap;

use crate::helpers::{new_client, spawn_app, start_and_fail, StoreKind, TestApp};

/// POSTs to `path` with these extra headers (and a form body for `/login`).
async fn post_with(
    app: &TestApp,
    client: &reqwest::Client,
    path: &str,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut req = client.post(app.url(path));
    if path == "/login" {
        req = req.form(&[("username", "mallory")]);
    }
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    req.send().await.unwrap()
}

#[tokio::test]
async fn cross_site_posts_to_browser_routes_are_refused_with_403() {
    // Arrange: alice is signed in with a cached widget 1.
    let app = spawn_app(StoreKind::Memory).without_prewarm().await;
    app.login("alice").await;
    app.widget(1).await;
    let calls_before = app.mock.total_calls();
    let refused: [&[(&str, &str)]; 5] = [
        &[("sec-fetch-site", "cross-site")],
        &[("origin", "https://evil.example")],
        &[("origin", "null")],
        &[
            ("sec-fetch-site", "same-site"),
            ("origin", "https://sibling.example"),
        ],
        &[(
            "origin",
            &format!("https://{}", app.address.trim_start_matches("http://")),
        )],
    ];

    // Act + Assert: every route, every kind of foreign request.
    for headers in refused {
        for path in ["/login", "/logout", "/widgets/1/refresh"] {
            let resp = post_with(&app, &app.client, path, headers).await;
            assert_eq!(resp.status(), 403, "{path} with {headers:?}");
            assert!(
                resp.headers().get("set-cookie").is_none(),
                "{path}: no session change"
            );
            assert!(
                resp.headers()["content-security-policy"]
                    .to_str()
                    .unwrap()
                    .contains("'self'"),
                "security headers on the refusal"
            );
            let body = resp.text().await.unwrap();
            assert!(body.contains("was refused"), "{path}: {body}");
            assert!(body.contains(r#"role="alert""#), "an HTML fragment: {body}");
        }
    }
    assert_eq!(
        app.mock.total_calls(),
        calls_before,
        "no refresh reached the upstream"
    );
    let dashboard = app.get("/dashboard").await;
    assert_eq!(dashboard.status(), 200, "alice is still signed in");
    assert!(dashboard.text().await.unwrap().contains("alice"));
}

#[tokio::test]
async fn same_origin_and_headerless_posts_keep_working() {
    let app = spawn_app(StoreKind::Memory).without_prewarm().await;
    let origin = app.address.clone(); // http://127.0.0.1:<port>
    let allowed: [&[(&str, &str)]; 4] = [
        &[],
        &[("origin", &origin), ("sec-fetch-site", "same-origin")],
        &[("origin", &origin)],
        &[("sec-fetch-site", "none")],
    ];
    for headers in allowed {
        let client = new_client();
        let login = client
            .post(app.url("/login"))
            .form(&[("username", "alice")])
            .headers(header_map(headers))
            .send()
            .await
            .unwrap();
        assert_eq!(login.status(), 303, "sign-in with {headers:?}");
        let refresh = post_with(&app, &client, "/widgets/1/refresh", headers).await;
        assert_eq!(refresh.status(), 200, "refresh with {headers:?}");
        let logout = post_with(&app, &client, "/logout", headers).await;
        assert_eq!(logout.status(), 303, "sign-out with {headers:?}");
        assert_eq!(logout.headers()["location"], "/login");
    }
}

fn header_map(headers: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        map.insert(
            reqwest::header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    map
}

#[tokio::test]
async fn the_webhook_is_exempt_from_the_cross_site_check() {
    let app = spawn_app(StoreKind::Memory).await;
    let body = r#"{"userId":"alice"}"#;
    let ts = (app.cache.now() / 1000).to_string();
    let resp = reqwest::Client::new()
        .post(app.url("/api/invalidate"))
        .header("origin", "https://ci.example")
        .header("sec-fetch-site", "cross-site")
        .header("x-percache-timestamp", &ts)
        .header(
            "x-percache-signature",
            sign(b"test-webhook-secret", &ts, body.as_bytes()),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

/// Signs `user` in from `client`, optionally claiming `forwarded_for`.
async fn sign_in_from(app: &TestApp, user: &str, forwarded_for: Option<&str>) -> reqwest::Response {
    let mut req = new_client().post(app.url("/login")).form(&[("username", user)]);
    if let Some(ip) = forwarded_for {
        req = req.header("x-forwarded-for", ip);
    }
    req.send().await.unwrap()
}

/// An app allowing a burst of 10 sign-ins per address, then one per hour
/// (nothing comes back while the test runs).
async fn rate_limited_app(trust_forwarded: bool) -> TestApp {
    spawn_app(StoreKind::Memory)
        .settings(move |s| {
            s.login_rate = parse_login_rate("1/hour").unwrap();
            s.trust_forwarded = trust_forwarded;
        })
        .await
}

#[tokio::test]
async fn sign_ins_beyond_the_burst_get_429_with_retry_after_and_the_form() {
    // Arrange
    let app = rate_limited_app(false).await;

    // Act: 14 sign-ins from 127.0.0.1, the last ones claiming other addresses.
    let mut statuses = Vec::new();
    for i in 0..10 {
        statuses.push(
            sign_in_from(&app, &format!("user{i}"), None)
                .await
                .status()
                .as_u16(),
        );
    }
    let refused = sign_in_from(&app, "late", None).await;
    let forged = sign_in_from(&app, "forged", Some("203.0.113.7")).await;
    let forged_again = sign_in_from(&app, "forged", Some("198.51.100.1, 127.0.0.1")).await;
    let garbage = new_client()
        .post(app.url("/login"))
        .body("not a form")
        .send()
        .await
        .unwrap();

    // Assert: the burst passes, the rest is refused, X-Forwarded-For is ignored.
    assert_eq!(statuses, vec![303; 10], "the burst of 10");
    for resp in [&forged, &forged_again, &garbage] {
        assert_eq!(resp.status(), 429, "X-Forwarded-For is not trusted by default");
    }
    assert_eq!(refused.status(), 429);
    assert!(refused.headers().get("set-cookie").is_none());
    let retry_after: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((3000..=3600).contains(&retry_after), "Retry-After: {retry_after}");
    let body = refused.text().await.unwrap();
    assert!(body.contains(r#"<form method="post" action="/login">"#), "{body}");
    assert!(body.contains("Too many sign-in attempts"), "{body}");
    assert!(
        body.contains(r#"value="late""#),
        "the form keeps the username: {body}"
    );
    // Only the ten accepted sign-ins prewarmed.
    app.wait_for_calls(50).await;
    assert_eq!(app.mock.calls_for("late", 1), 0);
    assert_eq!(app.mock.calls_for("forged", 1), 0);
}

#[tokio::test]
async fn with_trust_forwarded_each_forwarded_address_has_its_own_limit() {
    // Arrange
    let app = rate_limited_app(true).await;

    // Act: 11 sign-ins as 203.0.113.1, then other addresses.
    let mut first = Vec::new();
    for i in 0..11 {
        first.push(
            sign_in_from(&app, &format!("a{i}"), Some("203.0.113.1"))
                .await
                .status()
                .as_u16(),
        );
    }
    // The client is the rightmost entry that is not a trusted proxy (here
    // loopback): entries to its left are whatever the client wrote.
    let same_with_port = sign_in_from(&app, "a-port", Some("10.0.0.2, 203.0.113.1:4711")).await;
    let forged_left = sign_in_from(&app, "a-forged", Some("198.51.100.9, 203.0.113.1")).await;
    let other = sign_in_from(&app, "b", Some("203.0.113.1, 203.0.113.2")).await;
    let ipv6 = sign_in_from(&app, "c", Some("2001:db8::1")).await;
    let same_64 = sign_in_from(&app, "d", Some("[2001:db8::2]")).await;
    let peer = sign_in_from(&app, "e", None).await;

    // Assert
    assert_eq!(&first[..10], &[303; 10], "the burst of 10");
    assert_eq!(first[10], 429, "the 11th from the same address");
    assert_eq!(same_with_port.status(), 429, "the same address with a port");
    assert_eq!(
        forged_left.status(),
        429,
        "a forged entry to the left does not count"
    );
    assert_eq!(other.status(), 303, "another address is not limited");
    assert_eq!(ipv6.status(), 303);
    assert_eq!(same_64.status(), 303, "the same /64, still within its burst");
    assert_eq!(peer.status(), 303, "without the header: the peer address");
}

#[tokio::test]
async fn the_limit_is_off_with_zero() {
    let app = spawn_app(StoreKind::Memory)
        .without_prewarm()
        .settings(|s| s.login_rate = parse_login_rate("0").unwrap())
        .await;
    for i in 0..30 {
        assert_eq!(
            sign_in_from(&app, &format!("u{i}"), None).await.status(),
            303,
            "sign-in {i}"
        );
    }
}

#[test]
fn a_bad_login_rate_stops_the_server_with_a_clear_error() {
    for (args, env) in [
        (&["--login-rate", "20/day"][..], &[][..]),
        (&["--login-rate", "fast"][..], &[][..]),
        (&[][..], &[("LOGIN_RATE", "-5/min")][..]),
    ] {
        let (code, stderr) = start_and_fail(args, env);
        assert_eq!(code, Some(2), "{args:?} {env:?}: {stderr}");
        assert!(stderr.contains("--login-rate"), "{stderr}");
        assert!(stderr.contains("expected N/sec, N/min or N/hour"), "{stderr}");
    }
}

/// A concrete path for a route pattern.
fn path_of(pattern: &str) -> String {
    pattern.replace("{id}", "1").replace("{name}", "app.css")
}

#[tokio::test]
async fn every_route_answers_its_methods_and_405_with_allow_to_others() {
    // Arrange: signed out (every route answers at once).
    let app = spawn_app(StoreKind::Memory).without_prewarm().await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let methods = ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"];

    // Act + Assert: a listed method reaches the route (whatever it answers:
    // a route may be off, e.g. `/admin`), another gets 405 with `Allow`, which
    // also shows the pattern is the router's.
    let mut failures = Vec::new();
    for (pattern, allow) in ROUTES {
        let url = app.url(&path_of(pattern));
        for method in methods {
            let resp = client
                .request(method.parse().unwrap(), &url)
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            let listed = allow.split(", ").any(|m| m == method);
            let got_allow = resp
                .headers()
                .get("allow")
                .map(|v| v.to_str().unwrap().to_owned());
            match (listed, status) {
                (true, 405) => failures.push(format!("{method} {pattern}: {status}, it is listed")),
                (false, 405) if got_allow.as_deref() == Some(*allow) => {}
                (false, _) => failures.push(format!(
                    "{method} {pattern}: {status} Allow {got_allow:?}, expected 405 Allow {allow:?}"
                )),
                _ => {}
            }
        }
    }
    for path in ["/nope", "/widgets", "/widgets/1/refresh/x", "/api", "/assets/"] {
        let status = client.delete(app.url(path)).send().await.unwrap().status();
        if status != 404 {
            failures.push(format!("DELETE {path}: {status}, expected 404"));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}
