//! Identity from a proxy (`--user-header`, SPEC §4, v3): behind an
//! identity-aware proxy (oauth2-proxy, Pomerium, nginx `auth_request`...),
//! the user is that header's value, validated like a username.
//!
//! Why only from `--trusted-proxies`: anyone can send the header; only a
//! request whose TCP peer is one of the proxies carries the proxy's word.
//! The same header from any other address is ignored, and the request is
//! not signed in. In this mode the header wins over any cookie on every
//! request (the sign-in form is off, and percache's own sessions are not
//! used), and a user's first request in a fresh window starts their
//! prewarm, as a sign-in does (the fetches are single-flight fleet-wide,
//! so another instance's prewarm of the same user costs no upstream call).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::HeaderName;
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage as _};
use moka::sync::Cache;

use super::login_rate::TrustedProxies;
use crate::session::Identified;
use crate::user::UserId;

/// Most users remembered as prewarmed within the window.
const PREWARMED_CAPACITY: u64 = 100_000;

/// The identity header, and whose word it is taken on.
pub struct IdentityHeader {
    name: HeaderName,
    proxies: TrustedProxies,
    /// Users whose prewarm started within the current fresh window.
    prewarmed: Cache<Box<str>, ()>,
}

impl IdentityHeader {
    /// `name` taken from `proxies` only (which must not be empty); a user
    /// is prewarmed at most once per `window`.
    pub fn new(name: &str, proxies: TrustedProxies, window: Duration) -> Result<Self, String> {
        let name = HeaderName::try_from(name)
            .map_err(|_| format!("--user-header: `{name}` is not a header name"))?;
        if proxies.is_empty() {
            return Err(
                "--user-header needs --trusted-proxies: the header is taken only from the identity proxy"
                    .into(),
            );
        }
        Ok(Self {
            name,
            proxies,
            prewarmed: Cache::builder()
                .max_capacity(PREWARMED_CAPACITY)
                .time_to_live(window.max(Duration::from_secs(1)))
                .build(),
        })
    }

    /// The user a request from `peer` carries, if `peer` is a trusted
    /// proxy and the header holds a valid username.
    pub fn user(&self, peer: Option<IpAddr>, req: &ServiceRequest) -> Option<UserId> {
        if !self.proxies.contains(peer?) {
            return None;
        }
        let value = req.headers().get(&self.name)?.to_str().ok()?;
        UserId::parse(value).ok()
    }

    /// Whether `user`'s prewarm is due (their first request in the window).
    pub fn first_in_window(&self, user: &UserId) -> bool {
        let tag: Box<str> = user.tag().as_str().into();
        self.prewarmed.entry(tag).or_insert(()).is_fresh()
    }
}

/// The middleware: puts the proxy's user in the request (or nothing).
pub async fn identify(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    if let Some(identity) = req.app_data::<web::Data<IdentityHeader>>() {
        let peer = req.peer_addr().map(|a| a.ip());
        if let Some(user) = identity.user(peer, &req) {
            req.extensions_mut().insert(Identified(Arc::new(user)));
        }
    }
    next.call(req).await
}
