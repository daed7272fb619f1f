//! The JSON API: `GET /api/widgets/{id}`, the same data as the cards, for
//! scripts and other services.
//!
//! Why it is its own route and not the fragment with another `Accept`: a
//! script's request carries RFC 9111 directives (`Cache-Control: no-cache`,
//! `max-age`, `only-if-cached`...) that a browser's htmx request never
//! does, and it answers errors as JSON with a status (502, 503, 504) where
//! a card must answer 200 for htmx to swap it. The body of a fresh hit is
//! made once per entry and kept with it, like a card.

use actix_web::http::header;
use actix_web::{get, web, HttpRequest, HttpResponse};
use bytes::Bytes;
use serde::Serialize;

use super::respond::{log_served, widget_ok, JSON};
use super::widgets::{resolve, widget_id};
use super::AppState;
use crate::cache::entry::Entry;
use crate::cache::status;
use crate::cache::{Directives, Outcome};
use crate::clock::rfc3339;
use crate::routes::error::ApiError;
use crate::session::CurrentUser;
use crate::upstream::FetchError;
use crate::widget::WidgetId;

/// The body of `GET /api/widgets/{id}` (SPEC §5).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WidgetJson<'a> {
    id: &'a WidgetId,
    /// The upstream's JSON, sent as it came.
    data: &'a serde_json::value::RawValue,
    /// Served from the cache (not fetched for this request).
    cached: bool,
    /// Older than its fresh window.
    stale: bool,
    fetched_at: String,
    fresh_until: String,
    /// End of ttl: after it the entry is a miss.
    expires_at: String,
}

impl<'a> WidgetJson<'a> {
    fn of(id: &'a WidgetId, entry: &'a Entry, cached: bool, stale: bool) -> Self {
        Self {
            id,
            data: &entry.data,
            cached,
            stale,
            fetched_at: rfc3339(entry.fetched_at),
            fresh_until: rfc3339(entry.fresh_until),
            expires_at: rfc3339(entry.stale_until),
        }
    }
}

/// `GET /api/widgets/{id}`: the signed-in user's widget as JSON.
#[get("/api/widgets/{id}")]
pub async fn widget_json(
    req: HttpRequest,
    user: CurrentUser,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let instance = resolve(state.cache.registry(), widget_id(&req), req.query_string())?;
    let user = user.into_inner().ok_or(ApiError::SignedOut)?;
    let directives = Directives::parse(
        req.headers()
            .get_all(header::CACHE_CONTROL)
            .filter_map(|v| v.to_str().ok()),
    )?;
    let lookup = state.cache.get_with(&user, &instance, directives).await;
    let widget = instance.id();
    log_served(&lookup);
    if lookup.outcome == Outcome::OnlyIfCached {
        return Ok(HttpResponse::GatewayTimeout()
            .insert_header(status::header(&lookup))
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .json(serde_json::json!({ "id": widget, "error": "only-if-cached: no usable entry" })));
    }
    let Some(entry) = lookup.entry.as_deref() else {
        let status = status::header(&lookup);
        // Plain words and a reference; the details are in the log under it.
        let message = lookup.error.as_ref().map(|e| e.plain()).unwrap_or_default();
        let reference = super::respond::reference(&req);
        tracing::warn!(reference = %reference, widget = %widget, error = ?lookup.error, "widget unavailable");
        // The upstream asked to wait (or is paused): 503 with when to come back.
        let wait = match &lookup.error {
            Some(FetchError::Paused(secs)) | Some(FetchError::Limited(_, Some(secs))) => Some(*secs),
            _ => None,
        };
        let mut resp = match wait {
            Some(secs) => {
                let mut resp = HttpResponse::ServiceUnavailable();
                resp.insert_header((header::RETRY_AFTER, secs.max(1).to_string()));
                resp
            }
            None => HttpResponse::BadGateway(),
        };
        return Ok(resp
            .insert_header(status)
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .json(serde_json::json!({ "id": widget, "error": message, "ref": reference })));
    };
    let fresh = matches!(lookup.outcome, Outcome::Hit { .. } | Outcome::Eager { .. });
    if fresh {
        // A fresh entry's body is the same for every request: made once.
        let body = entry.rendered.parts().json_fresh.get_or_init(|| {
            Bytes::from(serde_json::to_vec(&WidgetJson::of(widget, entry, true, false)).unwrap_or_default())
        });
        return Ok(widget_ok(&lookup, &JSON, Bytes::clone(body)));
    }
    // Not fresh: served from the cache only if stale (a miss was fetched now).
    let stale = matches!(
        lookup.outcome,
        Outcome::Stale { .. } | Outcome::Outdated { .. } | Outcome::StaleIfError { .. }
    );
    let body = serde_json::to_vec(&WidgetJson::of(widget, entry, stale, stale)).unwrap_or_default();
    Ok(widget_ok(&lookup, &JSON, body))
}
