//! HTTP routes, one file per area, and the shared state they read.

mod admin;
mod api;
mod assets;
pub mod auth;
mod dashboard;
pub mod error;
pub mod fallback;
mod health;
pub mod invalidate;
pub mod metrics;
mod respond;
mod updates;
mod widgets;

use std::sync::Arc;

use actix_web::web;

use crate::cache::WidgetCache;
pub(crate) use widgets::Unresolved;

/// State shared by every worker (each worker holds its own copy, which
/// shares the cache: a request's handle on it is then a count that only its
/// own worker touches).
#[derive(Clone)]
pub struct AppState {
    /// The widget cache.
    pub cache: Arc<WidgetCache>,
    /// Whether sign-in prewarms the cache.
    pub prewarm: bool,
    /// Key of the invalidation webhook; `None`: webhook off.
    pub invalidation_secret: Option<String>,
    /// This application's metrics (`/metrics`).
    pub metrics: crate::telemetry::Metrics,
}

/// Registers every route.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.app_data(web::PayloadConfig::new(invalidate::MAX_BODY));
    cfg.service(auth::index)
        .service(auth::login_form)
        .service(auth::login)
        .service(auth::logout)
        .service(dashboard::dashboard)
        .service(widgets::widget_fragment)
        .service(widgets::refresh)
        .service(updates::updates)
        .service(api::widget_json)
        .service(invalidate::invalidate)
        .service(metrics::scrape)
        .service(health::healthz)
        .service(health::readyz)
        .service(assets::asset);
    // The operator page (404 unless --admin-token is set).
    cfg.service(admin::page)
        .service(admin::figures_json)
        .service(admin::login)
        .service(admin::logout);
    // Unknown path: 404; known path, other method: 405 with `Allow`
    // (a route added above belongs in `fallback::ROUTES` too).
    cfg.default_service(web::to(fallback::not_found_or_wrong_method));
}
