//! The widgets file and widget parameters, end to end: bad files stop the
//! real binary with the file, line and reason; parameters make one entry per
//! canonical set, and bad ones are refused before any cache or upstream work;
//! a changed definition makes its old entries misses.

use std::path::{Path, PathBuf};

use crate::helpers::{cache_status, spawn_app, start_and_fail, StoreKind};

/// A scratch folder for this test's files.
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("widgets-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs the binary with `--widgets <file>`: (exit code, stderr).
fn start_with_widgets(file: &Path) -> (Option<i32>, String) {
    let file = file.display().to_string();
    start_and_fail(&["--widgets", &file], &[])
}

const WIDGET: &str = "[[widget]]\nid = \"a\"\ntitle = \"A\"\npath = \"/a/{user}\"\n";

#[test]
fn a_bad_widgets_file_stops_start_up_with_the_file_line_and_reason() {
    let dir = scratch("bad");
    let cases = [
        ("duplicate.toml", format!("{WIDGET}\n{WIDGET}"), 7, "duplicate widget id `a`"),
        ("unknown-key.toml", format!("{WIDGET}colour = \"red\"\n"), 5, "unknown field `colour`"),
        ("bad-duration.toml", format!("{WIDGET}ttl = \"soon\"\n"), 5, "bad duration `soon`"),
        (
            "unset-var.toml",
            format!(
                "[upstream]\nheaders = {{ Authorization = \"Bearer ${{PERCACHE_TEST_UNSET_TOKEN}}\" }}\n{WIDGET}"
            ),
            2,
            "`PERCACHE_TEST_UNSET_TOKEN` is not set",
        ),
        (
            "undeclared-param.toml",
            "[[widget]]\nid = \"a\"\ntitle = \"A\"\npath = \"/a/{user}?r={region}\"\n".to_owned(),
            4,
            "`{region}`",
        ),
    ];
    for (name, text, line, reason) in cases {
        // Arrange
        let file = dir.join(name);
        std::fs::write(&file, text).unwrap();

        // Act
        let (code, stderr) = start_with_widgets(&file);

        // Assert
        assert_eq!(code, Some(1), "{name}: exit code; stderr: {stderr}");
        let expected = format!("widgets file {}, line {line}: ", file.display());
        assert!(stderr.contains(&expected), "{name}: {expected:?} in {stderr}");
        assert!(stderr.contains(reason), "{name}: {reason:?} in {stderr}");
        assert!(!stderr.contains("panicked"), "{name}: no panic: {stderr}");
    }
    let (code, stderr) = start_with_widgets(&dir.join("missing.toml"));
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("missing.toml") && stderr.contains("cannot be read"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

async fn two_values_are_two_entries_and_the_same_values_one(store: StoreKind) {
    // Arrange: the built-in analytics widget takes `days` (7, 14, 30).
    let app = spawn_app(store).without_prewarm().await;
    app.login("alice").await;

    // Act
    let d7 = app.get("/api/widgets/3?days=7").await;
    let d30 = app.get("/api/widgets/3?days=30").await;
    let (s7, s30) = (cache_status(&d7), cache_status(&d30));
    let (j7, j30): (serde_json::Value, serde_json::Value) =
        (d7.json().await.unwrap(), d30.json().await.unwrap());
    let again = cache_status(&app.get("/api/widgets/3?days=30").await);
    let default = cache_status(&app.get("/api/widgets/3").await);
    let explicit_default = cache_status(&app.get("/api/widgets/3?days=14").await);

    // Assert
    assert_eq!(s7, "percache; fwd=miss; stored");
    assert_eq!(s30, "percache; fwd=miss; stored");
    assert_eq!(j7["data"]["series"].as_array().map(Vec::len), Some(7));
    assert_eq!(j30["data"]["series"].as_array().map(Vec::len), Some(30));
    assert!(again.starts_with("percache; hit"), "{again}");
    assert_eq!(default, "percache; fwd=miss; stored");
    assert!(
        explicit_default.starts_with("percache; hit"),
        "days=14 is the default's entry: {explicit_default}"
    );
    assert_eq!(
        app.mock.calls_for("alice", 3),
        3,
        "7, 30 and the default: three calls"
    );
}

async fn parameters_in_another_order_share_one_entry(store: StoreKind) {
    // Arrange: a widget with two parameters over the mock (which ignores `zone`).
    let dir = scratch(&format!("order-{store:?}"));
    let file = dir.join("widgets.toml");
    std::fs::write(
        &file,
        r#"[[widget]]
id = "stats"
title = "Stats"
path = "/api/widgets/3?userId={user}"
params = { days = { values = [7, 30], default = 7 }, zone = { values = ["eu", "us"], default = "eu" } }
"#,
    )
    .unwrap();
    let f = file.clone();
    let app = spawn_app(store)
        .without_prewarm()
        .settings(move |s| s.widgets = Some(f))
        .await;
    app.login("alice").await;

    // Act
    let first = cache_status(&app.get("/widgets/stats?days=30&zone=us").await);
    let second = cache_status(&app.get("/widgets/stats?zone=us&days=30").await);
    let json: serde_json::Value = app
        .get("/api/widgets/stats?zone=us&days=30")
        .await
        .json()
        .await
        .unwrap();

    // Assert
    assert_eq!(first, "percache; fwd=miss; stored");
    assert!(second.starts_with("percache; hit"), "{second}");
    assert_eq!(app.mock.calls_for("alice", 3), 1, "one entry, one upstream call");
    assert_eq!(
        json["data"]["series"].as_array().map(Vec::len),
        Some(30),
        "days reached the upstream (appended to the query)"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

async fn bad_parameters_are_refused_with_no_upstream_call(store: StoreKind) {
    // Arrange
    let app = spawn_app(store).without_prewarm().await;
    app.login("alice").await;

    // Act
    let mut answers = Vec::new();
    for path in [
        "/widgets/3?days=31",
        "/api/widgets/3?days=abc",
        "/widgets/3?weeks=2",
        "/api/widgets/1?days=7",
        "/widgets/3?days=7&days=30",
        "/widgets/3/refresh?days=0",
    ] {
        let resp = if path.ends_with("?days=0") {
            app.post(path).await
        } else {
            app.get(path).await
        };
        answers.push((path, resp.status().as_u16(), resp.text().await.unwrap()));
    }

    // Assert
    for (path, status, body) in &answers {
        assert_eq!(*status, 400, "{path}: {body}");
        assert!(body.contains("parameter"), "{path}: the message says why: {body}");
    }
    assert!(
        answers[0].2.contains("7, 14, 30"),
        "the allowed values are named: {}",
        answers[0].2
    );
    assert_eq!(app.mock.total_calls(), 0, "no upstream call");
    let after = cache_status(&app.get("/api/widgets/3?days=30").await);
    assert_eq!(after, "percache; fwd=miss; stored", "and no entry was made");
}

crate::helpers::both_stores!(
    two_values_are_two_entries_and_the_same_values_one,
    parameters_in_another_order_share_one_entry,
    bad_parameters_are_refused_with_no_upstream_call,
);

#[tokio::test]
async fn a_changed_definition_makes_its_old_entries_misses() {
    // Arrange: alice's widgets are in Redis, stored under the built-in file.
    let app = spawn_app(StoreKind::Redis).await;
    app.login("alice").await;
    app.wait_for_calls(5).await;
    app.wait_for_fresh_hit(1).await;
    app.wait_for_fresh_hit(2).await;
    // A second instance on the same Redis whose file changes widget 1's view.
    let dir = scratch("fingerprint");
    let file = dir.join("widgets.toml");
    let changed = percache::widget::file::BUILTIN.replacen(
        "{ label = \"Name\", value = \"/name\" },",
        "{ label = \"Full name\", value = \"/name\" },",
        1,
    );
    assert_ne!(changed, percache::widget::file::BUILTIN);
    std::fs::write(&file, changed).unwrap();
    let (redis, upstream, f) = (app.settings.store.redis_url.clone(), app.mock.url(), file.clone());
    let other = spawn_app(StoreKind::Memory)
        .without_prewarm()
        .settings(move |s| {
            s.widgets = Some(f);
            s.store.redis_url = redis;
            s.upstream_url = Some(upstream);
        })
        .await;
    other.login("alice").await;

    // Act
    let changed_widget = other.get("/widgets/1").await;
    let (status1, card) = (
        cache_status(&changed_widget),
        changed_widget.text().await.unwrap(),
    );
    let same_widget = cache_status(&other.get("/widgets/2").await);

    // Assert
    assert_eq!(status1, "percache; fwd=miss; stored", "the old entry is a miss");
    assert!(
        card.contains("<dt>Full name</dt>"),
        "rendered with the new view: {card}"
    );
    assert!(
        same_widget.starts_with("percache; hit"),
        "an unchanged widget keeps its entry: {same_widget}"
    );
    assert_eq!(app.mock.calls_for("alice", 1), 2);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_readme_example_file_is_a_working_widgets_file() {
    // Arrange: the README's "Put it in front of your API" file.
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let start = readme
        .find("```toml\n# widgets.toml\n")
        .expect("the example in the README")
        + "```toml\n".len();
    let text = &readme[start..start + readme[start..].find("```").unwrap()];

    // Act
    let registry = percache::widget::file::parse("README.md", text, &|var| {
        (var == "API_TOKEN").then(|| "secret".to_owned())
    })
    .unwrap_or_else(|e| panic!("{e}"));

    // Assert
    let ids: Vec<_> = registry.all().iter().map(|w| w.id.to_string()).collect();
    assert_eq!(ids, ["billing", "usage", "tickets", "status"]);
    assert_eq!(
        registry.upstream().base_url.as_deref(),
        Some("https://api.example.com")
    );
    assert!(registry
        .upstream()
        .headers
        .contains(&("Authorization".to_owned(), "Bearer secret".to_owned())));
    let usage = registry.get("usage").unwrap();
    let week = usage.instance(&[("days".to_owned(), "90".to_owned())]).unwrap();
    assert_eq!(
        usage.path.render("a b", &week.params),
        "/v2/users/a%20b/usage?days=90"
    );
}

type Answer = std::sync::Arc<dyn Fn(&str) -> String + Send + Sync>;

/// A tiny HTTP server on `bind` that answers each request with
/// `answer(request)` (a whole response), and keeps the requests.
async fn canned(bind: &str, answer: Answer) -> (u16, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind(bind).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let kept = std::sync::Arc::clone(&seen);
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                return;
            };
            let (answer, kept) = (std::sync::Arc::clone(&answer), std::sync::Arc::clone(&kept));
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let n = conn.read(&mut buf).await.unwrap_or(0);
                let request = String::from_utf8_lossy(&buf[..n]).into_owned();
                let response = answer(&request);
                kept.lock().unwrap().push(request);
                let _ = conn.write_all(response.as_bytes()).await;
                let _ = conn.shutdown().await;
            });
        }
    });
    (port, seen)
}

