//! `GET /updates`: live refresh by long-poll.
//!
//! The dashboard keeps one request open here. It returns as soon as one of
//! the user's widgets has data newer than `since` (a background refresh, a
//! forced refresh in another tab, another instance's fetch), or after
//! [`LONG_POLL`] with nothing. The answer is a new poller plus the changed
//! cards marked `hx-swap-oob`, so htmx swaps them in place: no polling of
//! every widget, no extension, no build step.
//!
//! While it is open, the page also keeps its widgets current: when one turns
//! stale the cache refreshes it ([`WidgetCache::refresh_ahead`]), and the new
//! card comes back through this same poll. A closed page polls no more, so
//! its widgets are refreshed no more.

use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{get, web, HttpRequest, HttpResponse};
use maud::html;

use super::respond::html;
use super::AppState;
use crate::cache::Shown;
use crate::routes::error::PageError;
use crate::session::CurrentUser;
use crate::views;

/// How long one poll is held open when nothing changes.
pub const LONG_POLL: Duration = Duration::from_secs(25);

/// Most `seen` pairs one poll may carry: a page shows one card per widget.
pub const MAX_SEEN: usize = 256;

/// What the poll says the page shows: `seen=<id>:<version>` (repeated, or
/// comma-separated, or both; an empty value says "nothing yet"; `<id>:-`, a
/// card shown with other parameters than its defaults, which the poll leaves
/// alone), or the v2 cursor `since=<ms>`. With any `seen`, `since` is ignored.
pub fn shown(query: &str, now: i64) -> Result<Shown, String> {
    let pairs: Vec<(String, String)> =
        serde_urlencoded::from_str(query).map_err(|e| format!("bad query: {e}"))?;
    let mut since = None;
    let mut seen: Option<Vec<(String, Option<u64>)>> = None;
    for (name, value) in pairs {
        match name.as_str() {
            "since" => {
                since = Some(
                    value
                        .parse::<i64>()
                        .map_err(|_| format!("since must be a number of milliseconds, not {value:?}"))?,
                )
            }
            "seen" => {
                let list = seen.get_or_insert_with(Vec::new);
                for item in value.split(',').filter(|i| !i.is_empty()) {
                    let (id, version) = item
                        .split_once(':')
                        .and_then(|(id, v)| match v {
                            "-" => Some((id, None)),
                            v => Some((id, Some(v.parse::<u64>().ok()?))),
                        })
                        .ok_or_else(|| format!("seen takes <widget id>:<version> (or :- for a card shown with other parameters), not {item:?}"))?;
                    if list.len() == MAX_SEEN {
                        return Err(format!("seen lists at most {MAX_SEEN} cards"));
                    }
                    list.push((id.to_owned(), version));
                }
            }
            _ => {}
        }
    }
    Ok(match (seen, since) {
        (Some(seen), _) => Shown::Seen(seen),
        (None, since) => Shown::Since(since.unwrap_or(now)),
    })
}

/// `GET /updates?seen=<id>:<version>,...` (or the v2 `?since=<ms>`).
#[get("/updates")]
pub async fn updates(
    req: HttpRequest,
    user: CurrentUser,
    state: web::Data<AppState>,
) -> Result<HttpResponse, PageError> {
    let shown = shown(req.query_string(), state.cache.now()).map_err(PageError::BadRequest)?;
    let user = user.into_inner().ok_or(PageError::SignedOut)?;
    let Some(_open) = state.cache.open_page(&user) else {
        // Over the user's share of live connections: answered at once, and
        // told to come back in a while (the page keeps its cards).
        return Ok(html(StatusCode::OK, views::live_poller_later(state.cache.now())));
    };
    let since = match &shown {
        Shown::Since(since) => *since,
        Shown::Seen(_) => state.cache.now(),
    };
    let changed = state.cache.wait_for_change(&user, &shown, LONG_POLL).await;
    let next = changed
        .iter()
        .filter_map(|l| l.entry.as_ref())
        .map(|e| e.fetched_at)
        .fold(since, i64::max);
    Ok(html(
        StatusCode::OK,
        html! {
            (views::live_poller(next))
            @for lookup in &changed { (views::live_card(lookup)) }
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seen_is_read_repeated_or_comma_separated_and_wins_over_since() {
        let Ok(Shown::Seen(seen)) = shown("since=5&seen=&seen=1:3,2:7&seen=3:-", 99) else {
            panic!("seen expected");
        };
        assert_eq!(
            seen,
            [
                ("1".to_owned(), Some(3)),
                ("2".to_owned(), Some(7)),
                ("3".to_owned(), None)
            ]
        );
        assert!(matches!(shown("seen=", 99), Ok(Shown::Seen(s)) if s.is_empty()));
        assert!(matches!(shown("since=5", 99), Ok(Shown::Since(5))));
        assert!(matches!(shown("", 99), Ok(Shown::Since(99))));
    }

    #[test]
    fn a_bad_seen_or_since_is_a_message_not_a_guess() {
        for bad in ["seen=1", "seen=1:x", "seen=1:-1", "since=abc"] {
            let error = shown(bad, 0).expect_err(bad);
            assert!(
                error.contains("seen") || error.contains("since") || error.contains("query"),
                "{bad}: {error}"
            );
        }
        let many = (0..=MAX_SEEN)
            .map(|i| format!("{i}:1"))
            .collect::<Vec<_>>()
            .join(",");
        assert!(shown(&format!("seen={many}"), 0).unwrap_err().contains("at most"));
    }
}
