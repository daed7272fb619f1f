//! `POST /api/invalidate`: the HMAC-signed invalidation webhook.
//!
//! The signature is `sha256=<hex HMAC-SHA256 of "<timestamp>.<raw body>">`
//! under `--invalidation-secret`, with the timestamp (unix seconds) in
//! `X-Percache-Timestamp`; a timestamp more than 300 s from now is refused,
//! so a captured request cannot be replayed later.

use actix_web::{post, web, HttpRequest, HttpResponse};
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;

use super::AppState;
use crate::error::WebhookError;
use crate::user::UserId;

/// Largest accepted body.
pub const MAX_BODY: usize = 16 * 1024;
/// Allowed distance between the timestamp and now, in seconds.
const MAX_SKEW_SECS: u64 = 300;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Invalidation {
    user_id: String,
    #[serde(default)]
    widgets: Option<Vec<IdInBody>>,
}

/// A widget id in the body: `3` or `"3"` or `"billing"`.
#[derive(Deserialize)]
#[serde(untagged)]
enum IdInBody {
    Number(u64),
    Text(String),
}

impl IdInBody {
    fn text(&self) -> String {
        match self {
            IdInBody::Number(n) => n.to_string(),
            IdInBody::Text(s) => s.clone(),
        }
    }
}

/// Checks `sha256=<hex>` against the HMAC of `"<timestamp>.<body>"`, in constant time.
pub fn verify(secret: &[u8], timestamp: &str, body: &[u8], signature: &str) -> bool {
    let Some(hex_sig) = signature.trim().strip_prefix("sha256=") else {
        return false;
    };
    let Ok(sig) = hex::decode(hex_sig) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return false;
    };
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.verify_slice(&sig).is_ok()
}

/// Computes the signature header value (for clients and tests).
pub fn sign(secret: &[u8], timestamp: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

fn header<'a>(req: &'a HttpRequest, name: &str) -> Option<&'a str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

/// Deletes one user's entries (the listed widgets, or all) from the store
/// every instance shares.
#[post("/api/invalidate")]
pub async fn invalidate(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, WebhookError> {
    let secret = state
        .invalidation_secret
        .as_deref()
        .ok_or(WebhookError::Disabled)?;
    let timestamp = header(&req, "x-percache-timestamp").ok_or(WebhookError::Unsigned)?;
    let signature = header(&req, "x-percache-signature").ok_or(WebhookError::Unsigned)?;
    let ts: i64 = timestamp.trim().parse().map_err(|_| WebhookError::BadSignature)?;
    if !verify(secret.as_bytes(), timestamp, &body, signature) {
        return Err(WebhookError::BadSignature);
    }
    let now_secs = state.cache.now().div_euclid(1000);
    if now_secs.abs_diff(ts) > MAX_SKEW_SECS {
        return Err(WebhookError::Expired);
    }
    let request: Invalidation =
        serde_json::from_slice(&body).map_err(|e| WebhookError::BadBody(e.to_string()))?;
    let user = UserId::parse(&request.user_id).map_err(|e| WebhookError::BadBody(e.to_string()))?;
    let registry = state.cache.registry();
    let widgets: Vec<_> = match request.widgets {
        None => registry.all().to_vec(),
        Some(ids) => ids
            .iter()
            .map(|id| {
                let id = id.text();
                registry
                    .get(&id)
                    .cloned()
                    .ok_or_else(|| WebhookError::BadBody(format!("unknown widget {id}")))
            })
            .collect::<Result<_, _>>()?,
    };
    state
        .cache
        .invalidate(&user, &widgets)
        .await
        .map_err(|e| WebhookError::Store(e.to_string()))?;
    tracing::info!(widgets = widgets.len(), "entries invalidated");
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "invalidated": widgets.iter().map(|w| &w.id).collect::<Vec<_>>(),
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_only_with_the_right_key_timestamp_and_body() {
        let sig = sign(b"secret", "1700000000", b"{}");
        assert!(verify(b"secret", "1700000000", b"{}", &sig));
        assert!(!verify(b"other", "1700000000", b"{}", &sig));
        assert!(!verify(b"secret", "1700000001", b"{}", &sig));
        assert!(!verify(b"secret", "1700000000", b"{ }", &sig));
        assert!(!verify(
            b"secret",
            "1700000000",
            b"{}",
            sig.trim_start_matches("sha256=")
        ));
        assert!(!verify(b"secret", "1700000000", b"{}", "sha256=zz"));
    }
}