const OK_JSON: &str = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 11\r\nconnection: close\r\n\r\n{\"ok\":true}";

/// An upstream that redirects: by default (`redirects = "none"`) a 3xx is
/// an upstream error; with `"same-origin"`, a redirect on the same origin
/// is followed, one to another origin still is not; and nothing ever
/// reaches the other origin with the file's `X-Api-Key`. Before, awc
/// followed redirects to any host and carried that header there (issue 25).
#[tokio::test]
async fn upstream_redirects_never_carry_the_files_headers_to_another_origin() {
    let (thief, stolen) = canned("127.0.0.2:0", std::sync::Arc::new(|_: &str| OK_JSON.to_owned())).await;
    let away: Answer = std::sync::Arc::new(move |_: &str| {
        format!("HTTP/1.1 302 Found\r\nlocation: http://127.0.0.2:{thief}/steal\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
    });
    let (away, _) = canned("127.0.0.1:0", away).await;
    let hop: Answer = std::sync::Arc::new(|request: &str| {
        if request.starts_with("GET /moved") {
            OK_JSON.to_owned()
        } else {
            "HTTP/1.1 301 Moved\r\nlocation: /moved\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                .to_owned()
        }
    });
    let (hop, hop_seen) = canned("127.0.0.1:0", hop).await;
    for (redirects, base, state) in [
        ("none", away, "error"),
        ("same-origin", away, "error"),
        ("none", hop, "error"),
        ("same-origin", hop, "ready"),
    ] {
        let dir = scratch(&format!("redirects-{redirects}-{base}"));
        let file = dir.join("widgets.toml");
        std::fs::write(
            &file,
            format!(
                "[upstream]\nbase_url = \"http://127.0.0.1:{base}\"\nheaders = {{ X-Api-Key = \"s3cret\" }}\nredirects = \"{redirects}\"\n\n[[widget]]\nid = \"a\"\ntitle = \"A\"\npath = \"/a/{{user}}\"\n"
            ),
        )
        .unwrap();
        let f = file.clone();
        let app = spawn_app(StoreKind::Memory)
            .without_prewarm()
            .settings(move |s| {
                s.widgets = Some(f);
                s.upstream_url = None;
            })
            .await;
        app.login("alice").await;
        let resp = app.get("/widgets/a").await;
        assert_eq!(resp.status().as_u16(), 200);
        let card = resp.text().await.unwrap();
        assert!(
            card.contains(&format!(r#"data-state="{state}""#)),
            "{redirects}, {}: {card}",
            if base == away { "elsewhere" } else { "same origin" }
        );
    }
    assert!(
        stolen.lock().unwrap().is_empty(),
        "a request reached the other origin: {:?}",
        stolen.lock().unwrap()
    );
    let followed = hop_seen
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.starts_with("GET /moved"))
        .count();
    assert_eq!(followed, 1, "the same-origin hop was followed once");
    assert!(hop_seen
        .lock()
        .unwrap()
        .iter()
        .all(|r| r.to_ascii_lowercase().contains("x-api-key: s3cret")));
}
