//! The session cookie: opaque, bound to the key that made it, and the key
//! itself checked at start-up.

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use mock_upstream::{MockConfig, MockUpstream};
use percache::config::Settings;
use percache::session::{session_key, SessionKeyError, MIN_KEY_BYTES};
use percache::startup::Application;

use crate::helpers::{new_client, spawn_app, StoreKind};
use crate::hostile::{session_cookie, FOREIGN_SESSION_KEY};

/// Every way the cookie value could be read back as bytes: as is, percent-decoded,
/// and base64-decoded (both alphabets, at every alignment, ignoring padding).
fn readings(value: &str) -> Vec<Vec<u8>> {
    let lenient = GeneralPurposeConfig::new()
        .with_decode_allow_trailing_bits(true)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent);
    let engines = [
        GeneralPurpose::new(&alphabet::STANDARD, lenient),
        GeneralPurpose::new(&alphabet::URL_SAFE, lenient),
    ];
    let decoded = percent_encoding::percent_decode_str(value)
        .decode_utf8_lossy()
        .into_owned();
    let mut out = vec![value.as_bytes().to_vec(), decoded.as_bytes().to_vec()];
    for text in [value, decoded.as_str()] {
        let clean: String = text
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || "+/-_".contains(*c))
            .collect();
        for skip in 0..4 {
            let Some(rest) = clean.get(skip..) else { continue };
            let usable = rest.len() - rest.len() % 4;
            for engine in &engines {
                if let Ok(bytes) = engine.decode(&rest[..usable]) {
                    out.push(bytes);
                }
            }
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn the_cookie_does_not_reveal_the_username() {
    let app = spawn_app(StoreKind::Memory).await;
    let name = "zanzibar-quokka";
    let cookie = session_cookie(&app, name).await;
    let value = cookie.trim_start_matches("percache_session=");

    let readings = readings(value);
    assert!(readings.len() > 2, "the value is base64: {value}");
    for bytes in &readings {
        for needle in [name, "zanzibar", "quokka", "\"user\""] {
            assert!(
                !contains(bytes, needle.as_bytes()),
                "{needle:?} readable in the cookie {value}"
            );
        }
    }
    // It is the session all the same.
    let page = new_client()
        .get(app.url("/dashboard"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains(name));
}

#[tokio::test]
async fn a_cookie_made_with_another_key_is_signed_out_not_an_error() {
    // Arrange: alice signed in on an instance with a different key.
    let app = spawn_app(StoreKind::Memory).await;
    let other = spawn_app(StoreKind::Memory)
        .settings(|s| s.session_key = Some(FOREIGN_SESSION_KEY.into()))
        .await;
    let foreign = session_cookie(&other, "alice").await;
    let client = new_client();
    let get = |path: &str| client.get(app.url(path)).header("cookie", &foreign).send();

    // Act + Assert: signed out everywhere.
    let root = get("/").await.unwrap();
    assert_eq!(root.status(), 303);
    assert_eq!(root.headers()["location"], "/login");
    let dashboard = get("/dashboard").await.unwrap();
    assert_eq!(dashboard.status(), 303);
    assert_eq!(dashboard.headers()["location"], "/login");
    let fragment = get("/widgets/1").await.unwrap();
    assert_eq!(fragment.status(), 401);
    assert_eq!(fragment.headers()["hx-redirect"], "/login");
    let json = get("/api/widgets/1").await.unwrap();
    assert_eq!(json.status(), 401);
    assert_eq!(
        json.json::<serde_json::Value>().await.unwrap()["error"],
        "not signed in"
    );
    assert_eq!(
        get("/login").await.unwrap().status(),
        200,
        "the form, not a redirect"
    );
    let refresh = client
        .post(app.url("/widgets/1/refresh"))
        .header("cookie", &foreign)
        .send()
        .await
        .unwrap();
    assert_eq!(refresh.status(), 401);
    assert_eq!(
        app.mock.total_calls(),
        0,
        "nothing was fetched for the foreign session"
    );

    // The foreign cookie is still good where it was made, and signing in here works.
    let there = new_client()
        .get(other.url("/dashboard"))
        .header("cookie", &foreign)
        .send()
        .await
        .unwrap();
    assert_eq!(there.status(), 200);
    assert_eq!(app.login("alice").await.status(), 303);
    assert_eq!(app.get("/dashboard").await.status(), 200);
}

#[test]
fn short_session_keys_are_refused_with_the_required_length() {
    for (raw, bytes) in [
        ("abcd", 2),
        (&"ab".repeat(MIN_KEY_BYTES - 1) as &str, MIN_KEY_BYTES - 1),
        ("c2hvcnQ=", 5),
    ] {
        let err = match session_key(Some(raw)) {
            Ok(_) => panic!("{raw:?} is too short but was accepted"),
            Err(e) => e,
        };
        assert!(
            matches!(err, SessionKeyError::TooShort(n) if n == bytes),
            "{raw:?}: {err:?}"
        );
        let message = err.to_string();
        assert!(
            message.contains("at least 64 bytes") && message.contains(&format!("{bytes} bytes")),
            "{message}"
        );
    }
    let garbled = match session_key(Some("not a key!")) {
        Ok(_) => panic!("a key that is neither hex nor base64 was accepted"),
        Err(e) => e.to_string(),
    };
    assert!(garbled.contains("hex or base64"), "{garbled}");
    assert!(session_key(Some(&"ab".repeat(MIN_KEY_BYTES))).is_ok());
    assert!(
        session_key(Some("   ")).is_ok(),
        "blank: a random key, with a warning"
    );
}

#[tokio::test]
async fn the_application_does_not_start_with_a_short_session_key() {
    let mock = MockUpstream::start("127.0.0.1:0", MockConfig::with_delays_ms([5; 5]))
        .await
        .unwrap();
    let mut settings = Settings::defaults();
    settings.bind = "127.0.0.1:0".into();
    settings.upstream_url = Some(mock.url());
    settings.store.redis_url = None;
    settings.store.redis_cluster = None;
    settings.session_key = Some("abcd".into());

    let message = match Application::build(settings).await {
        Ok(_) => panic!("the application started with a 2-byte session key"),
        Err(e) => format!("{e:#}"),
    };

    assert!(message.contains("SESSION_KEY"), "{message}");
    assert!(message.contains("at least 64 bytes"), "{message}");
    assert!(message.contains("2 bytes"), "{message}");
}

/// Cookies are decoded once and remembered (`session::decoded`): a
/// remembered cookie still means its own user only, and a cookie that
/// differs from a remembered one by one character is decoded (and refused)
/// like any other.
#[tokio::test]
async fn a_remembered_cookie_means_its_own_user_and_nothing_else() {
    // Arrange: alice's and bob's cookies, each already seen (and remembered).
    let app = spawn_app(StoreKind::Memory).await;
    let mut alice = session_cookie(&app, "alice").await;
    let bob = session_cookie(&app, "bob").await;
    let client = new_client();
    let whose = |cookie: String| {
        let request = client.get(app.url("/api/widgets/1")).header("cookie", cookie);
        async move {
            let resp = request.send().await.unwrap();
            let status = resp.status().as_u16();
            let body: serde_json::Value = resp.json().await.unwrap();
            (status, body["data"]["userId"].as_str().unwrap_or("").to_owned())
        }
    };
    assert_eq!(whose(alice.clone()).await, (200, "alice".to_owned()));
    assert_eq!(whose(bob.clone()).await, (200, "bob".to_owned()));

    // Act: both, interleaved, many times; then alice's with one character changed.
    let mut seen = Vec::new();
    for _ in 0..20 {
        seen.push(whose(alice.clone()).await);
        seen.push(whose(bob.clone()).await);
    }
    let last = alice.pop().map(|c| if c == 'A' { 'B' } else { 'A' });
    let tampered = format!("{alice}{}", last.unwrap_or('A'));
    let (tampered_status, _) = whose(tampered.clone()).await;
    // Another cookie in the header does not change whose the session is.
    let (both_status, both_user) = whose(format!("theme=dark; {bob}; percache_session=x")).await;
    // A session cookie actix cannot read (not UTF-8 once percent-decoded)
    // ahead of bob's: actix-session skips it and reads bob's, and the bad
    // value alone must not then stand for bob (a cookie set from a sibling
    // site, say, that anyone could send).
    let (tossed_status, tossed_user) = whose(format!("percache_session=%FF; {bob}")).await;
    let (alone_status, _) = whose("percache_session=%FF".to_owned()).await;

    // Assert
    for (i, pair) in seen.chunks(2).enumerate() {
        assert_eq!(pair[0], (200, "alice".to_owned()), "round {i}");
        assert_eq!(pair[1], (200, "bob".to_owned()), "round {i}");
    }
    assert_eq!(tampered_status, 401, "a tampered cookie is signed out");
    assert_eq!(
        (both_status, both_user.as_str()),
        (200, "bob"),
        "the first session cookie counts"
    );
    assert_eq!(
        (tossed_status, tossed_user.as_str()),
        (200, "bob"),
        "the cookie actix reads counts"
    );
    assert_eq!(alone_status, 401, "a value actix never read is nobody's session");
}
