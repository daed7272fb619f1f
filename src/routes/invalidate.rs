//! `POST /api/invalidate`: the HMAC-signed invalidation webhook.
//!
//! The signature is `sha256=<hex HMAC-SHA256 of "<timestamp>.<raw body>">`
//! under `--invalidation-secret`, with the timestamp (unix seconds) in
//! `X-Percache-Timestamp`; a timestamp more than 300 s from now is refused,
//! so a captured request cannot be replayed later. Within that window, a
//! signature is accepted once ([`ReplayGuard`], fleet-wide with Redis): the
//! same signed request again gets 409. A request that fails after its
//! signature was recorded (a bad body, a store error) is forgotten again, so
//! 409 always means "this exact request was already carried out".

use std::time::Duration;

use actix_web::{post, web, HttpRequest, HttpResponse};
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;

use super::AppState;
use crate::cache::fleet::generations::Kind;
use crate::defence::replay::{ReplayGuard, Seen};
use crate::routes::error::WebhookError;
use crate::user::UserId;

/// Largest accepted body.
pub const MAX_BODY: usize = 16 * 1024;
/// Allowed distance between the timestamp and now, in seconds.
const MAX_SKEW_SECS: u64 = 300;
/// How long a signature is remembered: a timestamp up to 300 s ahead stays
/// acceptable for up to 600 s from now.
pub const REPLAY_WINDOW: Duration = Duration::from_secs(2 * MAX_SKEW_SECS);

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Invalidation {
    /// One user's entries; or, with `all_users`, none.
    #[serde(default)]
    user_id: Option<String>,
    #[serde(default)]
    widgets: Option<Vec<IdInBody>>,
    /// Every user's entries of the widgets, in O(1) (a generation bump).
    #[serde(default)]
    all_users: bool,
    /// Entries turn stale (served at once while they refresh) instead of
    /// disappearing.
    #[serde(default)]
    soft: bool,
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

/// The HMAC bytes of a `sha256=<hex>` header value (hex in either case).
fn signature_bytes(signature: &str) -> Option<Vec<u8>> {
    hex::decode(signature.trim().strip_prefix("sha256=")?).ok()
}

/// Checks `sha256=<hex>` against the HMAC of `"<timestamp>.<body>"`, in constant time.
pub fn verify(secret: &[u8], timestamp: &str, body: &[u8], signature: &str) -> bool {
    let Some(sig) = signature_bytes(signature) else {
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
/// every instance shares, once per signed request.
#[post("/api/invalidate")]
pub async fn invalidate(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<AppState>,
    replay: web::Data<ReplayGuard>,
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
    // Keyed on the HMAC bytes, not the header text: `sha256=AB..` and
    // `sha256=ab..` are the same signature.
    let mac = signature_bytes(signature).ok_or(WebhookError::BadSignature)?;
    match replay.first_use(&mac, ts).await {
        Ok(Seen::First) => {}
        Ok(Seen::BelowFloor) => {
            ::metrics::counter!("percache_refused_total", "reason" => "webhook_stale").increment(1);
            return Err(WebhookError::Expired);
        }
        Ok(Seen::Replay) => {
            ::metrics::counter!("percache_refused_total", "reason" => "webhook_replay").increment(1);
            tracing::warn!("replayed webhook request refused");
            return Err(WebhookError::Replayed);
        }
        Err(e) => return Err(WebhookError::Store(e.to_string())),
    }
    let outcome = carry_out(&body, &state).await;
    if outcome.is_err() {
        if let Err(e) = replay.forget(&mac).await {
            tracing::warn!(error = %e, "could not forget a failed webhook request's signature");
        }
    }
    outcome
}

/// Parses a verified body and invalidates what it names.
async fn carry_out(body: &[u8], state: &AppState) -> Result<HttpResponse, WebhookError> {
    let request: Invalidation =
        serde_json::from_slice(body).map_err(|e| WebhookError::BadBody(e.to_string()))?;
    let user = match (&request.user_id, request.all_users) {
        (Some(id), false) => Some(UserId::parse(id).map_err(|e| WebhookError::BadBody(e.to_string()))?),
        (None, true) => None,
        (Some(_), true) => {
            return Err(WebhookError::BadBody(
                "give either userId or \"allUsers\": true, not both".into(),
            ))
        }
        (None, false) => {
            return Err(WebhookError::BadBody(
                "missing userId (or \"allUsers\": true)".into(),
            ))
        }
    };
    let kind = if request.soft { Kind::Soft } else { Kind::Hard };
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
    let done = match &user {
        Some(user) => state.cache.invalidate(user, &widgets, kind).await,
        None => state.cache.invalidate_all_users(&widgets, kind).await,
    };
    done.map_err(|e| WebhookError::Store(e.to_string()))?;
    tracing::info!(
        widgets = widgets.len(),
        all_users = user.is_none(),
        soft = request.soft,
        "entries invalidated"
    );
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "invalidated": widgets.iter().map(|w| &w.id).collect::<Vec<_>>(),
        "allUsers": user.is_none(),
        "soft": request.soft,
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
