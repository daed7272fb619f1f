//! The dashboard page.

use actix_session::Session;
use actix_web::http::StatusCode;
use actix_web::{get, web, HttpResponse};
use futures_util::future::join_all;

use super::auth::{html, see_other};
use super::AppState;
use crate::session;
use crate::upstream::Upstream;
use crate::views;
use crate::widget::WidgetId;

/// `GET /dashboard`: every widget with a fresh or stale entry is rendered
/// inline (no extra round trip); the others are placeholders htmx loads.
#[get("/dashboard")]
pub async fn dashboard(
    session: Session,
    state: web::Data<AppState>,
    upstream: web::Data<Upstream>,
) -> HttpResponse {
    let Some(user) = session::current_user(&session) else {
        return see_other("/login");
    };
    let peeks = WidgetId::ALL.map(|w| state.cache.peek(&user, w, &upstream));
    let cards: Vec<_> = join_all(peeks)
        .await
        .into_iter()
        .zip(WidgetId::ALL)
        .map(|(lookup, w)| match lookup {
            Some(lookup) => views::widget_card(&lookup),
            None => views::loading_card(w),
        })
        .collect();
    html(StatusCode::OK, views::dashboard_page(&user, &cards))
}
