//! `GET /metrics` (Prometheus text format). The middleware that times every
//! HTTP request is `telemetry::http`.

use actix_web::{get, HttpResponse};

/// `GET /metrics`. Also sets, at scrape time, `percache_fetches_in_flight`
/// (this process's upstream fetches right now), `percache_prewarm_queue`
/// (prewarms waiting for a slot), `percache_upstream_paused`
/// per widget (1 while its calls fail at once) and, for an in-process store,
/// `percache_cache_entries` and `percache_cache_bytes`.
#[get("/metrics")]
pub async fn scrape(state: actix_web::web::Data<super::AppState>) -> HttpResponse {
    ::metrics::gauge!("percache_fetches_in_flight").set(state.cache.fetches_in_flight() as f64);
    ::metrics::gauge!("percache_prewarm_queue").set(state.cache.prewarm_queue() as f64);
    // 1 while a widget's calls fail at once (breaker open, or Retry-After).
    for (widget, paused) in state.cache.paused_widgets() {
        ::metrics::gauge!("percache_upstream_paused", "widget" => widget).set(if paused.is_some() {
            1.0
        } else {
            0.0
        });
    }
    if let Some(usage) = state.cache.store().usage().await {
        ::metrics::gauge!("percache_cache_entries").set(usage.entries as f64);
        ::metrics::gauge!("percache_cache_bytes").set(usage.bytes as f64);
    }
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(state.metrics.render())
}
