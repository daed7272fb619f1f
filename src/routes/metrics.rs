//! `GET /metrics` (Prometheus text format) and the middleware that times
//! every HTTP request.

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
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

/// Records `percache_http_request_duration_seconds{method,route,status}`.
/// The route is the pattern (`/widgets/{id}`), so labels stay bounded.
pub async fn track(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let start = Instant::now();
    let method = req.method().as_str().to_owned();
    let route = req.match_pattern().unwrap_or_else(|| "unmatched".to_owned());
    let res = next.call(req).await?;
    ::metrics::histogram!(
        "percache_http_request_duration_seconds",
        "method" => method,
        "route" => route,
        "status" => res.status().as_str().to_owned(),
    )
    .record(start.elapsed().as_secs_f64());
    Ok(res)
}
