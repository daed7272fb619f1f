//! Whose turn a request's upstream calls wait in (SPEC §7 "Fair share"):
//! its client address, as the sign-in limit reads it (the peer, or with
//! `--trusted-proxies` the rightmost untrusted `X-Forwarded-For` entry).
//!
//! Why a middleware: the address is known here, at the edge, while the
//! fetches are started deep in the cache; the cache reads it back through
//! [`crate::cache::turns::client`] when it starts a fetch, so no route has
//! to pass it along, and a prewarm started by a sign-in carries the sign-in's
//! address.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::web;

use super::login_rate::LoginLimiter;

/// The middleware: serves the request as from its client address.
pub async fn in_turn(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let address = match req.app_data::<web::Data<LoginLimiter>>() {
        Some(limiter) => limiter.client_address(req.request()),
        None => req.peer_addr().map(|a| a.ip()),
    };
    match address {
        Some(address) => crate::cache::turns::serving(address, next.call(req)).await,
        None => next.call(req).await,
    }
}
