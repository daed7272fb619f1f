//! Headless Chromium through chromedriver: start, run one test body, clean up.
//!
//! [`run`] is the only entry point: it takes the global lock (one browser at
//! a time), starts chromedriver on a free port with a fresh profile
//! directory, opens a session, runs the body with a time limit, fails the
//! test if the browser console shows an error (other than the page's missing
//! favicon), saves `<test>-failure.png` when the test fails (error, panic,
//! time limit), prints the console, closes the session, kills chromedriver
//! and removes the profile.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{bail, Context as _};
use fantoccini::wd::{Capabilities, TimeoutConfiguration};
use fantoccini::{Client, ClientBuilder};
use futures_util::FutureExt as _;
use serde_json::{json, Value};

use crate::helpers::{free_port, Process};

/// Debian's browser and driver (packages `chromium` and `chromium-driver`).
const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "chromedriver";

/// The longest one test body may run before it counts as failed.
const TEST_TIME_LIMIT: Duration = Duration::from_secs(120);

/// One browser at a time: tests run in parallel threads by default.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Runs `body` against a fresh browser; fails the test (after a screenshot
/// named `<name>-failure.png`) when the body errs, panics or runs too long.
pub async fn run<F, Fut>(name: &str, body: F)
where
    F: FnOnce(Tab) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let _serial = SERIAL.lock().await;
    // A failure screenshot from an earlier run would mislead.
    let _ = std::fs::remove_file(screenshot_dir().join(format!("{name}-failure.png")));
    let mut browser = match Browser::start().await {
        Ok(browser) => browser,
        Err(e) => panic!("{name}: could not start the browser: {e:?}"),
    };
    let tab = Tab {
        client: browser.client.clone().expect("a session"),
        driver_url: browser.driver_url.clone(),
    };
    let outcome = tokio::time::timeout(TEST_TIME_LIMIT, AssertUnwindSafe(body(tab)).catch_unwind()).await;
    let mut failure = match &outcome {
        Ok(Ok(Ok(()))) => None,
        Ok(Ok(Err(e))) => Some(format!("{e:#}")),
        Ok(Err(panic)) => Some(panic_message(panic.as_ref())),
        Err(_) => Some(format!("timed out after {TEST_TIME_LIMIT:?}")),
    };
    // The page must run cleanly: no console error (CSP violation, script
    // error, failed request) other than the favicon the page does not have.
    let console = browser.console().await;
    let errors: Vec<&String> = console
        .iter()
        .filter(|line| line.starts_with("SEVERE") && !line.contains("/favicon.ico"))
        .collect();
    if failure.is_none() && !errors.is_empty() {
        failure = Some(format!("errors in the browser console: {errors:#?}"));
    }
    if let Some(why) = &failure {
        eprintln!("{name} failed: {why}");
        match browser.screenshot(&format!("{name}-failure")).await {
            Ok(path) => eprintln!("screenshot: {}", path.display()),
            Err(e) => eprintln!("no screenshot: {e:?}"),
        }
    }
    for line in &console {
        eprintln!("{name}: browser console: {line}");
    }
    browser.close().await;
    drop(browser);
    match outcome {
        Ok(Err(panic)) => std::panic::resume_unwind(panic),
        Ok(Ok(Ok(()))) if failure.is_none() => {}
        _ => panic!("{name}: {}", failure.unwrap_or_default()),
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic".to_owned()
    }
}

/// What a test body drives: the session, and the driver's address (for its
/// log endpoint).
#[derive(Clone)]
pub struct Tab {
    pub client: Client,
    pub driver_url: String,
}

impl Tab {
    /// The browser console since the last call.
    pub async fn console(&self) -> Vec<String> {
        console_log(&self.client, &self.driver_url).await
    }

    /// Saves `target/browser-screenshots/<name>.png`.
    pub async fn screenshot(&self, name: &str) -> anyhow::Result<PathBuf> {
        save_screenshot(&self.client, name).await
    }
}

/// Where screenshots go: `target/browser-screenshots/`.
pub fn screenshot_dir() -> PathBuf {
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => Path::new(env!("CARGO_MANIFEST_DIR")).join(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("target"),
    };
    target.join("browser-screenshots")
}

