//! The dashboard page: a header with the user and five widget cards.

use maud::{html, Markup, Render};

use super::page_with_head;
use crate::user::UserId;

/// The page around its cards (inline data or placeholders), which render
/// straight into it.
///
/// `live_since`: the clock reading the cards were rendered at; the page then
/// long-polls `/updates` and swaps in widgets refreshed after it. `None` for
/// the no-JavaScript variant. `waiting`: some cards are placeholders, so a
/// browser without JavaScript is sent to the variant that waits on the server.
pub fn dashboard_page<C: Render>(
    user: &UserId,
    cards: &[C],
    live_since: Option<i64>,
    waiting: bool,
) -> Markup {
    let head = waiting.then(|| {
        html! { noscript { meta http-equiv="refresh" content="0; url=/dashboard?wait=1"; } }
    });
    page_with_head(
        "Dashboard",
        head,
        Body {
            user,
            cards,
            live_since,
        },
    )
}

/// The page's body: the top bar, then each card written into the page as
/// it is (no string of its own), then the poller.
struct Body<'a, C> {
    user: &'a UserId,
    cards: &'a [C],
    live_since: Option<i64>,
}

impl<C: Render> Render for Body<'_, C> {
    fn render_to(&self, buffer: &mut String) {
        html! {
            header.top {
                h1 { "percache" }
                div.who {
                    span { "Signed in as " strong.username { (self.user.as_str()) } }
                    form method="post" action="/logout" {
                        button.secondary type="submit" { "Sign out" }
                    }
                }
            }
            noscript {
                p.notice { "JavaScript is off: "
                    a href="/dashboard?wait=1" { "load every widget on the server" }
                    " (the page waits for the slowest one)." }
            }
        }
        .render_to(buffer);
        buffer.push_str(r#"<main class="grid">"#);
        for card in self.cards {
            card.render_to(buffer);
        }
        buffer.push_str("</main>");
        if let Some(since) = self.live_since {
            live_poller(since).render_to(buffer);
        }
    }
}

/// The long-poll element: asks `/updates` for widgets refreshed after
/// `since` and is replaced by the answer (which holds the next poller and
/// the changed cards as out-of-band swaps). `every 30s` restarts the chain
/// if a poll ever fails.
pub fn live_poller(since: i64) -> Markup {
    html! {
        div #live hidden hx-get={ "/updates?since=" (since) } hx-trigger="load, every 30s" hx-swap="outerHTML" {}
    }
}
