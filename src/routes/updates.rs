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
use actix_web::{get, web, HttpResponse};
use maud::html;

use super::respond::html;
use super::AppState;
use crate::error::PageError;
use crate::session::CurrentUser;
use crate::views;

/// How long one poll is held open when nothing changes.
pub const LONG_POLL: Duration = Duration::from_secs(25);

/// `?since=<ms>`: the clock reading of the data the page already shows.
#[derive(serde::Deserialize)]
pub struct UpdatesQuery {
    since: Option<i64>,
}

/// `GET /updates?since=<ms>`.
#[get("/updates")]
pub async fn updates(
    query: web::Query<UpdatesQuery>,
    user: CurrentUser,
    state: web::Data<AppState>,
) -> Result<HttpResponse, PageError> {
    let user = user.into_inner().ok_or(PageError::SignedOut)?;
    let _open = state.cache.open_page();
    let since = query.since.unwrap_or_else(|| state.cache.now());
    let changed = state.cache.wait_for_change(&user, since, LONG_POLL).await;
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
