//! Fuzzing with proptest: the cache entry decoder on arbitrary bytes and
//! near-JSON (never panics; valid encodings round-trip), and the HTTP cookie
//! parsing on arbitrary `Cookie` headers (never a 5xx, never someone else's
//! session).
//!
//! `PROPTEST_CASES=10000 cargo test --test api fuzz` runs more cases.

use proptest::prelude::*;
use proptest::test_runner::{TestCaseError, TestRunner};
use reqwest::header::{HeaderValue, COOKIE};

use percache::cache::Entry;

use crate::helpers::{app_on_runtime, StoreKind, TestApp};
use crate::hostile::session_cookie;
use crate::properties::cases_or;

/// Arbitrary JSON values: every kind, nested a few levels.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        // Decimals such as an upstream sends (12.34, -0.5): see `every_f64_round_trips`
        // for arbitrary doubles.
        (any::<i32>(), 0..6i32).prop_map(|(n, d)| Value::from(f64::from(n) / 10f64.powi(d))),
        any::<String>().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(serde_json::Value::Array),
            prop::collection::btree_map(any::<String>(), inner, 0..8)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

fn entry() -> impl Strategy<Value = Entry> {
    (json_value(), any::<[i64; 4]>(), any::<[u64; 3]>()).prop_map(
        |(data, [fetched_at, fresh_until, stale_until, grace_until], [fingerprint, generation, started])| {
            Entry {
                data: serde_json::value::to_raw_value(&data).unwrap(),
                fetched_at,
                fresh_until,
                stale_until,
                grace_until,
                fingerprint,
                generation,
                started,
                validators: Default::default(),
                rendered: Default::default(),
            }
        },
    )
}

/// Text made of JSON's own characters and words: mostly near misses.
fn json_ish() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        "[\\[\\]{}\":,]",
        "-?[0-9]{1,25}(\\.[0-9]{0,5})?([eE][+-]?[0-9]{1,4})?",
        Just("\"data\"".to_owned()),
        Just("\"fetched_at\"".to_owned()),
        Just("\"fresh_until\"".to_owned()),
        Just("\"stale_until\"".to_owned()),
        Just("\"grace_until\"".to_owned()),
        Just("null".to_owned()),
        Just("true".to_owned()),
        Just("NaN".to_owned()),
        Just("\\u0000".to_owned()),
        Just("\\ud800".to_owned()),
        "\"[^\"]{0,8}\"",
        "[ \t\r\n]",
    ];
    prop::collection::vec(token, 0..48).prop_map(|t| t.concat())
}

/// Near-valid entries: the right fields, with odd values.
fn entry_like() -> impl Strategy<Value = String> {
    let number = prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        Just("9223372036854775808".to_owned()),
        Just("-9223372036854775809".to_owned()),
        Just("1e999".to_owned()),
        Just("1.5".to_owned()),
        Just("-0".to_owned()),
        Just("\"1\"".to_owned()),
        Just("null".to_owned()),
    ];
    (
        json_value(),
        prop::collection::vec(number, 4),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(data, n, drop_one, extra)| {
            let mut fields = vec![
                format!("\"data\":{data}"),
                format!("\"fetched_at\":{}", n[0]),
                format!("\"fresh_until\":{}", n[1]),
                format!("\"stale_until\":{}", n[2]),
                format!("\"grace_until\":{}", n[3]),
            ];
            if drop_one {
                fields.remove(n[0].len() % fields.len());
            }
            if extra {
                fields.push("\"extra\":[1,2,3]".to_owned());
            }
            format!("{{{}}}", fields.join(","))
        })
}

proptest! {
    #![proptest_config(ProptestConfig::default())]

    #[test]
    fn decode_never_panics_on_bytes(bytes in prop::collection::vec(any::<u8>(), 0..1024)) {
        let _ = Entry::decode(&bytes);
    }

    #[test]
    fn decode_never_panics_on_json_ish_text(text in json_ish()) {
        let _ = Entry::decode(text.as_bytes());
    }

    #[test]
    fn decode_never_panics_on_near_entries(text in entry_like()) {
        if let Ok(entry) = Entry::decode(text.as_bytes()) {
            // Whatever decodes encodes again and means the same.
            prop_assert_eq!(Entry::decode(&entry.encode()).unwrap(), entry);
        }
    }

    #[test]
    fn decode_never_panics_on_damaged_encodings(
        entry in entry(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0..3u8), 1..8),
    ) {
        let mut bytes = entry.encode();
        for (at, byte, op) in edits {
            if bytes.is_empty() {
                break;
            }
            let i = at.index(bytes.len());
            match op {
                0 => bytes[i] = byte,
                1 => bytes.insert(i, byte),
                _ => {
                    bytes.remove(i);
                }
            }
        }
        let _ = Entry::decode(&bytes);
    }

    #[test]
    fn valid_encodings_round_trip(entry in entry()) {
        let decoded = Entry::decode(&entry.encode());
        prop_assert!(decoded.is_ok(), "{:?}", decoded);
        prop_assert_eq!(decoded.unwrap(), entry);
    }
}

/// Bytes a `HeaderValue` accepts: visible ASCII, space, tab, and any byte >= 0x80.
fn header_bytes() -> impl Strategy<Value = Vec<u8>> {
    let byte = prop_oneof![
        8 => 0x20u8..0x7f,
        1 => Just(b'\t'),
        3 => 0x80u8..=0xff,
    ];
    prop::collection::vec(byte, 0..400)
}

