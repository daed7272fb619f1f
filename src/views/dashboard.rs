//! The dashboard page: a header with the user and five widget cards.

use std::sync::LazyLock;

use maud::{html, Markup, PreEscaped, Render};

use super::{page_with_head, prerender};
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
    let body = Body {
        user,
        cards,
        live_since,
    };
    match &SHELLS[usize::from(waiting)] {
        Some((before, after)) => {
            let mut page = String::with_capacity(before.len() + after.len() + PAGE_BODY_BYTES);
            page.push_str(before);
            body.render_to(&mut page);
            page.push_str(after);
            PreEscaped(page)
        }
        None => page_with_head("Dashboard", head(waiting), body),
    }
}

/// About what a body of five cards takes, so the page is written without
/// growing its buffer.
const PAGE_BODY_BYTES: usize = 8 * 1024;

/// Where the body goes in the shells rendered once: an HTML comment, which
/// nothing escaped can produce.
const BODY_SLOT: &str = "<!--body-->";

/// The dashboard's page around its body (without and with the no-script
/// redirect), rendered once and cut where the body goes: it is the same for
/// every user and every request.
static SHELLS: LazyLock<[Option<(String, String)>; 2]> = LazyLock::new(|| {
    [false, true]
        .map(|waiting| prerender::cut_at(BODY_SLOT, |body| page_with_head("Dashboard", head(waiting), body)))
});

/// The extra `<head>` of a page with placeholders: without JavaScript, go
/// to the variant that waits on the server.
fn head(waiting: bool) -> Option<Markup> {
    waiting.then(|| {
        html! { noscript { meta http-equiv="refresh" content="0; url=/dashboard?wait=1"; } }
    })
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
                    // Ends every session of this user that began before now
                    // (other browsers, a copied cookie), fleet-wide.
                    form method="post" action="/logout" {
                        input type="hidden" name="everywhere" value="1";
                        button.secondary type="submit" data-action="sign-out-everywhere" { "Sign out everywhere" }
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

/// The long-poll element: asks `/updates` for every card that differs
/// from what the page shows, and is replaced by the answer (which holds the
/// next poller and the changed cards as out-of-band swaps). What the page
/// shows is read from the page itself when the poll goes out: each card
/// with data holds a hidden `seen` input (`<id>:<data-version>`), which
/// `hx-include` gathers, and the poller's own empty one says the page
/// speaks `seen` even with no card yet. (`since`, the v2 cursor, stays in
/// the URL for servers of before; with `seen` present it is ignored.)
/// `every 30s` restarts the chain if a poll ever fails.
pub fn live_poller(since: i64) -> Markup {
    html! {
        div #live hidden hx-get={ "/updates?since=" (since) } hx-include="[name='seen']"
            hx-trigger="load, every 30s" hx-swap="outerHTML" {
            input type="hidden" name="seen" value="";
        }
    }
}

/// The poller for a page over its user's share of live connections: it
/// asks again after 30 s instead of at once.
pub fn live_poller_later(since: i64) -> Markup {
    html! {
        div #live hidden hx-get={ "/updates?since=" (since) } hx-include="[name='seen']"
            hx-trigger="load delay:30s" hx-swap="outerHTML" {
            input type="hidden" name="seen" value="";
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_from_its_shell_is_the_page_rendered_whole() {
        let user = UserId::parse("<alice>").unwrap();
        let cards = [PreEscaped("<article>1</article>".to_owned())];
        for waiting in [false, true] {
            let body = Body {
                user: &user,
                cards: &cards,
                live_since: Some(42),
            };

            let fast = dashboard_page(&user, &cards, Some(42), waiting).into_string();
            let whole = page_with_head("Dashboard", head(waiting), body).into_string();

            assert_eq!(fast, whole, "waiting: {waiting}");
            assert!(fast.contains("&lt;alice&gt;"));
            assert_eq!(fast.contains("url=/dashboard?wait=1"), waiting);
        }
    }
}
