//! The dashboard page.

use actix_web::http::StatusCode;
use actix_web::{get, web, HttpRequest, HttpResponse};
use futures_util::future::join_all;

use super::respond::{html, see_other};
use super::AppState;
use crate::session::CurrentUser;
use crate::views;
use crate::views::DashboardCard;

/// `?wait=1`: the no-JavaScript variant.
#[derive(serde::Deserialize)]
pub struct DashboardQuery {
    wait: Option<String>,
}

/// `GET /dashboard`: every widget with a fresh or stale entry is rendered
/// inline (no extra round trip); the others are placeholders htmx loads.
/// With `?wait=1` (no JavaScript) the server waits for every widget.
#[get("/dashboard")]
pub async fn dashboard(
    req: HttpRequest,
    query: web::Query<DashboardQuery>,
    user: CurrentUser,
    state: web::Data<AppState>,
) -> HttpResponse {
    let Some(user) = user.into_inner() else {
        if super::auth::proxy_mode(&req) {
            return super::auth::not_signed_in();
        }
        return see_other("/login");
    };
    // Behind an identity proxy there is no sign-in to start the prewarm:
    // the user's first request in a fresh window does.
    if let Some(identity) = req.app_data::<web::Data<crate::defence::identity::IdentityHeader>>() {
        if state.prewarm && identity.first_in_window(&user) {
            let started = state.cache.prewarm(&user).await;
            tracing::info!(started, "prewarm started (first request in the window)");
        }
    }
    let since = state.cache.now();
    if query.wait.is_some() {
        let instances: Vec<_> = state
            .cache
            .registry()
            .all()
            .iter()
            .map(|w| w.default_instance())
            .collect();
        let lookups = join_all(instances.iter().map(|i| state.cache.get(&user, i))).await;
        let cards: Vec<_> = lookups.iter().map(views::widget_card).collect();
        return html(StatusCode::OK, views::dashboard_page(&user, &cards, None, false));
    }
    // Every widget in one store round trip.
    let cards: Vec<DashboardCard> = state
        .cache
        .peek_all(&user)
        .await
        .into_iter()
        .map(|(instance, lookup)| match lookup {
            Some(lookup) => DashboardCard::Ready(lookup),
            None => DashboardCard::Loading(instance),
        })
        .collect();
    let waiting = cards.iter().any(|card| matches!(card, DashboardCard::Loading(_)));
    html(
        StatusCode::OK,
        views::dashboard_page(&user, &cards, Some(since), waiting),
    )
}