/// Saves a PNG of the current page as `target/browser-screenshots/<name>.png`.
pub async fn save_screenshot(client: &Client, name: &str) -> anyhow::Result<PathBuf> {
    let png = client.screenshot().await.context("taking a screenshot")?;
    let dir = screenshot_dir();
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(format!("{name}.png"));
    std::fs::write(&path, png).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// A chromedriver process, its session, and the temporary directory holding
/// the browser profile and the driver's log.
struct Browser {
    client: Option<Client>,
    /// `None` once dropped: it must be killed before the browsers it started.
    driver: Option<Process>,
    driver_url: String,
    workdir: PathBuf,
    profile: PathBuf,
}

impl Browser {
    async fn start() -> anyhow::Result<Self> {
        static N: AtomicU32 = AtomicU32::new(0);
        let workdir = std::env::temp_dir().join(format!(
            "percache-browser-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&workdir);
        let profile = workdir.join("profile");
        std::fs::create_dir_all(&profile).with_context(|| format!("creating {}", profile.display()))?;

        let port = free_port();
        let log = workdir.join("chromedriver.log");
        let mut command = Command::new(CHROMEDRIVER);
        command
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let driver = Process::spawn(CHROMEDRIVER, &mut command);
        let driver = match driver {
            Ok(child) => child,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&workdir);
                bail!(
                    "cannot run {CHROMEDRIVER} ({e}); install Debian's chromium and \
                     chromium-driver (scripts/test.sh does)"
                );
            }
        };
        let mut browser = Self {
            client: None,
            driver: Some(driver),
            driver_url: format!("http://127.0.0.1:{port}"),
            workdir,
            profile,
        };
        browser.wait_for_driver().await?;
        // The test build links two rustls providers (ring for the server,
        // aws-lc-rs for fantoccini's client): pick one for the process.
        percache::tls::install_provider();
        let client = ClientBuilder::rustls()
            .context("TLS roots")?
            .capabilities(browser.capabilities())
            .connect(&browser.driver_url)
            .await;
        let client = match client {
            Ok(client) => client,
            Err(e) => bail!(
                "no browser session: {e}\nchromedriver log (tail):\n{}",
                browser.driver_log_tail()
            ),
        };
        client
            .update_timeouts(TimeoutConfiguration::new(
                Some(Duration::from_secs(20)),
                Some(Duration::from_secs(30)),
                Some(Duration::ZERO),
            ))
            .await?;
        browser.client = Some(client);
        Ok(browser)
    }

    /// Waits (20 s at most) until chromedriver answers `GET /status` with
    /// `ready: true`.
    async fn wait_for_driver(&mut self) -> anyhow::Result<()> {
        let (http, status) = (reqwest::Client::new(), format!("{}/status", self.driver_url));
        let driver = self.driver.as_mut().context("no chromedriver")?;
        let ready = driver.ready(Duration::from_secs(20), || {
            let probe = http.get(&status).timeout(Duration::from_secs(2)).send();
            async move {
                let Ok(resp) = probe.await else { return false };
                let body = resp.json::<Value>().await.unwrap_or_default();
                body["value"]["ready"] == Value::Bool(true)
            }
        });
        if let Err(e) = ready.await {
            bail!("{e}\nchromedriver log (tail):\n{}", self.driver_log_tail());
        }
        Ok(())
    }

    fn capabilities(&self) -> Capabilities {
        let args = [
            "--headless=new".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-quic".to_owned(),
            "--no-first-run".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--window-size=1280,900".to_owned(),
            format!("--user-data-dir={}", self.profile.display()),
        ];
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": CHROMIUM, "args": args },
            "goog:loggingPrefs": { "browser": "ALL" },
        });
        match caps {
            Value::Object(map) => map,
            _ => unreachable!(),
        }
    }

    fn driver_log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.workdir.join("chromedriver.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    async fn screenshot(&self, name: &str) -> anyhow::Result<PathBuf> {
        let client = self.client.as_ref().context("no session")?;
        save_screenshot(client, name).await
    }

    /// The browser console since the last call (chromedriver's log endpoint).
    async fn console(&self) -> Vec<String> {
        let Some(client) = &self.client else {
            return Vec::new();
        };
        console_log(client, &self.driver_url).await
    }

    /// Ends the session: chromedriver then quits the browser.
    async fn close(&mut self) {
        if let Some(client) = self.client.take() {
            if let Err(e) = client.close().await {
                eprintln!("closing the browser session: {e}");
            }
        }
    }
}

/// Reads (and clears) the browser console through chromedriver's
/// `POST /session/{id}/se/log` endpoint: `LEVEL message` per entry.
pub async fn console_log(client: &Client, driver_url: &str) -> Vec<String> {
    let Ok(Some(session)) = client.session_id().await else {
        return Vec::new();
    };
    let resp = reqwest::Client::new()
        .post(format!("{driver_url}/session/{session}/se/log"))
        .json(&json!({ "type": "browser" }))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    let Ok(resp) = resp else {
        return Vec::new();
    };
    let body: Value = resp.json().await.unwrap_or_default();
    body["value"]
        .as_array()
        .map(|entries| {
            entries
                .iter()
                .map(|e| {
                    format!(
                        "{} {}",
                        e["level"].as_str().unwrap_or("?"),
                        e["message"].as_str().unwrap_or("")
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

impl Drop for Browser {
    fn drop(&mut self) {
        drop(self.driver.take());
        // Only the browser this test started has our profile on its command line.
        testkit::process::kill_all_with_arg(&format!("--user-data-dir={}", self.profile.display()));
        // The browser may still be writing its profile for a moment: retry
        // for 2 s, then leave the folder (a temporary one) behind.
        testkit::until_blocking(Duration::from_secs(2), Duration::from_millis(100), || {
            match std::fs::remove_dir_all(&self.workdir) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => None,
                _ => Some(()),
            }
        });
    }
}
