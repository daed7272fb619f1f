//! Widget fragments for htmx.

use actix_session::Session;
use actix_web::http::header;
use actix_web::{get, post, web, HttpResponse};

use super::AppState;
use crate::cache::status::{cache_status, HEADER};
use crate::cache::Lookup;
use crate::error::PageError;
use crate::session;
use crate::upstream::Upstream;
use crate::user::UserId;
use crate::views;
use crate::widget::WidgetId;

/// Resolves the widget id and the signed-in user, in that order (an unknown
/// widget is 404 whoever asks).
pub(crate) fn widget_and_user(raw: &str, session: &Session) -> Result<(WidgetId, UserId), PageError> {
    let widget = WidgetId::parse(raw).ok_or(PageError::UnknownWidget)?;
    let user = session::current_user(session).ok_or(PageError::SignedOut)?;
    Ok((widget, user))
}

/// `GET /widgets/{id}`: the card, from the cache or the upstream.
#[get("/widgets/{id}")]
pub async fn widget_fragment(
    id: web::Path<String>,
    session: Session,
    state: web::Data<AppState>,
    upstream: web::Data<Upstream>,
) -> Result<HttpResponse, PageError> {
    let (widget, user) = widget_and_user(&id, &session)?;
    let lookup = state.cache.get(&user, widget, &upstream).await;
    Ok(fragment(&lookup))
}

/// `POST /widgets/{id}/refresh`: force a refresh and return the new card.
#[post("/widgets/{id}/refresh")]
pub async fn refresh(
    id: web::Path<String>,
    session: Session,
    state: web::Data<AppState>,
    upstream: web::Data<Upstream>,
) -> Result<HttpResponse, PageError> {
    let (widget, user) = widget_and_user(&id, &session)?;
    let lookup = state.cache.refresh(&user, widget, &upstream).await;
    Ok(fragment(&lookup))
}

/// A card response. Errors are 200 too: htmx only swaps 2xx responses, and
/// the error card (with its retry button) is what should be shown.
fn fragment(lookup: &Lookup) -> HttpResponse {
    tracing::info!(widget = %lookup.widget, outcome = lookup.outcome.label(), "widget served");
    HttpResponse::Ok()
        .insert_header((HEADER, cache_status(lookup)))
        .insert_header((header::CACHE_CONTROL, "private, no-store"))
        .content_type("text/html; charset=utf-8")
        .body(views::widget_card(lookup).into_string())
}