/// Cookie headers: raw bytes, non-ASCII text, and damaged copies of a real cookie.
fn cookie_headers(valid: String) -> impl Strategy<Value = Vec<u8>> {
    let damaged = (
        prop::collection::vec((any::<prop::sample::Index>(), 0x20u8..0x7f, 0..3u8), 1..6),
        Just(valid.clone()),
    )
        .prop_map(|(edits, valid)| {
            let mut bytes = valid.into_bytes();
            // Keep the name: damage the value only.
            let start = "percache_session=".len();
            for (at, byte, op) in edits {
                let span = bytes.len() - start;
                if span == 0 {
                    break;
                }
                let i = start + at.index(span);
                match op {
                    0 => bytes[i] = byte,
                    1 => bytes.insert(i, byte),
                    _ => {
                        bytes.remove(i);
                    }
                }
            }
            bytes
        });
    prop_oneof![
        header_bytes(),
        header_bytes().prop_map(|b| [b"percache_session=".as_slice(), &b].concat()),
        "\\PC{0,200}".prop_map(|s| format!("percache_session={s}").into_bytes()),
        ("[a-z_]{0,12}", "\\PC{0,100}")
            .prop_map(move |(name, s)| format!("{name}={s}; {valid}; x").into_bytes()),
        damaged,
    ]
}

/// Sends `cookie` to `/dashboard` and `/widgets/1`: never a 5xx; signed out,
/// or (when the cookie still holds alice's session) alice's page.
async fn cookie_is_harmless(app: &TestApp, cookie: &[u8]) -> Result<(), TestCaseError> {
    let Ok(value) = HeaderValue::from_bytes(cookie) else {
        return Err(TestCaseError::reject("not a header value"));
    };
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let page = client
        .get(app.url("/dashboard"))
        .header(COOKIE, value.clone())
        .send()
        .await
        .unwrap();
    let status = page.status().as_u16();
    let location = page.headers().get("location").cloned();
    let body = page.text().await.unwrap();
    match status {
        303 => prop_assert_eq!(location.as_ref().and_then(|l| l.to_str().ok()), Some("/login")),
        200 => prop_assert!(
            body.contains(r#"<strong class="username">alice</strong>"#),
            "{}",
            body
        ),
        other => return Err(TestCaseError::fail(format!("GET /dashboard: status {other}"))),
    }
    let fragment = client
        .get(app.url("/widgets/1"))
        .header(COOKIE, value)
        .send()
        .await
        .unwrap();
    let status = fragment.status().as_u16();
    let body = fragment.text().await.unwrap();
    match status {
        401 => {}
        200 => prop_assert!(body.contains("<dd>alice</dd>"), "{}", body),
        other => return Err(TestCaseError::fail(format!("GET /widgets/1: status {other}"))),
    }
    Ok(())
}

#[test]
fn arbitrary_cookie_headers_never_cause_a_5xx() {
    let (rt, app) = app_on_runtime(StoreKind::Memory);
    let valid = rt.block_on(session_cookie(&app, "alice"));
    let mut runner = TestRunner::new(cases_or(64));
    let result = runner.run(&cookie_headers(valid), |cookie| {
        rt.block_on(cookie_is_harmless(&app, &cookie))
    });
    let healthy = rt.block_on(async { app.get("/healthz").await.status() });
    drop(app);
    if let Err(e) = result {
        panic!("{e}");
    }
    assert_eq!(healthy, 200);
}

/// The encoding of one entry holding `value`, decoded again.
fn round_trip(value: f64) -> (Entry, Entry, serde_json::Value) {
    let data = serde_json::json!({ "value": value });
    let entry = Entry {
        data: serde_json::value::to_raw_value(&data).unwrap(),
        fetched_at: 0,
        fresh_until: 0,
        stale_until: 0,
        grace_until: 0,
        fingerprint: 0,
        generation: 0,
        started: 0,
        validators: Default::default(),
        rendered: Default::default(),
    };
    let decoded = Entry::decode(&entry.encode()).unwrap();
    (entry, decoded, data)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Every finite double survives the Redis encoding bit for bit (serde_json's
    /// `float_roundtrip` feature: without it a 17-digit double could come back
    /// one ulp off, as `valid_encodings_round_trip` found with arbitrary doubles).
    /// Drawn from every bit pattern, so subnormals and the extremes come up.
    #[test]
    fn every_f64_round_trips(bits in any::<u64>()) {
        let value = f64::from_bits(bits);
        prop_assume!(value.is_finite());
        let (entry, decoded, data) = round_trip(value);
        prop_assert_eq!(&decoded, &entry);
        let back = decoded.value()["value"].as_f64().unwrap();
        prop_assert_eq!(back.to_bits(), value.to_bits(), "{} came back as {}", value, back);
        prop_assert_eq!(decoded.value(), data);
    }
}

/// The double that was one ulp off before `float_roundtrip`, and the ends
/// of the range.
#[test]
fn the_doubles_that_failed_once_and_the_extremes_round_trip() {
    for value in [
        -1.6385489275154268e-136,
        f64::MIN_POSITIVE,
        f64::MAX,
        f64::MIN,
        5e-324,
        -0.0,
    ] {
        let (entry, decoded, _) = round_trip(value);
        assert_eq!(decoded, entry);
        let back = decoded.value()["value"].as_f64().unwrap();
        assert_eq!(back.to_bits(), value.to_bits(), "{value:e} came back as {back:e}");
    }
}
