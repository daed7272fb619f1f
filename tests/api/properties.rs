//! Property tests: distinct users never share a cache key, including names
//! that a naive normalisation would merge (case, Unicode forms, separators,
//! look-alikes), and, over HTTP with both stores, every signed-in user is
//! served their own data.
//!
//! The number of cases follows `PROPTEST_CASES` when it is set (see
//! [`cases_or`]); the HTTP property runs 8 cases by default.

use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::{TestCaseError, TestRunner};

use percache::cache::key::UserTag;
use percache::user::UserId;

use crate::helpers::{all_instances, app_on_runtime, new_client, StoreKind, TestApp};

/// A proptest configuration of `default` cases, or `PROPTEST_CASES` when set.
pub fn cases_or(default: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    ProptestConfig {
        cases,
        // Runner-driven properties have no source file to persist failures next to;
        // a failing case is printed (and shrunk) instead.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn word() -> impl Strategy<Value = String> {
    "[a-zA-Z][a-zA-Z0-9]{0,9}"
}

/// Pairs of usernames that are different users but that a naive normalisation
/// (lower-casing, Unicode NFC/NFKC, dropping separators, folding look-alikes or
/// runs of spaces) would merge, plus arbitrary printable pairs.
pub fn colliding_pairs() -> impl Strategy<Value = (String, String)> {
    let unicode_forms = vec![
        ("é", "e\u{301}"),               // NFC vs NFD
        ("Å", "A\u{30a}"),               // NFC vs NFD
        ("\u{c5}", "\u{212b}"),          // Å vs ANGSTROM SIGN (NFC folds it)
        ("ﬁ", "fi"),                     // ligature (NFKC folds it)
        ("ａ", "a"),                     // full-width (NFKC folds it)
        ("a", "\u{430}"),                // Latin a vs Cyrillic а
        ("ß", "ss"),                     // case folding
        ("\u{2168}", "IX"),              // Roman numeral nine (NFKC folds it)
        ("K", "\u{212a}"),               // KELVIN SIGN
        ("o", "\u{3bf}"),                // Latin o vs Greek omicron
        ("i", "\u{131}"),                // dotless i
        ("\u{1e9b}\u{323}", "\u{1e69}"), // composed differently
    ];
    let separators = [".", "_", "-", " ", "", "·", "\u{2011}"];
    let separator_pairs: Vec<(&str, &str)> = separators
        .iter()
        .flat_map(|a| separators.iter().map(move |b| (*a, *b)))
        .filter(|(a, b)| a != b)
        .collect();
    prop_oneof![
        // Case: all lower vs all upper, and one letter flipped.
        word().prop_map(|w| (w.to_lowercase(), w.to_uppercase())),
        (word(), any::<prop::sample::Index>()).prop_map(|(w, i)| {
            let mut chars: Vec<char> = w.chars().collect();
            let i = i.index(chars.len());
            let c = chars[i];
            chars[i] = if c.is_uppercase() {
                c.to_ascii_lowercase()
            } else {
                c.to_ascii_uppercase()
            };
            (w, chars.into_iter().collect())
        }),
        // Unicode forms and look-alikes, inside a word.
        (word(), word(), select(unicode_forms))
            .prop_map(|(p, s, (x, y))| (format!("{p}{x}{s}"), format!("{p}{y}{s}"))),
        // Separators between the same parts.
        (prop::collection::vec(word(), 2..4), select(separator_pairs))
            .prop_map(|(parts, (x, y))| (parts.join(x), parts.join(y))),
        // One space inside vs two.
        (word(), word()).prop_map(|(a, b)| (format!("{a} {b}"), format!("{a}  {b}"))),
        // Anything printable.
        ("\\PC{1,64}", "\\PC{1,64}"),
    ]
    .prop_map(|(a, b)| (a.trim().to_owned(), b.trim().to_owned()))
    // Names equal after trimming are one user: not a pair of distinct users.
    .prop_filter("distinct after trimming", |(a, b)| a != b)
}

/// Like [`colliding_pairs`], only pairs of valid usernames (for sign-in).
fn valid_pairs() -> impl Strategy<Value = (String, String)> {
    colliding_pairs().prop_filter("both valid usernames", |(a, b)| {
        UserId::parse(a).is_ok() && UserId::parse(b).is_ok()
    })
}

fn tag_of(key: &str) -> &str {
    key.strip_prefix("percache:v1:{u:")
        .and_then(|rest| rest.split_once("}:w:"))
        .map(|(tag, _)| tag)
        .unwrap_or_else(|| panic!("key without the spec shape: {key}"))
}

proptest! {
    #![proptest_config(ProptestConfig::default())]

    #[test]
    fn distinct_users_never_share_a_key((a, b) in colliding_pairs()) {
        let (ta, tb) = (UserTag::of(&a), UserTag::of(&b));
        prop_assert_ne!(&ta, &tb);
        for i in all_instances() {
            let w = i.id();
            let (ka, kb) = (ta.key(&i), tb.key(&i));
            prop_assert_ne!(ka.as_str(), kb.as_str(), "{:?} and {:?} share widget {}'s key", a, b, w);
            for key in [ka.as_str(), kb.as_str()] {
                let tag = tag_of(key);
                prop_assert!(tag.len() == 32 && tag.chars().all(|c| c.is_ascii_hexdigit()), "{}", key);
                let suffix = match &i.hash {
                    Some(h) => format!("}}:w:{w}:p:{h}"),
                    None => format!("}}:w:{w}"),
                };
                prop_assert!(key.ends_with(&suffix), "{}", key);
            }
        }
        // The tag the server really uses is the one of the trimmed, validated name.
        if let (Ok(ua), Ok(ub)) = (UserId::parse(&a), UserId::parse(&b)) {
            prop_assert_ne!(ua.tag(), ub.tag());
            prop_assert_eq!(ua.tag(), &ta);
        }
    }

    #[test]
    fn surrounding_whitespace_is_the_same_user(name in "[a-zA-Z0-9._-]{1,20}", pad in "[ \t]{0,3}") {
        // `.` and `..` are not usernames (SPEC §8, v3): a test of their own.
        prop_assume!(name != "." && name != "..");
        let padded = UserId::parse(&format!("{pad}{name}{pad}")).unwrap();
        let plain = UserId::parse(&name).unwrap();
        prop_assert_eq!(padded.tag(), plain.tag());
        prop_assert_eq!(padded.as_str(), name.as_str());
    }
}

/// Signs both users in with their own clients and checks each gets their own data.
async fn each_user_gets_their_own_data(app: &TestApp, a: &str, b: &str) -> Result<(), TestCaseError> {
    let clients = [(a, new_client()), (b, new_client())];
    for (name, client) in &clients {
        let resp = app.login_with(client, name).await;
        prop_assert_eq!(resp.status().as_u16(), 303, "{:?} signs in", name);
    }
    for (name, client) in &clients {
        let resp = client.get(app.url("/api/widgets/1")).send().await.unwrap();
        prop_assert_eq!(resp.status().as_u16(), 200, "{:?}", name);
        let json: serde_json::Value = resp.json().await.unwrap();
        prop_assert_eq!(&json["data"]["userId"], *name, "{:?} got {}", name, json);
        prop_assert_eq!(&json["data"]["name"], *name);
    }
    Ok(())
}

/// Runs the HTTP property against one app of the given store.
fn users_get_their_own_data_over_http(store: StoreKind) {
    let (rt, app) = app_on_runtime(store);
    let mut runner = TestRunner::new(cases_or(8));
    let result = runner.run(&valid_pairs(), |(a, b)| {
        rt.block_on(each_user_gets_their_own_data(&app, &a, &b))
    });
    drop(app);
    if let Err(e) = result {
        panic!("{e}");
    }
}

#[test]
fn users_get_their_own_data_over_http_memory() {
    users_get_their_own_data_over_http(StoreKind::Memory);
}

#[test]
fn users_get_their_own_data_over_http_redis() {
    users_get_their_own_data_over_http(StoreKind::Redis);
}
