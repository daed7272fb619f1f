//! HTTP routes, one file per area, and the shared state they read.

mod api;
mod assets;
mod auth;
mod dashboard;
mod health;
mod widgets;

use std::sync::Arc;

use actix_web::web;

use crate::cache::WidgetCache;

/// State shared by every worker.
pub struct AppState {
    /// The widget cache.
    pub cache: Arc<WidgetCache>,
    /// Whether sign-in prewarms the cache.
    pub prewarm: bool,
}

/// Registers every route.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(auth::index)
        .service(auth::login_form)
        .service(auth::login)
        .service(auth::logout)
        .service(dashboard::dashboard)
        .service(widgets::widget_fragment)
        .service(widgets::refresh)
        .service(api::widget_json)
        .service(health::healthz)
        .service(health::readyz)
        .service(assets::asset);
}
