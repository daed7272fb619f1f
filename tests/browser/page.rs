//! What the tests read from and do on the page: card snapshots through the
//! stable hooks of SPEC §8, polling with a deadline, signing in.

use std::time::Duration;

use anyhow::{bail, ensure, Context as _};
use fantoccini::Locator;
use serde::Deserialize;

use crate::driver::Tab;
use crate::helpers::{spawn_app, until, AppBuilder, StoreKind, TestApp};

/// Mock upstream delays per widget: two fast, one slow, two in between.
pub const DELAYS_MS: [u64; 5] = [100, 300, 1500, 600, 100];

/// How long any one wait on the page may take.
pub const WAIT: Duration = Duration::from_secs(15);

/// The test application of the page tests: the in-process store, prewarm
/// on, the short delays above (await it to start it).
pub fn dashboard_app() -> AppBuilder {
    spawn_app(StoreKind::Memory).delays_ms(DELAYS_MS)
}

/// One widget card as the browser shows it (`[data-widget]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Card {
    pub id: u8,
    pub state: String,
    pub aria_busy: Option<String>,
    pub fetched_at: Option<String>,
    pub version: Option<String>,
    pub text: String,
    pub has_retry: bool,
    pub has_refresh: bool,
    pub has_skeleton: bool,
}

impl Card {
    pub fn is_loading(&self) -> bool {
        self.state == "loading"
    }
}

const CARDS_JS: &str = r#"
return Array.from(document.querySelectorAll('[data-widget]')).map(e => ({
  id: Number(e.dataset.widget),
  state: e.dataset.state || '',
  ariaBusy: e.getAttribute('aria-busy'),
  fetchedAt: e.dataset.fetchedAt || null,
  version: e.dataset.version || null,
  text: e.innerText,
  hasRetry: !!e.querySelector('[data-action="retry"]'),
  hasRefresh: !!e.querySelector('[data-action="refresh"]'),
  hasSkeleton: !!e.querySelector('.skeleton'),
}));
"#;

/// `id:state` of each card, for messages.
pub fn summary(cards: &[Card]) -> String {
    cards
        .iter()
        .map(|c| format!("{}:{}", c.id, c.state))
        .collect::<Vec<_>>()
        .join(" ")
}

impl Tab {
    /// Every card on the page, in document order.
    pub async fn cards(&self) -> anyhow::Result<Vec<Card>> {
        let value = self.client.execute(CARDS_JS, vec![]).await?;
        serde_json::from_value(value).context("reading the cards")
    }

    /// The card of widget `id`.
    pub async fn card(&self, id: u8) -> anyhow::Result<Card> {
        self.cards()
            .await?
            .into_iter()
            .find(|c| c.id == id)
            .with_context(|| format!("no card for widget {id}"))
    }

    /// Polls the cards until `done` holds; fails with the last snapshot
    /// (and the browser console) after [`WAIT`].
    pub async fn wait_for_cards(
        &self,
        what: &str,
        done: impl Fn(&[Card]) -> bool,
    ) -> anyhow::Result<Vec<Card>> {
        let last = &std::sync::Mutex::new(Vec::new());
        let done = &done;
        // A driver error ends the wait at once (`Some(Err)`); `None` is a timeout.
        let cards = until(WAIT, Duration::from_millis(25), move || async move {
            let cards = match self.cards().await {
                Ok(cards) => cards,
                Err(e) => return Some(Err(e)),
            };
            let finished = done(&cards);
            *last.lock().unwrap() = cards.clone();
            finished.then_some(Ok(cards))
        })
        .await;
        match cards {
            Some(cards) => cards,
            None => {
                let cards = last.lock().unwrap().clone();
                let console = self.console().await;
                bail!(
                    "timed out waiting for {what}; cards: {}; console: {console:?}",
                    summary(&cards)
                )
            }
        }
    }

    /// Waits until every card has left `loading`.
    pub async fn wait_until_loaded(&self) -> anyhow::Result<Vec<Card>> {
        self.wait_for_cards("all five cards to load", |cards| {
            cards.len() == 5 && cards.iter().all(|c| !c.is_loading())
        })
        .await
    }

    /// The current path, e.g. `/dashboard`.
    pub async fn path(&self) -> anyhow::Result<String> {
        Ok(self.client.current_url().await?.path().to_owned())
    }

    /// Waits until the browser is on `path`.
    pub async fn wait_for_path(&self, path: &str) -> anyhow::Result<()> {
        let last = &std::sync::Mutex::new(String::new());
        let arrived = until(WAIT, Duration::from_millis(25), move || async move {
            let now = match self.path().await {
                Ok(now) => now,
                Err(e) => return Some(Err(e)),
            };
            let there = now == path;
            *last.lock().unwrap() = now;
            there.then_some(Ok(()))
        })
        .await;
        let now = last.lock().unwrap().clone();
        arrived.unwrap_or_else(|| bail!("expected to be on {path}, still on {now}"))
    }

    /// Clicks the first element matching `css`.
    pub async fn click(&self, css: &str) -> anyhow::Result<()> {
        self.client
            .find(Locator::Css(css))
            .await
            .with_context(|| format!("finding {css}"))?
            .click()
            .await
            .with_context(|| format!("clicking {css}"))?;
        Ok(())
    }

    /// Signs in through the form (type the username, press the button) and
    /// waits to land on `/dashboard`.
    pub async fn sign_in(&self, app: &TestApp, username: &str) -> anyhow::Result<()> {
        self.client.goto(&app.url("/login")).await?;
        let input = self
            .client
            .find(Locator::Css(
                r#"form[method="post"][action="/login"] input[name="username"]"#,
            ))
            .await
            .context("the sign-in form's username field")?;
        input.send_keys(username).await?;
        self.click(r#"form[action="/login"] button[type="submit"]"#)
            .await?;
        self.wait_for_path("/dashboard").await
    }

    /// Fails (with the console) unless htmx loaded and runs on the page.
    pub async fn ensure_htmx(&self) -> anyhow::Result<()> {
        let kind = self.client.execute("return typeof window.htmx;", vec![]).await?;
        ensure!(
            kind == "object",
            "htmx is not loaded on the page (typeof htmx: {kind}); console: {:?}",
            self.console().await
        );
        Ok(())
    }
}
