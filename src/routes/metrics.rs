//! `GET /metrics` (Prometheus text format). The middleware that times every
//! HTTP request is `telemetry::http`.

use actix_web::{get, HttpResponse};

/// `GET /metrics`. Also sets, at scrape time, `percache_fetches_in_flight`
/// (this process's upstream fetches right now) and, for an in-process store,
/// `percache_cache_entries` and `percache_cache_bytes`.
#[get("/metrics")]
pub async fn scrape(state: actix_web::web::Data<super::AppState>) -> HttpResponse {
    ::metrics::gauge!("percache_fetches_in_flight").set(state.cache.fetches_in_flight() as f64);
    if let Some(usage) = state.cache.store().usage().await {
        ::metrics::gauge!("percache_cache_entries").set(usage.entries as f64);
        ::metrics::gauge!("percache_cache_bytes").set(usage.bytes as f64);
    }
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(state.metrics.render())
}
