//! Liveness and readiness.

use actix_web::{get, web, HttpResponse};

use super::AppState;

/// `GET /healthz`: 200 while the process serves.
#[get("/healthz")]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain").body("ok")
}

/// `GET /readyz`: 200 with the store's status. A down store is "degraded",
/// not unready: requests are still answered from the upstream.
#[get("/readyz")]
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let store = state.cache.store();
    // Plain words: the store's own error (addresses, TLS) goes to the log.
    let (status, error) = match store.ping().await {
        Ok(()) => ("ok", None),
        Err(e) => {
            tracing::warn!(error = %e, store = store.kind(), "readiness: the store does not answer");
            (
                "degraded",
                Some("the store does not answer; requests go to the upstream"),
            )
        }
    };
    HttpResponse::Ok().json(serde_json::json!({
        "status": status,
        "store": { "kind": store.kind(), "ok": error.is_none(), "error": error },
    }))
}
