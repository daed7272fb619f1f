//! Widget fragments for htmx: `GET /widgets/{id}` and the forced refresh.
//!
//! Why fragments, one per widget: each card of the page loads on its own
//! (`hx-trigger="load"`), so the slow widget never holds back the fast
//! ones, and one failing never breaks another. A fragment answers 200 even
//! when the upstream failed (an error card with a retry button): htmx does
//! not swap 4xx/5xx bodies. Signed out, it answers 401 with `HX-Redirect`,
//! which htmx follows to the sign-in page.

use std::sync::Arc;

use actix_web::{get, post, web, HttpRequest, HttpResponse};

use super::respond::{log_served, widget_ok, HTML};
use super::AppState;
use crate::cache::Lookup;
use crate::routes::error::PageError;
use crate::session::CurrentUser;
use crate::user::UserId;
use crate::views;
use crate::widget::params::ParamError;
use crate::widget::{Instance, Registry};

/// Why a widget request names no instance.
#[derive(Debug)]
pub(crate) enum Unresolved {
    /// No widget with that id in the registry.
    UnknownWidget,
    /// A parameter undeclared, repeated or outside its values.
    Params(ParamError),
}

/// The widget instance a request names: the id from the path, the
/// parameters from the query string (canonical, validated). Nothing is
/// read or fetched for a request refused here.
pub(crate) fn resolve(registry: &Registry, raw_id: &str, query: &str) -> Result<Instance, Unresolved> {
    let widget = registry.get(raw_id).ok_or(Unresolved::UnknownWidget)?;
    let pairs: Vec<(String, String)> = if query.is_empty() {
        Vec::new()
    } else {
        serde_urlencoded::from_str(query)
            .map_err(|e| Unresolved::Params(ParamError::Malformed(e.to_string())))?
    };
    registry.instance(widget, &pairs).map_err(Unresolved::Params)
}

/// The `{id}` of the request's path, as routed (borrowed, not copied).
pub(crate) fn widget_id(req: &HttpRequest) -> &str {
    req.match_info().query("id")
}

/// Resolves the widget instance and the signed-in user, in that order (an
/// unknown widget is 404 whoever asks).
fn instance_and_user(
    req: &HttpRequest,
    user: CurrentUser,
    state: &AppState,
) -> Result<(Instance, Arc<UserId>), PageError> {
    let instance = resolve(state.cache.registry(), widget_id(req), req.query_string())?;
    let user = user.into_inner().ok_or(PageError::SignedOut)?;
    Ok((instance, user))
}

/// `GET /widgets/{id}`: the card, from the cache or the upstream.
#[get("/widgets/{id}")]
pub async fn widget_fragment(
    req: HttpRequest,
    user: CurrentUser,
    state: web::Data<AppState>,
) -> Result<HttpResponse, PageError> {
    let (instance, user) = instance_and_user(&req, user, &state)?;
    let lookup = state.cache.get(&user, &instance).await;
    Ok(fragment(&req, &lookup))
}

/// `POST /widgets/{id}/refresh`: force a refresh and return the new card.
#[post("/widgets/{id}/refresh")]
pub async fn refresh(
    req: HttpRequest,
    user: CurrentUser,
    state: web::Data<AppState>,
) -> Result<HttpResponse, PageError> {
    let (instance, user) = instance_and_user(&req, user, &state)?;
    let lookup = state.cache.refresh(&user, &instance).await;
    Ok(fragment(&req, &lookup))
}

/// A card response. Errors are 200 too: htmx only swaps 2xx responses, and
/// the error card (with its retry button) is what should be shown, with
/// the request's reference.
fn fragment(req: &HttpRequest, lookup: &Lookup) -> HttpResponse {
    log_served(lookup);
    let card = match &lookup.error {
        Some(_) => views::widget_card_ref(lookup, &super::respond::reference(req)),
        None => views::widget_card(lookup),
    };
    widget_ok(lookup, &HTML, card.into_string())
}
